"""The whole protocol's wire registry: every message type the node writes or sends.

Message types register themselves with :func:`ambient_p2p.core.codec.message` in the module
that defines them, in the type-id range of their layer (spec/encoding.md, "Type-id
ranges"). :func:`ambient_p2p.core.codec.load_protocol_types` may only import ``core`` (the
sans-IO rule), so it sees the core types alone; this composition-level loader imports every
module that defines wire types, so that ``ambient-p2p inspect`` and the interop runner decode
every record a node writes (blockstore records, tower file, bank snapshots) or sends (gossip
envelopes, shred batches, request/response messages) whatever was imported before.

``tests/test_registry.py`` checks that :data:`WIRE_MODULES` names every module holding an
``@message`` class and that the registry equals the table in spec/encoding.md.
"""

from __future__ import annotations

import importlib

from .core import codec

#: Every module outside ``core`` that defines wire message types (core's own modules are
#: loaded by ``codec.load_protocol_types``).
WIRE_MODULES: tuple[str, ...] = (
    "ambient_p2p.ledger.meta",
    "ambient_p2p.ledger.snapshot",
    "ambient_p2p.ledger.txstatus",
    "ambient_p2p.net.messages",
)


def load_all_types() -> dict[int, codec.MessageType]:
    """Import every module that registers wire types; return the full registry."""
    codec.load_protocol_types()
    for name in WIRE_MODULES:
        importlib.import_module(name)
    return codec.registry()
