"""``ambient-p2p bench gossip``: gossip throughput on a loopback network of node processes
(the devnet localnet) vs. a raw TCP socket reference measured in the same run.

What is measured (node 0 publishes ``count`` messages of ``size`` payload bytes on the txs
topic; every other node must deliver all of them):

* delivered msgs/s and payload MB/s: count / (time from first publish to the last node's
  last delivery);
* p50/p99 latency: wallclock at delivery minus the envelope's wallclock (ms, same host
  clock), the worst node's value;
* loss: 1 - (least delivered count / count);
* CPU ms per message: each process's user+system CPU delta (from /proc) / count.

The reference moves the same frames (uvarint length + payload) between two Python
processes over a plain loopback TCP socket: the ceiling the network stack allows
before any libp2p, Noise, Yamux or gossipsub work.

``--sustained SECONDS`` (issue 17's fair comparison, spec/network.md section 7): two
processes each side, the publisher publishing as fast as back-pressure allows for SECONDS
(>= 10) at the node's own shred-batch size (32 shred packets, 39,424 B, unless ``--size``),
rate taken at the *receiver*: messages delivered / (last delivery - first delivery). The
js-libp2p pair (interop_js/bench.mjs) is configured like our nodes: StrictSign, message id
sha256(data), and (``alike``) the same per-message work: each payload in a GossipEnvelope
signed with ed25519 by the publisher, and a topic validator at the receiver that decodes it
and checks topic, origin, freshness, signature and replay before delivering. The plain
js-libp2p pair (raw payload, no validator) is measured in the same run too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

_RAW_RECEIVER = r"""
import socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
count, size = int(sys.argv[1]), int(sys.argv[2])
buf = bytearray(); got = 0; t0 = None
while got < count:
    chunk = conn.recv(1 << 20)
    if not chunk: break
    if t0 is None: t0 = time.perf_counter()
    buf += chunk
    while True:
        n = shift = i = 0
        while i < len(buf):
            b = buf[i]; n |= (b & 0x7F) << shift; shift += 7; i += 1
            if not b & 0x80: break
        else:
            break
        if len(buf) < i + n: break
        del buf[: i + n]; got += 1
