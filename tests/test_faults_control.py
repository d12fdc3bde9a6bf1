"""The control requests that killed a running validator node (issue 16) against a real
``ambient-p2p run --validator`` process: each is answered ok=false with a reason, and the
node keeps running and answering."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.devnet.localnet import Localnet
from ambient_p2p.net.node import CONTROL_SOCKET

pytestmark = pytest.mark.integration

KILLERS: list[tuple[bytes, str]] = [
    (b'{"cmd": "slot_info", "slot": -1}', "slot must be in"),
    (b'{"cmd": "slot_info", "slot": 1180591620717411303424}', "out of range"),
    (b'{"cmd": "slot_info", "slot": 9223372036854775808}', "out of range"),
    (b'{"cmd": "has_shred", "slot": -1, "index": 0}', "slot must be in"),
    (b'{"cmd": "chain", "from": -5}', "from must be in"),
    (b"[" * 100_000 + b"]" * 100_000, "deeper than"),
]


def _ask(data_dir: Path, raw: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(data_dir / CONTROL_SOCKET))
        s.sendall(raw + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    out = json.loads(buf)
    assert isinstance(out, dict)
    return out


def test_control_requests_that_killed_a_validator_are_answered_and_it_lives(tmp_path: Path) -> None:
    with Localnet(tmp_path, 1, validator=True) as net:
        node = net.nodes[0]
        for raw, why in KILLERS:
            r = _ask(node.data_dir, raw)
            assert r["ok"] is False and why in json.dumps(r), (raw[:60], r)
            assert node.alive(), node.lines[-20:]
        good = _ask(node.data_dir, b'{"cmd": "slot_info", "slot": 0}')
        assert good["ok"] is True and good["slot"] == 0
        assert node.status()["ok"]
    assert node.proc.returncode == 0, node.lines[-20:]
