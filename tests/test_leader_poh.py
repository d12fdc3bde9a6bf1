"""The leader on the real PoH clock (``--poh-clock service``, node/production.py): a
validator produces its slots through the PoH service (thread or process worker); the
slots replay on another validator to the same bank hash, no tick is published before its
due time, shreds go out during the slot, transactions received during the slot land in
it, a batch executed but not recorded in time is left out of a slot that still matches its
bank, and a produce that runs past its slot is abandoned (nothing stored, no second
version) without blocking the next slot. The leader service runs on the clock under
``trio.testing.MockClock`` with the inline worker."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from ambient_p2p.core import leader_policy
from ambient_p2p.core.codec import decode
from ambient_p2p.core.poh import Entry
from ambient_p2p.core.shred import OFFSET_SLOT
from ambient_p2p.core.slots import SlotState
from ambient_p2p.devnet.users import user_keypairs
from ambient_p2p.ledger.producer import transfer_tx
from ambient_p2p.net.messages import ShredBatch
from ambient_p2p.node import production
from ambient_p2p.node.poh_service import PohService
from ambient_p2p.node.validator import Validator
from tests.test_node import KEYS, _genesis

TICK_US = 10_000  # 8 ticks x 10 ms = 80 ms slots


class RecordingPort:
    """A NetPort that keeps what the validator publishes (with the worker clock's time)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sent: list[tuple[int, str, bytes]] = []
        self.delay_s = delay_s

    async def publish(self, topic: str, data: bytes) -> None:
        if self.delay_s:
            await trio.sleep(self.delay_s)  # a broadcast stuck on the network
        self.sent.append((time.monotonic_ns(), topic, data))

    async def request(self, peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        raise AssertionError("no requests expected")

    def peers(self) -> list[Any]:
        return []

    def peer_label(self, peer: Any) -> str:
        return str(peer)

    def shreds(self, slot: int | None = None) -> list[tuple[int, bytes]]:
        out = []
        for t, topic, data in self.sent:
            if topic == "shreds":
                for p in decode(data, expected=ShredBatch).shreds:
                    if slot is None or struct.unpack_from("<Q", p, OFFSET_SLOT)[0] == slot:
                        out.append((t, p))
        return out


def _pair(tmp_path: Path, tick_us: int = TICK_US):  # type: ignore[no-untyped-def]
    """A lone leader (all LStake, leads every slot) and a follower, both on a fake slot clock."""
    g = _genesis(n=1, slots_per_epoch=64, tick_duration_us=tick_us, ticks_per_slot=8)
    now = {"ms": 0}
    out = []
    for i in (0, 1):
        d = tmp_path / f"v{i}"
        d.mkdir()
        v = Validator(KEYS[i], g, d, clock_ms=lambda: now["ms"], poh_clock="service")
        v.load()
        out.append(v)
    return g, now, out[0], out[1]


def _ticks_before(entries: list[Entry], tx: bytes) -> int:
    for i, e in enumerate(entries):
        if tx in e.transactions:
            return sum(1 for x in entries[:i] if x.is_tick)
    raise AssertionError("transaction not in the slot")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_slots_on_the_poh_clock_replay_elsewhere_ticks_on_time_and_mid_slot_txs_land(
        tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leader_policy, "STREAM_INTERVAL_MS", 20)  # shred every 2 ticks: 4 runs per slot
    g, now, v, follower = _pair(tmp_path)
    users = user_keypairs(g.chain_id)
    port = RecordingPort()
    v.port = port
    tick_ns = g.poh.target_tick_duration_us * 1000
    starts: dict[int, int] = {}
    entries: dict[int, list[Entry]] = {}
    times: dict[int, list[int]] = {}
    txs: dict[int, bytes] = {}

    async def main() -> None:
        async with PohService.open(g.poh, mode=mode) as poh:
            v.poh = poh
            for slot in (1, 2, 3):
                now["ms"] = int(v.slot_start_ms(slot))  # the slot clock says: slot starts now
                starts[slot] = poh.clock_ns()
                async with trio.open_nursery() as n:
                    n.start_soon(v.produce, slot, slot - 1)
                    if slot >= 2:  # a transfer arrives 30 ms into the slot
                        await trio.sleep(0.03)
                        txs[slot] = transfer_tx(users[slot], users[0].pubkey, 10 + slot,
                                                v.banks[slot - 1].bank.last_blockhash)
                        v.add_tx(txs[slot])
                # the produce lasted the slot: its last tick is out at its due time or later
                assert poh.clock_ns() - starts[slot] >= g.poh.ticks_per_slot * tick_ns
                entries[slot] = await poh.slot_entries(slot)
                times[slot] = poh.publish_times_ns(slot)

    try:
        trio.run(main)
        assert v.stats.produced == 3 and v.stats.produce_abandoned == 0
        assert v.stats.txs_included == 2 and len(v.mempool) == 0
        for slot in (1, 2, 3):
            es, ts = entries[slot], times[slot]
            k = 0
            for e, t in zip(es, ts, strict=True):
                if e.is_tick:
                    k += 1
                    assert t >= starts[slot] + k * tick_ns, f"slot {slot} tick {k} published early"
            assert k == g.poh.ticks_per_slot
            assert v.banks[slot].last_entry_hash == es[-1].hash
            # streamed: several publications, the first well before the slot's last tick
            sh = port.shreds(slot)
            assert len({t for t, _p in sh}) >= 2 and sh[0][0] < ts[-1]
        for slot in (2, 3):  # received mid-slot, recorded after the ticks already out
            assert _ticks_before(entries[slot], txs[slot]) >= 1
            assert v.banks[slot].transactions == 1
        # the follower replays what was gossiped to the leader's bank hashes
        trio.run(follower.ingest_shreds, [p for _t, p in port.shreds()])
        for slot in (1, 2, 3):
            assert follower.banks[slot].bank.bank_hash == v.banks[slot].bank.bank_hash
        assert follower.banks[3].transactions == 1 and follower.stats.dead == 0
    finally:
        v.close()
        follower.close()


def test_a_batch_executed_too_late_for_the_slot_is_left_out_and_the_bank_still_matches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our Bank commits on execute: a batch whose execution ends after the slot's last tick
    cannot be recorded. The leader leaves it out, recomputes the bank from the entries
    (the slot replays to the same hash elsewhere) and keeps the transaction for its next
    slot."""
    g, now, v, follower = _pair(tmp_path, tick_us=20_000)  # 160 ms slots
    users = user_keypairs(g.chain_id)
    port = RecordingPort()
    v.port = port
    real = production.select_transactions
    slow = {"until": 0.0}

    def select_slowly(bank, txs, votes, **kw):  # type: ignore[no-untyped-def]
        out = real(bank, txs, votes, **kw)
        if txs and time.monotonic() < slow["until"]:
            time.sleep(slow["until"] - time.monotonic())  # e.g. the GIL went elsewhere
        return out

    monkeypatch.setattr(production, "select_transactions", select_slowly)
    tx = transfer_tx(users[1], users[2].pubkey, 77, v.banks[0].bank.last_blockhash)

    async def main() -> None:
        async with PohService.open(g.poh, mode="thread") as poh:
            v.poh = poh
            now["ms"] = int(v.slot_start_ms(1))
            slow["until"] = time.monotonic() + 0.18  # past the end of slot 1 (160 ms)
            v.add_tx(tx)
            await v.produce(1, 0)
            assert v.stats.produced == 1 and v.banks[1].transactions == 0
            assert v.mempool.received_ms(tx) is not None  # kept for the next slot
            now["ms"] = int(v.slot_start_ms(2))
            await v.produce(2, 1)

    try:
        trio.run(main)
        assert v.stats.produced == 2 and v.banks[2].transactions == 1 and len(v.mempool) == 0
        trio.run(follower.ingest_shreds, [p for _t, p in port.shreds()])
        for slot in (1, 2):
            assert follower.banks[slot].bank.bank_hash == v.banks[slot].bank.bank_hash
    finally:
        v.close()
        follower.close()


def test_a_produce_that_runs_past_its_slot_is_abandoned_without_a_second_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broadcast is stuck (each publish takes 1 s; the first goes out after 2 ticks):
    the slot cannot be complete by
    PRODUCE_OVERRUN_SLOTS after its end, so the leader abandons it: nothing stored, never
    produced again, the produce returns by that deadline (the next slot is not blocked)
    and the next slot, built on the abandoned slot's parent, replays elsewhere."""
    monkeypatch.setattr(leader_policy, "STREAM_INTERVAL_MS", 20)
    g, now, v, follower = _pair(tmp_path)
    users = user_keypairs(g.chain_id)
    slow, fast = RecordingPort(delay_s=1.0), RecordingPort()
    tx = transfer_tx(users[1], users[2].pubkey, 5, v.banks[0].bank.last_blockhash)
    took: dict[str, float] = {}

    async def main() -> None:
        async with PohService.open(g.poh, mode="thread") as poh:
            v.poh = poh
            v.port = slow
            now["ms"] = int(v.slot_start_ms(1))
            v.add_tx(tx)
            t0 = trio.current_time()
            await v.produce(1, 0)
            took["s"] = trio.current_time() - t0
            v.port = fast
            now["ms"] = int(v.slot_start_ms(2))
            await v.produce(2, 0)  # slot 1 was abandoned: build on its parent

    try:
        trio.run(main)
        deadline_s = (1 + leader_policy.PRODUCE_OVERRUN_SLOTS) * v.slot_ms / 1000
        assert deadline_s * 0.9 <= took["s"] < deadline_s + 0.5
        assert v.stats.produce_abandoned == 1 and v.stats.produced == 1
        assert 1 not in v.banks and v.slots.state(1) is SlotState.ABSENT and v.bs.slot_meta(1) is None
        assert v.bs.bank_hash(1) is None
        assert v.banks[2].transactions == 1  # the transaction went into the next slot
        assert v.slots.parent(2) == 0
        # the follower got the abandoned slot's first shreds (incomplete) and slot 2
        partial = [p for _t, p in slow.shreds(1)]
        trio.run(follower.ingest_shreds, partial + [p for _t, p in fast.shreds()])
        assert follower.banks[2].bank.bank_hash == v.banks[2].bank.bank_hash
        assert 1 not in follower.banks and follower.stats.duplicates == 0
        assert follower.bs.duplicate_proof(1) is None and follower.bs.duplicate_proof(2) is None
    finally:
        v.close()
        follower.close()


def test_leader_service_on_the_poh_clock_under_a_mock_clock(tmp_path: Path) -> None:
    """The leader service with the inline PoH worker on virtual time: a lone validator
    builds 12 consecutive slots, each once, each on the previous one (a build lasts its
    slot, and the next decision comes after it), every slot ending exactly at its slot's end."""
    from trio.testing import MockClock

    from ambient_p2p.node import services
    from ambient_p2p.node.clock import Clock

    g = _genesis(n=1, slots_per_epoch=64)
    d = tmp_path / "v"
    d.mkdir()
    v = Validator(KEYS[0], g, d, clock=Clock.fixed(lambda: 0), offload=False, poh_clock="service")
    v.load()
    v.clock = Clock.fixed(lambda: int(trio.current_time() * 1000))
    stats: list[Any] = []

    async def main() -> None:
        async with PohService.open(g.poh, mode="inline") as poh:
            v.poh = poh
            async with trio.open_nursery() as n:
                n.start_soon(services.leader_service, v)
                n.start_soon(v.voting.run)
                await trio.sleep(13.5 * v.slot_ms / 1000)  # slot 12 ends at 13 slot durations
                stats.extend(poh.recent_stats())
                n.cancel_scope.cancel()

    try:
        trio.run(main, clock=MockClock(autojump_threshold=0))
    finally:
        v.close()
    assert v.stats.produced == 12 and v.stats.produce_abandoned == 0
    assert sorted(v.slots.own) == list(range(1, 13))
    assert all(v.slots.parent(s) == s - 1 for s in range(1, 13))
    assert v.cons.tower.last_voted_slot == 12
    slot_ns = int(v.slot_ms * 1e6)
    assert len(stats) == 12 and all(s.late_ticks == 0 for s in stats)
    # each slot's last tick lands at its slot's end, not before (PoH is a clock) and not
    # later (a slot prepared early hashes nothing ahead of time)
    tick_ns = g.poh.target_tick_duration_us * 1000
    assert all(abs(s.finished_ns - (s.slot + 1) * slot_ns) <= tick_ns for s in stats), [
        (s.slot, s.finished_ns) for s in stats]


def test_poh_clock_option_on_run_join_and_localnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--poh-clock`` takes exactly the clocks the node knows, defaults to
    DEFAULT_POH_CLOCK, and a wrong value is a user error (exit 2, one ``error:`` line)."""
    import argparse

    from ambient_p2p.cli import build_parser, main
    from ambient_p2p.commands.join import _make_validator
    from ambient_p2p.core.codec import encode

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd in ("run", "join", "localnet"):
        opt = next(a for a in sub.choices[cmd]._actions if "--poh-clock" in a.option_strings)
        assert tuple(opt.choices) == production.POH_CLOCKS, cmd
    g = _genesis(n=1)
    (tmp_path / "g.cbor").write_bytes(encode(g))
    for flag, want in (([], production.DEFAULT_POH_CLOCK), (["--poh-clock", "instant"], "instant")):
        d = tmp_path / f"d{len(flag)}"
        args = parser.parse_args(["run", "--validator", "--genesis", str(tmp_path / "g.cbor"), "--ledger", str(d), *flag])
        d.mkdir()
        v = _make_validator(args, KEYS[0], d)
        try:
            assert v.poh_clock == want
        finally:
            v.close()
    with pytest.raises(SystemExit) as exc:
        main(["run", "--poh-clock", "sometimes"])
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
