"""The per-message shortcuts of the gossip path (issue 17, spec/network.md P21) decide exactly
what py-libp2p's own functions decide:

* ``GossipService._libp2p_signature_ok`` (StrictSign check with the key cached per originator)
  against ``libp2p.pubsub.validators.signature_validator`` on valid and tampered messages;
* ``seal_wire`` / ``wire_signing_bytes`` (the signature spliced in or zeroed instead of
  re-encoding the envelope) against ``seal_envelope`` + ``encode`` / ``envelope_signing_bytes``;
* the buffered pubsub RPC reader (``apply_workarounds``) against the byte stream it is fed, cut
  into arbitrary chunks, and its errors (oversized length before any body byte is read, a
  prefix over 10 bytes, an early end of stream).
"""

from __future__ import annotations

import types
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.net.gossip import GossipService
from ambient_p2p.net.host import apply_workarounds


def _signer(kind: str, seed: int) -> Any:
    if kind == "ed25519":
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(bytes([seed]) * 32)
    from libp2p.crypto.secp256k1 import create_new_key_pair as secp

    return secp(bytes([seed + 1]) * 32)


def _signed(kp: Any, data: bytes, seqno: bytes, topic: str) -> Any:
    from libp2p.peer.id import ID
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=ID.from_pubkey(kp.public_key).to_bytes(), seqno=seqno)
    msg.signature = kp.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = kp.public_key.serialize()
    return msg


def _fast_checker() -> Any:
    ns: Any = types.SimpleNamespace(_originators={})
    ns._originator = lambda from_id: GossipService._originator(ns, from_id)
    return lambda msg: GossipService._libp2p_signature_ok(ns, msg)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["ed25519", "secp256k1"]),
    data=st.binary(max_size=2048),
    seqno=st.binary(min_size=8, max_size=8),
    tamper=st.sampled_from(["none", "data", "seqno", "topic", "from", "signature", "no-signature", "key"]),
    pos=st.integers(min_value=0, max_value=1 << 16),
)
def test_cached_libp2p_signature_check_agrees_with_the_library(
    kind: str, data: bytes, seqno: bytes, tamper: str, pos: int
) -> None:
    from libp2p.peer.id import ID
    from libp2p.pubsub.validators import signature_validator

    kp, other = _signer(kind, 1), _signer("ed25519", 2)
    msg = _signed(kp, data, seqno, "/ambient/t/txs/1")
    if tamper == "data":
        msg.data = data + b"x" if not data else data[: pos % len(data)] + bytes([data[pos % len(data)] ^ 1]) + data[
            pos % len(data) + 1 :]
    elif tamper == "seqno":
        msg.seqno = bytes([seqno[0] ^ 1]) + seqno[1:]
    elif tamper == "topic":
        msg.topicIDs[0] = "/ambient/t/votes/1"
    elif tamper == "from":  # another peer claims the message
        msg.from_id = ID.from_pubkey(other.public_key).to_bytes()
    elif tamper == "signature":
        sig = bytearray(msg.signature)
        sig[pos % len(sig)] ^= 1
        msg.signature = bytes(sig)
    elif tamper == "no-signature":
        msg.signature = b""
    elif tamper == "key":  # a key that is not the sender's (ignored for identity peer ids)
        msg.key = other.public_key.serialize()
    fast = _fast_checker()
    want = bool(signature_validator(msg))
    assert fast(msg) is want
    assert fast(msg) is want  # and again from the per-originator cache
    assert want is (tamper in ("none", "key"))


