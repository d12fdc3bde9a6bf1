"""Blob transfer between two node processes on loopback (spec/blobs.md).

    python benchmarks/blobs_localnet.py [--count 30] [--bytes 65562]

For each of ``count`` random blobs: ``put_blob`` on node 0 (control socket, base64, fsynced
write), ``get_blob`` on node 1 (fetched over ``/ambient/blob/1`` from node 0, verified,
stored), then ``get_blob`` on node 1 again (its local copy). Times are wall-clock per
control request; the report gives p50/p95 and the remote fetch as a ratio to the local
read of the same blob in the same run (so the ratio is the network's share, free of the
control socket's and base64's cost). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ambient_p2p.core.crypto import sha256
from ambient_p2p.devnet.localnet import Localnet


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=30, help="blobs to move (default 30)")
    p.add_argument("--bytes", type=int, default=65562, help="blob size (default 65562: the largest prompt)")
    args = p.parse_args(argv)
    if args.count < 1 or not 0 < args.bytes <= 66560:
        print("error: --count must be >= 1 and --bytes in 1..66560", file=sys.stderr)
        return 2
    put_ms, remote_ms, local_ms = [], [], []
    with tempfile.TemporaryDirectory() as d, Localnet(Path(d), 2) as net:
        a, b = net.nodes
        if not net.wait_for(lambda: all(s["peers"] >= 1 for s in net.statuses()), 40):
            print("error: the two nodes did not connect", file=sys.stderr)
            return 1
        for _ in range(args.count):
            data = os.urandom(args.bytes)
            h = sha256(data).hex()
            t0 = time.perf_counter()
            assert a.control({"cmd": "put_blob", "data_b64": base64.b64encode(data).decode(),
                              "keep_until_slot": 10**9})["ok"]
            t1 = time.perf_counter()
            r = b.control({"cmd": "get_blob", "sha256": h, "timeout_s": 30}, timeout_s=60)
            t2 = time.perf_counter()
            assert r["ok"] and base64.b64decode(r["data_b64"]) == data
            r = b.control({"cmd": "get_blob", "sha256": h, "timeout_s": 30})
            t3 = time.perf_counter()
            assert r["ok"]
            put_ms.append((t1 - t0) * 1000)
            remote_ms.append((t2 - t1) * 1000)
            local_ms.append((t3 - t2) * 1000)
        st = b.status()["blobs"]
    out = {
        "count": args.count, "bytes": args.bytes,
        "put_ms": {"p50": _pct(put_ms, 0.5), "p95": _pct(put_ms, 0.95)},
        "remote_get_ms": {"p50": _pct(remote_ms, 0.5), "p95": _pct(remote_ms, 0.95)},
        "local_get_ms": {"p50": _pct(local_ms, 0.5), "p95": _pct(local_ms, 0.95)},
        "remote_over_local_p50": round(statistics.median(remote_ms) / statistics.median(local_ms), 2),
        "fetched": st["fetched"], "rejected": st["rejected"],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
