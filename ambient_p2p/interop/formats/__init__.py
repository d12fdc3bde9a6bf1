"""One module per vector format; see :mod:`ambient_p2p.interop`."""
