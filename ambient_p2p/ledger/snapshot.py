"""Bank state persisted with the ledger: a frozen bank <-> :class:`BankSnapshot`
(spec/bank.md, "Persistence")."""

from __future__ import annotations

from ..core.bank import Bank
from .meta import AccountBalance, BankSnapshot, LastVote, ProcessedSignature, SlotHash


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
    )


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
    )
