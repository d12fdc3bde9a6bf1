"""The deterministic multi-node consensus simulation (tests/sim.py) over thousands of seeded
fault scenarios, and proof that it catches broken rules.

Rerun one seed with its trace: ``.venv/bin/python tests/sim.py --seed N``.
"""

from __future__ import annotations

import time

import pytest

from ambient_p2p.core import consensus, tower
from tests import sim

SEEDS_PER_BLOCK = 250
DEFAULT_BLOCKS = 8  # 2,000 seeds in the default suite
SOAK_SEEDS = 50_000


def _run_block(first: int, count: int, **kw: object) -> list[sim.SimResult]:
    out = []
    for seed in range(first, first + count):
        out.append(sim.run_seed(seed, **kw))  # a SimFailure carries the seed, trace and rerun command
    return out


@pytest.mark.parametrize("block", range(DEFAULT_BLOCKS))
def test_seeded_fault_scenarios_are_safe_and_live(block: int) -> None:
    results = _run_block(block * SEEDS_PER_BLOCK, SEEDS_PER_BLOCK)
    for r in results:
        sc = sim.Scenario.draw(r.seed)
        assert sc.drop or sc.duplicate or sc.jitter_ms or sc.partitions or sc.crashes or sc.byzantine
        if r.exempt is None:
            assert min(r.roots) >= sc.fault_end  # finality resumed after the faults
        else:  # liveness is waived only for the documented equivocation split
            assert sc.byzantine is not None, (r.seed, r.exempt)
    exempt = sum(r.exempt is not None for r in results)
    assert exempt < SEEDS_PER_BLOCK // 5, f"{exempt} of {SEEDS_PER_BLOCK} runs waived liveness"


def test_runs_are_reproducible_from_the_seed() -> None:
    for seed in (3, 26, 37):
        a, b = sim.run_seed(seed), sim.run_seed(seed)
        assert (a.slots, a.roots, a.events, a.votes, a.exempt) == (b.slots, b.roots, b.events, b.votes, b.exempt)


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_real_signatures(seed: int) -> None:
    """The same scenarios with real ed25519 keys, signatures and tower records give the
    same run as the fast stand-in."""
    fast, real = sim.run_seed(seed), sim.run_seed(seed, real_crypto=True)
    assert (fast.slots, fast.roots, fast.votes) == (real.slots, real.roots, real.votes)


def test_switch_threshold_counts_stake_on_a_third_fork_seed_1() -> None:
    """Seed 1 (partition 03|12, byzantine leader) left three forks after healing: n2 (20%)
    on one, n0+n3 (50%) on another, n1 (30%) on the heaviest. Counting only stake on the
    candidate's fork, nobody could switch (30% < 38%) and finality stopped for good; agave
    counts stake on any other fork (spec/tower.md "Switch threshold")."""
    r = sim.run_seed(1)
    assert r.exempt is None and min(r.roots) >= sim.Scenario.draw(1).fault_end


@pytest.mark.xfail(strict=True, reason=(
    "known gap (spec/tower.md 'Known gaps'): an equivocating leader leaves nodes holding or voting "
    "different versions of a slot, none voted by > 52%: nobody dumps, each side's votes sit on "
    "blocks the other cannot replay, so no switch proof reaches 38% and finality stops"
))
def test_liveness_after_an_unconfirmed_equivocation_split() -> None:
    sim.Simulation(sim.Scenario.draw(26), strict_liveness=True).run()


def _first_failure(seeds: range | list[int], **kw: object) -> tuple[sim.SimFailure, int, float]:
    t0 = time.perf_counter()
    for n, seed in enumerate(seeds, 1):
        try:
            sim.run_seed(seed, **kw)
        except sim.SimFailure as e:
            return e, n, time.perf_counter() - t0
    raise AssertionError("the broken rule was not caught")


def test_catches_a_tower_that_ignores_lockouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tower.Tower, "is_locked_out", lambda self, slot, ancestors: (
        self.last_voted_slot is not None and slot <= self.last_voted_slot))
    e, n, _ = _first_failure(range(200))
    assert e.kind == "SAFETY" and "lockout" in str(e) and f"--seed {e.seed}" in str(e)
    assert "trace (last" in str(e) and n <= 50


