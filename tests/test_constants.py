"""One definition per constant (core/constants.py, core/crypto.py): the packet size 1232 and
the zero signature ``bytes(64)`` appear as literals nowhere else in the package, and
``SHRED_VERSION`` / ``TXS_PER_ENTRY`` are assigned in one module only (AST scan)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ambient_p2p"
#: Files exempt from the scan (none).
PENDING: set[str] = set()
#: Interop vector builders spell out wire bytes on purpose.
EXEMPT_DIRS = ("interop/",)


def _files() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in PENDING or rel.startswith(EXEMPT_DIRS):
            continue
        out.append((rel, ast.parse(path.read_text(), rel)))
    return out


def test_packet_size_literal_has_one_home() -> None:
    hits = [
        f"{rel}:{n.lineno}"
        for rel, tree in _files()
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and type(n.value) is int and n.value == 1232
    ]
    assert hits == ["core/constants.py:12"]


def test_zero_signature_literal_has_one_home() -> None:
    hits = [
        f"{rel}:{n.lineno}"
        for rel, tree in _files()
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", None) == "bytes"
        and len(n.args) == 1
        and isinstance(n.args[0], ast.Constant)
        and n.args[0].value == 64
    ]
    assert hits == []


def test_shared_constants_assigned_once() -> None:
    for name in ("PACKET_DATA_BYTES", "SHRED_VERSION", "TXS_PER_ENTRY", "ZERO_SIGNATURE", "SIGNATURE_BYTES"):
        homes = [
            rel
            for rel, tree in _files()
            for n in tree.body
            if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets)
        ]
        assert len(homes) <= 1, (name, homes)
