"""Join vectors (spec/join.md).

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
from ...core.crypto import sha256
from ...core.join import JoinRejected, genesis_from_answer
from ...devnet.genesis import vectors_genesis
from ...net.messages import GenesisResponse
from .. import Case, Rejected, case_from_run

FORMAT = "join"


def run(handler: str, data: bytes) -> Any:
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
