"""Auction accounts survive snapshots (spec/bank.md "Persistence", spec/blockstore.md):
BankSnapshot v3 carries them, a restored bank continues exactly like the one that never
stopped, a node restarted from its NodeSnapshot reaches its peers' bank hashes, and records
written before v3 are read (BankSnapshot v2: as no auction accounts) or passed over
(NodeSnapshot v1) as spec/encoding.md says."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core import codec
from ambient_p2p.core.bank import Bank
from ambient_p2p.core.codec import DecodeError
from ambient_p2p.devnet.users import user_keypairs
from ambient_p2p.interop.formats import auction as F
from ambient_p2p.ledger.blockstore import Blockstore, slot_key
from ambient_p2p.ledger.cleanup import purge_below
from ambient_p2p.ledger.meta import (
    MAX_AUCTION_ACCOUNT_BYTES,
    MAX_SNAPSHOT_AUCTION_ACCOUNTS,
    AuctionAccountData,
    BankSnapshot,
    decode_bank_snapshot,
)
from ambient_p2p.ledger.restore import RestoreError, restore
from ambient_p2p.ledger.snapshot import (
    NodeSnapshot,
    bank_to_snapshot,
    load_latest_node_snapshot,
    snapshot_to_bank,
)
from ambient_p2p.node.validator import Validator

from .ledger_chain import LEADER, USERS, chain_genesis, restart, run_chain
from .test_restart_wiring import _lone, _reopen, _settle

M0, M1, M2 = F.MINERS[:3]


def _with_query() -> tuple[F.Chain, bytes]:
    """A chain where register_miner and request landed: one query and three miner accounts."""
    c = F.Chain()
    c.register(M0, M1, M2)
    return c, c.request(F.request_params())


def _round_trip(bank: Bank) -> Bank:
    return snapshot_to_bank(decode_bank_snapshot(codec.encode(bank_to_snapshot(bank))))


def _v2_encoding(snap: BankSnapshot) -> bytes:
    """``snap`` as a BankSnapshot v2 record (the body without ``auction_accounts`` and the
    v4 work-credit fields)."""
    _tid, _v, body = cbor2.loads(codec.encode(snap))
    for k in ("auction_accounts", "slots_per_epoch", "work_accounts", "tally_epoch", "epoch_tally", "account_meta"):
        del body[k]
    return cbor2.dumps([0x0107, 2, body], canonical=True)


def test_bank_with_auction_accounts_restores_to_the_same_state_and_continues_the_same() -> None:
    c, q = _with_query()
    bank = c.bank
    assert len(bank.auction_accounts) == 4  # three miners and the query
    snap = bank_to_snapshot(bank)
    assert [a.address for a in snap.auction_accounts] == sorted(bank.auction_accounts)
    restored = _round_trip(bank)
    assert restored.auction_accounts == bank.auction_accounts
    assert restored.state_hash() == bank.state_hash() and restored.bank_hash == bank.bank_hash
    # the next auction instruction (a bid on the query that only the snapshot carried over)
    # gives the same post-state on both banks
    txs = [T.commit_bid_transaction(m, q, price, F.salt_for(m), bank.last_blockhash)
           for m, price in ((M0, 700), (M1, 600))]
    posts = []
    for b in (bank, restored):
        child = b.child(b.slot + 1, F.LEADER.pubkey)
        results = child.process_transactions(txs)
        assert [r.error for r in results] == [None, None]
        child.freeze(b"\x42" * 32)
        posts.append(child)
    assert posts[0].bank_hash == posts[1].bank_hash
    assert posts[0].state_hash() == posts[1].state_hash()
    assert posts[0].auction_accounts == posts[1].auction_accounts
    assert A.QueryAccount.unpack(posts[1].auction_accounts[q]).bid_count == 2


@pytest.mark.parametrize("kind", [A.Kind.POOL, A.Kind.DIFFICULTY, A.Kind.DISPUTE])
def test_every_auction_account_kind_fits_a_bank_snapshot(kind: A.Kind) -> None:
    """Regression: the Logit Pool's pool (560 B) and dispute (1,368 B) accounts outgrew the
    snapshot's 416-byte field, and a node crashed on its next snapshot (EncodeError
    too-large). Every account kind the program stores must round-trip at its full size."""
    from ambient_p2p.core import logit_pool as L

    size = {A.Kind.POOL: L.POOL_ACCOUNT_BYTES, A.Kind.DIFFICULTY: L.DIFFICULTY_ACCOUNT_BYTES,
            A.Kind.DISPUTE: L.DISPUTE_ACCOUNT_BYTES}[kind]
    assert size <= MAX_AUCTION_ACCOUNT_BYTES
    c, _q = _with_query()
    bank = c.bank
    bank.auction_accounts[b"\xee" * 32] = bytes([kind]) + bytes(size - 1)
    restored = _round_trip(bank)
    assert restored.auction_accounts == bank.auction_accounts
    assert restored.state_hash() == bank.state_hash()


def test_a_snapshot_without_the_auction_accounts_would_have_diverged() -> None:
    """The property above is not vacuous: the v2 reading of the same bank (no auction
    accounts) differs in state hash, which is what replay's snapshot check compares, and the
    same bid fails on it."""
    c, q = _with_query()
    lost = snapshot_to_bank(decode_bank_snapshot(_v2_encoding(bank_to_snapshot(c.bank))))
    assert lost.auction_accounts == {} and lost.state_hash() != c.bank.state_hash()
    child = lost.child(lost.slot + 1, F.LEADER.pubkey)
    tx = T.commit_bid_transaction(M0, q, 700, F.salt_for(M0), lost.last_blockhash)
    assert child.process_transactions([tx])[0].error is not None


def test_bank_without_auctions_keeps_its_state_hash_and_an_empty_list() -> None:
    bank = F.Chain().bank
    snap = bank_to_snapshot(bank)
    assert snap.auction_accounts == ()
    assert _round_trip(bank).state_hash() == bank.state_hash()


def test_v2_record_reads_as_no_auction_accounts_only_when_canonical() -> None:
    c = F.Chain()
    snap = bank_to_snapshot(c.bank)
    raw = _v2_encoding(snap)
    with pytest.raises(DecodeError) as exc:  # the codec itself speaks only v3
        codec.decode(raw, BankSnapshot)
    assert exc.value.reason == "unsupported-version"
    assert decode_bank_snapshot(raw) == snap
    # v2 carrying the v3 field, and v1, are refused with their reason
    _t, _v, body = cbor2.loads(raw)
    with_field = cbor2.dumps([0x0107, 2, {**body, "auction_accounts": []}], canonical=True)
    for bad in (with_field, cbor2.dumps([0x0107, 1, body], canonical=True)):
        with pytest.raises(DecodeError) as exc:
            decode_bank_snapshot(bad)
        assert exc.value.reason == "unsupported-version"
    # non-canonical: the v2 body's keys out of canonical order
    keys = list(body)
    unsorted = {k: body[k] for k in reversed(keys)}
    noncanon = cbor2.dumps([0x0107, 2, unsorted])
    assert noncanon != raw
    with pytest.raises(DecodeError) as exc:
        decode_bank_snapshot(noncanon)
    assert exc.value.reason in {"unsorted-keys", "non-canonical"}


def test_v2_record_in_the_blockstore_reads_through_bank_snapshot(tmp_path: Path) -> None:
    c, _q = _with_query()
    snap = bank_to_snapshot(c.bank)
    with Blockstore.open(tmp_path / "l") as bs:
        bs._write({("bank_snapshots", slot_key(snap.slot)): _v2_encoding(snap)})
        stored = bs.bank_snapshot(snap.slot)
    assert stored == replace(snap, auction_accounts=())
    # what replay's check compares: the loss shows (snapshot-mismatch), it is not accepted
    assert snapshot_to_bank(stored).state_hash() != c.bank.state_hash()


def _account(i: int, size: int = MAX_AUCTION_ACCOUNT_BYTES) -> AuctionAccountData:
    return AuctionAccountData(i.to_bytes(32, "big"), bytes([i % 251]) * size)


def test_auction_account_list_is_canonical_and_bounded() -> None:
    base = bank_to_snapshot(F.Chain().bank)
    a, b = _account(1), _account(2)
    with pytest.raises(ValueError, match="sorted"):
        replace(base, auction_accounts=(b, a))
    with pytest.raises(ValueError, match="sorted"):
        replace(base, auction_accounts=(a, a))
    # the same refusals when a stored record carries them: decode fails with a reason
    _t, _v, body = cbor2.loads(codec.encode(replace(base, auction_accounts=(a, b))))
    for accts, reason in (([body["auction_accounts"][1], body["auction_accounts"][0]], "invalid-value"),
                          ([{"address": b"\x01" * 32, "data": b"\x00" * (MAX_AUCTION_ACCOUNT_BYTES + 1)}],
                           "too-large"),
                          ([{"address": b"\x01" * 31, "data": b""}], "wrong-length")):
        raw = cbor2.dumps([0x0107, codec.message_type_of(BankSnapshot).version, {**body, "auction_accounts": accts}],
                          canonical=True)
        with pytest.raises(DecodeError) as exc:
            codec.decode(raw, BankSnapshot)
        assert exc.value.reason == reason, exc.value
    # the bound: the most auction accounts, all of the largest kind, fit the 1 MiB message
    # next to a small bank; one more does not encode
    full = replace(base, auction_accounts=tuple(_account(i) for i in range(MAX_SNAPSHOT_AUCTION_ACCOUNTS)))
    raw = codec.encode(full)
    assert len(raw) <= codec.message_type_of(BankSnapshot).max_size
    assert decode_bank_snapshot(raw) == full
    over = tuple(_account(i) for i in range(MAX_SNAPSHOT_AUCTION_ACCOUNTS + 1))
    with pytest.raises(codec.EncodeError):
        codec.encode(replace(base, auction_accounts=over))


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(min_size=32, max_size=32), st.binary(max_size=MAX_AUCTION_ACCOUNT_BYTES),
                       max_size=12))
def test_any_auction_state_round_trips_through_the_snapshot(accts: dict[bytes, bytes]) -> None:
    bank = F.Chain().bank
    bank.auction_accounts = dict(accts)
    again = _round_trip(bank)
    assert again.auction_accounts == accts and again.state_hash() == bank.state_hash()


# ---------------------------------------------------------------------------------------
# node snapshots and restart
# ---------------------------------------------------------------------------------------
REQ, MINER, BIDDER = USERS[0], USERS[1], USERS[2]
# the shortest deadline the chain's 12.5 ms slots allow (spec/auction.md "Windows")
PARAMS = F.request_params(nonce=7, deadline_slots=A.Windows.for_slot(
    chain_genesis().poh.slot_duration_us).min_deadline_slots)
QUERY = A.query_address(REQ.pubkey, PARAMS.nonce)
REQUEST_SLOT, BID_SLOTS = 60, (66, 67)  # the node snapshot is at root 64, between them


def _auction_txs(slot: int, blockhash: bytes) -> list[bytes]:
    if slot == REQUEST_SLOT - 2:
        return [T.register_miner_transaction(MINER, blockhash), T.register_miner_transaction(BIDDER, blockhash)]
    if slot == REQUEST_SLOT:
        return [T.request_transaction(REQ, PARAMS, blockhash)]
    if slot in BID_SLOTS:  # instructions on state only the snapshot carries over the restart
        m = MINER if slot == BID_SLOTS[0] else BIDDER
        return [T.commit_bid_transaction(m, QUERY, 500 + slot, F.salt_for(m), blockhash)]
    return []


def _auction_chain(path: Path) -> Any:
    run = run_chain(path, 100, keep_slots=None, extra_txs=_auction_txs)
    assert run.tip is not None
    q = A.QueryAccount.unpack(run.tip.bank.auction_accounts[QUERY])
    assert q.bid_count == 2  # both bids landed in the chain that never stopped
    return run


def test_node_snapshot_keeps_auction_accounts_and_restart_reaches_the_same_tip(tmp_path: Path) -> None:
    run = _auction_chain(tmp_path / "l")
    with Blockstore.open(tmp_path / "l", read_only=True) as bs:
        snap = load_latest_node_snapshot(bs)
    assert snap is not None and snap.slot == 64
    assert codec.message_type_of(NodeSnapshot).version == 4
    carried = {a.address: a.data for a in snap.bank.auction_accounts}
    assert QUERY in carried and A.miner_address(MINER.pubkey) in carried
    assert A.QueryAccount.unpack(carried[QUERY]).bid_count == 0  # the bids come after the snapshot
    r, frozen, _t1, _t2 = restart(tmp_path / "l", run.genesis)
    assert r.snapshot == snap and r.root == 64 and r.skipped_snapshots == []
    assert r.result.bank.auction_accounts == carried
    # replay above the snapshot checks every slot's stored bank hash (the bids included)
    tip = frozen[100]
    assert tip.bank.bank_hash == run.tip.bank.bank_hash
    assert tip.bank.state_hash() == run.tip.bank.state_hash()
    assert tip.bank.auction_accounts == run.tip.bank.auction_accounts


def test_node_snapshot_v1_is_passed_over_never_read_without_auctions(tmp_path: Path) -> None:
    run = _auction_chain(tmp_path / "l")
    with Blockstore.open(tmp_path / "l") as bs:
        snap = load_latest_node_snapshot(bs)
        assert snap is not None
        _t, _v, body = cbor2.loads(codec.encode(snap))
        del body["bank"]["auction_accounts"]
        bs.put_node_snapshot(snap.slot, cbor2.dumps([0x0108, 1, body], canonical=True))
        with pytest.raises(DecodeError) as exc:
            codec.decode(bs.node_snapshot_raw(snap.slot) or b"", NodeSnapshot)
        assert exc.value.reason == "unsupported-version"
        r = restore(bs, run.genesis, LEADER.pubkey)  # unpruned: replay from genesis
        assert r.snapshot is None and r.root == 0 and len(r.skipped_snapshots) == 1
        assert r.skipped_snapshots[0].startswith(f"slot {snap.slot}: unsupported-version")
        # on a pruned ledger there is nothing to fall back to: one clear error
        purge_below(bs, run.root, 16)
        assert bs.is_pruned()
        with pytest.raises(RestoreError, match=f"unreadable: slot {snap.slot}: unsupported-version"):
            restore(bs, run.genesis, LEADER.pubkey)


# ---------------------------------------------------------------------------------------
# a validator restart (node/validator.py aload) keeps the auction state
# ---------------------------------------------------------------------------------------
async def _drive_with(v: Validator, now: dict[str, int], n: int,
                      txs_at: Callable[[int, bytes], list[bytes]]) -> None:
    """tests/test_restart_wiring.py's lone-leader driver, handing the mempool the auction
    transactions of each slot (built on the parent's last blockhash) before it is produced."""
    for _ in range(n):
        slot = v.slot_at(now["ms"]) + 1
        now["ms"] = math.ceil(v.slot_start_ms(slot))
        parent = v.cons.processed_slot()
        for raw in txs_at(slot, v.banks[parent].bank.last_blockhash):
            v.add_tx(raw)
        await v.produce(slot, parent)
        await v.voting.drain()
        await _settle(v)


def test_validator_restarted_from_its_snapshot_keeps_the_auction_state(tmp_path: Path) -> None:
    g, now, d, v = _lone(tmp_path)
    users = user_keypairs(g.chain_id)
    req, miner, bidder = users[0], users[1], users[2]
    query = A.query_address(req.pubkey, PARAMS.nonce)

    def txs_at(slot: int, blockhash: bytes) -> list[bytes]:
        if slot == REQUEST_SLOT - 2:
            return [T.register_miner_transaction(miner, blockhash), T.register_miner_transaction(bidder, blockhash)]
        if slot == REQUEST_SLOT:
            return [T.request_transaction(req, PARAMS, blockhash)]
        if slot in BID_SLOTS:
            m = miner if slot == BID_SLOTS[0] else bidder
            return [T.commit_bid_transaction(m, query, 500 + slot, F.salt_for(m), blockhash)]
        return []

    trio.run(_drive_with, v, now, 100, txs_at)
    assert v.bs.node_snapshot_slots() == [64]
    assert A.QueryAccount.unpack(v.banks[100].bank.auction_accounts[query]).bid_count == 2
    before = {s: (r.bank.bank_hash, r.bank.state_hash()) for s, r in v.banks.items()}
    v.close()

    v2 = _reopen(g, now, d)
    assert v2.stats.restored_from == 64  # from the snapshot, whose bank holds the query
    snap = load_latest_node_snapshot(v2.bs)
    assert snap is not None and query in {a.address for a in snap.bank.auction_accounts}
    assert {s: (r.bank.bank_hash, r.bank.state_hash()) for s, r in v2.banks.items()} == before
    # and it goes on: closing the auction after the restart needs the query (carried by the
    # snapshot) and both bids (replayed above it); it lands and settles them
    trio.run(_drive_with, v2, now, 2,
             lambda s, bh: [T.close_auction_transaction(users[3], query, req.pubkey, [miner.pubkey, bidder.pubkey], bh)]
             if s == 101 else [])
    tip = v2.banks[v2.cons.processed_slot()].bank
    assert v2.cons.processed_slot() >= 101
    assert A.QueryAccount.unpack(tip.auction_accounts[query]).status == A.QueryStatus.REFUNDED
    for m in (miner, bidder):  # committed, never revealed: forfeited
        bid = A.BidAccount.unpack(tip.auction_accounts[A.bid_address(query, m.pubkey)])
        assert bid.status == A.BidStatus.FORFEITED
    v2.close()


def test_ledger_verify_on_a_pruned_ledger_with_a_v1_node_snapshot_is_one_error_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.cli import main
    from ambient_p2p.ledger.producer import GENESIS_FILE

    run = _auction_chain(tmp_path / "l")
    (tmp_path / "l" / GENESIS_FILE).write_bytes(codec.encode(run.genesis))
    with Blockstore.open(tmp_path / "l") as bs:
        snap = load_latest_node_snapshot(bs)
        assert snap is not None
        _t, _v, body = cbor2.loads(codec.encode(snap))
        del body["bank"]["auction_accounts"]
        bs.put_node_snapshot(snap.slot, cbor2.dumps([0x0108, 1, body], canonical=True))
        purge_below(bs, run.root, 16)
    capsys.readouterr()
    rc = main(["ledger", "verify", str(tmp_path / "l"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"node snapshot at slot {snap.slot} cannot be read: unsupported-version" in lines[0], err
