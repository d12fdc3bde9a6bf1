"""Blobs off chain, hashes on chain (spec/blobs.md): the disk store, the wire messages, the
fetch over real in-process libp2p hosts (an adversarial peer included) and the control
commands. The two-process test is tests/test_blobs_multiproc.py."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient_p2p.core.codec import DecodeError, decode, encode
from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.pol import tokens_hash
from ambient_p2p.net.host import open_host
from ambient_p2p.net.messages import MAX_BLOB_BYTES, BlobRequest, BlobResponse
from ambient_p2p.net.reqresp import PROTO_BLOB, PROTO_REPAIR, ReqRespServer
from ambient_p2p.node.blobs import (
    BLOB_FILE_HEADER_BYTES,
    BLOB_RETENTION_SLOTS,
    MAX_BLOB_TOKENS,
    BlobError,
    BlobExtension,
    BlobService,
    BlobStore,
    blob_tokens,
    token_blob,
)
from ambient_p2p.node.compose import ComposedExtension, compose
from ambient_p2p.node.port import NetNodePort
from tests.net_helpers import connect, run_trio
from tests.strategies import for_message, reject_reason

KEYS = [Keypair.deterministic("blobs-test", i) for i in range(4)]


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# -- the store --------------------------------------------------------------------------------
def test_store_round_trip_survives_reopen_and_keeps_the_later_pin(tmp_path: Path) -> None:
    s = BlobStore(tmp_path / "b")
    h = s.put(b"prompt bytes", 100)
    assert h == sha256(b"prompt bytes") and s.get(h) == b"prompt bytes" and s.has(h)
    assert s.put(b"prompt bytes", 50) == h and s.keep_until(h) == 100  # never shortened
    assert s.put(b"prompt bytes", 200) == h and s.keep_until(h) == 200  # extended
    assert len(s) == 1 and s.total_bytes == len(b"prompt bytes")
    assert s.get(sha256(b"other")) is None and not s.has(sha256(b"other"))
    s2 = BlobStore(tmp_path / "b")  # a restart reads the index back from the files
    assert s2.get(h) == b"prompt bytes" and s2.keep_until(h) == 200 and s2.total_bytes == 12
    assert _files(tmp_path / "b") == [f"{h.hex()}.blob"]  # no temp file left behind
    assert s2.pin(h, 300) and s2.keep_until(h) == 300 and not s2.pin(sha256(b"x"), 300)


def test_oversized_blob_refused_with_reason_and_nothing_written(tmp_path: Path) -> None:
    s = BlobStore(tmp_path / "b")
    with pytest.raises(BlobError) as ei:
        s.put(bytes(MAX_BLOB_BYTES + 1), 10)
    assert ei.value.reason == "too-large" and str(MAX_BLOB_BYTES) in ei.value.detail
    assert _files(tmp_path / "b") == [] and len(s) == 0
    assert s.get(s.put(bytes(MAX_BLOB_BYTES), 10)) == bytes(MAX_BLOB_BYTES)  # the limit itself fits
    for bad in (-1, 1 << 64, True):
        with pytest.raises(BlobError) as ei:
            s.put(b"x", bad)  # type: ignore[arg-type]
        assert ei.value.reason == "bad-slot"
    with pytest.raises(BlobError) as ei:
        s.get(b"short")
    assert ei.value.reason == "bad-hash"


def test_prune_deletes_exactly_the_expired_blobs(tmp_path: Path) -> None:
    s = BlobStore(tmp_path / "b")
    hs = {slot: s.put(b"blob %d" % slot, slot) for slot in (5, 10, 11, 20)}
    assert s.prune(10) == 1  # pinned "until slot 10" is still kept at slot 10
    assert not s.has(hs[5]) and all(s.has(hs[k]) for k in (10, 11, 20))
    assert s.prune(12) == 2 and [k for k in hs if s.has(hs[k])] == [20]
    assert _files(tmp_path / "b") == [f"{hs[20].hex()}.blob"] and s.total_bytes == len(b"blob 20")
    assert s.prune(12) == 0 and s.pruned == 3


def test_full_store_refuses_with_a_clear_reason_and_keeps_what_it_holds(tmp_path: Path) -> None:
    s = BlobStore(tmp_path / "b", max_bytes=100, max_blobs=3)
    a = s.put(bytes(60), 1)
    with pytest.raises(BlobError) as ei:
        s.put(b"\x01" * 41, 1)
    assert ei.value.reason == "store-full" and "limit 100" in ei.value.detail
    assert s.put(bytes(60), 9) == a  # re-pinning held bytes needs no room
    s.put(b"a", 1), s.put(b"b", 1)
    with pytest.raises(BlobError) as ei:
        s.put(b"c", 1)
    assert ei.value.reason == "store-full" and "3 blobs" in ei.value.detail
    assert len(s) == 3 and s.total_bytes == 62 and len(_files(tmp_path / "b")) == 3
    assert s.prune(2) == 2 and s.put(b"c", 1)  # room again after a prune


def test_damaged_files_are_detected_deleted_and_never_served(tmp_path: Path) -> None:
    root = tmp_path / "b"
    s = BlobStore(root)
    h = s.put(b"an answer", 10)
    g = s.put(b"another", 10)
    path = root / f"{h.hex()}.blob"
    raw = bytearray(path.read_bytes())
    raw[BLOB_FILE_HEADER_BYTES] ^= 1  # one flipped data bit
    path.write_bytes(bytes(raw))
    assert s.get(h) is None and s.corrupt == 1 and not path.exists() and not s.has(h)
    # at open: a truncated header, a name that is not a hash, a leftover temp file
    (root / f"{g.hex()}.blob").write_bytes(b"abl")
    (root / "nothex.blob").write_bytes(b"x" * 40)
    (root / "dead.1234.tmp").write_bytes(b"partial")
    s2 = BlobStore(root)
    assert len(s2) == 0 and s2.corrupt == 2 and _files(root) == []


# -- token blobs and wire messages ----------------------------------------------------------------
@given(st.lists(st.integers(0, (1 << 32) - 1), max_size=300))
def test_token_blob_hash_is_the_pol_tokens_hash(tokens: list[int]) -> None:
    blob = token_blob(tokens)
    assert sha256(blob) == tokens_hash(tokens)  # the auction's prompt_hash / output_hash is the key
    assert blob_tokens(blob) == tokens


def test_token_blob_limits_and_malformed_blobs() -> None:
    assert len(token_blob([7] * MAX_BLOB_TOKENS)) <= MAX_BLOB_BYTES
    assert MAX_BLOB_TOKENS >= 16384  # the auction's largest prompt (spec/auction.md) fits one blob
    with pytest.raises(BlobError) as ei:
        token_blob([0] * (MAX_BLOB_TOKENS + 1))
    assert ei.value.reason == "too-large"
    with pytest.raises(BlobError):
        token_blob([1 << 32])
    good = token_blob([1, 2])
    for bad in (b"", good[:-1], good + b"\x00", b"x" + good[1:], good[:-8]):
        with pytest.raises(BlobError) as ei:
            blob_tokens(bad)
        assert ei.value.reason == "bad-token-blob"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(for_message(BlobRequest), for_message(BlobResponse)))
def test_blob_messages_round_trip_canonically(msg: Any) -> None:
    data = encode(msg)
    assert decode(data) == msg and decode(data, expected=type(msg)) == msg
    assert encode(decode(data)) == data


@given(st.binary(min_size=1, max_size=64), st.integers(0, 200))
def test_blob_messages_reject_mutations(flip: bytes, at: int) -> None:
    """Any byte change of a valid message decodes to another valid message or is rejected
    with a reason, never an internal error."""
    data = bytearray(encode(BlobResponse(nonce=3, sha256=sha256(b"x"), data=b"x" * 40)))
    for i, b in enumerate(flip):
        data[(at + i) % len(data)] ^= b or 1
    reason = reject_reason(bytes(data))
    assert reason != "internal"


def test_blob_message_limits_are_enforced_by_the_decoder() -> None:
    h = sha256(b"x")
    ok = encode(BlobResponse(nonce=1, sha256=h, data=bytes(MAX_BLOB_BYTES)))
    assert decode(ok, expected=BlobResponse).data == bytes(MAX_BLOB_BYTES)
    import cbor2

    body = cbor2.loads(ok)
    body[2]["data"] = bytes(MAX_BLOB_BYTES + 1)
    assert reject_reason(cbor2.dumps(body, canonical=True)) == "too-large"
    body[2]["data"] = b"x"
    body[2]["sha256"] = bytes(31)
    assert reject_reason(cbor2.dumps(body, canonical=True)) == "wrong-length"
    with pytest.raises(DecodeError):
        decode(encode(BlobRequest(nonce=1, sha256=h)), expected=BlobResponse)
    assert BlobResponse(nonce=1, sha256=h).data is None  # "not found": no data field on the wire
    assert b"data" not in encode(BlobResponse(nonce=1, sha256=h))


# -- fetch over real libp2p hosts (in process) --------------------------------------------------
def _port(host: Any) -> NetNodePort:
    return NetNodePort(SimpleNamespace(host=host, gossip=None))  # type: ignore[arg-type]


def test_fetch_rejects_a_peer_sending_wrong_bytes_and_takes_the_honest_copy(tmp_path: Path) -> None:
    blob = token_blob(list(range(500)))
    h = sha256(blob)

    async def body() -> None:
        honest = BlobService(BlobStore(tmp_path / "honest"))
        await honest.put(blob, 50)

        async def forger(_peer: Any, req: BlobRequest) -> BlobResponse:  # right name, wrong bytes
            return BlobResponse(nonce=req.nonce, sha256=req.sha256, data=blob[:-1] + b"\x00")

        async def misnamer(_peer: Any, req: BlobRequest) -> BlobResponse:  # another blob altogether
            return BlobResponse(nonce=req.nonce, sha256=sha256(b"other"), data=b"other")

        async with open_host(KEYS[0]) as client, open_host(KEYS[1]) as bad, open_host(KEYS[2]) as good, \
                open_host(KEYS[3]) as bad2:
            ReqRespServer(bad, {PROTO_BLOB: forger})
            ReqRespServer(bad2, {PROTO_BLOB: misnamer})
            srv = ReqRespServer(good, {PROTO_BLOB: honest.handler})
            store = BlobStore(tmp_path / "client")
            svc = BlobService(store, port=_port(client), slot_now=lambda: 1000)
            await connect(client, bad)
            await connect(client, bad2)
            # only liars connected: nothing accepted, nothing stored
            assert await svc.fetch(h, timeout_s=20) is None
            assert svc.rejected == {"hash-mismatch": 1, "wrong-hash": 1} and len(store) == 0
            assert _files(tmp_path / "client") == [] and svc.fetch_failed == 1
            assert sum(svc.rejected_peers.values()) == 2
            # with an honest peer too: whatever the order, the verified copy is returned and kept
            await connect(client, good)
            assert await svc.fetch(h, timeout_s=20) == blob
            assert store.get(h) == blob and store.keep_until(h) == 1000 + BLOB_RETENTION_SLOTS
            assert svc.fetched == 1 and honest.served == 1 and srv.stats.served == {PROTO_BLOB: 1}
            assert await svc.fetch(h) == blob and svc.local_hits == 1 and honest.served == 1  # local now
            # nobody holds it: the honest peer answers "no data", a clean miss
            missing = sha256(b"nobody has this")
            assert await svc.fetch(missing, timeout_s=20, keep_until_slot=5) is None
            assert svc.request_errors.get("not-found") == 1 and honest.served_missing == 1
            assert not store.has(missing)

    run_trio(body, 120)


def test_fetch_without_peers_or_time_is_a_bounded_miss(tmp_path: Path) -> None:
    async def body() -> None:
        svc = BlobService(BlobStore(tmp_path / "b"))
        assert await svc.fetch(sha256(b"x"), timeout_s=0.5) is None
        with pytest.raises(BlobError):
            await svc.fetch(b"\x00" * 31)

    run_trio(body, 30)


# -- control commands and composition ----------------------------------------------------------
def test_control_put_and_get_blob_and_their_refusals(tmp_path: Path) -> None:
    async def body() -> None:
        svc = BlobService(BlobStore(tmp_path / "b"))
        data = os.urandom(3000)
        r = await svc.control({"cmd": "put_blob", "data_b64": base64.b64encode(data).decode(), "keep_until_slot": 9})
        assert r == {"ok": True, "sha256": sha256(data).hex(), "bytes": 3000}
        r = await svc.control({"cmd": "get_blob", "sha256": sha256(data).hex(), "timeout_s": 1})
        assert r is not None and r["ok"] and base64.b64decode(r["data_b64"]) == data
        big = base64.b64encode(bytes(MAX_BLOB_BYTES + 1)).decode()
        cases = [
            ({"cmd": "put_blob", "data_b64": big, "keep_until_slot": 1}, "too-large"),
            ({"cmd": "put_blob", "data_b64": "not base64!", "keep_until_slot": 1}, "bad-request"),
            ({"cmd": "put_blob", "data_b64": "AAAA"}, "bad-slot"),
            ({"cmd": "put_blob", "data_b64": "AAAA", "keep_until_slot": -3}, "bad-slot"),
            ({"cmd": "get_blob", "sha256": "zz"}, "bad-hash"),
            ({"cmd": "get_blob", "sha256": sha256(b"q").hex(), "timeout_s": 0}, "bad-request"),
            ({"cmd": "get_blob", "sha256": sha256(b"q").hex(), "timeout_s": 1e9}, "bad-request"),
            ({"cmd": "get_blob", "sha256": sha256(b"q").hex(), "timeout_s": 0.2}, "not-found"),
        ]
        for req, code in cases:
            out = await svc.control(req)
            assert out is not None and out["ok"] is False and out["code"] == code, (req, out)
            assert out["error"]
        assert len(svc.store) == 1  # none of the refusals stored anything
        assert await svc.control({"cmd": "status"}) is None  # not ours: the next part answers

    run_trio(body, 30)


class _Part:
    def __init__(self, name: str, protos: dict[str, Any]) -> None:
        self.name, self.protos, self.ran = name, protos, False

    def payload_checks(self) -> dict[str, Any]:
        return {}

    def shred_store(self) -> None:
        return None

    def reqresp_handlers(self) -> dict[str, Any]:
        return self.protos

    def on_delivery(self, d: Any) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {self.name: 1}

    def status_line(self) -> str:
        return self.name

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        return {"ok": True, "by": self.name} if req.get("cmd") == self.name else None

    async def run(self, node: Any) -> None:
        self.ran = True


def test_compose_chains_parts_and_refuses_a_protocol_claimed_twice(tmp_path: Path) -> None:
    svc = BlobService(BlobStore(tmp_path / "b"))
    part = _Part("consensus", {PROTO_REPAIR: object()})
    ext = compose(part, None, BlobExtension(svc))
    assert isinstance(ext, ComposedExtension)
    assert set(ext.reqresp_handlers()) == {PROTO_REPAIR, PROTO_BLOB}
    assert set(ext.status()) == {"consensus", "blobs"} and ext.status_line() == "consensus blobs=0"
    assert compose(None, part) is part and compose(None) is None

    async def body() -> None:
        assert await ext.control({"cmd": "consensus"}) == {"ok": True, "by": "consensus"}
        r = await ext.control({"cmd": "put_blob", "data_b64": "AAAA", "keep_until_slot": 1})
        assert r is not None and r["ok"]
        assert await ext.control({"cmd": "nope"}) is None

    run_trio(body, 30)
    with pytest.raises(ValueError, match="two handlers"):
        ComposedExtension(BlobExtension(svc), BlobExtension(svc)).reqresp_handlers()
