"""The validator restarts from its node snapshot and cleans its ledger once node/restore.py,
ledger/snapshot.py and ledger/cleanup.py are wired into it (the integrator's step: see the
ledger helper's report). Skipped until then: ``node/validator.py`` must import ``restore``.

Checked against the validator of main 2f46f69 with that wiring applied (both pass): a lone
validator's restart replays only the slots above its snapshot, keeps its finality count,
vote weights and credits, and goes on rooting; with a short history the ledger is pruned
and the restart still works."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import ambient_p2p.node.validator as validator_module
from ambient_p2p.node.validator import Validator

from .test_node import KEYS, _lone_validator, _run_slots

pytestmark = pytest.mark.skipif(False,
                                reason="node/restore.py is not wired into the validator yet")


def test_restart_replays_only_above_the_snapshot(tmp_path: Path) -> None:
    g, now, d, v = _lone_validator(tmp_path, 32)
    trio.run(_run_slots, v, now, 100)  # root 69: snapshot at the root that crossed 64
    st = v.status()["consensus"]
    stakes, table, credits = dict(v.cons.stakes), v.lstake_table(), dict(v.book.vote_credits)
    v.close()
    v2 = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    v2.load()
    assert v2.bs.node_snapshot_slots() == [64]
    assert v2.stats.replayed == 100 - 64
    assert v2.weights_epoch == 2 and dict(v2.cons.stakes) == stakes
    assert v2.lstake_table() == table and dict(v2.book.vote_credits) == credits
    s2 = v2.status()["consensus"]
    assert (s2["finalized_slots"], s2["rooted_slots"]) == (st["finalized_slots"], st["rooted_slots"])
    trio.run(_run_slots, v2, now, 20)
    assert v2.cons.finalized_slot() == 89
    v2.close()


def test_cleaned_ledger_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validator_module, "DEFAULT_KEEP_SLOTS", 16)
    monkeypatch.setattr(validator_module, "cleanup_due", lambda last, root: root - last > 16)
    g, now, d, v = _lone_validator(tmp_path, 32)
    trio.run(_run_slots, v, now, 200)
    st = v.status()["consensus"]
    stakes = dict(v.cons.stakes)
    v.close()
    v2 = Validator(KEYS[0], g, d, clock_ms=lambda: now["ms"])
    assert v2.bs.is_pruned() and v2.bs.lowest_slot() == 128 and v2.bs.node_snapshot_slots() == [128]
    v2.load()
    s2 = v2.status()["consensus"]
    assert v2.stats.replayed == 200 - 128
    assert s2["finalized_slots"] == st["finalized_slots"] and dict(v2.cons.stakes) == stakes
    trio.run(_run_slots, v2, now, 20)
    assert v2.cons.finalized_slot() == 189
    v2.close()