print(got, time.process_time(), flush=True)
"""


def _cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def raw_socket_reference(count: int, size: int) -> dict[str, Any]:
    """Send ``count`` frames of ``size`` bytes to a receiver process over loopback TCP."""
    import socket

    from ..net.reqresp import encode_frame

    proc = subprocess.Popen(
        [sys.executable, "-c", _RAW_RECEIVER, str(count), str(size)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        frame = encode_frame(os.urandom(size))
        c0 = time.process_time()
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as s:
            for _ in range(count):
                s.sendall(frame)
            got_line = proc.stdout.readline().split()
        wall = time.perf_counter() - t0
        got, rcpu = int(got_line[0]), float(got_line[1])
        return {
            "delivered": got,
            "seconds": round(wall, 3),
            "msgs_per_s": round(got / wall, 1),
            "mb_per_s": round(got * size / wall / 1e6, 2),
            "cpu_ms_per_msg_sender": round((time.process_time() - c0) / count * 1000, 4),
            "cpu_ms_per_msg_receiver": round(rcpu / count * 1000, 4),
        }
    finally:
        proc.kill()
        proc.wait(5)


def gossip_bench(
    nodes: int, count: int, size: int, rate: float = 0.0, root: Path | None = None, timeout_s: float | None = None
) -> dict[str, Any]:
    """Run the gossip workload on a fresh ``nodes``-process localnet (in ``root``, or in a
    temporary directory removed afterwards)."""
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="ambient-bench-gossip-"))
        try:
            return gossip_bench(nodes, count, size, rate, tmp, timeout_s)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    from ..devnet.localnet import Localnet

    timeout_s = timeout_s or 60.0 + count / 20.0
    with Localnet(root, nodes) as net:
        want_peers = min(nodes - 1, 4)
        if not net.wait_for(lambda: all(s["peers"] >= want_peers for s in net.statuses()), 60):
            raise RuntimeError("bench network did not connect")
        time.sleep(2.0)  # let meshes settle (a few heartbeats)
        cpu0 = [_cpu_s(n.proc.pid) for n in net.nodes]
        t0 = time.perf_counter()
        pub = net.nodes[0].control(
            {"cmd": "publish_many", "kind": "txs", "count": count, "size": size, "rate": rate}, timeout_s=timeout_s
        )
        publish_s = time.perf_counter() - t0

        def counts() -> list[int]:
            return [int(s["gossip"]["delivered"].get("txs", 0)) for s in net.statuses()[1:]]

        last = counts()
        t_last = time.perf_counter()
        deadline = t0 + timeout_s
        while time.perf_counter() < deadline and min(last) < count:
            time.sleep(0.1)
            now = counts()
            if now != last:
                last, t_last = now, time.perf_counter()
            elif time.perf_counter() - t_last > 10.0:
                break  # nothing moved for 10 s: the rest is lost
        wall = t_last - t0
        cpu = [_cpu_s(n.proc.pid) - c for n, c in zip(net.nodes, cpu0, strict=True)]
        st = net.statuses()
        p50 = max((s["latency"].get("txs", {}).get("p50_ms") or 0) for s in st[1:])
        p99 = max((s["latency"].get("txs", {}).get("p99_ms") or 0) for s in st[1:])
        drops = sum(s["gossip"]["outbound_rpc_dropped"] + sum(s["gossip"]["delivery_dropped"].values()) for s in st)
        delivered = min(last)
        return {
            "nodes": nodes,
            "count": count,
            "size": size,
            "rate_limit": rate or None,
            "publish_seconds": round(publish_s, 3),
            "seconds": round(wall, 3),
            "delivered_min": delivered,
            "msgs_per_s": round(delivered / wall, 1) if wall > 0 else None,
            "mb_per_s": round(delivered * size / wall / 1e6, 3) if wall > 0 else None,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "loss": round(1 - delivered / count, 4),
            "cpu_ms_per_msg": [round(c / count * 1000, 2) for c in cpu],
            "drops_counted": drops,
            "publisher": pub,
        }


JS_DIR = Path(__file__).resolve().parents[2] / "interop_js"


def _js_command() -> list[str] | None:
    """The js-libp2p bench script's command line, or None when node or
    interop_js/node_modules (``npm ci`` there) is missing."""
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "libp2p").exists():
        return None
    return ["node", "--import", str(JS_DIR / "polyfill.mjs"), str(JS_DIR / "bench.mjs")]


def _reap(*procs: subprocess.Popen[str] | None) -> None:
    """Kill whichever of the bench's own child processes still run (by their handles)."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)


def js_reference(count: int, size: int, timeout_s: float = 120.0) -> dict[str, Any] | None:
    """The same workload between two js-libp2p gossipsub processes (interop_js/bench.mjs),
    or None when node or interop_js/node_modules (``npm ci`` there) is missing."""
    base = _js_command()
    if base is None:
        return None
    recv = subprocess.Popen([*base, "recv", str(count), str(int(timeout_s))], stdout=subprocess.PIPE, text=True)
    send = None
    try:
        assert recv.stdout is not None
        addr = json.loads(recv.stdout.readline())["addr"]
        c_recv0 = _cpu_s(recv.pid)
        send = subprocess.Popen([*base, "send", addr, str(count), str(size)], stdout=subprocess.PIPE, text=True)
        res = json.loads(recv.stdout.readline())
        c_send = _cpu_s(send.pid)
        c_recv = _cpu_s(recv.pid) - c_recv0
        send.wait(30)
        assert send.stdout is not None
        pub = json.loads(send.stdout.readline() or "{}")
        wall = (res["last_ms"] - pub_start_ms(res, pub)) / 1000 if res["got"] else 0.0
        return {
            "delivered": res["got"],
            "msgs_per_s": round(res["got"] / wall, 1) if wall > 0 else None,
            "mb_per_s": round(res["got"] * size / wall / 1e6, 3) if wall > 0 else None,
            "latency_p50_ms": res["p50_ms"],
            "latency_p99_ms": res["p99_ms"],
            "loss": round(1 - res["got"] / count, 4),
            "cpu_ms_per_msg": [round(c_send / count * 1000, 3), round(c_recv / count * 1000, 3)],
            "note": "sender CPU includes its startup",
        }
    finally:
        _reap(send, recv)


