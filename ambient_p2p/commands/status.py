"""`ambient-p2p status` / `ambient-p2p peers`: ask a running node (through the control
socket in its data directory) for its status or its peer list, printed as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError


def register(sub: Any) -> None:
    for name, cmd, help_ in (("status", "status", "show a running node's status"), ("peers", "peers", "list a running node's peers")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--ledger", "--data-dir", dest="data_dir", default="ambient-node", metavar="DIR", help="the node's directory (default ./ambient-node)")
        p.set_defaults(func=_make(cmd))


def _make(cmd: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from ..net.node import control_request

        try:
            out = control_request(Path(args.data_dir), {"cmd": cmd}, timeout_s=10.0)
        except OSError as exc:
            raise UserError(f"no node is running in {args.data_dir} ({exc.strerror or exc})") from None
        print(json.dumps(out, indent=1))
        return 0 if out.get("ok") else 1

    return run
