"""State persisted with the ledger so that a node need not replay from genesis: a frozen
bank <-> :class:`BankSnapshot` (spec/bank.md, "Persistence"), and the validator's
:class:`NodeSnapshot` (bank + schedule book + finality count, spec/blockstore.md "Node
snapshots"), written at roots and read back by ledger/restore.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core import codec, svm
from ..core.bank import Bank
from ..core.codec import Bytes, Rec, UInt, fld, message

# when to snapshot is the sans-IO policy's (core/history.py); its names stay importable here
from ..core.history import SNAPSHOT_INTERVAL_SLOTS as SNAPSHOT_INTERVAL_SLOTS
from ..core.history import snapshot_due as snapshot_due
from ..core.schedule import ScheduleBookState
from .meta import (
    AccountBalance,
    AccountMetaData,
    AuctionAccountData,
    BankSnapshot,
    LastVote,
    ProcessedSignature,
    SlotHash,
    TallyEntry,
    WorkAccountData,
)

if TYPE_CHECKING:
    from .blockstore import Blockstore
    from .replay import SlotResult


def bank_to_snapshot(bank: Bank) -> BankSnapshot:
    if bank.bank_hash is None:
        raise ValueError("only a frozen bank can be snapshotted")
    return BankSnapshot(
        slot=bank.slot,
        parent_slot=bank.parent_slot,
        bank_hash=bank.bank_hash,
        leader=bank.leader,
        accounts=tuple(AccountBalance(k, v) for k, v in sorted(bank.accounts.items())),
        blockhashes=tuple(bank.blockhashes),
        status_cache=tuple(ProcessedSignature(s, slot) for s, slot in sorted(bank.status_cache.items())),
        slot_hashes=tuple(SlotHash(s, h) for s, h in sorted(bank.slot_hashes.items())),
        last_votes=tuple(LastVote(v, s) for v, s in sorted(bank.last_votes.items())),
        auction_accounts=tuple(AuctionAccountData(a, d) for a, d in sorted(bank.auction_accounts.items())),
        slots_per_epoch=bank.slots_per_epoch,
        work_accounts=tuple(WorkAccountData(i, d) for i, d in sorted(bank.work_accounts.items())),
        tally_epoch=bank.tally_epoch,
        epoch_tally=tuple(TallyEntry(i, lead, votes) for i, (lead, votes) in sorted(bank.epoch_tally.items())),
        account_meta=tuple(_meta_record(k, bank.accounts.get(k, 0), m) for k, m in sorted(bank.account_meta.items())),
    )


def _meta_record(pubkey: bytes, lamports: int, meta: svm.AccountMeta) -> AccountMetaData:
    genesis = svm.genesis_programs().get(pubkey)
    by_ref = genesis is not None and genesis[1] == meta
    return AccountMetaData(pubkey, meta.owner, meta.executable, meta.rent_epoch, b"" if by_ref else meta.data, by_ref)


def _meta_from_record(rec: AccountMetaData) -> svm.AccountMeta:
    data = rec.data
    if rec.genesis_data:
        genesis = svm.genesis_programs().get(rec.pubkey)
        if genesis is None or rec.data:
            raise ValueError(f"account {rec.pubkey.hex()[:16]}... refers to no genesis program's data")
        data = genesis[1].data
    return svm.AccountMeta(rec.owner, data, rec.executable, rec.rent_epoch)


def snapshot_to_bank(snap: BankSnapshot) -> Bank:
    return Bank.restore(
        snap.slot,
        snap.parent_slot,
        snap.bank_hash,
        snap.leader,
        {a.pubkey: a.lamports for a in snap.accounts},
        snap.blockhashes,
        {p.signature: p.slot for p in snap.status_cache},
        {h.slot: h.bank_hash for h in snap.slot_hashes},
        {v.voter: v.slot for v in snap.last_votes},
        auction_accounts={a.address: a.data for a in snap.auction_accounts},
        slots_per_epoch=snap.slots_per_epoch,
        work_accounts={w.identity: w.data for w in snap.work_accounts},
        epoch_tally={t.identity: (t.leader_slots, t.votes) for t in snap.epoch_tally},
        tally_epoch=snap.tally_epoch,
        account_meta=_account_meta(snap),
    )


def _account_meta(snap: BankSnapshot) -> dict[bytes, svm.AccountMeta]:
    """The snapshot's full accounts. A record without any (a BankSnapshot before v5, read
    with none) gives the accounts at the genesis programs' addresses their genesis state:
    every chain has them from slot 0 and only an SVM transaction could have changed them,
    which such a record's bank never ran."""
    if snap.account_meta:
        return {m.pubkey: _meta_from_record(m) for m in snap.account_meta}
    genesis = svm.genesis_programs()
    return {a.pubkey: genesis[a.pubkey][1] for a in snap.accounts
            if a.pubkey in genesis and genesis[a.pubkey][0] == a.lamports}