def pub_start_ms(res: dict[str, Any], pub: dict[str, Any]) -> float:
    """When publishing started: the receiver's first message minus nothing we can observe
    better; the sender reports how long publishing took, the receiver when the last message
    arrived, so start = last arrival - max(publish time, last - first)."""
    span = max(float(pub.get("publish_ms", 0)), float(res["last_ms"] - res["first_ms"]))
    return float(res["last_ms"]) - span


#: The shortest sustained window the issue 17 comparison accepts (seconds).
SUSTAINED_MIN_S = 10.0
#: Messages per shred batch in the node's own gossip (one FEC set's data shreds).
SHRED_BATCH_PACKETS = 32


def ours_sustained(seconds: float, size: int, root: Path | None = None, tree: Path | None = None) -> dict[str, Any]:
    """Our 2-node localnet: node 0 publishes ``size``-byte messages on txs for ``seconds``;
    receiver-side rate from node 1's first and last delivery (``delivery_span_ms``).
    ``tree``: run the node processes from that source tree instead (its ``ambient_p2p``
    first on PYTHONPATH; a before/after comparison in one run, e.g. ``git archive`` of
    main with this tree's net/node.py for ``seconds`` and ``delivery_span_ms``)."""
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="ambient-bench-gossip-"))
        try:
            return ours_sustained(seconds, size, tmp, tree)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    from ..devnet.localnet import Localnet

    saved, cwd = os.environ.get("PYTHONPATH"), Path.cwd()
    if tree is not None:
        # `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
        os.environ["PYTHONPATH"] = str(tree) + (os.pathsep + saved if saved else "")
        os.chdir(tree)
    try:
        return _ours_sustained_run(Localnet(root.resolve(), 2), seconds, size)
    finally:
        if tree is not None:
            os.chdir(cwd)
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved


def _ours_sustained_run(localnet: Any, seconds: float, size: int) -> dict[str, Any]:
    with localnet as net:
        if not net.wait_for(lambda: all(s["peers"] >= 1 for s in net.statuses()), 60):
            raise RuntimeError("bench network did not connect")
        time.sleep(2.5)  # a few heartbeats for the mesh (as bench.mjs waits 2.5 s)
        cpu0 = [_cpu_s(n.proc.pid) for n in net.nodes]
        pub = net.nodes[0].control(
            {"cmd": "publish_many", "kind": "txs", "count": 100_000, "size": size, "seconds": seconds},
            timeout_s=seconds + 60,
        )

        def delivered() -> int:
            return int(net.statuses()[1]["gossip"]["delivered"].get("txs", 0))

        # until everything published arrived, or nothing new for 3 s (the rest is lost)
        last, t_last = delivered(), time.monotonic()
        while last < pub["published"] and time.monotonic() - t_last < 3.0:
            time.sleep(0.1)
            if (now := delivered()) != last:
                last, t_last = now, time.monotonic()
        cpu = [_cpu_s(n.proc.pid) - c for n, c in zip(net.nodes, cpu0, strict=True)]
        st = net.statuses()[1]
        first_ms, last_ms = st["delivery_span_ms"].get("txs", [0, 0])
        got = int(st["gossip"]["delivered"].get("txs", 0))
        span_s = (last_ms - first_ms) / 1000
        return {
            "published": pub["published"],
            "publish_seconds": pub["seconds"],
            "delivered": got,
            "receiver_seconds": round(span_s, 3),
            "msgs_per_s": round((got - 1) / span_s, 1) if span_s > 0 else None,
            "mb_per_s": round((got - 1) * size / span_s / 1e6, 2) if span_s > 0 else None,
            "loss": round(1 - got / max(1, pub["published"]), 4),
            "latency_p50_ms": st["latency"].get("txs", {}).get("p50_ms"),
            "latency_p99_ms": st["latency"].get("txs", {}).get("p99_ms"),
            "cpu_ms_per_msg": [round(c / max(1, got) * 1000, 3) for c in cpu],
        }


