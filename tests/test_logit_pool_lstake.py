"""A slash reaches leader slots and the validator draw within two epochs (issue 13
acceptance, "within two epochs its leader slots and draw probability fall accordingly";
spec/lstake.md "Slashing" and "Shares of an epoch"). Pure: the LStake ledger, the schedule
and the draw of core/, integers only."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import logit_pool as L
from ambient_p2p.core.lstake import (
    PPM,
    LStakeLedger,
    WorkKind,
    epoch_shares,
    epoch_weights,
    schedule_for_epoch,
)
from ambient_p2p.core.messages import Genesis
from ambient_p2p.interop.formats.codec import sample_genesis

#: the epoch the cheater's slash is booked in
SLASH_EPOCH = 3


def busy_ledger(g: Genesis, miner_tokens: int) -> LStakeLedger:
    """Epochs 0..SLASH_EPOCH: every node leads its share of slots and votes in every slot;
    ``miner`` (node 0) also serves ``miner_tokens`` accepted tokens an epoch, the others
    validate positions."""
    led = LStakeLedger.from_genesis(g)
    spe = g.epoch.slots_per_epoch
    ids = [n.identity for n in g.bootstrap_nodes]
    for e in range(SLASH_EPOCH + 1):
        for i in ids:
            led.credit(i, e, WorkKind.LEADER_SLOTS, spe // len(ids))
            led.credit(i, e, WorkKind.VOTES, spe)
        led.apply_work(ids[0], e, miner_tokens, 0, False)
        for v in ids[1:]:
            led.apply_work(v, e, 0, 8, False)
    return led


def shares(g: Genesis, led: LStakeLedger, epoch: int) -> dict[bytes, tuple[int, int, int]]:
    return {k: (s.lstake, s.leader_slots, s.draw_ppm)
            for k, s in epoch_shares(epoch_weights(g, led, epoch), schedule_for_epoch(g, led, epoch)).items()}


def test_a_slashed_miner_has_no_leader_slots_and_no_draw_weight_two_epochs_on() -> None:
    g = sample_genesis(4)
    miner = g.bootstrap_nodes[0].identity
    honest = busy_ledger(g, 5000)
    led = copy.deepcopy(honest)
    led.apply_work(miner, SLASH_EPOCH, 0, 0, True)  # the settle of a rejected result, rooted in SLASH_EPOCH
    before, after = shares(g, led, SLASH_EPOCH + 1), shares(g, led, SLASH_EPOCH + 2)
    # the schedule of SLASH_EPOCH + 1 was fixed from the end of SLASH_EPOCH - 1: unchanged
    assert before == shares(g, honest, SLASH_EPOCH + 1)
    assert before[miner][0] > 0 and before[miner][1] > 0 and before[miner][2] > 0
    # SLASH_EPOCH + 2 reads the snapshot at the end of SLASH_EPOCH, which holds the slash
    assert miner not in after  # LStake 0, no leader slot, draw probability 0
    unslashed = shares(g, honest, SLASH_EPOCH + 2)
    assert unslashed[miner][1] > 0 and unslashed[miner][2] > 0  # what it would have had
    assert sum(s[1] for s in after.values()) == g.epoch.slots_per_epoch  # its slots went to the others
    assert sum(s[2] for s in after.values()) <= PPM
    for k, s in after.items():
        assert s[0] >= unslashed[k][0] and s[2] > unslashed[k][2]  # the others' shares grew
    # the draw over that epoch's weights never picks it, for any query
    weights = epoch_weights(g, led, SLASH_EPOCH + 2)
    others = [n.identity for n in g.bootstrap_nodes[1:]]
    for n in range(64):
        d = L.draw_validators(bytes(32), n.to_bytes(32, "little"), 0, bytes([n]) * 32, weights, [others[0]], 16)
        assert miner not in [v.validator for v in d.validators]


def test_draw_ppm_is_the_first_pick_probability_in_integers() -> None:
    a, b, c = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    s = epoch_shares({a: 1, b: 2, c: 0}, [a, a, b, b, b, b, c, c])
    assert s[a].draw_ppm == PPM // 3 and s[b].draw_ppm == 2 * PPM // 3 and s[c].draw_ppm == 0
    assert (s[a].leader_slots, s[b].leader_slots, s[c].leader_slots) == (2, 4, 2)
    assert epoch_shares({}, []) == {}


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20_000), st.integers(0, SLASH_EPOCH))
def test_a_slash_never_raises_its_share_and_zeroes_it_from_the_lagged_epoch(tokens: int, at: int) -> None:
    """A slash booked in epoch ``at``: the shares of epochs up to ``at + 1`` stand (fixed from
    older snapshots), from ``at + 2`` the identity has no LStake, leader slot or draw
    weight, while nobody else's LStake falls."""
    g = sample_genesis(3)
    miner = g.bootstrap_nodes[0].identity
    honest = busy_ledger(g, tokens)
    led = copy.deepcopy(honest)
    led.apply_work(miner, at, 0, 0, True)
    for e in range(at + 2):
        assert shares(g, led, e) == shares(g, honest, e)
    after, unslashed = shares(g, led, at + 2), shares(g, honest, at + 2)
    assert miner not in after and unslashed[miner][0] > 0
    for k, s in after.items():
        assert s[0] >= unslashed[k][0] and s[2] >= unslashed[k][2]
