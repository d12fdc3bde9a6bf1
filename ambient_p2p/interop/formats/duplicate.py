"""Interop vectors for duplicate-slot proofs (spec/blockstore.md "Checking a duplicate-slot proof").

Handler:
  proof  input.json {"leader": base58 (the slot's scheduled leader), "slot", "kind",
         "shred1": hex, "shred2": hex} (a ``DuplicateSlotProof`` record's fields) ->
         {"slot", "kind", "shows": [every kind the pair shows, in the spec's order],
         "merkle_roots": [hex32, hex32]}; must-reject: malformed-input, unknown-kind,
         malformed-shred, slot-mismatch, bad-signature, same-shred, not-a-conflict
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ...core import crypto
from ...core import shred as S
from ...core.crypto import Keypair, sha256
from ...core.duplicate_proof import DuplicateProofError, check_duplicate_proof
from .. import Case, Rejected, case_from_run

FORMAT = "duplicate"
SEED = sha256(b"ambient interop duplicate-slot leader")
SLOT = 2000


def run(handler: str, data: bytes) -> Any:
    if handler != "proof":
        raise Rejected("unknown-handler", handler)
    try:
        v = json.loads(data)
        leader = crypto.decode_address(v["leader"])
        slot, kind = v["slot"], v["kind"]
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < 2**64 or not isinstance(kind, str):
            raise ValueError("slot must be a u64 and kind a string")
        shred1, shred2 = bytes.fromhex(v["shred1"]), bytes.fromhex(v["shred2"])
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed-input", str(exc)) from None
    try:
        p = check_duplicate_proof(slot, kind, shred1, shred2, leader)
    except DuplicateProofError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    return {"slot": p.slot, "kind": p.kind, "shows": list(p.shows), "merkle_roots": [r.hex() for r in p.merkle_roots]}


def _input(leader: bytes, kind: str, a: bytes, b: bytes, slot: int = SLOT) -> bytes:
    doc = {"leader": crypto.encode_address(leader), "slot": slot, "kind": kind, "shred1": a.hex(), "shred2": b.hex()}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _batch(kp: Keypair, data: bytes, last: bool, slot: int = SLOT, code_index: int = 0) -> S.ShredBatch:
    return S.make_shreds_from_data(kp, sha256(b"parent root"), data, slot, slot - 1, 7, 12, last, 0, code_index)


def cases() -> Iterator[Case]:
    kp = Keypair(SEED)
    leader = kp.pubkey
    # two versions of one slot by its leader: A is one FEC set (last data shred 31), B two sets
    # (last 63) with other entries; C is A's data with its coding shreds numbered from 5
    a = _batch(kp, b"version A of the slot" * 10, True)
    b = _batch(kp, bytes((i * 13 + 1) % 256 for i in range(40_000)), True)
    c = _batch(kp, b"version A of the slot" * 10, True, code_index=5)
    assert a.data[-1].index == 31 and b.data[-1].index == 63
    other_slot = _batch(kp, b"another slot", True, slot=SLOT + 1)
    stranger = Keypair.deterministic("interop-not-the-leader")
    forged = _batch(stranger, b"version A of the slot" * 10, True)

    def case(name: str, kind: str, s1: bytes, s2: bytes, desc: str, key: bytes = leader, slot: int = SLOT) -> Case:
        return case_from_run(run, "proof", name, _input(key, kind, s1, s2, slot), desc, "input.json")

    relayed = a.data[5].with_retransmitter_signature(sha256(b"relay") * 2).payload
    yield case("same-index", "same-index-different-payload", a.data[3].payload, b.data[3].payload,
               "data shred 3 of two versions (also a Merkle-root conflict: same FEC set 0)")
    yield case("same-index-coding", "same-index-different-payload", a.code[2].payload, b.code[2].payload,
               "coding shred 2 of two versions")
    yield case("root-conflict-data-code", "merkle-root-conflict", a.data[0].payload, b.code[7].payload,
               "a data and a coding shred of FEC set 0 with different roots")
    yield case("root-conflict-claimed-on-same-index", "merkle-root-conflict", a.data[3].payload, b.data[3].payload,
               "the same pair as same-index, claiming its other conflict")
    yield case("index-past-last", "index-past-last-in-slot", a.data[31].payload, b.data[40].payload,
               "shred1 is LAST_IN_SLOT at 31, shred2 a data shred at 40")
    yield case("last-below-received", "last-in-slot-below-received", b.data[40].payload, a.data[31].payload,
               "shred1 a data shred at 40, shred2 LAST_IN_SLOT at 31")
    yield case("erasure-config", "erasure-config-conflict", a.code[0].payload, c.code[0].payload,
               "coding shreds of FEC set 0 whose first coding index differs (0 and 5)")
    yield case("relayed-copy-differs-only-in-retransmitter", "same-index-different-payload", a.data[5].payload,
               relayed, "must reject (same-shred): the retransmitter signature is outside the leaf")
    yield case("identical", "same-index-different-payload", a.data[5].payload, a.data[5].payload,
               "must reject (same-shred): one shred twice")
    yield case("not-a-conflict", "merkle-root-conflict", a.data[1].payload, a.data[2].payload,
               "must reject: two shreds of one version")
    yield case("wrong-kind", "index-past-last-in-slot", b.data[40].payload, a.data[31].payload,
               "must reject: the pair shows last-in-slot-below-received (the order matters)")
    yield case("index-past-last-without-last", "index-past-last-in-slot", b.data[31].payload, b.data[40].payload,
               "must reject: shred1 at 31 of version B is not LAST_IN_SLOT")
    yield case("index-past-last-same-index", "index-past-last-in-slot", a.data[31].payload, b.data[31].payload,
               "must reject: shred2 is at the LAST_IN_SLOT index itself, not past it")
    yield case("erasure-config-on-data", "erasure-config-conflict", a.data[0].payload, b.data[0].payload,
               "must reject: erasure configs are compared between coding shreds only")
    yield case("unknown-kind", "parent-mismatch", a.data[3].payload, b.data[3].payload,
               "must reject: parent-mismatch is a rejected shred, not equivocation")
    yield case("other-slot", "same-index-different-payload", a.data[3].payload, other_slot.data[3].payload,
               "must reject (slot-mismatch): shred2 is of the next slot")
    yield case("proof-names-other-slot", "same-index-different-payload", a.data[3].payload, b.data[3].payload,
               "must reject (slot-mismatch): both shreds are of slot 2000, the proof says 2001", slot=SLOT + 1)
    yield case("not-the-leader", "same-index-different-payload", a.data[3].payload, forged.data[3].payload,
               "must reject (bad-signature): shred2 signed by another key")
    yield case("wrong-leader-key", "same-index-different-payload", a.data[3].payload, b.data[3].payload,
               "must reject (bad-signature): checked against a key that is not the slot leader's",
               key=stranger.pubkey)
    tampered = bytearray(b.data[3].payload)
    tampered[200] ^= 1
    yield case("tampered-shred", "same-index-different-payload", a.data[3].payload, bytes(tampered),
               "must reject (bad-signature): one flipped data byte changes the Merkle root")
    yield case("empty-shred", "index-past-last-in-slot", b"", b.data[40].payload,
               "must reject (malformed-shred): an empty shred1")
    yield case("trailing-bytes", "same-index-different-payload", a.data[3].payload, b.data[3].payload + b"\x00\x00\x00\x07",
               "must reject (malformed-shred): a payload followed by a repair nonce")
    yield Case("proof", "malformed-json", b'{"leader": 1}', None, "must reject: not a proof",
               reason="malformed-input", input_file="input.json")
