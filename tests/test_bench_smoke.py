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
    assert "reference: raw rocksdict WriteBatch puts of the same" in out and "ratio (thread CPU" in out


def test_bench_rejects_bad_arguments() -> None:
    assert main(["bench", "poh", "--hashes", "10"]) == 2
    assert main(["bench"]) == 2


@pytest.mark.parametrize("name", ["pol", "poh", "erasure", "blockstore", "gossip", "consensus"])
def test_every_bench_is_behind_one_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every benchmark is a subcommand of ``bench``, from a module of ambient_p2p.bench."""
    from ambient_p2p.bench import BENCH_MODULES

    with pytest.raises(SystemExit) as ei:
        main(["bench", name, "--help"])
    assert ei.value.code == 0 and f"usage: ambient-p2p bench {name}" in capsys.readouterr().out
    assert all(m.__name__.startswith("ambient_p2p.bench.") for m in BENCH_MODULES)


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "consensus", "--nodes", "0"],
        ["bench", "consensus", "--slot-ms", "10"],
        ["bench", "consensus", "--seconds", "0"],
        ["bench", "consensus", "--slot-ms", "333", "--ticks-per-slot", "7"],  # not whole microseconds per tick
        ["bench", "gossip", "--nodes", "1"],
        ["bench", "gossip", "--nodes", "x"],
    ],
)
def test_network_benches_reject_bad_arguments_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_consensus_report_states_the_slot_clock_reference_and_missing_stall() -> None:
    from ambient_p2p.bench.consensus import loop_stall, report_lines

    assert loop_stall({"consensus": {}}) is None
    assert loop_stall({"loop_stall_ms": {"p99": 12}}) == {"p99": 12}
    assert loop_stall({"consensus": {"loop_stall_ms": 7}}) == 7
    out = {
        "nodes": 2, "slot_ms": 400, "poh": {"hashes_per_tick": 100, "ticks_per_slot": 8, "tick_us": 50_000},
        "warmup_s": 10.0, "window_s": 60.0, "drain_slots": 10, "seconds": 64.0, "transfers_sent": 5,
        "confirm_latency_ms": {"per_leader": [{"n": 3, "p50": 900.0, "p95": 1500.0}, {"n": 0, "p50": None, "p95": None}],
                               "p50_worst_leader": 900.0, "p95_worst_leader": 1500.0, "samples": 3},
        "clock_slots": 150, "finalized_slots": 140, "finalized_per_clock_slot": 0.933, "produced_slots": 148,
        "produced_per_clock_slot": 0.987, "finalized_range": [10, 160], "skipped_in_finalized_range": 10,
        "produced_not_finalized": 8, "dead": [0, 0], "duplicates": [0, 0], "dumped": [0, 0],
        "loop_stall_ms": [None, [{"p99": 40}]], "status_rtt_ms": {"n": 4, "p50": 3.0, "p99": 9.0, "max": 9.0},
        "load_average": [1.0, 1.0, 1.0], "cpus": 2,
    }
    text = "\n".join(report_lines(out))
    assert "p50 900.0 ms, p95 1500.0 ms" in text
    assert "finalized slots per clock slot: 0.933 (140 finalized / 150 clock slots; reference 1.0)" in text
    assert "node0 n/a, node1 p99=40" in text
    assert "10 skipped slots" in text
