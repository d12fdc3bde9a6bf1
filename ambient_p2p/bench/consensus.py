"""``ambient-p2p bench consensus``: consensus on a validator localnet (N processes on
127.0.0.1), measured against the slot clock it runs on (issue 11's 400 ms acceptance).

Procedure: start the localnet (devnet/localnet.py, genesis from devnet/genesis.py with
``--slot-ms``/``--ticks-per-slot``/``--hashes-per-tick``), wait until node 0 has finalized
a slot, then for ``--seconds`` submit ``--tps`` transfers per second between the localnet
test users to every node (so whichever node leads includes them at once), wait 10 more
slots, and compare the nodes' status before and after.

Figures:

* confirmation latency p50/p95: each leader measures, in the node, from its receipt of a
  transaction to the slot that includes it being confirmed on its best fork
  (``consensus.confirm_latency_ms``); per leader, and the worst leader's value;
* finalized slots per clock slot: node 0's finalized (rooted) slot count delta over the
  clock slots that passed (the reference: 1.0 means every clock slot was finalized);
  produced slots per clock slot likewise (all leaders);
* forks / skipped slots: clock slots in node 0's finalized range that are not on the
  rooted chain (skipped), produced slots that were not finalized (forked off or still
  pending), and the dead / duplicate / dumped counters of every node;
* event-loop stall: the nodes' own ``loop_stall_ms`` when their status reports it (else
  "n/a"), and the control-socket ``status`` round trip as this process sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

#: How long the localnet may take to finalize its first slot before measuring starts.
WARMUP_TIMEOUT_S = 180.0
#: Slots waited after the last transfer so its confirmation is counted.
DRAIN_SLOTS = 10
#: Seconds between status samples of every node during the window.
SAMPLE_INTERVAL_S = 2.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("consensus", help="validator localnet: confirmation latency, finalized slots per clock slot, "
                                         "forks/skipped slots, event-loop stall")
    p.add_argument("--nodes", type=int, default=4, help="validator processes (default 4)")
    p.add_argument("--slot-ms", type=int, default=400, help="slot duration in ms (default 400, mainnet's)")
    p.add_argument("--ticks-per-slot", type=int, default=None, help="PoH ticks per slot (default: the localnet's)")
    p.add_argument("--hashes-per-tick", type=int, default=None, help="PoH hashes per tick (default: the localnet's)")
    p.add_argument("--seconds", type=float, default=60.0, help="measurement window in seconds (default 60)")
    p.add_argument("--tps", type=float, default=4.0, help="transfers submitted per second (default 4; 0: none)")
    p.add_argument("--dir", default=None, help="keep node data and nodes.log here (default: a temporary directory, removed)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(func=cmd_consensus)


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def loop_stall(st: dict[str, Any]) -> Any:
    """The node's event-loop stall figure, wherever its status reports it (None if not)."""
    for where in (st, st.get("consensus") or {}):
        if "loop_stall_ms" in where:
            return where["loop_stall_ms"]
    return None


