"""``ambient-p2p bench rpc``: JSON-RPC ``getBalance`` requests/s and latency against one
validator node (its real RPC server, reading its banks while it produces and votes), as a
ratio to a bare hypercorn (trio worker) + starlette hello-world answering the same POST
with a fixed JSON body, driven by the same client in the same run.

The client is a minimal HTTP/1.1 keep-alive loop on asyncio (C connections, each sending
its next request when the previous answer arrived), so that the client's own cost stays
small next to the servers'; on a 2-core machine client and server share the CPU, which is
why only the ratio is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

HELLO_APP = """
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
BODY = b'{"jsonrpc":"2.0","result":{"context":{"apiVersion":"2.2.0","slot":1},"value":1000000000000},"id":1}'
async def hello(request):
    await request.body()
    return Response(BODY, media_type="application/json")
app = Starlette(routes=[Route("/", hello, methods=["POST"])])
cfg = Config()
cfg.bind = ["127.0.0.1:" + sys.argv[1]]
cfg.accesslog = None
cfg.errorlog = None
print("ready", flush=True)
trio.run(serve, app, cfg)
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rpc", help="JSON-RPC getBalance requests/s and p50/p99 latency on a validator node, as ratios "
                                   "to a bare hypercorn/starlette hello-world in the same run")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of load per server (default 10)")
    p.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    p.add_argument("--dir", default=None, help="keep the node's data here (default: a temporary directory)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON to FILE")
    p.set_defaults(func=cmd_bench_rpc)


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise UserError("no free pair of ports on 127.0.0.1")


async def _load(port: int, body: bytes, seconds: float, conns: int) -> tuple[int, list[float], int]:
    """(answers, latencies in ms, non-200 answers)."""
    req = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    lat: list[float] = []
    bad = 0
    stop = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal bad
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await r.readexactly(length)
            except (OSError, asyncio.IncompleteReadError):  # the server closed it: count, reconnect
                bad += 1
                w.close()
                r, w = await asyncio.open_connection("127.0.0.1", port)
                continue
            lat.append((time.perf_counter() - t) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                bad += 1
        w.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return len(lat), lat, bad


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _measure(name: str, port: int, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    n, lat, bad = asyncio.run(_load(port, body, args.seconds, args.connections))
    out = {"server": name, "requests": n, "rps": n / args.seconds, "p50_ms": _pct(lat, 0.5),
           "p99_ms": _pct(lat, 0.99), "non_200": bad}
    print(f"{name:28s} {out['rps']:9.0f} req/s  p50 {out['p50_ms']:7.2f} ms  p99 {out['p99_ms']:7.2f} ms"
          f"  ({n} requests, {bad} not 200 or closed)", flush=True)
    return out


def cmd_bench_rpc(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= 600 or not 1 <= args.connections <= 1000:
        raise UserError("--seconds must be in (0, 600] and --connections 1..1000")
    from ..devnet.localnet import Localnet
    from ..devnet.users import user_keypairs

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ambient-bench-rpc-"))
    node_port, hello_port = _free_port_pair(), _free_port_pair()
    addr = user_keypairs("localnet")[0].address
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getBalance",
                       "params": [addr, {"commitment": "processed"}]}).encode()
    print(f"bench rpc: {args.connections} keep-alive connections, {args.seconds:g} s per server, "
          f"getBalance of {addr}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    hello = subprocess.Popen([sys.executable, "-c", HELLO_APP, str(hello_port)], stdout=subprocess.PIPE, text=True,
                             env=env)
    results = []
    try:
        assert hello.stdout is not None
        hello.stdout.readline()
        with Localnet(root, 1, validator=True, rpc_base_port=node_port,
                      extra_args=["--rpc-rate-limit", "1000000000"]) as net:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the RPC answers once the node has a frozen bank
                try:
                    if asyncio.run(_load(node_port, body, 0.2, 1))[2] == 0:
                        break
                except (OSError, asyncio.IncompleteReadError):
                    pass
                time.sleep(0.5)
            time.sleep(0.5)
            results.append(_measure("hello world (hypercorn)", hello_port, body, args))
            results.append(_measure("node getBalance", node_port, body, args))
            st = dict(net.nodes[0].status()["consensus"])
            print(f"node during the run: slot {st['slot']}, confirmed {st['confirmed']}, produced {st['produced']}, "
                  f"loop stall p99 {st['loop_stall_ms']['p99']} ms", flush=True)
    finally:
        hello.terminate()
        hello.wait(timeout=10)
    ref, node = results
    ratios = {"throughput": node["rps"] / ref["rps"], "p99_latency": node["p99_ms"] / ref["p99_ms"]}
    print(f"node / hello world: throughput {ratios['throughput']:.2f}x, "
          f"p99 latency {ratios['p99_latency']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": args.seconds, "connections": args.connections,
                                               "servers": results, "ratios": ratios,
                                               "node": {k: st[k] for k in ("slot", "confirmed", "produced")},
                                               "loop_stall_ms": st["loop_stall_ms"]}, indent=1) + "\n")
    return 0
