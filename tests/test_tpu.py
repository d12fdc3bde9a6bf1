"""TPU ingress and mempool admission (spec/tpu.md): the admission rules as properties over
random sequences (hypothesis), the byte-level blockhash reader against solders, refusals
before any signature work, and ``/ambient/tpu/1`` between two real libp2p hosts with
oversized, malformed and replayed batches refused with a reason."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ambient_p2p.core.bank import parse_transaction
from ambient_p2p.core.codec import decode, encode
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.pools import Mempool, recent_blockhash_of
from ambient_p2p.core.slots import TransitionError
from ambient_p2p.devnet.users import user_keypairs
from ambient_p2p.ledger.producer import transfer_tx
from ambient_p2p.net.messages import MAX_TXS_PER_TX_BATCH, TxBatch, TxBatchAck
from ambient_p2p.net.reqresp import PROTO_TPU, PROTOCOLS, TPU, ReqRespError, ReqRespServer, encode_frame, request
from ambient_p2p.node.tpu import SigVerifier, Tpu
from ambient_p2p.node.validator import Validator
from tests.net_helpers import connect, run_trio
from tests.test_node import KEYS, _genesis


# -- the mempool's admission rules --------------------------------------------------------
@dataclasses.dataclass
class Tip:
    slot: int
    blockhashes: list[bytes]
    status_cache: dict[bytes, int]


def _raw(i: int, bh: bytes) -> bytes:
    """A wire-shaped transaction: one signature (its key ``i``), header, one key, ``bh``."""
    return b"\x01" + i.to_bytes(64, "big") + b"\x01\x00\x00" + b"\x01" + b"\x22" * 32 + bh + b"ix"


GOOD = [bytes([1, k]) * 16 for k in range(4)]
STALE = [bytes([2, k]) * 16 for k in range(2)]


class AdmissionMachine(RuleBasedStateMachine):
    """Model: admitted iff not pending, not landed, not in the tip's status cache, its
    blockhash among the tip's recent ones and the pool not full; refusals counted by
    reason; nothing is ever evicted (an admitted entry leaves only by expiry, landing or
    removal)."""

    CAP, TTL = 6, 40

    def __init__(self) -> None:
        super().__init__()
        self.m = Mempool(cap=self.CAP, ttl_ms=self.TTL, landed_memory=1000)
        self.tip = Tip(1, list(GOOD), {})
        self.now = 0
        self.pending: dict[bytes, int] = {}  # raw -> received
        self.landed: set[int] = set()
        self.refusals: collections.Counter[str] = collections.Counter()

    @rule(i=st.integers(0, 15), good=st.booleans(), k=st.integers(0, 3))
    def add(self, i: int, good: bool, k: int) -> None:
        raw = _raw(i, GOOD[k] if good else STALE[k % 2])
        key = raw[1:65]
        if any(r[1:65] == key for r in self.pending):
            want: str | None = "duplicate"
        elif i in self.landed:
            want = "already-processed"
        elif not good:  # age before status, as agave's check_transactions
            want = "blockhash-expired"
        elif key in self.tip.status_cache:
            want = "already-processed"
        elif len(self.pending) >= self.CAP:
            want = "mempool-full"
        else:
            want = None
        assert self.m.precheck(raw, self.tip) == want  # the check without side effects
        assert self.m.add(raw, self.now, self.tip) == (want is None)
        if want is None:
            self.pending[raw] = self.now
        else:
            self.refusals[want] += 1

    @rule(i=st.integers(0, 15))
    def processed_on_tip(self, i: int) -> None:
        self.tip.status_cache[i.to_bytes(64, "big")] = self.tip.slot

    @rule(i=st.integers(0, 15), k=st.integers(0, 3))
    def lands_in_a_replayed_slot(self, i: int, k: int) -> None:
        raw = _raw(i, GOOD[k])
        was = any(r[1:65] == raw[1:65] for r in self.pending)
        assert self.m.landed([raw]) == int(was)
        self.pending = {r: t for r, t in self.pending.items() if r[1:65] != raw[1:65]}
        self.landed.add(i)

    @rule(dt=st.integers(0, 25))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule()
    def take(self) -> None:
        gone = [r for r, t in self.pending.items() if self.now - t > self.TTL]
        for r in gone:
            del self.pending[r]
        self.refusals["expired"] += len(gone)
        assert self.m.take(self.now) == list(self.pending)  # arrival order, nothing evicted

    @invariant()
    def counted(self) -> None:
        assert len(self.m) == len(self.pending) <= self.CAP
        assert {k: v for k, v in self.m.dropped.items() if v} == {k: v for k, v in self.refusals.items() if v}


TestAdmissionMachine = AdmissionMachine.TestCase
TestAdmissionMachine.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)


def test_full_pool_refuses_and_keeps_what_it_holds() -> None:
    m = Mempool(cap=2)
    assert m.add(_raw(1, GOOD[0]), 0) and m.add(_raw(2, GOOD[0]), 0)
    assert not m.add(_raw(3, GOOD[0]), 0) and m.dropped["mempool-full"] == 1
    assert m.take(1) == [_raw(1, GOOD[0]), _raw(2, GOOD[0])]
    assert m.landed([_raw(1, GOOD[0])]) == 1 and m.add(_raw(3, GOOD[0]), 2)


def test_verified_flag_follows_the_entry() -> None:
    m = Mempool()
    a, b = _raw(1, GOOD[0]), _raw(2, GOOD[0])
    m.add(a, 0, verified=True)
    m.add(b, 0)
    assert m.is_verified(a) and not m.is_verified(b)
    m.landed([a])
    assert not m.is_verified(a)


@settings(max_examples=50, deadline=None)
@given(i=st.integers(0, 2**20), tail=st.binary(min_size=1, max_size=40))
def test_verified_bytes_are_remembered_exactly(i: int, tail: bytes) -> None:
    """Replay skips the signature check only for the exact bytes verified at admission: a
    copy with the same first signature and another message is not 'known verified'."""
    m = Mempool()
    raw = _raw(i, GOOD[0])
    assert m.add(raw, 0, verified=True) and m.verified_before(raw)
    m.landed([raw])  # left the pool: still remembered for replay
    assert m.verified_before(raw)
    other = raw[:65] + raw[65:-1] + tail
    assert other == raw or not m.verified_before(other)
    unverified = _raw(i + 1, GOOD[0])
    m.add(unverified, 0)
    assert not m.verified_before(unverified)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 2**40), seed=st.integers(0, 50), bh=st.binary(min_size=32, max_size=32))
def test_blockhash_reader_agrees_with_solders(n: int, seed: int, bh: bytes) -> None:
    raw = transfer_tx(Keypair.deterministic("tpu-bh", seed), Keypair.deterministic("tpu-bh", seed + 1).pubkey, n, bh)
    assert recent_blockhash_of(raw) == parse_transaction(raw, verify_signatures=False).recent_blockhash == bh


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=200))
def test_blockhash_reader_refuses_truncated_input(junk: bytes) -> None:
    reason = None
    try:
        bh = recent_blockhash_of(junk)
    except TransitionError as exc:
        reason = exc.reason
    else:
        assert len(bh) == 32
    assert reason in (None, "malformed-transaction")


# -- the TPU on a real validator --------------------------------------------------------------
def _validator(tmp_path: Path) -> Validator:
    g = _genesis(n=1)
    d = tmp_path / "v"
    d.mkdir()
    v = Validator(KEYS[0], g, d, offload=False)
    v.load()
    return v


def _forge(raw: bytes) -> bytes:
    return raw[:1] + bytes([raw[1] ^ 1]) + raw[2:]


def test_refusals_happen_before_signature_work(tmp_path: Path) -> None:
    v = _validator(tmp_path)
    try:
        users = user_keypairs(v.genesis.chain_id)
        bh = v.tip_bank().last_blockhash  # type: ignore[union-attr]
        good = [transfer_tx(users[0], users[1].pubkey, 1 + i, bh) for i in range(5)]
        stale = transfer_tx(users[0], users[1].pubkey, 99, b"\x05" * 32)
        forged = _forge(transfer_tx(users[0], users[1].pubkey, 77, bh))
        tpu = Tpu(v, SigVerifier(jobs=0))

        async def body() -> None:
            admitted, refused = await tpu.ingest([*good, good[0], stale, forged, bytes(2000), b"\x01abc"])
            assert admitted == 5 and tpu.verifier.verified == 6  # the five good ones and the forged one
            assert refused == {"duplicate": 1, "blockhash-expired": 1, "bad-signature": 1, "oversized": 1,
                               "short-transaction": 1}
            assert all(r in v.mempool and v.mempool.is_verified(r) for r in good) and forged not in v.mempool
            # the same batch again (a replay): refused before any signature work
            admitted, refused = await tpu.ingest(good)
            assert admitted == 0 and refused == {"duplicate": 5} and tpu.verifier.verified == 6
            # landed in a replayed slot: gone, and a late copy is already-processed, unverified
            v.mempool.landed(good[:2])
            admitted, refused = await tpu.ingest(good[:2])
            assert refused == {"already-processed": 2} and tpu.verifier.verified == 6

        trio.run(body)
        assert v.mempool.dropped["bad-signature"] == 1 and v.mempool.dropped["blockhash-expired"] == 1
    finally:
        v.close()


def test_full_mempool_refuses_without_verifying(tmp_path: Path) -> None:
    v = _validator(tmp_path)
    try:
        v.mempool.cap = 3
        users = user_keypairs(v.genesis.chain_id)
        bh = v.tip_bank().last_blockhash  # type: ignore[union-attr]
        txs = [transfer_tx(users[0], users[1].pubkey, 1 + i, bh) for i in range(3)]
        tpu = Tpu(v, SigVerifier(jobs=0))

        async def body() -> None:
            assert (await tpu.ingest(txs))[0] == 3
            extra = [transfer_tx(users[1], users[0].pubkey, 1 + i, bh) for i in range(4)]
            admitted, refused = await tpu.ingest(extra)
            assert admitted == 0 and refused == {"mempool-full": 4} and tpu.verifier.verified == 3
            assert v.mempool.take(v.clock.mono_ms()) == txs  # nothing evicted

        trio.run(body)
    finally:
        v.close()


def test_process_pool_verifies_like_the_inline_check() -> None:
    users = [Keypair.deterministic("tpu-pool", i) for i in range(4)]
    txs = [transfer_tx(users[i % 4], users[(i + 1) % 4].pubkey, 1 + i, b"\x09" * 32) for i in range(40)]
    txs[7] = _forge(txs[7])
    txs[33] = b"\x01" + bytes(100)
    ver = SigVerifier(jobs=2)
    ver.start()
    try:
        out = trio.run(ver.verify, txs)
    finally:
        ver.close()
    assert [i for i, r in enumerate(out) if r is not None] == [7, 33]
    assert out[7] == "bad-signature" and out[33] == "bad-transaction"


# -- /ambient/tpu/1 between two real hosts ------------------------------------------------------
def test_tpu_protocol_admits_and_refuses_with_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from libp2p.custom_types import TProtocol

    from ambient_p2p.net.host import open_host
    from ambient_p2p.net.reqresp import read_frame

    monkeypatch.setitem(PROTOCOLS, PROTO_TPU, dataclasses.replace(TPU, rate_limit=(8.0, 0.1)))
    v = _validator(tmp_path)
    users = user_keypairs(v.genesis.chain_id)
    bh = v.tip_bank().last_blockhash  # type: ignore[union-attr]
    txs = tuple(transfer_tx(users[2], users[3].pubkey, 1 + i, bh) for i in range(MAX_TXS_PER_TX_BATCH))
    tpu = Tpu(v, SigVerifier(jobs=0))

    async def body() -> None:
        async with open_host(KEYS[0]) as server, open_host(KEYS[1]) as client:
            ReqRespServer(server, {PROTO_TPU: tpu.handle_batch})
            await connect(client, server)
            sid = server.get_id()
            ack = await request(client, sid, PROTO_TPU, TxBatch(nonce=1, txs=txs))
            assert isinstance(ack, TxBatchAck) and (ack.nonce, ack.admitted, ack.reasons) == (1, 64, ())
            # replayed: every transaction refused as a duplicate, none verified again
            ack = await request(client, sid, PROTO_TPU, TxBatch(nonce=2, txs=txs))
            assert (ack.admitted, ack.reasons, ack.counts) == (0, ("duplicate",), (64,))
            assert tpu.verifier.verified == 64
            # a forged signature and an expired blockhash, reasons counted
            bad = (_forge(transfer_tx(users[0], users[3].pubkey, 5, bh)),
                   transfer_tx(users[0], users[3].pubkey, 6, b"\x01" * 32))
            ack = await request(client, sid, PROTO_TPU, TxBatch(nonce=3, txs=bad))
            assert ack.admitted == 0 and dict(zip(ack.reasons, ack.counts, strict=True)) == {
                "bad-signature": 1, "blockhash-expired": 1}

            async def raw(data: bytes) -> Any:
                s = await client.new_stream(sid, [TProtocol(PROTO_TPU)])
                await s.write(data)
                out = decode(await read_frame(s, 4096))
                await s.close()
                return out

            # oversized: refused from the length prefix, the body never read
            e = await raw(encode_frame(b"x" * 80_000))
            assert (e.code, e.nonce) == ("too-large", 0)
            # 65 transactions (over MAX_TXS_PER_TX_BATCH) do not decode
            import cbor2

            tid, ver, b = cbor2.loads(encode(TxBatch(nonce=4, txs=txs[:1])))
            b["txs"] = [txs[0]] * (MAX_TXS_PER_TX_BATCH + 1)
            e = await raw(encode_frame(cbor2.dumps([tid, ver, b], canonical=True)))
            assert e.code == "bad-request" and "too-large" in e.detail
            e = await raw(encode_frame(b"\xa0"))
            assert e.code == "bad-request"
            # the per-peer bucket (8 here) runs out: rate-limited
            codes = []
            for i in range(12):
                try:
                    await request(client, sid, PROTO_TPU, TxBatch(nonce=10 + i, txs=txs[:1]))
                    codes.append("ok")
                except ReqRespError as exc:
                    codes.append(exc.code)
            assert "rate-limited" in codes
            assert len(v.mempool) == 64  # nothing of the refused input got in

    try:
        run_trio(body, 120)
    finally:
        v.close()


def test_control_commands_submit_and_report_status(tmp_path: Path) -> None:
    """``submit_txs`` admits (no forwarder running: forwarded inline, nowhere to send on a
    one-node chain), ``tx_status`` reports pending ones as unknown, bad input is an error."""
    from ambient_p2p.node.tpu import TpuExtension

    v = _validator(tmp_path)
    try:
        users = user_keypairs(v.genesis.chain_id)
        bh = v.tip_bank().last_blockhash  # type: ignore[union-attr]
        txs = [transfer_tx(users[0], users[1].pubkey, 1 + i, bh) for i in range(3)]
        ext = TpuExtension(Tpu(v, SigVerifier(jobs=0)))

        async def body() -> None:
            r = await ext.control({"cmd": "submit_txs", "txs_hex": [t.hex() for t in txs] + [txs[0].hex()]})
            assert r == {"ok": True, "admitted": 3, "refused": {"duplicate": 1}, "queued": 3}
            bad = await ext.control({"cmd": "submit_txs", "txs_hex": ["zz"]})
            assert bad is not None and bad["ok"] is False and "hex" in bad["error"]
            st = await ext.control({"cmd": "tx_status", "sigs_hex": [t[1:65].hex() for t in txs]})
            assert st is not None and st["status"] == [None, None, None]  # pending, not processed
            assert await ext.control({"cmd": "status"}) is None  # not ours: the next part answers

        trio.run(body)
        assert ext.status()["tpu"]["admitted"] == 3 and ext.tpu.stats.forward_self == 3
    finally:
        v.close()


def test_verify_workers_share_the_cores_and_bad_counts_are_one_error_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A node starts half the cores' verify workers by default (4 localnet nodes each
    starting one per core oversubscribed a 2-core machine), at least one; ``--verify-jobs``
    outside 0..MAX_VERIFY_JOBS is one error line before anything starts."""
    from ambient_p2p.cli import main
    from ambient_p2p.node.tpu import MAX_VERIFY_JOBS, SigVerifier, default_verify_jobs

    assert [default_verify_jobs(c) for c in (1, 2, 3, 16, 1000)] == [1, 1, 1, 8, MAX_VERIFY_JOBS]
    assert SigVerifier().jobs == default_verify_jobs() and SigVerifier(0).jobs == 0
    for bad in ("-1", str(MAX_VERIFY_JOBS + 1)):
        assert main(["run", "--validator", "--verify-jobs", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --verify-jobs") and err.count("\n") == 1
