"""Differential check of ``Blockstore.insert_shreds`` against another checkout of the code.

Runs seeded adversarial insert scenarios (forks, equivocation, another leader's shreds,
forged signatures with valid Merkle proofs, corrupted headers and bytes, truncated and
padded packets, nonzero retransmitter signatures, repeats, losses that need erasure
recovery, unknown leaders, pre-verified batches, roots set between batches, batches of 1 to
500 packets) and prints one digest over every ``InsertResult`` and every column family's
final contents. Run it under two trees and compare the digests, e.g.::

    git archive <base> ambient_p2p | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/blockstore_differential.py 0 60 /tmp/old.json
    .venv/bin/python benchmarks/blockstore_differential.py 0 60 /tmp/new.json

(a tree without the compiled modules runs the pure-Python paths). spec/blockstore.md
"Performance" records what it gave.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from typing import Any

from ambient_p2p.core import shred as S
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.ledger.blockstore import COLUMN_FAMILIES, Blockstore

LEADER = Keypair.deterministic("diff-leader")
EVIL = Keypair.deterministic("diff-evil")


def _make(kp: Keypair, slot: int, parent: int, size: int, seed: int) -> list[bytes]:
    data = random.Random(seed).randbytes(size)
    b = S.make_shreds_from_data(kp, sha256(b"r", bytes([slot % 256])), data, slot, parent, 1, 0, True, 0, 0)
    return [s.payload for s in b.data + b.code]


def _mutate(rng: random.Random, p: bytes) -> list[bytes]:
    out = []
    r = rng.random()
    if r < 0.04:
        b = bytearray(p)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        out.append(bytes(b))
    elif r < 0.06:
        b = bytearray(p)
        b[rng.randrange(64, 90)] = rng.randrange(256)
        out.append(bytes(b))
    elif r < 0.08:
        out.append(rng.randbytes(64) + p[64:])  # forged signature, valid Merkle proof
    elif r < 0.10:
        out.append(p[:-64] + rng.randbytes(64) if S.parse_shred(p).variant.resigned else p)
    elif r < 0.11:
        out.append(p[: rng.randrange(len(p))])
    elif r < 0.13:
        out.append(p + b"\0\0\0\0")
    if rng.random() < 0.05:
        out.append(p)  # a repeat
    return out


def scenario(seed: int) -> list[Any]:
    rng = random.Random(seed)
    pool: list[bytes] = []
    slots = list(range(1, rng.randint(3, 7)))
    for slot in slots:
        parent = rng.choice([0] + [s for s in slots if s < slot]) if rng.random() < 0.3 else slot - 1
        size = rng.choice([300, 5_000, 30_000, 40_000])
        ps = _make(LEADER, slot, parent, size, seed * 100 + slot)
        if rng.random() < 0.2:  # equivocation: another version of the slot
            ps += rng.sample(_make(LEADER, slot, parent, size, seed * 100 + slot + 7), 5)
        if rng.random() < 0.2:  # another key's shreds over the same roots
            ps += rng.sample(_make(EVIL, slot, parent, size, seed * 100 + slot), 3)
        ps = [p for p in ps if rng.random() > rng.choice([0.0, 0.1, 0.5])]  # losses
        pool += ps + [m for p in ps for m in _mutate(rng, p)]
    if rng.random() < 0.5:
        rng.shuffle(pool)
    unknown = set(rng.sample(slots, 1)) if rng.random() < 0.2 else set()
    verified = rng.random() < 0.3
    out: list[Any] = []
    with Blockstore.open(tempfile.mkdtemp()) as bs:
        bs.set_roots([0])
        i = 0
        while i < len(pool):
            n = rng.choice([1, 3, 17, 64, 128, 500])
            r = bs.insert_shreds(pool[i:i + n], lambda s: None if s in unknown else LEADER.pubkey,
                                 signatures_verified=verified, recover_missing=rng.random() < 0.9)
            out.append([r.inserted, r.recovered, r.already_present, r.rejected, r.duplicates, r.completed_slots])
            i += n
            if rng.random() < 0.1:
                bs.set_roots([rng.choice(slots)])
        h = hashlib.sha256()
        for cf in COLUMN_FAMILIES:
            for key, value in bs.cf_prefix(cf, b""):
                h.update(cf.encode() + bytes(key) + bytes(value))
        out.append(h.hexdigest())
    return out


def main() -> None:
    lo, hi, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    res = [scenario(seed) for seed in range(lo, hi)]
    print(hashlib.sha256(json.dumps(res).encode()).hexdigest())
    with open(path, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
