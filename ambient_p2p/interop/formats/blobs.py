"""Blob vectors (spec/blobs.md).

``token-blob/<case>``: input.json {tokens: [u32, ...]}; output {blob (hex), sha256 (hex)},
where sha256 is the auction's ``prompt_hash`` / ``output_hash`` of those tokens
(``core.pol.tokens_hash``); too many tokens or an id above u32 must reject.
``parse-token-blob/<case>``: input.bin, a blob; output {tokens}; a blob that is not the
token-blob encoding must reject (``bad-token-blob``), one of more than ``MAX_BLOB_TOKENS``
ids too (``too-large``).
``answer/<case>``: input.json {requested (hex sha256), response (hex of the canonical
CBOR of a ``BlobResponse``, 0x021A)}; output {sha256, size} when the response carries the
requested blob; else must reject with the reason the requester records: the codec's
reason, ``not-found``, ``wrong-hash`` or ``hash-mismatch``. ``BlobRequest``/``BlobResponse``
round-trips are codec vectors (``codec/roundtrip/blob-*``).
"""

from __future__ import annotations

import json
from typing import Any

from ...core import codec
from ...core.blobs import MAX_BLOB_BYTES, MAX_BLOB_TOKENS, BlobError, answer_rejection, blob_tokens, token_blob
from ...core.crypto import sha256
from ...core.pol import DOMAIN_TOKENS
from ...net.messages import BlobResponse
from .. import Case, Rejected, case_from_run

FORMAT = "blobs"


def run(handler: str, data: bytes) -> Any:
    if handler == "token-blob":
        try:
            tokens = json.loads(data)["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, int) and t >= 0 for t in tokens):
                raise TypeError("tokens must be a list of non-negative integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise Rejected("malformed", str(exc)) from None
        try:
            blob = token_blob(tokens)
        except BlobError as exc:
            raise Rejected(exc.reason, exc.detail) from None
        return {"blob": blob.hex(), "sha256": sha256(blob).hex()}
    if handler == "parse-token-blob":
        try:
            return {"tokens": blob_tokens(data), "sha256": sha256(data).hex()}
        except BlobError as exc:
            raise Rejected(exc.reason, exc.detail) from None
    if handler == "answer":
        try:
            v = json.loads(data)
            requested, raw = bytes.fromhex(v["requested"]), bytes.fromhex(v["response"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Rejected("malformed", str(exc)) from None
        try:
            resp = codec.decode(raw, expected=BlobResponse)
        except codec.DecodeError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        reason = answer_rejection(requested, resp.sha256, resp.data)
        if reason is not None:
            raise Rejected(reason, f"answer to a request for {requested.hex()[:16]}")
        assert resp.data is not None
        return {"sha256": requested.hex(), "size": len(resp.data)}
    raise Rejected("unknown-handler", handler)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _answer(name: str, desc: str, requested: bytes, response: bytes) -> Case:
    return case_from_run(
        run, "answer", name, _json({"requested": requested.hex(), "response": response.hex()}), desc, "input.json"
    )


def cases() -> list[Case]:
    prompt = [1, 9906, 11, 2088, 30, 0, 49151, 0xFFFFFFFF]
    out = [
        case_from_run(run, "token-blob", name, _json({"tokens": toks}), desc, "input.json")
        for name, desc, toks in [
            ("prompt", "a short prompt's token ids (the largest u32 included)", prompt),
            ("empty", "no tokens: the 26-byte header alone", []),
            ("largest", f"{MAX_BLOB_TOKENS} tokens, the most one blob holds", [7] * MAX_BLOB_TOKENS),
            ("too-many", f"{MAX_BLOB_TOKENS + 1} tokens: must reject", [7] * (MAX_BLOB_TOKENS + 1)),
            ("not-u32", "a token id of 2^32: must reject", [1, 1 << 32]),
        ]
    ]
    blob = token_blob(prompt)
    out += [
        case_from_run(run, "parse-token-blob", name, data, desc, "input.bin")
        for name, desc, data in [
            ("prompt", "the blob of token-blob/prompt", blob),
            ("truncated", "the last byte cut: the count and the body disagree", blob[:-1]),
            ("extra-byte", "one byte appended", blob + b"\x00"),
            ("wrong-domain", "another domain prefix", b"B" + blob[1:]),
            ("short", "shorter than the header", blob[:10]),
            (
                "too-many",
                f"{MAX_BLOB_TOKENS + 1} ids, well formed but over MAX_BLOB_TOKENS: must reject",
                _raw_token_blob([7] * (MAX_BLOB_TOKENS + 1)),
            ),
        ]
    ]
    h = sha256(blob)
    other = b"not the prompt"
    out += [
        _answer("ok", "the requested bytes", h, codec.encode(BlobResponse(nonce=7, sha256=h, data=blob))),
        _answer(
            "not-found",
            "the responder does not hold it (no data field)",
            h,
            codec.encode(BlobResponse(nonce=7, sha256=h)),
        ),
        _answer(
            "wrong-hash",
            "an answer naming another blob, with that blob's bytes",
            h,
            codec.encode(BlobResponse(nonce=7, sha256=sha256(other), data=other)),
        ),
        _answer(
            "hash-mismatch",
            "the requested name with bytes that do not hash to it",
            h,
            codec.encode(BlobResponse(nonce=7, sha256=h, data=blob[:-1] + b"\x01")),
        ),
        _answer("oversized", f"data of {MAX_BLOB_BYTES + 1} bytes, over MAX_BLOB_BYTES", h, _oversized_response(h)),
    ]
    return out


def _raw_token_blob(tokens: list[int]) -> bytes:
    """The token-blob encoding without the MAX_BLOB_TOKENS check (for must-reject cases)."""
    return DOMAIN_TOKENS + len(tokens).to_bytes(4, "big") + b"".join(t.to_bytes(4, "big") for t in tokens)


def _oversized_response(h: bytes) -> bytes:
    import cbor2

    wire = cbor2.loads(codec.encode(BlobResponse(nonce=7, sha256=h, data=b"")))
    wire[2]["data"] = bytes(MAX_BLOB_BYTES + 1)
    out: bytes = cbor2.dumps(wire, canonical=True)
    return out
