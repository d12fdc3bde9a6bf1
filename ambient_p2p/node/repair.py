"""Whole-slot repair: ``/ambient/repair-slot/1`` (spec/node.md "Repair and catch-up").

``/ambient/repair/1`` answers one shred per request, so a node catching up on a hundred
slots of 32 data shreds needs thousands of request streams, and py-libp2p opens a stream
in tens of milliseconds (far more on a busy machine): a restarted node fell further behind
while repairing. This protocol returns up to ``MAX_SLOT_SHREDS`` data shreds of one slot,
from ``first_index`` on, in one response. The request/response framing, rate limiting and
ban handling are those of ``net/reqresp.py``; this module registers the protocol there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.codec import Bytes, List, UInt, fld, message
from ..net import reqresp
from ..net.messages import SHRED_PACKET_BYTES

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.peer.id import ID

    from ..ledger.blockstore import Blockstore

PROTO_REPAIR_SLOT = "/ambient/repair-slot/1"
MAX_SLOT_SHREDS = 64
#: Per requesting peer: bucket capacity and refill per second (a catching-up node asks for
#: tens of slots per round).
RATE_LIMIT = (128.0, 64.0)


@message(type_id=0x0303, version=1, max_size=128)
@dataclass(frozen=True)
class SlotShredsRequest:
    slot: int = fld(UInt(64))
    first_index: int = fld(UInt(32))
    nonce: int = fld(UInt(32))


@message(type_id=0x0304, version=1, max_size=MAX_SLOT_SHREDS * (SHRED_PACKET_BYTES + 3) + 64)
@dataclass(frozen=True)
class SlotShredsResponse:
    """Data shreds of the slot with index >= first_index, ascending, at most 64; empty if
    the responder has none."""

    nonce: int = fld(UInt(32))
    shreds: tuple[bytes, ...] = fld(List(Bytes(SHRED_PACKET_BYTES), MAX_SLOT_SHREDS))


reqresp.PROTOCOLS[PROTO_REPAIR_SLOT] = (SlotShredsRequest, SlotShredsResponse)
reqresp.RATE_LIMITS[PROTO_REPAIR_SLOT] = RATE_LIMIT


PROTO_SHRED_PUSH = "/ambient/shred-push/1"
MAX_PUSH_SHREDS = 64
#: Per pushing peer (a leader pushes a slot's data shreds in one or a few requests).
PUSH_RATE_LIMIT = (32.0, 16.0)


@message(type_id=0x0305, version=1, max_size=MAX_PUSH_SHREDS * (SHRED_PACKET_BYTES + 3) + 64)
@dataclass(frozen=True)
class ShredPush:
    """Shreds pushed straight to one peer (turbine-like delivery, not gossip): the receiver
    puts them through the same verified blockstore insert as gossiped shreds."""

    nonce: int = fld(UInt(32))
    shreds: tuple[bytes, ...] = fld(List(Bytes(SHRED_PACKET_BYTES), MAX_PUSH_SHREDS))


@message(type_id=0x0306, version=1, max_size=64)
@dataclass(frozen=True)
class ShredPushAck:
    nonce: int = fld(UInt(32))
    inserted: int = fld(UInt(32))
    rejected: int = fld(UInt(32))


reqresp.PROTOCOLS[PROTO_SHRED_PUSH] = (ShredPush, ShredPushAck)
reqresp.RATE_LIMITS[PROTO_SHRED_PUSH] = PUSH_RATE_LIMIT


def slot_repair_handler(bs: Blockstore) -> reqresp.Handler:
    def handle(_peer: ID, req: SlotShredsRequest) -> SlotShredsResponse:
        out = [p for i, p in bs.slot_shred_payloads(req.slot, data=True) if i >= req.first_index]
        return SlotShredsResponse(nonce=req.nonce, shreds=tuple(out[:MAX_SLOT_SHREDS]))

    return handle