def js_sustained(seconds: float, size: int, alike: bool) -> dict[str, Any] | None:
    """The js-libp2p pair (interop_js/bench.mjs) for ``seconds``, receiver-side rate; with
    ``alike`` the envelope signing and validator of our nodes (module docstring)."""
    base = _js_command()
    if base is None:
        return None
    flag = ["alike"] if alike else []
    recv = subprocess.Popen([*base, "recv", "1000000", str(int(seconds + 60)), *flag], stdout=subprocess.PIPE,
                            text=True)
    send = None
    try:
        assert recv.stdout is not None
        addr = json.loads(recv.stdout.readline())["addr"]
        c_recv0 = _cpu_s(recv.pid)
        send = subprocess.Popen([*base, "send", addr, "1000000", str(size), str(seconds), *flag],
                                stdout=subprocess.PIPE, text=True)
        assert send.stdout is not None
        pub = json.loads(send.stdout.readline() or "{}")
        c_send = _cpu_s(send.pid)
        res = json.loads(recv.stdout.readline())
        c_recv = _cpu_s(recv.pid) - c_recv0
        span_s = (res["last_ms"] - res["first_ms"]) / 1000
        got = int(res["got"])
        return {
            "alike": alike,
            "published": pub.get("published"),
            "publish_seconds": round(pub.get("publish_ms", 0) / 1000, 3),
            "delivered": got,
            "receiver_seconds": round(span_s, 3),
            "msgs_per_s": round((got - 1) / span_s, 1) if span_s > 0 else None,
            "mb_per_s": round((got - 1) * size / span_s / 1e6, 2) if span_s > 0 else None,
            "loss": round(1 - got / max(1, int(pub.get("published") or 1)), 4),
            "latency_p50_ms": res["p50_ms"],
            "latency_p99_ms": res["p99_ms"],
            "cpu_ms_per_msg": [round(c_send / max(1, got) * 1000, 3), round(c_recv / max(1, got) * 1000, 3)],
            "note": "sender CPU includes its startup",
        }
    finally:
        _reap(send, recv)


def run_sustained(seconds: float, size: int, baseline_tree: Path | None = None) -> dict[str, Any]:
    """One run of the fair comparison: js-libp2p alike, ours, js-libp2p plain (in that
    order, so ours sits between the two references), each with the load average; with
    ``baseline_tree`` also our nodes from that tree (``ours_baseline``), last."""
    out: dict[str, Any] = {"seconds": seconds, "size": size, "load_before": os.getloadavg()}
    out["js_libp2p_alike"] = js_sustained(seconds, size, alike=True)
    out["load_after_js_alike"] = os.getloadavg()
    out["ours"] = ours_sustained(seconds, size)
    out["load_after_ours"] = os.getloadavg()
    out["js_libp2p_plain"] = js_sustained(seconds, size, alike=False)
    if baseline_tree is not None:
        out["load_after_js_plain"] = os.getloadavg()
        out["baseline_tree"] = str(baseline_tree)
        out["ours_baseline"] = ours_sustained(seconds, size, tree=baseline_tree.resolve())
        base = out["ours_baseline"].get("msgs_per_s")
        if base and out["ours"].get("msgs_per_s"):
            out["speedup_vs_baseline"] = round(out["ours"]["msgs_per_s"] / base, 3)
    out["load_after"] = os.getloadavg()
    ours = out["ours"].get("msgs_per_s")
    ours_cpu = max(out["ours"]["cpu_ms_per_msg"])
    for k in ("js_libp2p_alike", "js_libp2p_plain", "ours_baseline"):
        ref = out.get(k)
        if ours and ref and ref.get("msgs_per_s") and k != "ours_baseline":
            out[f"ratio_vs_{k}"] = round(ours / ref["msgs_per_s"], 3)
        # CPU per delivered message of the busier process of each pair, reference / ours:
        # what the rate ratio would be if each pair had its two cores to itself, and much
        # less disturbed than rates by other work on a shared machine
        if ref and ours_cpu > 0:
            out[f"cpu_ratio_vs_{k}"] = round(max(ref["cpu_ms_per_msg"]) / ours_cpu, 3)
    out["cpus"] = os.cpu_count()
    return out


def run_bench(nodes_list: list[int], count: int, size: int, rate: float) -> dict[str, Any]:
    ref = raw_socket_reference(max(count, 10_000), size)
    out: dict[str, Any] = {"raw_socket_reference": ref, "js_libp2p_reference": js_reference(count, size), "gossip": []}
    for n in nodes_list:
        g = gossip_bench(n, count, size, rate)
        if g["msgs_per_s"]:
            g["ratio_vs_raw_socket"] = round(g["msgs_per_s"] / ref["msgs_per_s"], 5)
            js = out["js_libp2p_reference"]
            if js and js.get("msgs_per_s"):
                g["ratio_vs_js_libp2p_2proc"] = round(g["msgs_per_s"] / js["msgs_per_s"], 4)
        out["gossip"].append(g)
    out["load_average"] = os.getloadavg()
    out["cpus"] = os.cpu_count()
    return out


