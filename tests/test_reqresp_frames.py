"""The buffered frame reader (net/reqresp.py FrameReader): frames split at any boundary or
coalesced into one read decode the same as one at a time, the remainder of a read stays for
the next frame, and every refusal of the one-frame reader (too-large before the body,
malformed prefix, early end) is kept, with the same reason."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.net.reqresp import (
    MAX_UVARINT_BYTES,
    READ_AHEAD_BYTES,
    FrameError,
    FrameReader,
    encode_frame,
    parse_prefix,
    read_frame,
)


class _ScheduledStream:
    """A stream whose reads return what the schedule says has arrived: ``read(n)`` gives
    ``min(n, next chunk size)`` bytes (the unread rest of a chunk stays available, as in a
    yamux buffer), b"" at the end. Counts reads and the largest request."""

    def __init__(self, data: bytes, chunks: list[int]) -> None:
        self.data, self.chunks = data, list(chunks)
        self.reads = 0
        self.taken = 0

    async def read(self, n: int) -> bytes:
        self.reads += 1
        if not self.data:
            return b""
        size = self.chunks.pop(0) if self.chunks else len(self.data)
        take = max(1, min(n, size))
        if take < size:  # the rest of this arrival is still buffered for the next read
            self.chunks.insert(0, size - take)
        out, self.data = self.data[:take], self.data[take:]
        self.taken += len(out)
        return out


async def _read_all(stream: _ScheduledStream, count: int, limit: int) -> list[bytes]:
    reader = FrameReader(stream)  # type: ignore[arg-type]  # a stand-in stream
    return [await reader.read(limit) for _ in range(count)]


@settings(max_examples=80, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=600), min_size=1, max_size=6),
    chunks=st.lists(st.integers(1, 1500), max_size=40),
)
def test_split_or_coalesced_frames_decode_identically(bodies: list[bytes], chunks: list[int]) -> None:
    data = b"".join(encode_frame(b) for b in bodies)
    stream = _ScheduledStream(data, chunks)
    got = trio.run(_read_all, stream, len(bodies), 4096)
    assert got == bodies
    # nothing read beyond the last frame: the stream is drained exactly
    assert stream.taken == len(data)


def test_coalesced_frames_take_one_read() -> None:
    bodies = [b"a" * 2400, b"", b"b" * 7]
    stream = _ScheduledStream(b"".join(encode_frame(b) for b in bodies), [10_000])
    assert trio.run(_read_all, stream, 3, 4096) == bodies
    assert stream.reads == 1


def test_one_read_per_whole_frame() -> None:
    """A frame that arrived whole is one read (the one-frame reader needs 3 for a 2-byte
    prefix: one per prefix byte, then the body)."""
    frame = encode_frame(b"h" * 2400)
    fast = _ScheduledStream(frame, [len(frame)])
    trio.run(_read_all, fast, 1, 4096)
    slow = _ScheduledStream(frame, [len(frame)])
    trio.run(read_frame, slow, 4096)
    assert (fast.reads, slow.reads) == (1, 3)


def _code(data: bytes, limit: int, chunks: list[int], *, buffered: bool) -> str:
    stream = _ScheduledStream(data, chunks)
    try:
        if buffered:
            trio.run(_read_all, stream, 1, limit)
        else:
            trio.run(read_frame, stream, limit)
    except FrameError as exc:
        return f"{exc.code}: {exc.detail}"
    return "ok"


@pytest.mark.parametrize(
    ("data", "limit", "want"),
    [
        (encode_frame(b"x" * 101), 100, "too-large"),
        (b"\xff\xff\xff\xff\xff\x01", 100, "bad-request: length prefix too long"),
        (b"\x80\x00", 100, "bad-request: non-minimal length prefix"),
        (b"\x85\x80\x00", 1 << 20, "bad-request: non-minimal length prefix"),
        (b"", 100, "bad-request: stream ended inside the length prefix"),
        (b"\x80", 100, "bad-request: stream ended inside the length prefix"),
        (encode_frame(b"y" * 50)[:30], 100, "bad-request: stream ended after 29 of 50 bytes"),
    ],
)
@pytest.mark.parametrize("chunks", [[1] * 64, [3] * 30, [100_000]])
def test_refusals_match_the_one_frame_reader(data: bytes, limit: int, want: str, chunks: list[int]) -> None:
    got = _code(data, limit, chunks, buffered=True)
    assert got.startswith(want)
    assert got == _code(data, limit, chunks, buffered=False)


def test_oversized_body_is_refused_before_it_is_read() -> None:
    """The claimed length is never allocated nor read: the reader holds at most one
    read-ahead's worth when it refuses."""
    claimed = 50 * READ_AHEAD_BYTES
    stream = _ScheduledStream(encode_frame(b"z" * claimed), [])  # everything "arrived" at once
    with pytest.raises(FrameError) as exc:
        trio.run(_read_all, stream, 1, 4096)
    assert exc.value.code == "too-large"
    assert stream.taken <= READ_AHEAD_BYTES
    assert stream.reads == 1


@given(n=st.integers(0, (1 << (7 * MAX_UVARINT_BYTES)) - 1), tail=st.binary(max_size=8))
def test_parse_prefix_inverts_encode(n: int, tail: bytes) -> None:
    prefix = _uvarint(n)
    assert parse_prefix(prefix + tail) == (n, len(prefix))
    for cut in range(len(prefix)):
        assert parse_prefix(prefix[:cut]) is None


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def test_uvarint_helper_matches_encode_frame() -> None:
    for n in (0, 1, 127, 128, 2400, 1 << 20):
        assert encode_frame(b"q" * n)[: -n or None] == _uvarint(n)
