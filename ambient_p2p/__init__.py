"""ambient-p2p: Python node for the Ambient protocol (see README.md and spec/)."""

__version__ = "0.1.0"
