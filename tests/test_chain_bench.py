"""``ambient-p2p bench chain`` (ambient_p2p/bench/chain.py): argument errors are one line
before anything starts, the pre-signed load is valid and distinct, the report names the
in-run ed25519 ceiling. The localnet run itself is the benchmark (spec/tpu.md)."""

from __future__ import annotations

import pytest

from ambient_p2p.bench.chain import presign, report_lines, verify_ceiling
from ambient_p2p.cli import main
from ambient_p2p.core.bank import parse_transaction, verify_transaction_signatures
from ambient_p2p.core.crypto import Keypair


@pytest.mark.parametrize("argv", [
    ["bench", "chain", "--loads", "x"],
    ["bench", "chain", "--loads", "0"],
    ["bench", "chain", "--loads", ""],
    ["bench", "chain", "--nodes", "0"],
    ["bench", "chain", "--seconds", "0"],
    ["bench", "chain", "--sample-every", "0"],
])
def test_bad_arguments_are_one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["bench", "chain", "--help"])
    assert ei.value.code == 0 and "ed25519" in capsys.readouterr().out


def test_presigned_transfers_are_valid_distinct_and_carry_their_amount() -> None:
    users = [Keypair.deterministic("chain-bench-test", i) for i in range(4)]
    txs = presign(users, 64, b"\x03" * 32, start=100)
    assert not any(verify_transaction_signatures(txs))
    assert len({t[1:65] for t in txs}) == 64
    for k, raw in enumerate(txs):
        p = parse_transaction(raw)
        i = 100 + k
        assert p.account_keys[0] == users[i % 4].pubkey and p.recent_blockhash == b"\x03" * 32
        assert int.from_bytes(p.instructions[0][2][4:12], "little") == 1 + i // 4


def test_report_states_the_ceiling_and_every_load() -> None:
    ceiling = verify_ceiling(200)
    assert ceiling["solders_tx_per_s"] > 0 and ceiling["pynacl_verify_per_s"] > 0
    row = {"offered_tx_per_s": 100.0, "generator": {"achieved_tx_per_s": 99.5, "max_behind_s": 0.1},
           "finalized_tx_per_s": 98.0, "confirm_s": {"p50": 1.0, "p95": 1.5, "p99": 2.0},
           "finalize_s": {"p50": 20.0}, "mempool_depth": {"max": [10, 12]}, "cpu_per_node": [0.2, 0.3]}
    lines = report_lines({"nodes": 2, "slot_ms": 800, "seconds": 10.0, "cpus": 2, "verify_ceiling_one_core": ceiling,
                          "loads": [row, {**row, "offered_tx_per_s": 300.0}]})
    assert "ed25519 ceiling" in lines[0] and str(ceiling["solders_tx_per_s"]) in lines[0]
    assert len(lines) == 4 and lines[2].split()[0] == "100" and lines[3].split()[0] == "300"
