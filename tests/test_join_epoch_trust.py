"""The epoch check of the snapshot trust rule (issue 20, spec/join.md "Trust rule", step 2):
a snapshot's attesters must hold 2/3 of the LStake that weighs its own epoch, as its own
schedule book records it, besides 2/3 of the genesis anchor. Adversarial case: the genesis
validators have lost their LStake to newcomers who did the work; on their own they pass the
genesis anchor but cannot certify a snapshot that records their loss."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core.crypto import Keypair, sha256
from ambient_p2p.core.join import epoch_stake_problem, ranked_snapshots
from ambient_p2p.core.lstake import WorkKind
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.devnet.genesis import localnet_genesis
from ambient_p2p.node.snapshot_sync import attest, genesis_stakes, snapshot_epoch_weights

OLD = [Keypair.deterministic("epoch-trust/genesis", i) for i in range(4)]
NEW = [Keypair.deterministic("epoch-trust/newcomer", i) for i in range(3)]
GENESIS = localnet_genesis("epoch-trust", [k.pubkey for k in OLD], slots_per_epoch=64, creation_time_s=1)
SPE = GENESIS.epoch.slots_per_epoch
RAW = bytes(range(256)) * 12
BANK = sha256(b"bank at slot")
SLOT = 6 * SPE + 5  # epoch 6: weighed by the LStake snapshot at the end of epoch 4


def _snapshot(book: ScheduleBook) -> SimpleNamespace:
    """The parts of a node snapshot the epoch check reads (ledger/snapshot.py NodeSnapshot)."""
    book.credited_through = SLOT
    return SimpleNamespace(slot=SLOT, schedule=book.to_state())


def _moved_on() -> SimpleNamespace:
    """Epochs 2-4: the newcomers served validated tokens (pool work); the genesis nodes did
    nothing, so their bootstrap LStake faded out (spec/lstake.md) and one was slashed."""
    book = ScheduleBook(GENESIS)
    for e in range(2, 5):
        for k in NEW:
            book.ledger.credit(k.pubkey, e, WorkKind.INFERENCE_TOKENS, 5_000)
    book.ledger.forfeit(OLD[0].pubkey, 3)
    return _snapshot(book)


def _still_theirs() -> SimpleNamespace:
    """The genesis nodes led and voted through epoch 4; nobody else worked."""
    book = ScheduleBook(GENESIS)
    for e in range(2, 5):
        for k in OLD:
            book.ledger.credit(k.pubkey, e, WorkKind.LEADER_SLOTS, 16)
    return _snapshot(book)


def _atts(keys: list[Keypair], bank: bytes = BANK) -> list:  # type: ignore[type-arg]
    return [attest(k, GENESIS.hash(), SLOT, bank, RAW, 1024) for k in keys]


def test_the_epoch_weights_are_the_snapshots_own_book() -> None:
    w = snapshot_epoch_weights(_moved_on(), GENESIS)
    assert set(w) == {k.pubkey for k in NEW} and all(v > 0 for v in w.values())
    w = snapshot_epoch_weights(_still_theirs(), GENESIS)
    assert set(w) == {k.pubkey for k in OLD}
    # epochs 0 and 1 are weighed by genesis
    early = ScheduleBook(GENESIS)
    early.credited_through = SPE + 3
    snap = SimpleNamespace(slot=SPE + 3, schedule=early.to_state())
    assert snapshot_epoch_weights(snap, GENESIS) == genesis_stakes(GENESIS)


def test_genesis_holders_who_lost_their_lstake_cannot_certify_a_snapshot_on_their_own() -> None:
    anchor = genesis_stakes(GENESIS)
    ranked, refused = ranked_snapshots(_atts(OLD), anchor, GENESIS.hash())
    assert len(ranked) == 1 and not refused  # the genesis anchor alone would trust it
    weights = snapshot_epoch_weights(_moved_on(), GENESIS)
    assert epoch_stake_problem(ranked[0].servers, weights) == "stale-attesters"
    # a false bank hash they all sign fares no better: the anchor passes, the epoch check refuses
    liars, _ = ranked_snapshots(_atts(OLD, sha256(b"their own history")), anchor, GENESIS.hash())
    assert epoch_stake_problem(liars[0].servers, weights) == "stale-attesters"


def test_the_same_snapshot_is_trusted_once_those_who_hold_its_epochs_lstake_attest_it() -> None:
    anchor = genesis_stakes(GENESIS)
    atts = _atts(OLD[1:]) + _atts(NEW)  # 3/4 of genesis and every newcomer
    ranked, refused = ranked_snapshots(atts, anchor, GENESIS.hash())
    assert len(ranked) == 1 and refused == {"no-stake": 3}  # newcomers have no genesis LStake
    assert epoch_stake_problem(ranked[0].servers, snapshot_epoch_weights(_moved_on(), GENESIS)) is None
    # one newcomer short of 2/3 of the epoch's LStake: refused
    fewer, _ = ranked_snapshots(_atts(OLD[1:]) + _atts(NEW[:1]), anchor, GENESIS.hash())
    assert epoch_stake_problem(fewer[0].servers, snapshot_epoch_weights(_moved_on(), GENESIS)) == "stale-attesters"


def test_genesis_holders_who_still_hold_the_lstake_certify_as_before() -> None:
    ranked, _ = ranked_snapshots(_atts(OLD[:3]), genesis_stakes(GENESIS), GENESIS.hash())
    assert epoch_stake_problem(ranked[0].servers, snapshot_epoch_weights(_still_theirs(), GENESIS)) is None


def test_ranked_claims_are_best_first() -> None:
    newer = [attest(k, GENESIS.hash(), SLOT + 64, BANK, RAW, 1024) for k in OLD[:3]]
    ranked, _ = ranked_snapshots(_atts(OLD) + newer, genesis_stakes(GENESIS), GENESIS.hash())
    assert [t.attestation.slot for t in ranked] == [SLOT + 64, SLOT]


def test_an_empty_epoch_table_certifies_nothing() -> None:
    assert epoch_stake_problem([k.pubkey for k in OLD], {}) == "no-epoch-stake"
    assert epoch_stake_problem([k.pubkey for k in OLD], {OLD[0].pubkey: 0}) == "no-epoch-stake"


@settings(max_examples=200, deadline=None)
@given(stakes=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=7),
       signers=st.lists(st.integers(min_value=0, max_value=6), max_size=10))
def test_epoch_check_passes_exactly_at_two_thirds(stakes: list[int], signers: list[int]) -> None:
    keys = [k.pubkey for k in OLD + NEW]
    table = {keys[i]: s for i, s in enumerate(stakes)}
    held = sum(stakes[i] for i in set(signers) if i < len(stakes))
    total = sum(stakes)
    want = "no-epoch-stake" if total == 0 else (None if 3 * held >= 2 * total else "stale-attesters")
    assert epoch_stake_problem([keys[i] for i in signers], table) == want
