"""Interop vectors for Merkle shreds and their erasure coding (spec/shred.md).

Handlers:
  parse    input.bin  leader pubkey (32) || shred packet -> the shred's fields, recomputed
           Merkle root and a verified leader signature; must-reject cases carry the reason
           (bad-signature, wrong-size, oversized, bad-variant, legacy-variant,
           unchained-variant, bad-flags, bad-data-size, bad-parent, bad-coding-header,
           bad-proof-size)
  make     input.json {"seed", "data", "slot", "parent", "version", "reference_tick",
           "last_in_slot", "chained_merkle_root", "next_index"} -> sha256 of every shred
           payload, in order (ed25519 is deterministic, so another implementation must
           produce byte-identical shreds) and the last Merkle root
  recover  input.bin  u16 LE count, then per shred: u16 LE length || payload (one FEC set,
           some shreds missing) -> the recovered shreds (type, index, sha256 of payload);
           rejected with too-few-shreds, too-few-parity-shreds or merkle-root-mismatch
  rs       input.bin  u8 num_data || u8 num_parity || data shards (equal lengths) ->
           parity shards (hex): the reed-solomon-erasure crate's code
  merkle   input.json {"nodes": [hex32, ...]} (leaf nodes, i.e. already
           sha256("\x00SOLANA_MERKLE_SHREDS_LEAF" || leaf bytes)) -> {"root": hex32,
           "proofs": [[hex20, ...], ...]}: the shred Merkle tree with 20-byte truncated joins
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from typing import Any

from ...core import erasure
from ...core import shred as S
from ...core.crypto import Keypair, sha256
from .. import Case, Rejected

FORMAT = "shred"
SEED = sha256(b"ambient interop shred leader")


def _batch(data: bytes, last: bool) -> S.ShredBatch:
    return S.make_shreds_from_data(Keypair(SEED), sha256(b"parent root"), data, 1000, 999, 7, 12, last, 0, 0)


def _frame(shreds: list[bytes]) -> bytes:
    return struct.pack("<H", len(shreds)) + b"".join(struct.pack("<H", len(s)) + s for s in shreds)


def _flip(b: bytes, off: int, mask: int = 1) -> bytes:
    x = bytearray(b)
    x[off] ^= mask
    return bytes(x)


def _set(b: bytes, off: int, fmt: str, *vals: int) -> bytes:
    x = bytearray(b)
    struct.pack_into(fmt, x, off, *vals)
    return bytes(x)


def cases() -> Iterator[Case]:
    kp = Keypair(SEED)
    data = bytes((i * 7 + 3) % 251 for i in range(40_000))
    b = _batch(data, True)
    nb = _batch(b"\x01\x02\x03", False)
    leader = kp.pubkey
    for name, s in (("data_first", b.data[0]), ("data_last_in_slot", b.data[-1]), ("code_first", b.code[0]),
                    ("code_last", b.code[-1]), ("data_not_last_batch", nb.data[31]), ("code_not_last_batch", nb.code[3])):
        yield Case("parse", name, leader + s.payload, run("parse", leader + s.payload), f"valid {name} shred",
                   input_file="input.bin")
    with_nonce = leader + b.data[1].payload + b"\x00\x00\x00\x07"
    yield Case("parse", "data_with_repair_nonce", with_nonce, run("parse", with_nonce),
               "a repair response: payload followed by the 4-byte nonce", input_file="input.bin")
    d, c = b.data[5].payload, b.code[5].payload
    dv = b.data[5].variant
    other = Keypair.deterministic("interop-not-the-leader")
    rejects = [
        ("forged_signature", leader + other.sign_raw(b.data[5].merkle_root()) + d[64:], "bad-signature",
         "signed by another key"),
        ("wrong_leader", other.pubkey + d, "bad-signature", "verified against a key that did not sign"),
        ("bad_proof_entry", leader + _flip(d, dv.proof_offset + 5), "bad-signature",
         "one bit of the Merkle proof flipped: the root (hence the signature) no longer matches"),
        ("bad_payload_byte", leader + _flip(d, 500), "bad-signature", "one bit of the data flipped"),
        ("bad_chained_root", leader + _flip(c, b.code[5].variant.chained_root_offset), "bad-signature",
         "chained Merkle root altered"),
        ("truncated_data", leader + d[:1202], "wrong-size", "1202 bytes, a data shred is 1203"),
        ("truncated_code", leader + c[:1000], "wrong-size", "1000 bytes, a coding shred is 1228"),
        ("oversized", leader + c + bytes(5), "oversized", "1233 bytes exceed the 1232-byte packet"),
        ("header_only", leader + d[:64], "wrong-size", "cannot hold the variant byte"),
        ("legacy_data_variant", leader + _set(d, 64, "<B", 0xA5), "legacy-variant", "legacy data shred"),
        ("legacy_code_variant", leader + _set(c, 64, "<B", 0x5A), "legacy-variant", "legacy coding shred"),
        ("unchained_variant", leader + _set(d, 64, "<B", 0x86), "unchained-variant", "unchained Merkle data"),
        ("unknown_variant", leader + _set(d, 64, "<B", 0x16), "bad-variant", "high nibble 0x10"),
        ("data_variant_code_size", leader + _set(d, 64, "<B", 0x76), "wrong-size",
         "claims to be a coding shred but is data-shred sized"),
        ("last_in_slot_without_data_complete", leader + _set(d, 85, "<B", 0x80), "bad-flags",
         "flags 0x80: LAST_IN_SLOT bit without DATA_COMPLETE"),
        ("data_size_too_large", leader + _set(d, 86, "<H", 88 + 900), "bad-data-size", "size past the buffer"),
        ("data_size_too_small", leader + _set(d, 86, "<H", 87), "bad-data-size", "size below the headers"),
        ("parent_offset_zero", leader + _set(d, 83, "<H", 0), "bad-parent", "slot 1000 naming itself as parent"),
        ("parent_before_genesis", leader + _set(d, 83, "<H", 1001), "bad-parent", "parent offset > slot"),
        ("coding_position_out_of_range", leader + _set(c, 87, "<H", 32), "bad-coding-header", "position 32 of 32"),
        ("coding_too_many", leader + _set(c, 85, "<H", 257), "bad-coding-header", "257 coding shreds"),
        ("coding_zero_data", leader + _set(c, 83, "<H", 0), "bad-coding-header", "0 data shreds"),
        ("coding_wrong_proof_size", leader + _set(c, 64, "<B", 0x75), "bad-proof-size",
         "64-shred set with a 5-entry proof"),
    ]
    for name, inp, reason, desc in rejects:
        yield Case("parse", name, inp, None, desc, reason=reason, input_file="input.bin")

    make_req = {"seed": SEED.hex(), "data": data[:5000].hex(), "slot": 42, "parent": 40, "version": 3,
                "reference_tick": 9, "last_in_slot": True, "chained_merkle_root": sha256(b"c").hex(), "next_index": 64}
    inp = json.dumps(make_req).encode()
    yield Case("make", "one_fec_set_last_in_slot", inp, run("make", inp), "5000 bytes -> 32:32, resigned",
               input_file="input.json")
    make_req.update(data=data.hex(), last_in_slot=False, next_index=0)
    inp = json.dumps(make_req).encode()
    yield Case("make", "two_fec_sets_chained", inp, run("make", inp), "40000 bytes -> 2 chained sets",
               input_file="input.json")

    fec = list(b.data[:32] + b.code[:32])
    subsets = {
        "all_data_missing": fec[32:],
        "half_and_half": fec[::2],
        "minimum_31_data_1_code": fec[:31] + fec[63:],
        "last_coding_only_missing": fec[:63],
    }
    for name, sub in subsets.items():
        inp = _frame([s.payload for s in sub])
        yield Case("recover", name, inp, run("recover", inp), f"recover the FEC set: {name}", input_file="input.bin")
    bad = [s.payload for s in fec[:10]] + [_flip(fec[40].payload, 300)] + [s.payload for s in fec[41:62]]
    for name, inp, reason, desc in (
        ("too_few", _frame([s.payload for s in fec[:20] + fec[40:51]]), "too-few-shreds", "31 of 64"),
        ("data_only", _frame([s.payload for s in fec[:31]]), "too-few-parity-shreds", "no coding shred"),
        ("corrupted_shard", _frame(bad), "merkle-root-mismatch", "a corrupted coding shard"),
    ):
        yield Case("recover", name, inp, None, desc, reason=reason, input_file="input.bin")

    for n in (1, 2, 3, 5, 33, 64):
        nodes = [sha256(b"leaf", bytes([i])).hex() for i in range(n)]
        inp = json.dumps({"nodes": nodes}).encode()
        yield Case("merkle", f"leaves_{n}", inp, run("merkle", inp), f"shred Merkle tree of {n} leaves",
                   input_file="input.json")
    for nd, np_ in ((2, 2), (5, 3), (32, 32)):
        shards = [bytes((i * 31 + j * 7) % 256 for j in range(16)) for i in range(nd)]
        inp = bytes([nd, np_]) + b"".join(shards)
        yield Case("rs", f"rs_{nd}_{np_}", inp, run("rs", inp), f"RS({nd},{np_}) parity of 16-byte shards",
                   input_file="input.bin")


def run(handler: str, data: bytes) -> Any:
    try:
        if handler == "parse":
            if len(data) < 32:
                raise Rejected("wrong-size", "no leader key")
            shred = S.parse_shred(data[32:])
            S.verify_shred(shred, data[:32])
            return shred.describe()
        if handler == "make":
            req = json.loads(data)
            b = S.make_shreds_from_data(Keypair(bytes.fromhex(req["seed"])), bytes.fromhex(req["chained_merkle_root"]),
                                        bytes.fromhex(req["data"]), req["slot"], req["parent"], req["version"],
                                        req["reference_tick"], req["last_in_slot"], req["next_index"], req["next_index"])
            return {
                "data": [hashlib.sha256(s.payload).hexdigest() for s in b.data],
                "code": [hashlib.sha256(s.payload).hexdigest() for s in b.code],
                "merkle_root": b.merkle_root.hex(),
            }
        if handler == "recover":
            (n,) = struct.unpack_from("<H", data, 0)
            pos, shreds = 2, []
            for _ in range(n):
                (ln,) = struct.unpack_from("<H", data, pos)
                shreds.append(S.parse_shred(data[pos + 2 : pos + 2 + ln]))
                pos += 2 + ln
            rec = S.recover(shreds)
            return [{"type": "data" if s.is_data else "code", "index": s.index,
                     "sha256": hashlib.sha256(s.payload).hexdigest()} for s in rec]
        if handler == "merkle":
            nodes = [bytes.fromhex(x) for x in json.loads(data)["nodes"]]
            tree = S.make_merkle_tree(nodes)
            return {"root": tree[-1].hex(),
                    "proofs": [[e.hex() for e in S.make_merkle_proof(i, len(nodes), tree)] for i in range(len(nodes))]}
        if handler == "rs":
            nd, np_ = data[0], data[1]
            body = data[2:]
            size = len(body) // nd
            return {"parity": [p.hex() for p in erasure.encode([body[i * size : (i + 1) * size] for i in range(nd)], np_)]}
    except S.ShredError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    except erasure.ErasureError as exc:
        raise Rejected(exc.reason, exc.detail) from None
    raise Rejected("unknown-handler", handler)