class _ChunkStream:
    """A stream that returns the given chunks one per read (at most ``n`` bytes each)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if not self.chunks:
            return b""
        head = self.chunks[0]
        if 0 < n < len(head):
            self.chunks[0] = head[n:]
            return head[:n]
        self.chunks.pop(0)
        return head


def _reader() -> Any:
    apply_workarounds()
    import libp2p.pubsub.pubsub as ps

    fn = ps.read_varint_prefixed_bytes_limited
    assert fn.__name__ == "read_rpc_buffered"
    return fn


def _frame(body: bytes) -> bytes:
    from libp2p.utils.varint import encode_uvarint

    return bytes(encode_uvarint(len(body))) + body


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=70_000), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=80_000), max_size=8),
)
def test_buffered_rpc_reader_returns_every_frame_however_the_bytes_arrive(
    bodies: list[bytes], cuts: list[int]
) -> None:
    read = _reader()
    wire = b"".join(_frame(b) for b in bodies)
    points = sorted({c % len(wire) for c in cuts} - {0})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    stream = _ChunkStream(chunks)

    async def body() -> list[bytes]:
        return [await read(stream, 1 << 20) for _ in bodies]

    assert trio.run(body) == bodies


def test_buffered_rpc_reader_one_read_for_a_frame_that_arrived_whole() -> None:
    read = _reader()
    stream = _ChunkStream([_frame(b"a" * 39_424) + _frame(b"b" * 100)])

    async def body() -> None:
        assert await read(stream, 1 << 20) == b"a" * 39_424
        assert await read(stream, 1 << 20) == b"b" * 100

    trio.run(body)
    assert stream.reads == 1  # the library: 3 one-byte prefix reads + 1 body read per frame


def test_buffered_rpc_reader_errors_match_the_library() -> None:
    from libp2p.exceptions import ParseError
    from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge

    read = _reader()

    async def body() -> None:
        big = _ChunkStream([_frame(b"z" * 2000)[:3]])  # only the prefix has arrived
        with pytest.raises(MessageTooLarge):
            await read(big, 1000)
        assert big.reads == 1  # refused on the prefix, no body read
        with pytest.raises(ParseError):
            await read(_ChunkStream([b"\xff" * 11]), 1 << 20)
        with pytest.raises(IncompleteReadError):
            await read(_ChunkStream([b"\x85"]), 1 << 20)  # ends inside the prefix
        with pytest.raises(IncompleteReadError):
            await read(_ChunkStream([_frame(b"q" * 50)[:20]]), 1 << 20)  # ends inside the body

    trio.run(body)


_PATTERN = b"\x69signature\x58\x40"
_KP = Keypair.deterministic("fastpath", 0)


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    inject=st.sampled_from(["none", "payload", "payload-zero-tail", "topic"]),
    wallclock=st.integers(min_value=0, max_value=(1 << 64) - 1),
    at=st.integers(min_value=0, max_value=3000),
)
def test_spliced_seal_and_signing_bytes_equal_the_encoded_ones(payload: bytes, inject: str, wallclock: int,
                                                                at: int) -> None:
    """``seal_wire`` builds exactly ``seal_envelope`` + ``encode``, and ``wire_signing_bytes``
    exactly ``envelope_signing_bytes``, also when the payload carries the signature field's
    own byte pattern (with zero bytes after it, as the unsigned encoding has)."""
    from ambient_p2p.core.codec import decode, encode
    from ambient_p2p.net.gossip import seal_wire, wire_signing_bytes
    from ambient_p2p.net.messages import GossipEnvelope, envelope_signing_bytes, seal_envelope

    topic = "/ambient/t/txs/1"
    k = at % (len(payload) + 1)
    if inject == "payload":
        payload = payload[:k] + _PATTERN + payload[k:]
    elif inject == "payload-zero-tail":
        payload = payload[:k] + _PATTERN + bytes(64)
    elif inject == "topic":
        topic = "/ambient/signature/txs/1"
    env, data = seal_wire(_KP, topic, payload, wallclock)
    assert env == seal_envelope(_KP, topic, payload, wallclock)
    assert data == encode(env)
    got = decode(data, expected=GossipEnvelope)
    assert wire_signing_bytes(data, got) == envelope_signing_bytes(got)


def test_a_signature_that_holds_the_field_pattern_falls_back_to_encoding() -> None:
    """A signature whose bytes contain the field pattern: the splice would land inside it;
    the position check sends it to the encoder, so the signing bytes stay exact."""
    import dataclasses

    from ambient_p2p.core.codec import decode, encode
    from ambient_p2p.net.gossip import _signature_at, wire_signing_bytes
    from ambient_p2p.net.messages import GossipEnvelope, envelope_signing_bytes, seal_envelope

    env = seal_envelope(_KP, "/ambient/t/txs/1", b"payload", 1)
    odd = dataclasses.replace(env, signature=(b"\x01" * 20 + _PATTERN + b"\x02" * 64)[:64])
    data = encode(odd)
    got = decode(data, expected=GossipEnvelope)
    assert _signature_at(data, got.signature) is None
    assert wire_signing_bytes(data, got) == envelope_signing_bytes(got)
