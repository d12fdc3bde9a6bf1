"""User mistakes in the miner and requester flags (``query``, ``join``/``run --miner``,
``localnet --miners``): one ``error:`` line, exit 2, nothing written, no node needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambient_p2p.cli import main


@pytest.mark.parametrize(("argv", "message"), [
    (["query", "   "], "the prompt is empty"),
    (["query", "hi", "--max-tokens", "0"], "--max-tokens must be 1..4096"),
    (["query", "hi", "--max-tokens", "4097"], "--max-tokens must be 1..4096"),
    (["query", "hi", "--within", "-3"], "--within must be a positive number"),
    (["query", "hi", "--within", "nan"], "--within must be a positive number"),
    (["query", "hi", "--pay", "0"], "--pay must be at least 1"),
    (["query", "hi", "--pay", str(2**62), "--max-tokens", "4"], "beyond what an account can hold"),
    (["query", "hi", "--temperature", "10.5"], "--temperature must be in 0..10"),
    (["run", "--miner"], "--miner needs --genesis"),
    (["run", "--miner-price", "5"], "need --miner"),
    (["run", "--miner-fault", "never-post"], "need --miner"),
    (["run", "--miner", "--genesis", "G", "--miner-price", "0"], "--miner-price must be a positive"),
    (["run", "--miner", "--genesis", "G", "--miner-threads", "0"], "--miner-threads must be 1..256"),
    (["run", "--miner", "--genesis", "G", "--miner-fault", "explode"], "--miner-fault must be one of"),
    (["localnet", "--nodes", "4", "--miners", "5"], "--miners must be 0..4"),
    (["localnet", "--demo-queries", "-1"], "--demo-queries must be >= 0"),
])
def test_bad_values_are_one_error_line_and_exit_2(argv: list[str], message: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    extra = ["--ledger", str(tmp_path / "node")] if argv[0] == "run" else []
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_query_without_a_running_node_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.core.crypto import Keypair, write_keypair_file

    key = tmp_path / "k.json"
    write_keypair_file(key, Keypair.generate())
    assert main(["query", "hi", "--node", str(tmp_path / "none"), "--keypair", str(key)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no node is running in"), err
