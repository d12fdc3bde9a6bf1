"""Join vectors (spec/join.md).

``trust/<case>``: input.json {genesis_hash (hex), stakes {identity hex: LStake}, offers (hex
of a ``SnapshotOffers``, 0x0233)}; output {slot, bank_hash, snapshot_hash, attested_stake,
total_stake, servers [identity hex, sorted], refused {reason: count}} for the trusted snapshot
of spec/join.md's trust rule; must reject with ``no-trusted-snapshot`` when no claim is attested
by >= 2/3 of the stake. ``chunk/<case>``: input.json {offers (hex of a ``SnapshotOffers``
holding one attestation), index, data (hex)}; output {ok: true} when the chunk is the attested
one, else must reject with ``bad-index``, ``bad-length`` or ``chunk-mismatch``.

``genesis-answer/<case>``: input.json {expected (hex sha256, or null), response (hex of the
canonical CBOR of a ``GenesisResponse``, 0x0231)}; output {genesis_hash (hex), chain_id} when
the response carries a genesis that passes spec/join.md's checks (strict decode, canonical
bytes, the expected hash when given); else must reject with the reason the requester
records: the codec's reason, ``not-found``, ``non-canonical`` or ``genesis-mismatch``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ...core import codec
from ...core.crypto import Keypair, sha256
from ...core.join import (
    ATTESTATION_PURPOSE,
    Attestation,
    JoinRejected,
    attestation_signing_bytes,
    choose_snapshot,
    chunk_hashes,
    chunk_problem,
    genesis_from_answer,
)
from ...devnet.genesis import vectors_genesis
from ...net.messages import GenesisResponse, SnapshotAttestation, SnapshotOffers
from .. import Case, Rejected, case_from_run

FORMAT = "join"


def run(handler: str, data: bytes) -> Any:
    if handler in ("trust", "chunk"):
        return _run_snapshot(handler, data)
    if handler != "genesis-answer":
        raise Rejected("unknown-handler", handler)
    try:
        v = json.loads(data)
        expected = None if v["expected"] is None else bytes.fromhex(v["expected"])
        raw = bytes.fromhex(v["response"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Rejected("malformed", str(exc)) from None
    try:
        resp = codec.decode(raw, expected=GenesisResponse)
    except codec.DecodeError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    try:
        g = genesis_from_answer(resp.genesis, expected)
    except JoinRejected as exc:
        raise Rejected(exc.reason, exc.detail) from None
    assert resp.genesis is not None
    return {"genesis_hash": sha256(resp.genesis).hex(), "chain_id": g.chain_id}


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _case(name: str, desc: str, expected: bytes | None, response: bytes) -> Case:
    inp = _json({"expected": None if expected is None else expected.hex(), "response": response.hex()})
    return case_from_run(run, "genesis-answer", name, inp, desc, "input.json")


def _non_canonical(raw: bytes) -> bytes:
    """The same genesis with its first CBOR head written in a non-minimal form (a small
    count in the one-byte-argument form): the same value, not the canonical bytes."""
    head = raw[0]
    if head & 0x1F < 24:
        return bytes([(head & 0xE0) | 24, head & 0x1F]) + raw[1:]
    raise ValueError("the genesis encoding starts with a long head")  # pragma: no cover


def cases() -> list[Case]:
    return genesis_cases() + snapshot_cases()


def genesis_cases() -> list[Case]:
    g = vectors_genesis()
    raw = codec.encode(g)
    gh = sha256(raw)
    other = codec.encode(dataclasses.replace(g, chain_id=g.chain_id + "-other"))
    resp = codec.encode(GenesisResponse(nonce=7, genesis=raw))
    return [
        _case("ok-expected", "the genesis, with the expected hash given", gh, resp),
        _case("ok-no-expected", "the genesis, no expected hash (the node prints it)", None, resp),
        _case("mismatch", "a genesis of another chain than the expected hash names", gh,
              codec.encode(GenesisResponse(nonce=7, genesis=other))),
        _case("not-found", "the responder holds no genesis (no genesis field)", gh,
              codec.encode(GenesisResponse(nonce=7))),
        _case("not-a-genesis", "the field holds another message", None,
              codec.encode(GenesisResponse(nonce=7, genesis=codec.encode(GenesisResponse(nonce=1))))),
        _case("truncated", "the genesis cut short by one byte", None,
              codec.encode(GenesisResponse(nonce=7, genesis=raw[:-1]))),
        _case("non-canonical", "the genesis with a non-minimal CBOR head", None,
              codec.encode(GenesisResponse(nonce=7, genesis=_non_canonical(raw)))),
        _case("bad-response", "not a GenesisResponse at all", None, b"\xff\x00"),
    ]


def _offers(raw_hex: str) -> list[Attestation]:
    try:
        offers = codec.decode(bytes.fromhex(raw_hex), expected=SnapshotOffers)
    except codec.DecodeError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    return [Attestation(a.identity, a.genesis_hash, a.slot, a.bank_hash, a.snapshot_hash, a.size, a.chunk_bytes,
                        tuple(a.chunk_hashes), a.signature) for a in offers.offers]


def _run_snapshot(handler: str, data: bytes) -> Any:
    try:
        v = json.loads(data)
        offers_hex = v["offers"]
        if handler == "trust":
            genesis_hash = bytes.fromhex(v["genesis_hash"])
            stakes = {bytes.fromhex(k): int(x) for k, x in v["stakes"].items()}
        else:
            index, chunk = int(v["index"]), bytes.fromhex(v["data"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Rejected("malformed", str(exc)) from None
    atts = _offers(offers_hex)
    if handler == "chunk":
        if len(atts) != 1:
            raise Rejected("malformed", "chunk vectors carry one attestation")
        why = chunk_problem(atts[0], index, chunk)
        if why is not None:
            raise Rejected(why, f"chunk {index}")
        return {"ok": True}
    t, refused = choose_snapshot(atts, stakes, genesis_hash)
    if t is None:
        raise Rejected("no-trusted-snapshot", json.dumps(refused, sort_keys=True))
    a = t.attestation
    return {"slot": a.slot, "bank_hash": a.bank_hash.hex(), "snapshot_hash": a.snapshot_hash.hex(),
            "attested_stake": t.attested_stake, "total_stake": t.total_stake,
            "servers": sorted(s.hex() for s in t.servers), "refused": refused}


def _attest(kp: Keypair, genesis_hash: bytes, slot: int, bank_hash: bytes, raw: bytes,
            chunk_bytes: int) -> SnapshotAttestation:
    a = Attestation(kp.pubkey, genesis_hash, slot, bank_hash, sha256(raw), len(raw), chunk_bytes,
                    chunk_hashes(raw, chunk_bytes), b"")
    sig = kp.sign(ATTESTATION_PURPOSE, attestation_signing_bytes(a))
    return SnapshotAttestation(a.identity, a.genesis_hash, a.slot, a.bank_hash, a.snapshot_hash, a.size,
                               a.chunk_bytes, a.chunk_hashes, sig)


def snapshot_cases() -> list[Case]:
    keys = [Keypair.deterministic("interop-join", i) for i in range(5)]
    gh = sha256(b"interop join genesis")
    raw = bytes(range(256)) * 10  # 2,560 bytes: 3 chunks of 1,024
    bank = sha256(b"interop bank")
    honest = [_attest(k, gh, 128, bank, raw, 1024) for k in keys[:4]]
    liar = _attest(keys[3], gh, 128, sha256(b"unrooted"), raw, 1024)
    stakes = {k.pubkey.hex(): 100 for k in keys[:4]}

    def offers(atts: list[SnapshotAttestation]) -> str:
        return codec.encode(SnapshotOffers(nonce=1, offers=tuple(atts[:4]))).hex()

    def trust(name: str, desc: str, atts: list[SnapshotAttestation], st: dict[str, int] = stakes) -> Case:
        inp = _json({"genesis_hash": gh.hex(), "stakes": st, "offers": offers(atts)})
        return case_from_run(run, "trust", name, inp, desc, "input.json")

    def chunk(name: str, desc: str, index: int, data: bytes) -> Case:
        inp = _json({"offers": offers(honest[:1]), "index": index, "data": data.hex()})
        return case_from_run(run, "chunk", name, inp, desc, "input.json")

    forged = dataclasses.replace(honest[2], signature=bytes(64))
    return [
        trust("three-of-four", "3 of 4 equal stakes attest one claim: trusted (300/400 >= 2/3)", honest[:3]),
        trust("two-of-four", "2 of 4: not trusted", honest[:2]),
        trust("liar-minority", "3 honest and 1 attesting another bank hash: the honest claim wins",
              [*honest[:3], liar]),
        trust("forged-signature", "2 honest, 1 with a zeroed signature: not trusted", [*honest[:2], forged]),
        trust("outsider", "2 honest and one identity without genesis LStake: not trusted",
              [*honest[:2], _attest(keys[4], gh, 128, bank, raw, 1024)]),
        trust("outsider-attests-too", "3 honest and an identity without genesis LStake on the same claim: "
              "trusted by the 3; the outsider is listed among its attesters (it counts in the epoch check)",
              [*honest[:3], _attest(keys[4], gh, 128, bank, raw, 1024)]),
        trust("weighted", "one identity holding 2/3 of the stake alone: trusted", honest[:1],
              {keys[0].pubkey.hex(): 200, keys[1].pubkey.hex(): 100}),
        chunk("ok", "chunk 1 of 3, the attested bytes", 1, raw[1024:2048]),
        chunk("last", "the short last chunk", 2, raw[2048:]),
        chunk("flipped", "chunk 0 with one byte flipped", 0, b"\xff" + raw[1:1024]),
        chunk("short", "chunk 0 cut by one byte", 0, raw[:1023]),
        chunk("index", "a chunk index past the last", 3, raw[:512]),
    ]