def _fmt_stall(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return " ".join(f"{k}={v[k]}" for k in sorted(v))
    return str(v)


class _Timed:
    """Status requests to the nodes, their round trips recorded."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.rtt_ms: list[float] = []

    def status(self, i: int) -> dict[str, Any]:
        t = time.perf_counter()
        st: dict[str, Any] = self.net.nodes[i].control({"cmd": "status"}, timeout_s=20.0)
        self.rtt_ms.append((time.perf_counter() - t) * 1000)
        return st

    def all(self) -> list[dict[str, Any]]:
        return [self.status(i) for i in range(self.net.n)]


def run_consensus_bench(
    nodes: int, slot_ms: int, seconds: float, tps: float, root: Path, poh_kw: dict[str, int], log: Any,
) -> dict[str, Any]:
    from ..devnet.genesis import localnet_poh
    from ..devnet.localnet import Localnet
    from ..devnet.users import user_keypairs
    from ..ledger.producer import transfer_tx

    poh = localnet_poh(slot_ms, **poh_kw)
    rng = random.Random(1)
    net = Localnet(root, nodes, validator=True, echo=log, genesis_kw={"poh": poh})
    with net:
        timed = _Timed(net)
        users = user_keypairs(net.chain_id)
        t_start = time.monotonic()
        while time.monotonic() - t_start < WARMUP_TIMEOUT_S:
            if timed.status(0)["consensus"]["finalized_slots"] > 0:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"node 0 finalized nothing within {WARMUP_TIMEOUT_S:.0f} s")
        warmup_s = time.monotonic() - t_start
        timed.rtt_ms.clear()
        s0 = timed.all()
        stalls: list[list[Any]] = [[loop_stall(s)] for s in s0]
        c0 = s0[0]["consensus"]
        t0 = time.monotonic()
        sent = 0
        next_sample = t0 + SAMPLE_INTERVAL_S
        while time.monotonic() - t0 < seconds:
            if tps > 0:
                c = timed.status(0)["consensus"]
                info = net.nodes[0].control({"cmd": "slot_info", "slot": c["processed"]})
                if info.get("last_blockhash"):
                    a, b = rng.sample(range(len(users)), 2)
                    tx = transfer_tx(users[a], users[b].pubkey, rng.randint(1, 1000), bytes.fromhex(info["last_blockhash"]))
                    for n in net.nodes:
                        n.control({"cmd": "submit_tx", "tx_hex": tx.hex()})
                    sent += 1
            if time.monotonic() >= next_sample:
                for i, st in enumerate(timed.all()):
                    stalls[i].append(loop_stall(st))
                next_sample += SAMPLE_INTERVAL_S
            time.sleep(1.0 / tps if tps > 0 else 0.5)
        time.sleep(DRAIN_SLOTS * slot_ms / 1000)
        s1 = timed.all()
        for i, st in enumerate(s1):
            stalls[i].append(loop_stall(st))
        dt = time.monotonic() - t0
        c1 = s1[0]["consensus"]
        roots = net.nodes[0].control({"cmd": "chain", "from": c0["finalized"] + 1}, timeout_s=30.0)["roots"]
    b0 = [s["consensus"] for s in s0]
    b1 = [s["consensus"] for s in s1]
    clock_slots = c1["slot"] - c0["slot"]
    finalized = c1["finalized_slots"] - c0["finalized_slots"]
    produced = sum(b["produced"] - a["produced"] for a, b in zip(b0, b1, strict=True))
    fin_range = c1["finalized"] - c0["finalized"]
    rooted_in_range = sum(1 for s, _h in roots if c0["finalized"] < s <= c1["finalized"])
    lat = [b.get("confirm_latency_ms") or {} for b in b1]
    with_samples = [x for x in lat if x.get("n")]

    def delta(key: str) -> list[int]:
        return [int(b.get(key, 0)) - int(a.get(key, 0)) for a, b in zip(b0, b1, strict=True)]

    return {
        "nodes": nodes,
        "slot_ms": slot_ms,
        "poh": {"hashes_per_tick": poh.hashes_per_tick, "ticks_per_slot": poh.ticks_per_slot,
                "tick_us": poh.target_tick_duration_us},
        "warmup_s": round(warmup_s, 1),
        "window_s": seconds,
        "drain_slots": DRAIN_SLOTS,
        "seconds": round(dt, 1),
        "transfers_sent": sent,
        # a leader's txs_included counts the vote transactions it included too
        "txs_included_by_leaders": sum(delta("txs_included")),
        "transfers_included_by_leaders": sum(delta("txs_included")) - sum(delta("votes_included")),
        "confirm_latency_ms": {
            "per_leader": lat,
            "p50_worst_leader": max((x["p50"] for x in with_samples), default=None),
            "p95_worst_leader": max((x["p95"] for x in with_samples), default=None),
            "samples": sum(int(x.get("n") or 0) for x in lat),
        },
        "clock_slots": clock_slots,
        "finalized_slots": finalized,
        "finalized_per_clock_slot": round(finalized / clock_slots, 3) if clock_slots > 0 else None,
        "produced_slots": produced,
        "produced_per_clock_slot": round(produced / clock_slots, 3) if clock_slots > 0 else None,
        "finalized_range": [c0["finalized"], c1["finalized"]],
        "skipped_in_finalized_range": fin_range - rooted_in_range,
        "produced_not_finalized": produced - finalized,
        "dead": delta("dead"),
        "duplicates": delta("duplicates"),
        "dumped": delta("dumped"),
        "loop_stall_ms": [[x for x in per if x is not None] or None for per in stalls],
        "status_rtt_ms": {"n": len(timed.rtt_ms), "p50": _pct(timed.rtt_ms, 0.5), "p99": _pct(timed.rtt_ms, 0.99),
                          "max": round(max(timed.rtt_ms), 1) if timed.rtt_ms else None},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def report_lines(out: dict[str, Any]) -> list[str]:
    lat = out["confirm_latency_ms"]
    per = ", ".join(f"{x.get('p50')}/{x.get('p95')} (n={x.get('n')})" for x in lat["per_leader"])
    stall = []
    for i, samples in enumerate(out["loop_stall_ms"]):
        stall.append(f"node{i} " + ("n/a" if not samples else _fmt_stall(samples[-1])))
    poh = out["poh"]
    rtt = out["status_rtt_ms"]
    return [
        f"{out['nodes']} validators, {out['slot_ms']} ms slots ({poh['ticks_per_slot']} ticks x {poh['hashes_per_tick']} "
        f"hashes), {out['seconds']} s measured ({out['window_s']:g} s of transfers + {out['drain_slots']} slots) after "
        f"{out['warmup_s']} s warm-up, {out['transfers_sent']} transfers sent, "
        f"{out.get('transfers_included_by_leaders')} included by leaders (counting forks)",
        f"confirmation latency (leader receipt -> confirmed), worst leader: p50 {lat['p50_worst_leader']} ms, "
        f"p95 {lat['p95_worst_leader']} ms; per leader p50/p95: {per}",
        f"finalized slots per clock slot: {out['finalized_per_clock_slot']} ({out['finalized_slots']} finalized / "
        f"{out['clock_slots']} clock slots; reference 1.0)",
        f"produced slots per clock slot: {out['produced_per_clock_slot']} ({out['produced_slots']} produced)",
        f"forks/skips: {out['skipped_in_finalized_range']} skipped slots in finalized range {out['finalized_range']}, "
        f"{out['produced_not_finalized']} produced but not finalized; dead {out['dead']}, duplicates "
        f"{out['duplicates']}, dumped {out['dumped']}",
        "event-loop stall (node's loop_stall_ms, last sample): " + ", ".join(stall),
        f"status round trip seen by the bench: p50 {rtt['p50']} ms, p99 {rtt['p99']} ms, max {rtt['max']} ms "
        f"(n={rtt['n']})",
        f"load average {out['load_average']} on {out['cpus']} CPUs",
    ]


def cmd_consensus(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 16:
        raise UserError("--nodes must be between 1 and 16")
    if not 40 <= args.slot_ms <= 60_000:
        raise UserError("--slot-ms must be between 40 and 60000")
    if not 1 <= args.seconds <= 3600 or not 0 <= args.tps <= 100:
        raise UserError("--seconds must be 1..3600 and --tps 0..100")
    poh_kw = {k: v for k, v in (("ticks_per_slot", args.ticks_per_slot), ("hashes_per_tick", args.hashes_per_tick))
              if v is not None}
    from ..devnet.genesis import localnet_poh

    try:
        localnet_poh(args.slot_ms, **poh_kw)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    keep = args.dir is not None
    root = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="ambient-bench-consensus-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with open(root / "nodes.log", "a", encoding="utf-8") as log:
            try:
                out = run_consensus_bench(args.nodes, args.slot_ms, args.seconds, args.tps, root, poh_kw, log)
            except (RuntimeError, TimeoutError) as exc:
                raise UserError(f"bench consensus: {exc}") from None
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    for line in report_lines(out):
        print(line)
    text = json.dumps(out, sort_keys=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(text)
    return 0
