"""Static checks that are cheap and catch real bugs: ruff on everything, mypy --strict on
the sans-IO core (style guide: "ruff and mypy --strict on the core")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    r = _run("ruff", "check", "--no-cache", "ambient_p2p", "tests")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_core() -> None:
    r = _run("mypy", "--strict", "--no-incremental", "ambient_p2p/core")
    assert r.returncode == 0, r.stdout + r.stderr
