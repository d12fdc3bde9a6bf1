"""Interop vectors for PoH (spec/poh.md).

Handlers:
  hash_n   input.json {"start": hex32, "n": int} -> {"hash": hex32}
  mixin    input.bin  bincode Vec<Entry> of one entry -> {"mixin": hex32} (Merkle root of its
           transactions' signatures; zeros when none)
  entries  input.bin  start_hash (32) || bincode Vec<Entry> -> {"count", "last_hash",
           "ticks", "transactions"}; rejected when the bytes are malformed ("bad-entries",
           "truncated-entries", "trailing-bytes", "bad-transaction", ...) or the chain does
           not verify ("bad-poh", naming the first bad entry)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ...core import poh
from ...core.poh import Entry, Poh, PohError
from .. import Case, Rejected

FORMAT = "poh"


def _txs(n: int) -> list[bytes]:
    from ...devnet.users import ledger_user_keypairs as user_keypairs
    from ...ledger.producer import transfer_tx

    u = user_keypairs(4)
    return [transfer_tx(u[i % 4], u[(i + 1) % 4].pubkey, 100 + i, bytes(32)) for i in range(n)]


def _chain(start: bytes, with_txs: bool) -> list[Entry]:
    p = Poh(start, 10)
    txs = _txs(3) if with_txs else []
    out: list[Entry] = []
    for t in range(4):
        if with_txs and t in (1, 3):
            p.hash_some(4)
            e = p.record_entry(txs[: t])
            assert e is not None
            out.append(e)
        out.append(p.tick_entry())
    return out


def cases() -> Iterator[Case]:
    for start, n in ((bytes(32), 0), (bytes(32), 1), (bytes(32), 1000), (b"\xab" * 32, 62_500)):
        inp = json.dumps({"start": start.hex(), "n": n}).encode()
        yield Case("hash_n", f"n{n}_{start[:1].hex()}", inp, {"hash": poh.hash_n(start, n).hex()},
                   f"{n} sequential sha256 hashes", input_file="input.json")
    for k in (0, 1, 2, 3, 5):
        e = Entry(1, bytes(32), tuple(_txs(k)))
        yield Case("mixin", f"{k}_transactions", poh.serialize_entries([e]),
                   {"mixin": poh.hash_transactions(e.transactions).hex()},
                   f"Merkle root over the signatures of {k} transaction(s)", input_file="input.bin")
    start = b"\x11" * 32
    for with_txs in (False, True):
        entries = _chain(start, with_txs)
        data = start + poh.serialize_entries(entries)
        name = "ticks_and_transactions" if with_txs else "ticks_only"
        yield Case("entries", name, data, run("entries", data), "a valid 4-tick chain", input_file="input.bin")
    entries = _chain(start, True)
    bad_hash = list(entries)
    bad_hash[2] = Entry(bad_hash[2].num_hashes, b"\x00" * 32, bad_hash[2].transactions)
    bad_count = list(entries)
    bad_count[0] = Entry(bad_count[0].num_hashes + 1, bad_count[0].hash, bad_count[0].transactions)
    good = start + poh.serialize_entries(entries)
    rejects = [
        ("wrong_hash", start + poh.serialize_entries(bad_hash), "bad-poh", "entry 2 carries a wrong hash"),
        ("wrong_num_hashes", start + poh.serialize_entries(bad_count), "bad-poh", "entry 0 claims one hash too many"),
        ("truncated", good[:-7], "truncated-entries", "input ends inside the last entry"),
        ("trailing_bytes", good + b"\x00", "trailing-bytes", "one byte after the last entry"),
        ("huge_count", start + (1 << 40).to_bytes(8, "little") + bytes(48), "bad-entries", "absurd entry count"),
        ("no_start_hash", b"\x00" * 20, "truncated-entries", "shorter than the start hash"),
    ]
    for name, data, reason, desc in rejects:
        yield Case("entries", name, data, None, desc, reason=reason, input_file="input.bin")


def run(handler: str, data: bytes) -> Any:
    try:
        if handler == "hash_n":
            req = json.loads(data)
            return {"hash": poh.hash_n(bytes.fromhex(req["start"]), int(req["n"])).hex()}
        if handler == "mixin":
            (e,) = poh.deserialize_entries(data)
            return {"mixin": poh.hash_transactions(e.transactions).hex()}
        if handler == "entries":
            if len(data) < 32:
                raise Rejected("truncated-entries", "no start hash")
            entries = poh.deserialize_entries(data[32:])
            bad = poh.verify_entries(data[:32], entries)
            if bad is not None:
                raise Rejected("bad-poh", f"entry {bad} does not follow from its predecessor")
            return {
                "count": len(entries),
                "last_hash": entries[-1].hash.hex() if entries else data[:32].hex(),
                "ticks": sum(e.is_tick for e in entries),
                "transactions": sum(len(e.transactions) for e in entries),
            }
    except PohError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    raise Rejected("unknown-handler", handler)
