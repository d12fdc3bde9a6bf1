"""The ledger benchmarks run end to end with tiny sizes and print their in-run references
(figures themselves are not asserted: they depend on the machine)."""

from __future__ import annotations

import pytest

from ambient_p2p.cli import main


def test_bench_poh_prints_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "poh", "--hashes", "20000", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "PoH generation" in out and "hashlib.sha256 loop" in out and "speedup" in out


def test_bench_erasure_and_blockstore(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "erasure", "--sets", "2"]) == 0
    assert main(["bench", "blockstore", "--slots", "1"]) == 0
    out = capsys.readouterr().out
    assert "RS(32,32)" in out and "encode" in out
    assert "reference raw rocksdict WriteBatch puts" in out


def test_bench_rejects_bad_arguments() -> None:
    assert main(["bench", "poh", "--hashes", "10"]) == 2
    assert main(["bench"]) == 2
