"""`ambient-p2p status` / `ambient-p2p peers`: ask a running node for its status or its peer
list, printed as JSON. ``status`` reads the node's JSON-RPC (``ambient_getNodeStatus``,
spec/rpc.md) when the node serves one (``--rpc URL``, or the ``rpc.json`` the node wrote in
its directory) and falls back to the control socket in the directory; ``via`` says which
answered."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import UserError

#: How long ``status`` waits for the RPC before it asks the control socket.
RPC_TIMEOUT_S = 10.0


def register(sub: Any) -> None:
    for name, cmd, help_ in (
        ("status", "status", "show a running node's status (from its RPC when it serves one, else its control socket)"),
        ("peers", "peers", "list a running node's peers"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--ledger",
            "--data-dir",
            dest="data_dir",
            default="ambient-node",
            metavar="DIR",
            help="the node's directory (default ./ambient-node)",
        )
        if cmd == "status":
            p.add_argument("--rpc", default=None, metavar="URL",
                           help="read the status from this JSON-RPC URL (e.g. http://127.0.0.1:8899); default: "
                                "the URL in DIR/rpc.json, then DIR's control socket")
        p.set_defaults(func=_make(cmd))


def rpc_status(url: str, timeout_s: float = RPC_TIMEOUT_S) -> dict[str, Any]:
    """The node's status over JSON-RPC (raises OSError or ValueError when it does not answer)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ambient_getNodeStatus"}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        out = json.loads(r.read())
    if not isinstance(out, dict) or not isinstance(out.get("result"), dict):
        raise ValueError(f"{url} answered {str(out)[:200]}")
    return dict(out["result"])


def _rpc_url(data_dir: Path) -> str | None:
    from ..node.rpc.server import RPC_FILE

    try:
        doc = json.loads((data_dir / RPC_FILE).read_text())
    except (OSError, ValueError):
        return None
    url = doc.get("url") if isinstance(doc, dict) else None
    return url if isinstance(url, str) and url.startswith("http") else None


def _make(cmd: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from ..net.node import control_request

        explicit = getattr(args, "rpc", None)
        if explicit is not None and not explicit.startswith(("http://", "https://")):
            raise UserError(f"--rpc must be an http:// or https:// URL, not {explicit!r}")
        url = explicit or (_rpc_url(Path(args.data_dir)) if cmd == "status" else None)
        if url is not None:
            try:
                out = {"ok": True, **rpc_status(url), "via": f"rpc {url}"}
                print(json.dumps(out, indent=1))
                return 0 if out.get("ok") else 1
            except (OSError, ValueError) as exc:
                if explicit is not None:
                    raise UserError(f"the RPC at {url} did not answer ambient_getNodeStatus ({exc})") from None
        try:
            out = control_request(Path(args.data_dir), {"cmd": cmd}, timeout_s=10.0)
        except OSError as exc:
            raise UserError(f"no node is running in {args.data_dir} ({exc.strerror or exc})") from None
        if cmd == "status":
            out = {**out, "via": "control socket"}
        print(json.dumps(out, indent=1))
        return 0 if out.get("ok") else 1

    return run
