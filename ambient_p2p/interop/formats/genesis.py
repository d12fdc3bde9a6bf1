"""Genesis vectors (spec/genesis.md, with spec/bank.md and spec/lstake.md): what every node
derives from the genesis file alone.

``derive/<case>``: input.cbor, a genesis file (the canonical encoding of a ``Genesis``
message). Output {genesis_hash (hex of sha256 of the file), genesis_address (the same 32
bytes in base58), chain_id, slot_duration_us, slot0_bank_hash (hex), leaders: {"0": [address
per leader turn], "1": [...]}} where the leaders of epochs 0 and 1 are drawn from the
bootstrap LStake with the seed of spec/lstake.md step 3. A file that does not decode as a
valid ``Genesis`` must reject with the codec's reason; one whose bootstrap LStake sums to
2^64 or more has no leader schedule (``lstake-overflow``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import cbor2

from ...core import codec, crypto, svm
from ...core.bank import Bank
from ...core.genesis import build_genesis
from ...core.lstake import LStakeError, leader_schedule, schedule_seed
from ...core.messages import BootstrapNode, EpochParams, Genesis
from ...devnet.genesis import vectors_genesis
from .. import Case, Rejected, case_from_run

FORMAT = "genesis"

#: Epochs whose schedule comes from the genesis bootstrap LStake (spec/lstake.md step 1).
GENESIS_SCHEDULE_EPOCHS = (0, 1)


def run(handler: str, data: bytes) -> Any:
    if handler != "derive":
        raise Rejected("unknown-handler", handler)
    try:
        g = codec.decode(data, expected=Genesis)
    except codec.DecodeError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    gh = crypto.sha256(data)
    bank = Bank.genesis(gh, {a.pubkey: a.lamports for a in g.accounts}, bytes(32), gh,
                        programs=svm.genesis_programs())
    weights = {n.identity: n.lstake for n in g.bootstrap_nodes}
    spe, ls = g.epoch.slots_per_epoch, g.epoch.leader_slots
    leaders = {}
    for epoch in GENESIS_SCHEDULE_EPOCHS:
        try:
            sched = leader_schedule(weights, schedule_seed(gh, epoch), spe, ls)
        except LStakeError as exc:
            raise Rejected("lstake-overflow", str(exc)) from None
        leaders[str(epoch)] = [crypto.encode_address(sched[i]) for i in range(0, spe, ls)]
    assert bank.bank_hash is not None
    return {
        "genesis_hash": gh.hex(),
        "genesis_address": crypto.encode_address(gh),
        "chain_id": g.chain_id,
        "slot_duration_us": g.poh.ticks_per_slot * g.poh.target_tick_duration_us,
        "slot0_bank_hash": bank.bank_hash.hex(),
        "leaders": leaders,
    }


def _patched(g: Genesis, patch: Any) -> bytes:
    """``g``'s canonical encoding with ``patch`` applied to the decoded body (invalid files)."""
    wire = cbor2.loads(codec.encode(g))
    patch(wire[2])
    out: bytes = cbor2.dumps(wire, canonical=True)
    return out


def _case(name: str, desc: str, data: bytes) -> Case:
    return case_from_run(run, "derive", name, data, desc, "input.cbor")


def cases() -> list[Case]:
    ids = [hashlib.sha256(f"vectors/genesis/{i}".encode()).digest() for i in range(3)]
    skewed = build_genesis(
        bootstrap=ids,
        creation_time_s=1_767_225_600,
        chain_id="ambient-skewed",
        accounts=[(hashlib.sha256(b"vectors/genesis/faucet").digest(), 7)],
        epoch=EpochParams(slots_per_epoch=20, leader_slots=2),
    )
    skewed = dataclasses.replace(
        skewed,
        bootstrap_nodes=tuple(BootstrapNode(n.identity, 1 << (4 * i)) for i, n in enumerate(skewed.bootstrap_nodes)),
    )
    one = codec.encode(vectors_genesis(1))

    def set_epoch(spe: int, ls: int) -> Any:
        return lambda b: b["epoch"].update(slots_per_epoch=spe, leader_slots=ls)

    def overflow(b: Any) -> None:
        for n in b["bootstrap_nodes"]:
            n["lstake"] = 1 << 63

    return [
        _case("one-node", "the vectors' genesis with one bootstrap node: it leads every turn", one),
        _case(
            "four-nodes-digest",
            "four equal bootstrap nodes and a model digest",
            codec.encode(vectors_genesis(4, digest=True)),
        ),
        _case(
            "skewed", "three nodes with LStake 1, 16, 256, 10 turns of 2 slots, an extra account", codec.encode(skewed)
        ),
        _case("trailing-byte", "a genesis file with one byte appended: must reject", one + b"\x00"),
        _case(
            "zero-slot-epoch",
            "slots_per_epoch 0 (0 % leader_slots == 0, but below leader_slots): must reject",
            _patched(vectors_genesis(1), set_epoch(0, 4)),
        ),
        _case(
            "uneven-epoch",
            "slots_per_epoch 10 with 4 leader slots: must reject",
            _patched(vectors_genesis(1), set_epoch(10, 4)),
        ),
        _case(
            "lstake-overflow",
            "two bootstrap nodes of LStake 2^63: the total reaches 2^64, no schedule: must reject",
            _patched(vectors_genesis(2), overflow),
        ),
    ]
