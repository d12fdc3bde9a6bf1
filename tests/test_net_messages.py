"""Networking wire messages: canonical round trips (hypothesis), strict rejects,
envelope signatures, shred headers and request/response framing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core.codec import INTERNAL_REASON, DecodeError, EncodeError, decode, encode
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.messages import (
    ErrorResponse,
    GossipEnvelope,
    NoncedShreds,
    PeersResponse,
    PolOpenRequest,
    RepairRequest,
    ShredBatch,
    envelope_signature_ok,
    make_standin_shred,
    seal_envelope,
    shred_key,
)
from ambient_p2p.net.reqresp import encode_frame

from .strategies import reject_reason

KP = Keypair.deterministic("test-net", 0)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(topic=st.text(max_size=30), wallclock=u64, payload=st.binary(max_size=2048))
def test_envelope_roundtrip_and_signature(topic: str, wallclock: int, payload: bytes) -> None:
    topic = topic.encode("utf-8")[:90].decode("utf-8", "ignore")
    env = seal_envelope(KP, topic, payload, wallclock)
    data = encode(env)
    back = decode(data, expected=GossipEnvelope)
    assert back == env
    assert envelope_signature_ok(back)
    # any change to a signed field breaks the signature
    assert not envelope_signature_ok(dataclasses.replace(back, payload=payload + b"x"))
    assert not envelope_signature_ok(dataclasses.replace(back, wallclock_ms=(wallclock + 1) % 2**64))
    assert not envelope_signature_ok(dataclasses.replace(back, topic=topic + "x"))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from([0, 1, 2]), slot=u64, index=u32, nonce=u32)
def test_repair_request_roundtrip(kind: int, slot: int, index: int, nonce: int) -> None:
    r = RepairRequest(kind=kind, slot=slot, index=index, nonce=nonce)
    assert decode(encode(r), expected=RepairRequest) == r


@settings(max_examples=30, deadline=None)
@given(shreds=st.lists(st.binary(min_size=77, max_size=1232), max_size=8), nonce=u32)
def test_repair_response_and_batch_roundtrip(shreds: list[bytes], nonce: int) -> None:
    r = NoncedShreds(nonce=nonce, shreds=tuple(shreds))
    assert decode(encode(r)) == r
    b = ShredBatch(shreds=tuple(shreds))
    assert decode(encode(b), expected=ShredBatch) == b


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=300))
def test_decode_of_garbage_raises_only_decodeerror(data: bytes) -> None:
    for cls in (GossipEnvelope, RepairRequest, PolOpenRequest, ShredBatch, NoncedShreds):
        assert reject_reason(data, cls) != INTERNAL_REASON


def test_limits_are_enforced() -> None:
    with pytest.raises(DecodeError):
        decode(encode(NoncedShreds(nonce=1, shreds=(b"x" * 1232,))) + b"\x00", expected=NoncedShreds)
    with pytest.raises(ValueError, match='unknown repair kind'):
        RepairRequest(kind=7, slot=1, index=0, nonce=0)
    with pytest.raises(ValueError, match='positions repeat'):
        PolOpenRequest(commitment=bytes(32), positions=(1, 1), nonce=0)
    too_many = tuple(b"s" * 100 for _ in range(65))
    with pytest.raises(EncodeError):
        encode(ShredBatch(shreds=too_many))
    e = ErrorResponse(nonce=3, code="not-found", detail="x")
    assert decode(encode(e)) == e
    p = PeersResponse(nonce=1, addrs=("/ip4/127.0.0.1/tcp/1/p2p/x",))
    assert decode(encode(p)) == p


@given(slot=u64, index=u32)
def test_standin_shred_header(slot: int, index: int) -> None:
    s = make_standin_shred(slot, index, b"body")
    assert len(s) == 1232
    assert shred_key(s) == (slot, index)
    assert shred_key(s[:76]) is None


class _BytesStream:
    """Just enough of a libp2p stream for read_frame: read(n) returns up to n bytes,
    b"" at the end (py-libp2p raises StreamEOF there; read_frame handles both)."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk = data, chunk

    async def read(self, n: int) -> bytes:
        out, self.data = self.data[: min(n, self.chunk)], self.data[min(n, self.chunk) :]
        return out


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=3000), chunk=st.integers(1, 700))
def test_frame_roundtrip_in_chunks(body: bytes, chunk: int) -> None:
    import trio

    from ambient_p2p.net.reqresp import read_frame

    got = trio.run(read_frame, _BytesStream(encode_frame(body), chunk), 4096)
    assert got == body


def test_frame_rejects() -> None:
    import trio

    from ambient_p2p.net.reqresp import FrameError, read_frame

    def code(data: bytes, limit: int = 100) -> str:
        try:
            trio.run(read_frame, _BytesStream(data, 3), limit)
        except FrameError as exc:
            return exc.code
        return "ok"

    assert code(encode_frame(b"x" * 101)) == "too-large"  # refused before the body is read
    assert code(b"\xff\xff\xff\xff\xff\x01") == "bad-request"  # prefix too long
    assert code(b"\x80\x00") == "bad-request"  # non-minimal prefix
    assert code(encode_frame(b"abc")[:-1]) == "bad-request"  # truncated body
    assert code(b"") == "bad-request"
