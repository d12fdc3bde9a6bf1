"""`ambient-p2p localnet --nodes N`: a bootstrap node plus N-1 joiners as separate OS
processes on loopback, with a generated genesis; streams their output and stops them all
on Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("localnet", help="run N nodes as separate processes on 127.0.0.1")
    p.add_argument("--nodes", type=int, default=4, help="number of nodes (default 4)")
    p.add_argument("--dir", default=None, help="directory for node data (default: a new temporary directory)")
    p.add_argument("--chain-id", default="localnet")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=cmd_localnet)


def cmd_localnet(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 64:
        raise UserError("--nodes must be between 1 and 64")
    from ..net.localnet import Localnet

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ambient-localnet-"))
    net = Localnet(root, args.nodes, chain_id=args.chain_id, echo=sys.stdout)
    stop = {"sig": 0}

    def on_signal(sig: int, _frame: Any) -> None:
        stop["sig"] = sig

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"localnet: {args.nodes} node(s) in {root}", flush=True)
        try:
            net.start()
        except (RuntimeError, TimeoutError) as exc:
            raise UserError(f"localnet failed to start: {exc}") from None
        print(f"localnet: bootstrap {net.bootstrap_addr()}", flush=True)
        t0 = time.monotonic()
        while not stop["sig"] and (not args.duration or time.monotonic() - t0 < args.duration):
            if not all(n.alive() for n in net.nodes):
                dead = [n.index for n in net.nodes if not n.alive()]
                print(f"localnet: node(s) {dead} exited", flush=True)
                break
            time.sleep(0.2)
    finally:
        print("localnet: stopping", flush=True)
        net.stop()
        for s, h in old.items():
            signal.signal(s, h)
    codes = [n.proc.returncode for n in net.nodes]
    print(f"localnet: stopped (exit codes {codes})", flush=True)
    return 0
