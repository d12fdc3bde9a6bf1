"""``ambient-p2p bench shard``: sharded inference on loopback (spec/shard.md).

* Throughput: tokens/s of greedy generation through 1-, 2- and 3-stage routes of stage
  server processes (``python -m ambient_p2p.node.stage_server``, one torch thread each) on
  127.0.0.1, as a ratio to the whole model generating the same tokens in this process with
  the same thread count, alternating prompt by prompt with the route in the same run
  (target >= 0.8); the route runs as chained sessions (each stage hands its boundary to
  the next; ``--compare-relay`` also runs relay mode, the driver carrying every boundary,
  in the same run); the per-token network cost (the driver's bytes and exchanges per token,
  stage-protocol messages per token, and the extra wall time per token over the whole model); CPU per token of each side (the whole model's process; the
  route's driver plus every stage process, from ``/proc/PID/stat``) and the CPU the idle
  stage processes burned while the whole model ran (busy-waiting threads would show there).
  Both sides run with ``torch.set_num_threads(--threads)`` and the same environment (the
  stage processes inherit this one's).
* Detection table (in process, no network): each stage of a 0:10/10:20/20:30 route in turn
  perturbed by ``1 + 1e-3 N(0,1)`` relative weight noise; at every output position the blame
  rule (the first stage whose boundary is out of tolerance) against a validator's
  full-prefix recompute with honest weights; plus the honest route.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

ROUTES: dict[str, list[str]] = {"1-stage": ["0:30"], "2-stage": ["0:15", "15:30"], "3-stage": ["0:10", "10:20", "20:30"]}
PROMPTS = ["Name three rivers in Europe.", "Explain what a hash function is.", "Write a haiku about rain.",
           "What is the capital of Japan?"]
STAGE_START_TIMEOUT_S = 300.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("shard", help="sharded inference: tokens/s through 1/2/3-stage routes of stage processes vs "
                                     "the whole model in the same run, network cost per token, detection table")
    p.add_argument("--tokens", type=int, default=24, help="output tokens per prompt (default 24)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per route (default 2, at most 4)")
    p.add_argument("--routes", default="1-stage,2-stage,3-stage", help="comma-separated subset of "
                   + ", ".join(ROUTES))
    p.add_argument("--rounds", type=int, default=2, help="times every prompt runs on each side (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, here and in every stage process")
    p.add_argument("--detect-prompts", type=int, default=4, help="prompts for the detection table (0: skip)")
    p.add_argument("--detect-tokens", type=int, default=12, help="output tokens per detection prompt")
    p.add_argument("--stream-frames", type=int, default=400, help="frames per transport for the per-frame "
                   "transport cost: a new stream per frame vs one session stream (0: skip)")
    p.add_argument("--compare-relay", action="store_true", help="also drive every prompt through the same stage "
                   "processes in relay mode (the driver carries every boundary) in the same run: relay ratio and CPU "
                   "beside the chained route's")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(func=cmd_shard_bench)


@contextlib.contextmanager
def stage_processes(ranges: list[str], threads: int) -> Iterator[list[dict[str, Any]]]:
    """Start one stage server process per range; yield their ``ready`` lines; kill them
    (by pid) on exit."""
    procs = [subprocess.Popen([sys.executable, "-m", "ambient_p2p.node.stage_server", "--layers", r, "--key-seed",
                               str(i), "--threads", str(threads)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
             for i, r in enumerate(ranges)]
    try:
        infos: list[dict[str, Any]] = []
        for p in procs:
            line: list[str] = []

            def read(p: subprocess.Popen[str] = p, line: list[str] = line) -> None:
                line.append(p.stdout.readline() if p.stdout else "")

            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(STAGE_START_TIMEOUT_S)
            if not line or not line[0]:
                raise RuntimeError("a stage process did not start")
            infos.append(json.loads(line[0]) | {"pid": p.pid})
        yield infos
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``; 0.0 where
    there is no procfs)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _route_run(infos: list[dict[str, Any]], lm: Any, prompts: list[list[int]], tokens: int,
               rounds: int, relay: bool = False) -> dict[str, Any]:
    """``rounds`` x every prompt, the whole model and the route alternately (the load of a
    shared machine drifts; alternating gives both the same conditions). Per pair the time
    of each; totals and the median of the per-pair ratios. The route is driven as chained
    sessions (spec/shard.md); ``relay``: each prompt also runs in relay mode right after."""
    import statistics

    import trio

    from ..core.crypto import Keypair
    from ..model import runner
    from ..model.stages import parse_range
    from ..net.host import HostConfig, open_host
    from ..node.route import RouteDriver, StageEndpoint

    eps = [StageEndpoint(i["peer"], tuple(i["addrs"]), *parse_range(i["layers"]), 10.0) for i in infos]
    out: dict[str, Any] = {}

    async def main() -> None:
        async with open_host(Keypair.deterministic("bench-driver", 0), HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))) as h:
            d = RouteDriver(h, eps, total_layers=30, model_id=lm.model_id)
            await d.generate(b"\x00" * 32, prompts[0], 2)  # warm-up: dial, first allocations
            dr = RouteDriver(h, eps, total_layers=30, model_id=lm.model_id, chain=False)
            if relay:
                await dr.generate(b"\x01" * 32, prompts[0], 2)
            whole_s = route_s = whole_cpu = route_cpu = idle_cpu = relay_s = relay_cpu = 0.0
            pids = [int(i["pid"]) for i in infos if "pid" in i]
            n = sent = recv = rts = msgs = relay_msgs = fallbacks = 0
            same = True
            ratios = []
            relay_ratios = []
            q = 0
            for _r in range(rounds):
                for pr in prompts:
                    s0, c0 = sum(_cpu_s(p) for p in pids), time.process_time()
                    t0 = time.perf_counter()
                    ref = runner.generate(lm, pr, tokens)
                    tw = time.perf_counter() - t0
                    s1, c1 = sum(_cpu_s(p) for p in pids), time.process_time()
                    q += 1
                    t0 = time.perf_counter()
                    ans = await d.generate(q.to_bytes(32, "big"), pr, tokens)
                    tr = time.perf_counter() - t0
                    s2, c2 = sum(_cpu_s(p) for p in pids), time.process_time()
                    # CPU: the whole model's process; the route's driver and every stage process.
                    # The stages' CPU while the whole model runs is what idle stage processes burn
                    # (spin-waiting threads would show here)
                    whole_cpu += c1 - c0
                    route_cpu += (c2 - c1) + (s2 - s1)
                    idle_cpu += s1 - s0
                    same = same and ans.output == ref.output
                    fallbacks += not ans.chained
                    whole_s += tw
                    route_s += tr
                    n += len(ans.output)
                    sent += ans.bytes_sent
                    recv += ans.bytes_received
                    rts += ans.round_trips
                    msgs += ans.messages
                    ratios.append(tw / tr)
                    if relay:
                        q += 1
                        t0 = time.perf_counter()
                        rel = await dr.generate(q.to_bytes(32, "big"), pr, tokens)
                        trr = time.perf_counter() - t0
                        s3, c3 = sum(_cpu_s(p) for p in pids), time.process_time()
                        relay_cpu += (c3 - c2) + (s3 - s2)
                        relay_s += trr
                        relay_msgs += rel.messages
                        same = same and rel.output == ref.output
                        relay_ratios.append(tw / trr)
            out.update(whole_s=whole_s, route_s=route_s, whole_cpu_s=whole_cpu, route_cpu_s=route_cpu,
                       idle_stage_cpu_s=idle_cpu, tokens=n, bytes_sent=sent, bytes_received=recv,
                       round_trips=rts, messages=msgs, fallbacks=fallbacks, same=same,
                       median_ratio=statistics.median(ratios), ratios=[round(r, 3) for r in ratios])
            if relay:
                out.update(relay_s=relay_s, relay_cpu_s=relay_cpu, relay_messages=relay_msgs,
                           relay_ratios=[round(r, 3) for r in relay_ratios])

    trio.run(main)
    return out


def _stream_cost(frames: int, hidden: int) -> dict[str, Any]:
    """Per-frame cost of the transport alone, one process, loopback: a middle stage of a
    3-layer random model with SmolLM2's hidden size (``hidden``: the same 4 x H bytes per
    frame, little compute) served on one libp2p host, driven from another; ``frames``
    decode frames with a new request/response stream each (``/ambient/stage-forward/1``,
    before) and on one session stream (``/ambient/stage-stream/1``, now), alternating in
    blocks of 25 so both see the same load."""
    import trio

    from ..core import pol
    from ..core.crypto import Keypair
    from ..model import runner, stages
    from ..net.host import HostConfig, full_addrs, open_host, parse_peer_multiaddr
    from ..net.messages import StageForwardRequest, StageOpenRequest
    from ..net.reqresp import STAGE_FORWARD, STAGE_OPEN, STAGE_STREAM, ReqRespServer, SessionStream, request
    from ..node.stage_server import StageServer

    cfg = dict(runner.TINY_CONFIG, num_hidden_layers=3, hidden_size=hidden, num_attention_heads=9,
               num_key_value_heads=3, intermediate_size=2 * hidden)
    lm = runner.random_model(0, config=cfg)
    srv = StageServer(stages.stage_of(lm, 1, 2), Keypair.deterministic("bench-stage", 0))
    row = bytes(4 * hidden)
    out: dict[str, Any] = {}
    block = 25

    async def main() -> None:
        local = HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))
        async with open_host(srv.kp, local) as sh, open_host(Keypair.deterministic("bench-driver", 1), local) as dh:
            from libp2p.peer.id import ID

            ReqRespServer(sh, srv.handlers())
            await dh.connect(parse_peer_multiaddr(full_addrs(sh)[0]))
            peer = ID.from_base58(sh.get_id().to_base58())
            qs = {"per-request": b"\x01" * 32, "session-stream": b"\x02" * 32}
            for q in qs.values():
                await request(dh, peer, STAGE_OPEN, StageOpenRequest(
                    nonce=1, query=q, model_id=lm.model_id, start=1, end=2, prompt_len=1, max_positions=frames + 2,
                    temp_milli=0, sample_seed=bytes(32), prompt_hash=pol.tokens_hash([1])))
            ss = SessionStream(dh, peer, STAGE_STREAM)
            spent = dict.fromkeys(qs, 0.0)
            pos = dict.fromkeys(qs, 0)
            nonce = 10
            while pos["per-request"] < frames:
                for mode, q in qs.items():
                    t0 = time.perf_counter()
                    for _ in range(min(block, frames - pos[mode])):
                        nonce += 1
                        req = StageForwardRequest(nonce=nonce, query=q, pos=pos[mode], rows=1, hidden=row)
                        if mode == "per-request":
                            await request(dh, peer, STAGE_FORWARD, req, timeout=30)
                        else:
                            await ss.call(req, 30)
                        pos[mode] += 1
                    spent[mode] += time.perf_counter() - t0
            await ss.aclose()
            out.update({f"{m}_ms_per_frame": round(spent[m] / frames * 1000, 3) for m in qs})
            out["compute_ms_per_frame"] = round(srv.stats.compute_s / (2 * frames) * 1000, 3)
            out["ratio"] = round(spent["session-stream"] / spent["per-request"], 3)

    trio.run(main)
    return out


def _detection(lm: Any, prompts: list[list[int]], tokens: int) -> dict[str, Any]:
    """Blame at every position, each stage perturbed in turn, and the honest route."""
    import torch

    from ..core import pol
    from ..core import shard as sh
    from ..model import stages

    bounds = [(0, 10), (10, 20), (20, 30)]
    table: dict[str, Any] = {}
    for bad in (None, 0, 1, 2):
        views = [stages.stage_of(lm, a, b) for a, b in bounds]
        if bad is not None:
            import copy

            v = views[bad]
            v.module = copy.deepcopy(v.module)
            stages.perturb_weights(v, 1e-3, seed=100 + bad)
        honest = [stages.stage_of(lm, a, b) for a, b in bounds]
        counts = {"nobody": 0, "stage 0": 0, "stage 1": 0, "stage 2": 0}
        for pr in prompts:
            caches = [v.new_cache() for v in views]
            x_in: torch.Tensor = torch.tensor([pr])
            pos, out = 0, []
            rows: list[list[Any]] = [[] for _ in views]
            for _ in range(tokens):
                h = x_in
                for k, (v, c) in enumerate(zip(views, caches, strict=True)):
                    res = v.step(h, pos, c)
                    h = res.hidden
                    rows[k].append(res.hidden[0, -1].float().numpy().copy())
                assert res.logits is not None
                tok = int(res.logits[0, -1].argmax())
                out.append(tok)
                pos += x_in.shape[1]
                x_in = torch.tensor([[tok]])
            rec = stages.recompute_boundaries(honest, pr, out, list(range(tokens)))
            for x in range(tokens):
                who = "nobody"
                for k in range(3):
                    dev, rms = sh.boundary_deviation(sh.quantize_row(rows[k][x]), rec[k][x].numpy())
                    if not sh.within_tolerance(dev, rms, pol.Tier.FP32):
                        who = f"stage {k}"
                        break
                counts[who] += 1
        table["honest" if bad is None else f"stage {bad} perturbed 1e-3"] = counts
    return table


def cmd_shard_bench(a: Any) -> int:
    routes = [r.strip() for r in a.routes.split(",") if r.strip()]
    bad = [r for r in routes if r not in ROUTES]
    if (bad or not 1 <= a.prompts <= len(PROMPTS) or min(a.tokens, a.threads, a.rounds) < 1 or a.detect_prompts < 0
            or not 0 <= a.stream_frames <= 4000):
        print(f"error: routes must be among {', '.join(ROUTES)}; --prompts 1..{len(PROMPTS)}; --tokens, --threads >= 1; "
              "--stream-frames 0..4000",
              file=sys.stderr)
        return 2
    import statistics

    import torch

    from ..model import runner

    torch.set_num_threads(a.threads)
    lm = runner.load_model()
    prompts = [lm.encode_prompt(t) for t in PROMPTS[: a.prompts]]
    runner.generate(lm, prompts[0], 2, stop_at_eos=False)  # warm-up

    result: dict[str, Any] = {"model": lm.name, "threads": a.threads, "tokens_per_prompt": a.tokens,
                              "prompts": a.prompts, "rounds": a.rounds, "load_average": list(os.getloadavg()),
                              "routes": {}}
    for name in routes:
        with stage_processes(ROUTES[name], a.threads) as infos:
            r = _route_run(infos, lm, prompts, a.tokens, a.rounds, a.compare_relay)
        n = r["tokens"]
        row = {"stages": ROUTES[name], "whole_tokens_per_s": round(n / r["whole_s"], 2),
               "route_tokens_per_s": round(n / r["route_s"], 2), "ratio": round(r["whole_s"] / r["route_s"], 3),
               "median_pair_ratio": round(r["median_ratio"], 3), "pair_ratios": r["ratios"], "same_tokens": r["same"],
               "bytes_per_token": round((r["bytes_sent"] + r["bytes_received"]) / n),
               "round_trips_per_token": round(r["round_trips"] / n, 2),
               "messages_per_token": round(r["messages"] / n, 2), "relay_fallbacks": r["fallbacks"],
               "extra_ms_per_token": round((r["route_s"] - r["whole_s"]) / n * 1000, 2),
               "whole_cpu_ms_per_token": round(r["whole_cpu_s"] / n * 1000, 2),
               "route_cpu_ms_per_token": round(r["route_cpu_s"] / n * 1000, 2),
               "cpu_ratio": round(r["whole_cpu_s"] / max(1e-9, r["route_cpu_s"]), 3),
               "idle_stage_cpu_s": round(r["idle_stage_cpu_s"], 2),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
        if a.compare_relay:
            row["relay"] = {"tokens_per_s": round(n / r["relay_s"], 2), "ratio": round(r["whole_s"] / r["relay_s"], 3),
                            "median_pair_ratio": round(statistics.median(r["relay_ratios"]), 3),
                            "cpu_ms_per_token": round(r["relay_cpu_s"] / n * 1000, 2),
                            "cpu_ratio": round(r["whole_cpu_s"] / max(1e-9, r["relay_cpu_s"]), 3),
                            "messages_per_token": round(r["relay_messages"] / n, 2)}
        result["routes"][name] = row
        print(f"{name:8s} route {row['route_tokens_per_s']:6.2f} tok/s  whole {row['whole_tokens_per_s']:6.2f} tok/s  "
              f"ratio {row['ratio']:.3f} (median pair {row['median_pair_ratio']:.3f})  same tokens {row['same_tokens']}  "
              f"{row['bytes_per_token']} B/token  {row['round_trips_per_token']} round trips/token  "
              f"+{row['extra_ms_per_token']} ms/token  CPU/token route {row['route_cpu_ms_per_token']} ms vs whole "
              f"{row['whole_cpu_ms_per_token']} ms (ratio {row['cpu_ratio']:.3f}; idle stages burned "
              f"{row['idle_stage_cpu_s']} s)  {row['messages_per_token']} messages/token  load "
              f"{row['load_average'][0]}", flush=True)
        if a.compare_relay:
            rl = row["relay"]
            print(f"{'':8s} relay {rl['tokens_per_s']:6.2f} tok/s  ratio {rl['ratio']:.3f} (median pair "
                  f"{rl['median_pair_ratio']:.3f})  CPU/token {rl['cpu_ms_per_token']} ms (ratio {rl['cpu_ratio']:.3f})"
                  f"  {rl['messages_per_token']} messages/token", flush=True)
    if a.stream_frames:
        result["transport"] = tc = _stream_cost(a.stream_frames, lm.model.config.hidden_size)
        print(f"transport (one 4 x {lm.model.config.hidden_size} B frame, loopback, in process): new stream per frame "
              f"{tc['per-request_ms_per_frame']} ms, session stream {tc['session-stream_ms_per_frame']} ms "
              f"(ratio {tc['ratio']}; stage compute {tc['compute_ms_per_frame']} ms of each)", flush=True)
    if a.detect_prompts:
        dprompts = [lm.encode_prompt(t) for t in (PROMPTS * 4)[: a.detect_prompts]]
        result["detection"] = _detection(lm, dprompts, a.detect_tokens)
        print("detection (positions blamed per route; blame rule of spec/shard.md, fp32 tier):")
        for k, v in result["detection"].items():
            print(f"  {k:28s} " + "  ".join(f"{w}: {c}" for w, c in v.items()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
