"""Import direction (architecture.md, issue 11): the sans-IO ``core`` imports nothing of ours
outside ``core``; the shells ``ledger``, ``net`` and ``model`` import only ``core``; ``node``
composes them; ``commands`` (with ``cli``) is the composition root and may import anything.
An AST scan of every import statement, including function-level and TYPE_CHECKING imports,
so a sideways import cannot hide inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ambient_p2p"

#: layer -> the other layers it may import. Top-level modules count as layers of their own
#: (``registry`` is the composition-level wire loader, ``errors`` the CLI's UserError).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "ledger": {"core"},
    "net": {"core"},
    "model": {"core"},
    "node": {"core", "ledger", "net", "model"},
    "registry": {"core", "ledger", "net"},
    # interop vectors are built on the devnet genesis presets and test identities (one home)
    "interop": {"core", "ledger", "net", "model", "registry", "devnet"},
    # composition-level helper packages (localnet/devnet harness, benchmarks); bench shares
    # the model-loading arguments of `ambient-p2p pol` (commands/pol.py)
    "devnet": {"core", "ledger", "net", "model", "node", "registry", "errors"},
    "bench": {"core", "ledger", "net", "model", "node", "registry", "errors", "devnet", "commands"},
    "errors": set(),
    "commands": {"*"},
    "cli": {"*"},
    "__main__": {"*"},
    "__init__": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT / rel).is_dir() or (ROOT / rel).with_suffix(".py").is_file()


def _imports(path: Path, text: str) -> list[tuple[int, str]]:
    """(line, imported ambient_p2p module) for every import statement of module ``path``."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ambient_p2p"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ambient_p2p":
                continue
            for a in node.names:  # `from .. import core` imports the module ambient_p2p.core
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if _is_module(sub) else target))
    return out


def _layer(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _violations(planted: dict[Path, str] | None = None) -> list[str]:
    """Every import against :data:`ALLOWED`; ``planted`` adds modules (path -> source)
    that exist only in memory."""
    sources = {path: path.read_text() for path in sorted(PKG.rglob("*.py"))} | (planted or {})
    bad = []
    for path, text in sources.items():
        src = _layer(_module_name(path)) if path.name != "__init__.py" or path.parent != PKG else "__init__"
        allowed = ALLOWED.get(src)
        assert allowed is not None, f"{path}: layer {src!r} has no import rule in this test"
        for line, target in _imports(path, text):
            dst = _layer(target)
            if dst == src or "*" in allowed:
                continue
            if target == "ambient_p2p" and src == "__init__":
                continue
            if dst not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {src} imports {target}")
    return bad


def test_imports_follow_the_layering() -> None:
    assert _violations() == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("core", "from ..net import messages\n", "core imports ambient_p2p.net.messages"),
        ("net", "def f() -> None:\n    from ..node import validator\n", "net imports ambient_p2p.node.validator"),
        ("ledger", "import ambient_p2p.net.gossip\n", "ledger imports ambient_p2p.net.gossip"),
        ("core", "from .. import registry\n", "core imports ambient_p2p.registry"),
    ],
)
def test_the_check_catches_sideways_imports(layer: str, source: str, expected: str) -> None:
    """The scan is able to fail: a planted import of each kind is reported."""
    found = _violations({PKG / layer / "_planted_import_probe.py": source})
    assert any(v.endswith(expected) for v in found), found