def snapshot_matches(snap: BankSnapshot, bank: Bank) -> bool:
    """Whether a stored bank snapshot describes ``bank`` (replay's ``snapshot-mismatch``
    check). A record written before the work-credit state (BankSnapshot v2/v3: read with
    ``slots_per_epoch`` 0 and no work accounts or tally) is compared without that block when
    the replayed bank has no work accounts either: its epoch count and tally are derived
    from the genesis and the fork, so the old record lost nothing; a bank with work accounts
    still mismatches (they would be lost)."""
    stored = snapshot_to_bank(snap)
    legacy = snap.slots_per_epoch == 0 and not snap.work_accounts and not snap.epoch_tally and not bank.work_accounts
    return stored.bank_hash == bank.bank_hash and stored.state_hash() == bank.state_hash(work_state=not legacy)


# ---------------------------------------------------------------------------------------
# Node snapshot: what a restarted validator needs besides the blockstore's slots above it
# ---------------------------------------------------------------------------------------
#: Node snapshots kept (the newest ones; agave keeps 2 full snapshot archives by default,
#: ``DEFAULT_MAX_FULL_SNAPSHOT_ARCHIVES_TO_RETAIN``).
MAX_NODE_SNAPSHOTS = 2
@message(type_id=0x0108, version=4, max_size=1 << 20)
@dataclass(frozen=True)
class NodeSnapshot:
    """A validator's state at root ``slot`` (spec/blockstore.md, "Node snapshots"): the
    frozen bank, what the first child slot chains to (the last entry hash for PoH, the last
    FEC set's Merkle root for shred chaining), the count of rooted slots in ``1..slot``
    (finality statistics), and the schedule book. With it and the stored slots above
    ``slot``, a node restarts without replaying from genesis. v2 embedded ``BankSnapshot``
    v3 (auction accounts); v3 embeds ``BankSnapshot`` v4 (work-credit state) and LStake
    buckets with their Logit Pool share (``pool_credits``); v4 embeds ``BankSnapshot`` v5
    (full accounts). Older records are refused
    (``unsupported-version``), never read as a bank without that state: a restart trusts
    its bank unchecked (:func:`load_latest_node_snapshot` passes over them)."""

    slot: int = fld(UInt(64))
    genesis_hash: bytes = fld(Bytes(32, exact=True))
    bank: BankSnapshot = fld(Rec(BankSnapshot))
    last_entry_hash: bytes = fld(Bytes(32, exact=True))
    last_merkle_root: bytes = fld(Bytes(32, exact=True))
    rooted_slots: int = fld(UInt(64))
    schedule: ScheduleBookState = fld(Rec(ScheduleBookState))

    def __post_init__(self) -> None:
        if self.bank.slot != self.slot:
            raise ValueError(f"bank of slot {self.bank.slot} in a snapshot of slot {self.slot}")
        if self.schedule.credited_through < self.slot:
            raise ValueError("the schedule book must be credited through the snapshot's root")


def make_node_snapshot(genesis_hash: bytes, result: SlotResult, rooted_slots: int,
                       schedule: ScheduleBookState) -> NodeSnapshot:
    bank = result.bank
    return NodeSnapshot(bank.slot, genesis_hash, bank_to_snapshot(bank), result.last_entry_hash,
                        result.last_root, rooted_slots, schedule)


def save_node_snapshot(bs: Blockstore, snap: NodeSnapshot) -> None:
    """Store ``snap`` and drop node snapshots older than the newest
    :data:`MAX_NODE_SNAPSHOTS`, in one write batch."""
    older = [s for s in bs.node_snapshot_slots() if s < snap.slot]
    kept = older[-(MAX_NODE_SNAPSHOTS - 1):] if MAX_NODE_SNAPSHOTS > 1 else []
    bs.put_node_snapshot(snap.slot, codec.encode(snap), keep_from=kept[0] if kept else snap.slot)


def load_node_snapshot(bs: Blockstore, slot: int) -> NodeSnapshot | None:
    raw = bs.node_snapshot_raw(slot)
    return None if raw is None else codec.decode(raw, NodeSnapshot)


def load_latest_node_snapshot(bs: Blockstore, skipped: list[str] | None = None) -> NodeSnapshot | None:
    """The newest node snapshot this node can read. Snapshots in a version it no longer
    speaks (``unsupported-version``: a v1 record has no auction accounts, and a restart
    cannot tell whether it lost some) are passed over for an older one; each is reported
    in ``skipped`` as ``"slot N: reason"``. Other decode failures (corruption) raise."""
    for slot in reversed(bs.node_snapshot_slots()):
        try:
            snap = load_node_snapshot(bs, slot)
        except codec.DecodeError as exc:
            if exc.reason != "unsupported-version":
                raise
            if skipped is not None:
                skipped.append(f"slot {slot}: {exc}")
            continue
        if snap is not None:
            return snap
    return None


def snapshot_slot_result(snap: NodeSnapshot) -> SlotResult:
    """The frozen :class:`SlotResult` of the snapshot's slot: what replay of its children
    and production on top of it start from."""
    from .replay import SlotResult  # replay imports this module

    return SlotResult(snapshot_to_bank(snap.bank), snap.last_entry_hash, snap.last_merkle_root, 0, 0, 0)
