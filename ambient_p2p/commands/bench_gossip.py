"""`ambient-p2p bench gossip`: gossip throughput/latency/CPU on loopback node processes,
with a raw loopback-socket reference measured in the same run (see net/bench.py).

Added to the ``bench`` group by :mod:`ambient_p2p.commands.bench` (this module has no
``register`` of its own)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError


def add_gossip_parser(bsub: Any) -> None:
    g = bsub.add_parser("gossip", help="gossip msgs/s, MB/s, latency, loss, CPU vs a raw socket")
    g.add_argument("--nodes", default="2,6", help="comma-separated network sizes (default 2,6)")
    g.add_argument("--count", type=int, default=1000, help="messages published by node 0 (default 1000)")
    g.add_argument("--size", type=int, default=1232, help="payload bytes per message (default 1232, one shred)")
    g.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish rate limit in msgs/s (default: as fast as back-pressure allows)",
    )
    g.add_argument("--json", action="store_true", help="print only the JSON result")
    g.set_defaults(func=cmd_gossip)


def cmd_gossip(args: argparse.Namespace) -> int:
    try:
        nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    except ValueError:
        raise UserError("--nodes takes comma-separated integers, e.g. 2,6") from None
    if not nodes or any(n < 2 or n > 16 for n in nodes):
        raise UserError("--nodes values must be between 2 and 16")
    if not 1 <= args.count <= 100_000 or not 16 <= args.size <= 60_000:
        raise UserError("--count must be 1..100000 and --size 16..60000")
    from ..net.bench import run_bench

    out = run_bench(nodes, args.count, args.size, args.rate)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    ref = out["raw_socket_reference"]
    print(f"raw loopback socket: {ref['msgs_per_s']:.0f} msgs/s, {ref['mb_per_s']} MB/s")
    js = out.get("js_libp2p_reference")
    if js:
        print(
            f"js-libp2p 2 processes: {js['msgs_per_s']} msgs/s, {js['mb_per_s']} MB/s, p50 {js['latency_p50_ms']} ms, "
            f"p99 {js['latency_p99_ms']} ms, loss {js['loss']:.2%}, CPU ms/msg {js['cpu_ms_per_msg']}"
        )
    else:
        print("js-libp2p reference: skipped (needs node and `npm ci` in interop_js/)")
    for g in out["gossip"]:
        print(
            f"gossip {g['nodes']} nodes: {g['msgs_per_s']} msgs/s, {g['mb_per_s']} MB/s, p50 {g['latency_p50_ms']} ms, "
            f"p99 {g['latency_p99_ms']} ms, loss {g['loss']:.2%}, CPU ms/msg per node {g['cpu_ms_per_msg']}, "
            f"ratio vs raw {g.get('ratio_vs_raw_socket')}, vs js-libp2p {g.get('ratio_vs_js_libp2p_2proc')}"
        )
    print(f"load average {out['load_average']} on {out['cpus']} CPUs")
    print(json.dumps(out))
    return 0
