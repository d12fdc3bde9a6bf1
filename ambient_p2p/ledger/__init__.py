"""The ledger shell: the RocksDB blockstore, leader-side slot production, replay and the
parallel PoH verifier. These modules do disk and process I/O; the rules they apply live in
:mod:`ambient_p2p.core` (spec/blockstore.md, spec/replay.md)."""
