"""The node shell: one trio nursery per node wiring the sans-IO core (consensus, PoH,
shreds, bank) to the network, the blockstore and the clock (spec/node.md)."""
