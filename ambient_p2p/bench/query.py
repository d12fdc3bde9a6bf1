"""``ambient-p2p bench query``: a query's latency on a validator localnet with a miner,
from the ``request`` landing to the ``post_result`` landing, split into the auction windows,
the model's time and the chain's time, each as a ratio to the model's own generation time
for the same tokens measured in this process during the same run (the reference).

Procedure: start a localnet of ``--nodes`` validators whose last node mines
(devnet/localnet.py), wait until the miner is ready, then run ``--queries`` times
``ambient-p2p query --json`` (a child process) through node 0, one after another, and after
each one generate the same prompt with the same model, thread count and token count here
(``model/runner.generate``, greedy, 1 thread as the miner's default).

Figures per query and their medians:

* ``e2e_s`` = (result_slot - request_slot) x slot time: request landed to result landed
  (the slots of the banks that hold them);
* ``auction_s`` = the commit and reveal windows, (reveal_end - request_slot) x slot time;
* ``model_s`` = the miner's job (prompt fetch excluded: model and PoL commit), from its status;
* ``chain_s`` = e2e - auction - model: close landing, prompt fetch, post landing;
* ``ref_gen_s`` = this process's generation of the same tokens; ``e2e / ref`` the ratio.

With ``--load-seconds S`` it then samples node 0's consensus once a second for S seconds
without queries and S seconds while one request per ``--load-interval`` (default 2) s is
signed here and submitted through node 0 (issue 12: the model work must not slow consensus
by more than 10%): finalized slots per clock slot, and the mean lag of the confirmed and
finalized slots behind the clock slot; and how the load's requests ended.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

MINER_READY_TIMEOUT_S = 300.0
QUERY_TIMEOUT_S = 300.0
PROMPTS = ("What is the capital of France?", "Name three primary colours.", "What is 7 times 8?",
           "Why is the sky blue? One sentence.", "What do bees make?")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("query", help="query latency on a localnet with a miner: auction windows, model time, chain "
                                     "time, as ratios to the model's own generation time")
    p.add_argument("--nodes", type=int, default=2, help="validator processes, the last one mining (default 2)")
    p.add_argument("--queries", type=int, default=5, help="queries, one after another (default 5)")
    p.add_argument("--max-tokens", type=int, default=24, help="output tokens per query (default 24)")
    p.add_argument("--slot-ms", type=int, default=None, help="slot duration in ms (default: the localnet's)")
    p.add_argument("--load-seconds", type=float, default=0.0, metavar="S",
                   help="also compare consensus for S seconds without and S seconds with a query load of one "
                        "request per --load-interval seconds (default 0: skip)")
    p.add_argument("--load-interval", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between load requests (default 2)")
    p.add_argument("--dir", default=None, help="keep node data and nodes.log here (default: a temporary directory)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(func=cmd_query_bench)


def _miner(net: Any, i: int) -> dict[str, Any]:
    try:
        m: dict[str, Any] = net.nodes[i].control({"cmd": "status"}, timeout_s=10.0).get("roles", {}).get("miner", {})
        return m
    except (OSError, ValueError):
        return {}


def _consensus_window(net: Any, seconds: float, load: Any = None) -> dict[str, Any]:
    """Sample node 0 once a second for ``seconds`` (calling ``load(t)`` in between when
    given): finalized slots per clock slot, and the lag of confirmed and finalized behind
    the clock slot (a confirmation-latency figure in slots)."""
    first = net.nodes[0].status()["consensus"]
    conf_lag, fin_lag = [], []
    t0 = time.monotonic()
    next_sample = t0
    while time.monotonic() - t0 < seconds:
        if load is not None:
            load(time.monotonic() - t0)
        if time.monotonic() >= next_sample:
            c = net.nodes[0].status()["consensus"]
            conf_lag.append(c["slot"] - c["confirmed"])
            fin_lag.append(c["slot"] - c["finalized"])
            next_sample += 1.0
        time.sleep(0.05)
    last = net.nodes[0].status()["consensus"]
    clock = max(1, last["slot"] - first["slot"])
    stall = last.get("loop_stall_ms", {})
    return {"clock_slots": clock, "finalized_per_clock_slot": round((last["finalized_slots"] - first["finalized_slots"])
                                                                    / clock, 3),
            "confirmed_lag_slots_mean": round(statistics.fmean(conf_lag), 2),
            "finalized_lag_slots_mean": round(statistics.fmean(fin_lag), 2),
            "node0_loop_stall_p99_ms": stall.get("p99")}


class _Load:
    """Requests signed here and submitted through node 0 (no CLI process per request, so
    the bench itself stays light): one every ``interval`` seconds, rotating test users."""

    def __init__(self, net: Any, lm: Any, users: list[Any], interval: float, max_tokens: int) -> None:
        import base64

        from ..core.blobs import BLOB_RETENTION_SLOTS, token_blob

        self.net, self.lm, self.users, self.interval, self.max_tokens = net, lm, users, interval, max_tokens
        self.prompt = lm.encode_prompt(PROMPTS[0])
        slot = int(net.nodes[0].status()["consensus"]["slot"])
        net.nodes[0].control({"cmd": "put_blob", "data_b64": base64.b64encode(token_blob(self.prompt)).decode(),
                              "keep_until_slot": slot + 100_000 + BLOB_RETENTION_SLOTS})
        self.sent: list[bytes] = []

    def __call__(self, t: float) -> None:
        if t < len(self.sent) * self.interval:
            return
        import secrets

        from ..core import auction as au
        from ..core import auction_tx as atx
        from ..core import pol

        kp = self.users[len(self.sent) % len(self.users)]
        p = au.RequestParams(nonce=secrets.randbits(63), model_id=self.lm.model_id,
                             prompt_hash=pol.tokens_hash(self.prompt), prompt_tokens=len(self.prompt),
                             max_output_tokens=self.max_tokens, max_price_per_token=100, temp_milli=0,
                             sample_seed=pol.ZERO_HASH, deadline_slots=75)
        bh = bytes.fromhex(self.net.nodes[0].control({"cmd": "recent_blockhash"})["blockhash"])
        self.net.nodes[0].control({"cmd": "submit_tx", "tx_hex": atx.request_transaction(kp, p, bh).hex()})
        self.sent.append(au.query_address(kp.pubkey, p.nonce))

    def outcome(self) -> dict[str, int]:
        from ..core.crypto import encode_address

        out: dict[str, int] = {}
        for qid in self.sent:
            q = self.net.nodes[0].control({"cmd": "auction_query", "query": encode_address(qid)})["query"]
            k = "not-landed" if q is None else q["status"]
            out[k] = out.get(k, 0) + 1
        return out


def run_query_bench(root: Path, nodes: int, queries: int, max_tokens: int, slot_ms: int | None,
                    load_s: float = 0.0, load_interval_s: float = 2.0) -> dict[str, Any]:
    import torch

    from ..core.crypto import write_keypair_file
    from ..devnet.genesis import localnet_poh
    from ..devnet.localnet import Localnet
    from ..devnet.users import user_keypairs
    from ..model import runner
    from ..node.miner import DEFAULT_MODEL_THREADS

    kw: dict[str, Any] = {"poh": localnet_poh(slot_ms)} if slot_ms else {}
    rows: list[dict[str, Any]] = []
    with Localnet(root, nodes, validator=True, genesis_kw=kw, node_args={nodes - 1: ["--miner"]}) as net:
        key = root / "user0.json"
        write_keypair_file(key, user_keypairs(net.chain_id)[0])
        deadline = time.monotonic() + MINER_READY_TIMEOUT_S
        while _miner(net, nodes - 1).get("state") != "mining":
            if time.monotonic() > deadline:
                raise UserError(f"the miner was not ready after {MINER_READY_TIMEOUT_S:g} s")
            time.sleep(1.0)
        slot_s = float(net.nodes[0].status()["consensus"]["slot_ms"]) / 1000
        torch.set_num_threads(DEFAULT_MODEL_THREADS)
        lm = runner.load_model("default")
        for n in range(queries):
            prompt = PROMPTS[n % len(PROMPTS)]
            r = subprocess.run([sys.executable, "-m", "ambient_p2p", "query", prompt, "--max-tokens", str(max_tokens),
                                "--node", str(net.nodes[0].data_dir), "--keypair", str(key), "--json"],
                               capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
            if r.returncode != 0:
                raise UserError(f"query {n} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
            rec = json.loads(r.stdout.strip().splitlines()[-1])
            recent = {e["query"]: e for e in _miner(net, nodes - 1).get("recent", [])}
            model_s = float(recent[rec["query"]]["model_s"]) if rec["query"] in recent else float("nan")
            ids = lm.encode_prompt(prompt)
            gen = runner.generate(lm, ids, max_tokens)  # same prompt, tokens, threads, greedy
            if len(gen.output) != rec["num_tokens"]:
                print(f"note: query {n}: the reference generated {len(gen.output)} tokens, the miner "
                      f"{rec['num_tokens']}", file=sys.stderr)
            q = net.nodes[0].control({"cmd": "auction_query", "query": rec["query"]})["query"]
            e2e = (rec["result_slot"] - rec["request_slot"]) * slot_s
            auction = (q["reveal_end_slot"] - q["request_slot"]) * slot_s
            rows.append({"query": rec["query"], "tokens": rec["num_tokens"], "e2e_s": round(e2e, 2),
                         "auction_s": round(auction, 2), "model_s": round(model_s, 2),
                         "chain_s": round(e2e - auction - model_s, 2), "ref_gen_s": round(gen.total_s, 3),
                         "cli_s": rec["seconds"]})
            print(f"query {n + 1}/{queries}: {rows[-1]}", file=sys.stderr, flush=True)
        load: dict[str, Any] = {}
        if load_s > 0:
            print(f"consensus without queries for {load_s:g} s ...", file=sys.stderr, flush=True)
            load["idle"] = _consensus_window(net, load_s)
            loader = _Load(net, lm, user_keypairs(net.chain_id), load_interval_s, max_tokens)
            print(f"consensus with one request per {load_interval_s:g} s for {load_s:g} s ...", file=sys.stderr,
                  flush=True)
            load["loaded"] = _consensus_window(net, load_s, loader)
            time.sleep(40 * slot_s)  # let the last auctions close before counting outcomes
            load["requests"] = len(loader.sent)
            load["outcomes"] = loader.outcome()
            load["miner"] = {k: v for k, v in _miner(net, nodes - 1).items()
                             if k in ("auctions_entered", "auctions_won", "queries_served", "not_bid", "expired")}
    med = {k: statistics.median(r[k] for r in rows) for k in ("e2e_s", "auction_s", "model_s", "chain_s",
                                                              "ref_gen_s", "cli_s", "tokens")}
    ref = med["ref_gen_s"]
    return {"nodes": nodes, "queries": queries, "max_tokens": max_tokens, "slot_ms": slot_s * 1000, "rows": rows,
            "load": load,
            "median": med, "ratio_to_ref": {k: round(med[k] / ref, 1) for k in ("e2e_s", "auction_s", "model_s",
                                                                                   "chain_s")}}


def cmd_query_bench(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 16:
        raise UserError("--nodes must be 1..16")
    if not 1 <= args.queries <= 1000:
        raise UserError("--queries must be 1..1000")
    if not 1 <= args.max_tokens <= 4096:
        raise UserError("--max-tokens must be 1..4096")
    if args.slot_ms is not None and not 40 <= args.slot_ms <= 60_000:
        raise UserError("--slot-ms must be 40..60000")
    if not 0 <= args.load_seconds <= 3600 or not 0.1 <= args.load_interval <= 600:
        raise UserError("--load-seconds must be 0..3600 and --load-interval 0.1..600")
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ambient-bench-query-"))
    try:
        res = run_query_bench(root, args.nodes, args.queries, args.max_tokens, args.slot_ms, args.load_seconds,
                              args.load_interval)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    m, r = res["median"], res["ratio_to_ref"]
    print(f"bench query: {res['queries']} queries of {m['tokens']:g} tokens (median), {res['nodes']} nodes, "
          f"{res['slot_ms']:g} ms slots")
    print(f"  reference: the model's own generation of the same tokens here: {m['ref_gen_s']:.2f} s")
    print(f"  request landed -> result landed: {m['e2e_s']:.1f} s = {r['e2e_s']}x the reference")
    print(f"    auction windows (commit + reveal): {m['auction_s']:.1f} s = {r['auction_s']}x")
    print(f"    model (the miner's job):           {m['model_s']:.2f} s = {r['model_s']}x")
    print(f"    chain (close, fetch, post):        {m['chain_s']:.1f} s = {r['chain_s']}x")
    print(f"  the query command's wall time: {m['cli_s']:.1f} s (tokenize, submit, landing, answer fetch)")
    ld = res["load"]
    if ld:
        a, b = ld["idle"], ld["loaded"]
        print(f"  consensus, node 0, {args.load_seconds:g} s each: without queries -> with one request per "
              f"{args.load_interval:g} s ({ld['requests']} requests: {ld['outcomes']})")
        for k in ("finalized_per_clock_slot", "confirmed_lag_slots_mean", "finalized_lag_slots_mean",
                  "node0_loop_stall_p99_ms"):
            print(f"    {k}: {a[k]} -> {b[k]}")
        print(f"    miner: {ld['miner']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0
