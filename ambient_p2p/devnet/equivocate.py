"""Test harness: an equivocating leader (``--equivocate-slot N`` / ``--equivocate-split``).

A producer strategy for the validator (``node.validator.ProducerStrategy``): on its N-th
produced slot (0-based) it builds a second version carrying one extra transfer between the
localnet test users. Without ``split`` both versions are gossiped; with ``split`` nothing
is gossiped for that slot: the data shreds of the first version go straight to every peer
but one, the other version's to that one (``/ambient/shred-push/1``), so that peers hold
different versions and only votes (and repair) can reconcile them. Kept out of the
production validator; its status fields exist only when it is enabled.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..core.messages import Genesis
from ..core.shred import DATA_PAYLOAD_BYTES
from ..ledger.producer import transfer_tx
from ..ledger.replay import SlotResult
from ..net.reqresp import ReqRespError
from ..node.leader import BuiltSlot
from ..node.port import NetPort
from ..node.repair import MAX_PUSH_SHREDS, PROTO_SHRED_PUSH, ShredPush
from .users import user_keypairs

PUSH_TIMEOUT_S = 3.0


class EquivocatingProducer:
    def __init__(self, genesis: Genesis, slot_index: int | None, split: bool, rng: random.Random) -> None:
        self.genesis = genesis
        self.slot_index = slot_index
        self.split = split
        self.rng = rng
        self.produced = 0
        self.equivocated_slots: list[int] = []
        self.split_recipients: dict[int, dict[str, list[str]]] = {}

    def variants(self, built: BuiltSlot, parent: SlotResult,
                 rebuild: Callable[[list[bytes]], BuiltSlot]) -> list[list[bytes]]:
        """Runs in the slot-building worker thread."""
        self.produced += 1
        if self.slot_index is None or self.produced != self.slot_index + 1:
            return [built.packets]
        users = user_keypairs(self.genesis.chain_id, 2)
        extra = transfer_tx(users[0], users[1].pubkey, self.rng.randint(1, 1000), parent.bank.last_blockhash)
        other = rebuild([*built.included, extra])
        self.equivocated_slots.append(built.slot)
        return [built.packets, other.packets]

    async def deliver(self, slot: int, variants: list[list[bytes]], port: NetPort) -> bool:
        if not (self.split and len(variants) == 2):
            return False
        peers = port.peers()
        if not peers:
            return True
        record: dict[str, list[str]] = {"a": [], "b": []}
        for i, peer in enumerate(peers):
            which = 1 if i == len(peers) - 1 and len(peers) > 1 else 0
            data = [p for p in variants[which] if len(p) == DATA_PAYLOAD_BYTES]  # data shreds only
            for j in range(0, len(data), MAX_PUSH_SHREDS):
                try:
                    push = ShredPush(self.rng.getrandbits(32), tuple(data[j:j + MAX_PUSH_SHREDS]))
                    await port.request(peer, PROTO_SHRED_PUSH, push, PUSH_TIMEOUT_S)
                except ReqRespError:
                    break
            record["ab"[which]].append(port.peer_label(peer))
        self.split_recipients[slot] = record
        return True

    def status(self) -> dict[str, Any]:
        return {"equivocated": len(self.equivocated_slots), "equivocated_slots": list(self.equivocated_slots),
                "split_recipients": {str(k): v for k, v in self.split_recipients.items()}}