def add_parser(bsub: Any) -> None:
    g = bsub.add_parser("gossip", help="gossip msgs/s, MB/s, latency, loss, CPU vs a raw socket")
    g.add_argument("--nodes", default="2,6", help="comma-separated network sizes (default 2,6)")
    g.add_argument("--count", type=int, default=1000, help="messages published by node 0 (default 1000)")
    g.add_argument("--size", type=int, default=None,
                   help="payload bytes per message (default: one shred packet, core.constants.PACKET_DATA_BYTES)")
    g.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish rate limit in msgs/s (default: as fast as back-pressure allows)",
    )
    g.add_argument(
        "--sustained",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"issue 17's fair comparison instead: 2 nodes publishing for SECONDS (>= {SUSTAINED_MIN_S:g}) at the "
        "node's shred-batch size (32 packets) unless --size, receiver-side rate, vs js-libp2p configured alike "
        "(envelope signing + validator) and plain, in the same run",
    )
    g.add_argument("--baseline-tree", type=Path, default=None, metavar="DIR",
                   help="with --sustained: also run our nodes from the source tree DIR (before/after in one run)")
    g.add_argument("--json", action="store_true", help="print only the JSON result")
    g.set_defaults(func=cmd_gossip)


def cmd_gossip(args: argparse.Namespace) -> int:
    from ..core.constants import PACKET_DATA_BYTES

    if args.sustained is not None:
        if not SUSTAINED_MIN_S <= args.sustained <= 600:
            raise UserError(f"--sustained takes {SUSTAINED_MIN_S:g}..600 seconds")
        size = SHRED_BATCH_PACKETS * PACKET_DATA_BYTES if args.size is None else args.size
        if not 16 <= size <= 60_000:
            raise UserError("--size must be 16..60000")
        if args.baseline_tree is not None and not (args.baseline_tree / "ambient_p2p" / "__init__.py").is_file():
            raise UserError(f"--baseline-tree {args.baseline_tree} holds no ambient_p2p package")
        res = run_sustained(args.sustained, size, args.baseline_tree)
        if not args.json:
            o, ja, jp = res["ours"], res.get("js_libp2p_alike"), res.get("js_libp2p_plain")
            print(f"ours (2 nodes): {o['msgs_per_s']} msgs/s over {o['receiver_seconds']} s at the receiver, "
                  f"{size} B, loss {o['loss']:.2%}, CPU ms/msg {o['cpu_ms_per_msg']}")
            for name, j in (("js-libp2p alike", ja), ("js-libp2p plain", jp)):
                if j:
                    print(f"{name}: {j['msgs_per_s']} msgs/s over {j['receiver_seconds']} s, loss {j['loss']:.2%}, "
                          f"CPU ms/msg {j['cpu_ms_per_msg']}")
            if (b := res.get("ours_baseline")) is not None:
                print(f"ours from {res['baseline_tree']}: {b['msgs_per_s']} msgs/s, CPU ms/msg {b['cpu_ms_per_msg']}, "
                      f"speed-up {res.get('speedup_vs_baseline')}")
            print(f"ratio vs js alike {res.get('ratio_vs_js_libp2p_alike')}, vs js plain "
                  f"{res.get('ratio_vs_js_libp2p_plain')}; CPU per message ratio vs js alike "
                  f"{res.get('cpu_ratio_vs_js_libp2p_alike')}, vs js plain {res.get('cpu_ratio_vs_js_libp2p_plain')}; "
                  f"load {res['load_before']} -> {res['load_after']}")
        print(json.dumps(res, indent=1 if args.json else None))
        return 0
    if args.size is None:
        args.size = PACKET_DATA_BYTES
    try:
        nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    except ValueError:
        raise UserError("--nodes takes comma-separated integers, e.g. 2,6") from None
    if not nodes or any(n < 2 or n > 16 for n in nodes):
        raise UserError("--nodes values must be between 2 and 16")
    if not 1 <= args.count <= 100_000 or not 16 <= args.size <= 60_000:
        raise UserError("--count must be 1..100000 and --size 16..60000")
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
