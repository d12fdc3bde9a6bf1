"""Whole-slot repair: ``/ambient/repair-slot/1`` (spec/node.md "Repair and catch-up").

``/ambient/repair/1`` answers one shred per request, so a node catching up on a hundred
slots of 32 data shreds needs thousands of request streams, and py-libp2p opens a stream
in tens of milliseconds (far more on a busy machine): a restarted node fell further behind
while repairing. This protocol returns up to ``MAX_SLOT_SHREDS`` data shreds of one slot,
from ``first_index`` on, in one response.

The messages (``SlotShredsRequest``, ``NoncedShreds``, ``ShredPushAck``) live with the
other network messages in ``net/messages.py`` and the protocols in the one request/response
table of ``net/reqresp.py``; the names below are re-exported for the node's importers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.repair import highest_index, slot_answer
from ..net import reqresp
from ..net.messages import MAX_SHREDS_PER_BATCH, NoncedShreds, ShredPush, ShredPushAck, SlotShredsRequest
from ..net.reqresp import PROTO_REPAIR_SLOT, PROTO_SHRED_PUSH, ShredStore

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.peer.id import ID

    from ..ledger.blockstore import Blockstore

MAX_SLOT_SHREDS = MAX_SHREDS_PER_BATCH
MAX_PUSH_SHREDS = MAX_SHREDS_PER_BATCH

__all__ = ["MAX_PUSH_SHREDS", "MAX_SLOT_SHREDS", "PROTO_REPAIR_SLOT", "PROTO_SHRED_PUSH", "BlockstoreShredStore",
           "ShredPush", "ShredPushAck", "SlotShredsRequest", "slot_repair_handler"]


def slot_repair_handler(bs: Blockstore) -> reqresp.Handler:
    def handle(_peer: ID, req: SlotShredsRequest) -> NoncedShreds:
        out = slot_answer(bs.slot_shred_payloads(req.slot, data=True), req.first_index, MAX_SLOT_SHREDS)
        return NoncedShreds(nonce=req.nonce, shreds=tuple(out))

    return handle


class BlockstoreShredStore(ShredStore):
    """Serves ``/ambient/repair/1`` from the blockstore (data shreds)."""

    def __init__(self, bs: Blockstore) -> None:
        super().__init__(max_shreds=0)
        self.bs = bs

    def insert(self, shred: bytes) -> bool:
        return False  # the validator inserts through the verified blockstore path

    def get(self, slot: int, index: int) -> bytes | None:
        return self.bs.get_data_shred(slot, index)

    def highest(self, slot: int, min_index: int = 0) -> bytes | None:
        m = self.bs.slot_meta(slot)
        i = None if m is None else highest_index(m.received, min_index)
        return None if i is None else self.bs.get_data_shred(slot, i)

    def parent_of(self, slot: int) -> int | None:
        m = self.bs.slot_meta(slot)
        return None if m is None else m.parent_slot

    def __len__(self) -> int:
        return 0
