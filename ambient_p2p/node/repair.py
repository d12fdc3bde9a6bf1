"""Whole-slot repair: ``/ambient/repair-slot/1`` (spec/node.md "Repair and catch-up").

``/ambient/repair/1`` answers one shred per request, so a node catching up on a hundred
slots of 32 data shreds needs thousands of request streams, and py-libp2p opens a stream
in tens of milliseconds (far more on a busy machine): a restarted node fell further behind
while repairing. This protocol returns up to ``MAX_SHREDS_PER_BATCH`` data shreds of one slot,
from ``first_index`` on, in one response.

The messages (``SlotShredsRequest``, ``NoncedShreds``, ``ShredPushAck``) live with the
other network messages in ``net/messages.py`` and the protocols in the one request/response
table of ``net/reqresp.py``; this module holds the blockstore-backed handler only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..net import reqresp
from ..net.messages import MAX_SHREDS_PER_BATCH, NoncedShreds, SlotShredsRequest

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.peer.id import ID

    from ..ledger.blockstore import Blockstore



def slot_repair_handler(bs: Blockstore) -> reqresp.Handler:
    def handle(_peer: ID, req: SlotShredsRequest) -> NoncedShreds:
        out = [p for i, p in bs.slot_shred_payloads(req.slot, data=True) if i >= req.first_index]
        return NoncedShreds(nonce=req.nonce, shreds=tuple(out[:MAX_SHREDS_PER_BATCH]))

    return handle
