"""Direct tests of the ledger history rules (core/history.py, spec/blockstore.md "Cleanup"
and "Node snapshots"): when a node snapshots and when it purges, as a function of the roots
it reaches. No disk: the shell's side (ledger/cleanup.py, ledger/snapshot.py) is tested in
tests/test_cleanup.py and tests/test_restart_wiring.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient_p2p.core.history import Housekeeping, LedgerHistory, PurgeLedger, TakeSnapshot


def test_history_rows() -> None:
    h = Housekeeping(LedgerHistory(keep_slots=16, snapshot_interval_slots=64, cleanup_interval_slots=150))
    assert h.rooted(0, 63, has_bank=True) == []
    assert h.rooted(63, 64, has_bank=True) == [TakeSnapshot(64)]  # crossed 64
    assert h.rooted(64, 127, has_bank=True) == []
    assert h.rooted(127, 200, has_bank=False) == [PurgeLedger(200, 16)]  # crossed 128, but no bank: no snapshot
    assert h.last_purge_root == 200
    assert h.rooted(200, 300, has_bank=True) == [TakeSnapshot(300)]  # 100 past the purge: not more than 150
    assert h.rooted(300, 319, has_bank=True) == []
    assert h.rooted(319, 351, has_bank=True) == [TakeSnapshot(351), PurgeLedger(351, 16)]


def test_a_restarted_node_purges_at_its_first_root_past_the_interval() -> None:
    h = Housekeeping()  # defaults; a restart starts from last_purge_root 0
    assert PurgeLedger(20_000, h.history.keep_slots) in h.rooted(19_990, 20_000, has_bank=True)


@pytest.mark.parametrize("bad", [{"keep_slots": -1}, {"snapshot_interval_slots": 0}, {"cleanup_interval_slots": 0}])
def test_bad_history_is_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="bad ledger history"):
        LedgerHistory(**bad)


@given(steps=st.lists(st.integers(0, 300), min_size=1, max_size=60), snap=st.integers(1, 200),
       clean=st.integers(1, 200), keep=st.integers(0, 500))
def test_snapshots_once_per_interval_and_purges_bounded(steps: list[int], snap: int, clean: int, keep: int) -> None:
    """Over any rising root sequence: a snapshot for every multiple of ``snap`` crossed (one
    per crossing step, however many multiples it jumps; the bank is held), purges more than ``clean`` apart, and no stretch longer than ``clean`` + one root
    step without a purge."""
    h = Housekeeping(LedgerHistory(keep, snap, clean))
    root, purges, snaps = 0, [0], []
    for step in steps:
        old, root = root, root + step
        out = h.rooted(old, root, has_bank=True)
        snaps += [e.slot for e in out if isinstance(e, TakeSnapshot)]
        purged = [e for e in out if isinstance(e, PurgeLedger)]
        assert all(e == PurgeLedger(root, keep) for e in purged) and len(purged) <= 1
        if purged:
            assert root - purges[-1] > clean
            purges.append(root)
        else:
            assert root - purges[-1] <= clean
    assert len(snaps) == len({s // snap for s in snaps})  # at most one per interval
    for k in range(1, root // snap + 1):  # every multiple reached is covered by the root step that crossed it
        assert any(0 <= s - k * snap <= max(steps) for s in snaps), (k, snaps)
