"""Static checks that are cheap and catch real bugs, over the whole package: ruff with the
project's rule sets (pyproject.toml, including ASYNC, BLE, RUF, SIM, PT) on the package and
the tests, and ``mypy --strict`` on every package (style guide: "ruff and mypy --strict").
mypy keeps its incremental cache in ``.mypy_cache`` (a cold run takes about a minute on a
busy 2-core machine, a warm one a few seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_clean() -> None:
    r = _run("ruff", "check", "--no-cache", "ambient_p2p", "tests")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_whole_package() -> None:
    r = _run("mypy", "--strict", "ambient_p2p")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
