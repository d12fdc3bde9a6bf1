"""The PoH and shred interop vectors generate and verify (including must-reject cases with
their reasons), and a tampered vector is caught."""

from __future__ import annotations

from pathlib import Path

from ambient_p2p import interop


def test_ledger_vectors_round_trip(tmp_path: Path) -> None:
    n = interop.generate(tmp_path)
    assert n > 0
    results = [r for r in interop.verify(tmp_path) if r.path.split("/")[0] in ("poh", "shred")]
    assert len(results) >= 55
    bad = [r for r in results if not r.ok]
    assert not bad, bad[:3]
    rejects = list((tmp_path / "shred" / "parse").glob("*/meta.json"))
    assert sum('"reject"' in p.read_text() for p in rejects) >= 20


def test_tampered_vector_detected(tmp_path: Path) -> None:
    interop.generate(tmp_path)
    case = tmp_path / "shred" / "parse" / "data_first" / "input.bin"
    data = bytearray(case.read_bytes())
    data[600] ^= 1
    case.write_bytes(bytes(data))
    res = {r.path: r for r in interop.verify(tmp_path)}
    assert not res["shred/parse/data_first"].ok


def test_committed_vectors_still_verify() -> None:
    """interop/poh and interop/shred in the repository match this implementation (a change
    in behaviour must come with regenerated vectors and a spec change)."""
    root = Path(__file__).resolve().parents[1] / "interop"
    results = [r for r in interop.verify(root) if r.path.split("/")[0] in ("poh", "shred")]
    assert len(results) >= 55
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