def test_catches_a_tower_that_is_not_persisted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that restarts with an empty tower (PersistTower ignored) re-votes on slots it
    already voted: the oracle, kept per identity across restarts, reports it."""
    real_init = sim.SimNode.__init__

    def amnesiac(self: sim.SimNode, index: int, kp: object, stakes: object, disk: sim.Disk, peers: object) -> None:
        disk.tower = None
        real_init(self, index, kp, stakes, disk, peers)  # type: ignore[arg-type]

    monkeypatch.setattr(sim.SimNode, "__init__", amnesiac)
    e, n, _ = _first_failure(range(200))
    assert e.kind == "SAFETY" and "lockout" in str(e) and n <= 50


TOWER_LOSS_SEEDS = 200


def _crash_seeds(first: int, count: int) -> list[int]:
    return [s for s in range(first, first + count) if sim.Scenario.draw(s).crashes]


@pytest.mark.parametrize("block", range(2))
def test_nodes_whose_tower_file_is_deleted_stay_safe_and_live(block: int) -> None:
    """Issue 16: every restart finds its tower file deleted (about 100 crash scenarios);
    the restart guard (spec/tower.md "Restart without a tower") keeps every node off votes
    that could break its lost lockouts (the oracle remembers them), and finality resumes."""
    half = TOWER_LOSS_SEEDS // 2
    for seed in _crash_seeds(block * half, half):
        r = sim.run_seed(seed, tower_loss=True)
        if r.exempt is None:
            assert min(r.roots) >= sim.Scenario.draw(seed).fault_end


def test_catches_a_node_that_ignores_its_lost_tower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tower.LostVotes, "blocking", lambda self, slot, ancestors: None)
    monkeypatch.setattr(consensus.Consensus, "_lost_switch_ok", lambda self, slot, ancestors: True)
    e, n, _ = _first_failure(_crash_seeds(0, TOWER_LOSS_SEEDS), tower_loss=True)
    assert e.kind == "SAFETY" and "lockout" in str(e) and n <= 5


@pytest.mark.slow
def test_catches_a_guard_without_its_switch_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lockout half alone is not enough either: at seed 653 a node that lost its tower
    after voting on an optimistically confirmed slot left its fork once the lockouts ran
    out, without a switch proof, and a conflicting slot was confirmed."""
    monkeypatch.setattr(consensus.Consensus, "_lost_switch_ok", lambda self, slot, ancestors: True)
    e, _, _ = _first_failure(_crash_seeds(0, 700), tower_loss=True)
    assert (e.kind, e.seed) == ("SAFETY", 653) and "optimistically confirmed" in str(e)


@pytest.mark.slow
def test_catches_a_guard_without_its_lockout_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch-proof half of the guard alone is not enough: seed 79 (about 11 s)."""
    monkeypatch.setattr(tower.LostVotes, "blocking", lambda self, slot, ancestors: None)
    e, _, _ = _first_failure(_crash_seeds(0, TOWER_LOSS_SEEDS), tower_loss=True)
    assert (e.kind, e.seed) == ("SAFETY", 79) and "lockout" in str(e)


@pytest.mark.slow
def test_catches_a_guard_blind_to_the_votes_after_the_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """New votes on descendants of a lost vote deepen its lockout; a guard that forgets it
    is caught at seed 79 (about 11 s here): the node voted 5, 6, 7 on top of its lost votes
    on 2 and 3, then switched to the other fork at 14 while the vote on 2 locked until 34."""
    monkeypatch.setattr(tower.LostVotes, "after_vote", lambda self, slot, ancestors: self)
    e, _, _ = _first_failure(_crash_seeds(0, TOWER_LOSS_SEEDS), tower_loss=True)
    assert (e.kind, e.seed) == ("SAFETY", 79) and "lockout" in str(e)


@pytest.mark.slow
def test_catches_a_zero_switch_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the switch threshold at 0, nodes leave forks that > 2/3 voted on and vote a
    conflicting block to > 2/3: optimistic confirmation breaks (first at seed 200, about 8 s
    here). Not caught in 2,000 scenarios: the threshold check switched off, every vote
    weighing double in the threshold check, duplicate slots eligible without confirmation
    (with 4 honest voters none of these changes a root or an optimistic confirmation)."""
    monkeypatch.setattr(tower, "SWITCH_FORK_THRESHOLD", tower.Fraction(0))
    e, _, _ = _first_failure(range(201))
    assert (e.kind, e.seed) == ("SAFETY", 200) and "optimistically confirmed" in str(e)


@pytest.mark.slow
def test_soak() -> None:
    """50,000 seeds (about 40 minutes here): ``pytest -m slow tests/test_sim.py``."""
    bad = []
    for seed in range(10_000, 10_000 + SOAK_SEEDS):
        try:
            sim.run_seed(seed)
        except sim.SimFailure as e:
            bad.append(str(e).splitlines()[0])
    assert not bad, "\n".join(bad[:20])
