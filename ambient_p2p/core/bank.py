"""A minimal bank: lamport balances, the system transfer, fees, recent blockhashes, a status
cache against replays, and a deterministic bank hash per slot (normative text:
spec/bank.md). Transactions are Solana wire format, parsed and signature-checked with
``solders`` (Rust ed25519), so any Solana wallet or SDK can build them.

Rules (agave semantics where agave has them; simplifications are listed in spec/bank.md):

* A transaction is *rejected* (the block containing it is invalid) when: it does not
  parse or sanitize; a signature fails; its recent blockhash is unknown or older than
  ``MAX_PROCESSING_AGE`` blockhashes; its first signature was already processed
  (``already-processed``); the fee payer cannot pay ``LAMPORTS_PER_SIGNATURE`` per
  signature; it uses address lookup tables.
* Otherwise it is *committed*: the fee is charged, then its instructions run atomically;
  if one fails (unsupported program or instruction, missing signer, insufficient
  lamports), balance changes are rolled back but the fee stays (agave behaviour), and
  the error is recorded in the result.
* The native vote program (``VOTE_PROGRAM_ID``, Solana's vote program address) takes one
  instruction: a signed :class:`~ambient_p2p.core.consensus.Vote` as its data, the voter
  as its only (signing) account. It lands when the voted slot is an ancestor of this bank
  with the same bank hash (the bank keeps the last ``MAX_SLOT_HASHES`` ancestors, as
  Solana's SlotHashes sysvar) and is newer than the voter's last landed vote on this fork;
  landed votes are what the node credits as LStake once the slot is rooted.
* At ``freeze`` half of the slot's fees is burned and half credited to the slot leader
  (agave's 50% burn), the slot's last entry hash becomes a recent blockhash, and
  ``bank_hash = sha256(parent_bank_hash || accounts_delta_hash || signature_count u64 LE
  || last_blockhash [|| votes_hash])`` where ``accounts_delta_hash`` is sha256 over the
  sorted ``pubkey || lamports u64 LE`` of every account changed in the slot (32 zero bytes
  if none) and ``votes_hash`` (present only when a vote landed in the slot) is sha256 over
  ``voter || voted slot u64 LE`` of the slot's landed votes in order.
* The native auction program (``AUCTION_PROGRAM_ID``; rules in core/auction.py and
  spec/auction.md) keeps its accounts' data in ``auction_accounts`` (their lamports are
  ordinary balances). When an instruction wrote auction data in the slot, the bank hash
  gains one more component, ``auction_delta_hash`` (so banks without auction activity hash
  exactly as before).

Sans-IO: no disk, clock or network; persistence is the ledger shell's job.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import auction
from .codec import DecodeError, decode
from .consensus import Vote
from .crypto import decode_address
from .errors import ProtocolError
from .messages import verify_message

LAMPORTS_PER_SIGNATURE = 5_000
FEE_BURN_PERCENT = 50
MAX_PROCESSING_AGE = 150  # blockhashes a transaction may be behind (agave)
MAX_RECENT_BLOCKHASHES = 300  # kept in the queue (agave)
SYSTEM_PROGRAM_ID = bytes(32)
SYSTEM_INSTRUCTION_TRANSFER = 2
ZERO_HASH = bytes(32)
GENESIS_BANK_DOMAIN = b"ambient/bank-genesis/v1\x00"
#: Solana's vote program address; here it runs Ambient's vote instruction (spec/bank.md).
VOTE_PROGRAM_ID = decode_address("Vote111111111111111111111111111111111111111")
#: Ancestor (slot, bank hash) pairs a bank keeps for vote checks (Solana's SlotHashes).
MAX_SLOT_HASHES = 512


class BlockError(ProtocolError, ValueError):
    """A transaction makes its block invalid (replay marks the slot dead)."""

    def __init__(self, reason: str, detail: str, tx_index: int | None = None) -> None:
        self.tx_index = tx_index
        super().__init__(reason, detail, f" (transaction {tx_index})" if tx_index is not None else "")


@dataclass(frozen=True)
class TxResult:
    signature: bytes
    fee: int
    error: str | None  # instruction error, if any (the fee was still charged)


@dataclass(frozen=True)
class TxRecord:
    """A processed transaction as the RPC reports it (Solana's transaction status meta):
    its wire bytes, result, and its account keys' balances before and after it."""

    raw: bytes
    result: TxResult
    pre_balances: tuple[int, ...]
    post_balances: tuple[int, ...]


@dataclass(frozen=True)
class ParsedTx:
    raw: bytes
    signatures: tuple[bytes, ...]
    account_keys: tuple[bytes, ...]
    signer_count: int
    writable: tuple[bool, ...]
    recent_blockhash: bytes
    instructions: tuple[tuple[int, bytes, bytes], ...]  # (program index, account idxs, data)


def parse_transaction(raw: bytes, *, verify_signatures: bool = True) -> ParsedTx:
    """Parse, sanitize and (optionally) signature-check one wire transaction via solders."""
    from solders.message import Message, MessageV0
    from solders.transaction import VersionedTransaction

    try:
        tx = VersionedTransaction.from_bytes(bytes(raw))
        tx.sanitize()
    except Exception as exc:  # noqa: BLE001 - solders raises several error types for malformed input
        raise BlockError("bad-transaction", f"does not parse or sanitize: {exc}") from None
    if bytes(tx) != bytes(raw):
        raise BlockError("bad-transaction", "non-canonical transaction encoding")
    msg = tx.message
    if not isinstance(msg, (Message, MessageV0)):
        raise BlockError("unsupported-transaction", f"message type {type(msg).__name__} is not supported")
    if isinstance(msg, MessageV0) and len(msg.address_table_lookups) > 0:
        raise BlockError("unsupported-transaction", "address lookup tables are not supported")
    if verify_signatures and not all(tx.verify_with_results()):
        raise BlockError("bad-signature", "a transaction signature does not verify")
    hdr = msg.header
    keys = tuple(bytes(k) for k in msg.account_keys)
    nsig = hdr.num_required_signatures
    ro_signed = hdr.num_readonly_signed_accounts
    ro_unsigned = hdr.num_readonly_unsigned_accounts
    writable = tuple(
        (i < nsig - ro_signed) if i < nsig else (i < len(keys) - ro_unsigned) for i in range(len(keys))
    )
    ixs = tuple((ix.program_id_index, bytes(ix.accounts), bytes(ix.data)) for ix in msg.instructions)
    return ParsedTx(bytes(raw), tuple(bytes(s) for s in tx.signatures), keys, nsig, writable,
                    bytes(msg.recent_blockhash), ixs)


def verify_transaction_signatures(raws: Sequence[bytes]) -> list[str | None]:
    """Batch signature check (the sigverify stage): for each wire transaction, None if it
    parses and every signature verifies, else the reject reason. Done for a whole slot
    before execution, so execution can skip the ed25519 work; pure and order-free, so a
    caller may split the batch across processes."""
    out: list[str | None] = []
    for raw in raws:
        try:
            parse_transaction(raw, verify_signatures=True)
            out.append(None)
        except BlockError as exc:
            out.append(f"{exc.reason}: {exc.detail}")
    return out


@dataclass
class Bank:
    """State after some slot. Make the next with :meth:`child`; finish with :meth:`freeze`."""

    slot: int
    parent_slot: int
    parent_hash: bytes
    leader: bytes
    accounts: dict[bytes, int]
    blockhashes: list[bytes]  # oldest first; the last is the newest
    status_cache: dict[bytes, int]  # first signature -> slot processed
    bank_hash: bytes | None = None
    fees_collected: int = 0
    signature_count: int = 0
    transaction_count: int = 0
    modified: set[bytes] = field(default_factory=set)
    #: ancestors' bank hashes, ascending slots, at most MAX_SLOT_HASHES (not this slot's)
    slot_hashes: dict[int, bytes] = field(default_factory=dict)
    #: each voter's last landed vote on this fork (voted slot)
    last_votes: dict[bytes, int] = field(default_factory=dict)
    #: votes that landed in this slot, in order: (voter, voted slot)
    landed_votes: list[tuple[bytes, int]] = field(default_factory=list)
    #: the auction program's accounts: address -> fixed-layout data (spec/auction.md);
    #: values are immutable bytes, so ``child`` copies only references
    auction_accounts: dict[bytes, bytes] = field(default_factory=dict)
    #: auction accounts written in this slot (they enter the bank hash)
    auction_modified: set[bytes] = field(default_factory=set)
    #: this slot's transactions in execution order with their results (wire bytes, result): not
    #: hashed, not persisted, not copied to a child; the node's RPC transaction index
    #: (node/rpc/txindex.py) reads them when the slot freezes, as agave's
    #: TransactionStatusService reads a bank's execution results
    tx_log: list[TxRecord] = field(default_factory=list, repr=False)
    #: undo journal of the running transaction: address -> (old data, was in auction_modified)
    _auction_undo: dict[bytes, tuple[bytes | None, bool]] = field(default_factory=dict, repr=False)

    @classmethod
    def genesis(cls, genesis_hash: bytes, accounts: dict[bytes, int], leader: bytes, poh_start: bytes) -> Bank:
        """Slot 0's frozen bank: the genesis accounts, with the PoH start hash as the first
        recent blockhash."""
        b = cls(0, 0, ZERO_HASH, leader, dict(accounts), [poh_start], {})
        b.bank_hash = hashlib.sha256(GENESIS_BANK_DOMAIN + genesis_hash + accounts_hash(b.accounts)).digest()
        return b

    @classmethod
    def restore(
        cls,
        slot: int,
        parent_slot: int,
        bank_hash: bytes,
        leader: bytes,
        accounts: dict[bytes, int],
        blockhashes: Sequence[bytes],
        status_cache: dict[bytes, int],
        slot_hashes: dict[int, bytes] | None = None,
        last_votes: dict[bytes, int] | None = None,
        auction_accounts: dict[bytes, bytes] | None = None,
    ) -> Bank:
        """A frozen bank rebuilt from persisted state (the ledger's BankSnapshot v3, whose
        ``auction_accounts`` come back here: without them the bank would hash differently
        from its peers at the first auction instruction touching one)."""
        if not blockhashes:
            raise ValueError("a bank needs at least one recent blockhash")
        return cls(slot, parent_slot, ZERO_HASH, leader, dict(accounts), list(blockhashes), dict(status_cache),
                   bank_hash=bytes(bank_hash), slot_hashes=dict(sorted((slot_hashes or {}).items())),
                   last_votes=dict(last_votes or {}), auction_accounts=dict(auction_accounts or {}))

    def state_hash(self) -> bytes:
        """Digest of everything a snapshot restores (accounts, blockhashes, status cache,
        vote state, auction accounts), to check a persisted snapshot against a replayed bank."""
        h = hashlib.sha256(accounts_hash(self.accounts))
        for bh in self.blockhashes:
            h.update(bh)
        for sig in sorted(self.status_cache):
            h.update(sig + struct.pack("<Q", self.status_cache[sig]))
        for s in sorted(self.slot_hashes):
            h.update(struct.pack("<Q", s) + self.slot_hashes[s])
        for voter in sorted(self.last_votes):
            h.update(voter + struct.pack("<Q", self.last_votes[voter]))
        if self.auction_accounts:  # absent when empty: snapshots without auctions hash as before
            h.update(auction_accounts_hash(self.auction_accounts))
        return h.digest()

    @property
    def last_blockhash(self) -> bytes:
        return self.blockhashes[-1]

    def child(self, slot: int, leader: bytes) -> Bank:
        if self.bank_hash is None:
            raise ValueError("cannot build on an unfrozen bank")
        if slot <= self.slot:
            raise ValueError("child slot must be above its parent")
        horizon = slot - MAX_RECENT_BLOCKHASHES
        cache = {sig: s for sig, s in self.status_cache.items() if s > horizon}
        slot_hashes = dict(self.slot_hashes)
        slot_hashes[self.slot] = self.bank_hash
        while len(slot_hashes) > MAX_SLOT_HASHES:
            del slot_hashes[next(iter(slot_hashes))]
        return Bank(slot, self.slot, self.bank_hash, leader, dict(self.accounts), list(self.blockhashes), cache,
                    slot_hashes=slot_hashes, last_votes=dict(self.last_votes),
                    auction_accounts=dict(self.auction_accounts))

    def balance(self, pubkey: bytes) -> int:
        return self.accounts.get(bytes(pubkey), 0)

    # -- execution --------------------------------------------------------------------
    def process_transactions(self, raws: Sequence[bytes], *, verify_signatures: bool = True) -> list[TxResult]:
        """Process a batch (an entry's transactions) in order. Raises BlockError on a
        block-invalidating transaction; the bank must then be discarded."""
        if self.bank_hash is not None:
            raise ValueError("bank is frozen")
        results = []
        for i, raw in enumerate(raws):
            try:
                tx = parse_transaction(raw, verify_signatures=verify_signatures)
                pre = tuple(self.balance(k) for k in tx.account_keys)
                res = self._process(tx)
            except BlockError as exc:
                raise BlockError(exc.reason, exc.detail, i) from None
            results.append(res)
            self.tx_log.append(TxRecord(tx.raw, res, pre, tuple(self.balance(k) for k in tx.account_keys)))
        return results

    def _process(self, tx: ParsedTx) -> TxResult:
        recent = self.blockhashes[-MAX_PROCESSING_AGE:]
        if tx.recent_blockhash not in recent:
            raise BlockError("blockhash-not-found", f"recent blockhash {tx.recent_blockhash.hex()[:16]}... "
                             f"is unknown or older than {MAX_PROCESSING_AGE} blockhashes")
        sig = tx.signatures[0]
        if sig in self.status_cache:
            raise BlockError("already-processed", f"transaction {sig.hex()[:16]}... was processed in slot "
                             f"{self.status_cache[sig]}")
        fee = LAMPORTS_PER_SIGNATURE * len(tx.signatures)
        payer = tx.account_keys[0]
        if not tx.writable[0]:
            raise BlockError("bad-fee-payer", "fee payer must be a writable signer")
        if self.balance(payer) < fee:
            raise BlockError("insufficient-funds-for-fee", f"fee payer has {self.balance(payer)}, fee is {fee}")
        self._set(payer, self.balance(payer) - fee)
        self.status_cache[sig] = self.slot
        self.fees_collected += fee
        self.signature_count += len(tx.signatures)
        self.transaction_count += 1
        snapshot = dict(self.accounts)
        modified_before = set(self.modified)
        votes_before = (dict(self.last_votes), len(self.landed_votes))
        self._auction_undo = {}
        error = None
        try:
            for prog, accs, data in tx.instructions:
                self._execute(tx, prog, accs, data)
        except _InstructionError as exc:
            self.accounts = snapshot
            self.modified = modified_before
            self.last_votes = votes_before[0]
            del self.landed_votes[votes_before[1]:]
            self._undo_auction()
            error = str(exc)
        return TxResult(sig, fee, error)

    def _execute(self, tx: ParsedTx, prog: int, accs: bytes, data: bytes) -> None:
        if prog >= len(tx.account_keys) or any(a >= len(tx.account_keys) for a in accs):
            raise _InstructionError("account index out of range")
        if tx.account_keys[prog] == VOTE_PROGRAM_ID:
            self._execute_vote(tx, accs, data)
            return
        if tx.account_keys[prog] == auction.AUCTION_PROGRAM_ID:
            metas = [auction.IxAccount(tx.account_keys[a], a < tx.signer_count, tx.writable[a]) for a in accs]
            try:
                auction.process_instruction(_AuctionView(self), self.slot, metas, data)
            except auction.AuctionError as exc:
                raise _InstructionError(str(exc)) from None
            return
        if tx.account_keys[prog] != SYSTEM_PROGRAM_ID:
            raise _InstructionError(f"unsupported program {tx.account_keys[prog].hex()[:16]}...")
        if len(data) < 4 or struct.unpack_from("<I", data)[0] != SYSTEM_INSTRUCTION_TRANSFER:
            raise _InstructionError("unsupported system instruction")
        if len(data) != 12 or len(accs) < 2:
            raise _InstructionError("malformed transfer instruction")
        (lamports,) = struct.unpack_from("<Q", data, 4)
        src_i, dst_i = accs[0], accs[1]
        src, dst = tx.account_keys[src_i], tx.account_keys[dst_i]
        if src_i >= tx.signer_count:
            raise _InstructionError("transfer source must sign")
        if not (tx.writable[src_i] and tx.writable[dst_i]):
            raise _InstructionError("transfer accounts must be writable")
        if self.balance(src) < lamports:
            raise _InstructionError(f"insufficient lamports: {self.balance(src)} < {lamports}")
        self._set(src, self.balance(src) - lamports)
        new_dst = self.balance(dst) + lamports
        if new_dst >= 1 << 64:
            raise _InstructionError("lamports overflow")
        self._set(dst, new_dst)

    # -- the vote program -------------------------------------------------------------------
    def vote_error(self, vote: Vote) -> str | None:
        """Why ``vote`` (signature already checked) cannot land in this bank, or None."""
        if vote.root is not None and vote.root > vote.slot:
            return f"vote-bad-root: root {vote.root} is above the voted slot {vote.slot}"
        if vote.slot >= self.slot:
            return f"vote-not-ancestor: slot {vote.slot} is not below this bank's slot {self.slot}"
        ours = self.slot_hashes.get(vote.slot)
        if ours is None:
            return (f"vote-not-ancestor: slot {vote.slot} is not an ancestor of slot {self.slot} "
                    f"(or older than {MAX_SLOT_HASHES} ancestors)")
        if ours != vote.bank_hash:
            return f"vote-hash-mismatch: slot {vote.slot} has bank hash {ours.hex()[:16]}... on this fork"
        last = self.last_votes.get(vote.voter)
        if last is not None and vote.slot <= last:
            return f"vote-too-old: the voter's last landed vote is slot {last}"
        return None

    def _execute_vote(self, tx: ParsedTx, accs: bytes, data: bytes) -> None:
        if len(accs) != 1:
            raise _InstructionError("vote-bad-accounts: a vote instruction names exactly one account, the voter")
        if accs[0] >= tx.signer_count:
            raise _InstructionError("vote-missing-signature: the voter must sign the transaction")
        try:
            vote = decode(data, expected=Vote)
        except DecodeError as exc:
            raise _InstructionError(f"vote-bad-data: {exc}") from None
        if vote.voter != tx.account_keys[accs[0]]:
            raise _InstructionError("vote-wrong-voter: the vote's voter is not the signing account")
        if not verify_message(vote, vote.voter, "vote"):
            raise _InstructionError("vote-bad-signature: the vote's own signature does not verify")
        err = self.vote_error(vote)
        if err is not None:
            raise _InstructionError(err)
        self.last_votes[vote.voter] = vote.slot
        self.landed_votes.append((vote.voter, vote.slot))

    def _set(self, pubkey: bytes, lamports: int) -> None:
        self.accounts[pubkey] = lamports
        self.modified.add(pubkey)

    # -- the auction program's accounts --------------------------------------------------
    def auction_data(self, pubkey: bytes) -> bytes | None:
        return self.auction_accounts.get(bytes(pubkey))

    def _set_auction_data(self, pubkey: bytes, data: bytes) -> None:
        if pubkey not in self._auction_undo:
            self._auction_undo[pubkey] = (self.auction_accounts.get(pubkey), pubkey in self.auction_modified)
        self.auction_accounts[pubkey] = bytes(data)
        self.auction_modified.add(pubkey)

    def _undo_auction(self) -> None:
        for key, (old, was_modified) in self._auction_undo.items():
            if old is None:
                del self.auction_accounts[key]
            else:
                self.auction_accounts[key] = old
            if not was_modified:
                self.auction_modified.discard(key)
        self._auction_undo = {}

    # -- freeze -----------------------------------------------------------------------
    def freeze(self, last_blockhash: bytes) -> bytes:
        """Distribute fees, register ``last_blockhash`` and compute the bank hash."""
        if self.bank_hash is not None:
            raise ValueError("bank already frozen")
        reward = self.fees_collected - self.fees_collected * FEE_BURN_PERCENT // 100
        if reward:
            self._set(self.leader, self.balance(self.leader) + reward)
        self.blockhashes.append(bytes(last_blockhash))
        del self.blockhashes[:-MAX_RECENT_BLOCKHASHES]
        delta = accounts_hash({k: self.accounts[k] for k in self.modified}) if self.modified else ZERO_HASH
        h = hashlib.sha256(self.parent_hash + delta + struct.pack("<Q", self.signature_count) + bytes(last_blockhash))
        if self.landed_votes:
            h.update(votes_hash(self.landed_votes))
        if self.auction_modified:
            h.update(auction_delta_hash({k: self.auction_accounts[k] for k in self.auction_modified}))
        self.bank_hash = h.digest()
        return self.bank_hash


class _InstructionError(Exception):
    pass


class _AuctionView:
    """The bank as the auction program sees it (core/auction.py ``AccountsView``)."""

    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def balance(self, pubkey: bytes) -> int:
        return self._bank.balance(pubkey)

    def set_balance(self, pubkey: bytes, lamports: int) -> None:
        if lamports >= 1 << 64:
            raise auction.AuctionError("auction-insufficient-funds", "lamports overflow")
        self._bank._set(pubkey, lamports)

    def auction_data(self, pubkey: bytes) -> bytes | None:
        return self._bank.auction_data(pubkey)

    def set_auction_data(self, pubkey: bytes, data: bytes) -> None:
        self._bank._set_auction_data(pubkey, data)


def accounts_hash(accounts: dict[bytes, int]) -> bytes:
    """sha256 over ``pubkey || lamports u64 LE`` for every account, sorted by pubkey."""
    h = hashlib.sha256()
    for k in sorted(accounts):
        h.update(k + struct.pack("<Q", accounts[k]))
    return h.digest()


AUCTION_DELTA_DOMAIN = b"ambient/auction-delta/v1\x00"


def auction_accounts_hash(accounts: dict[bytes, bytes]) -> bytes:
    """sha256 over ``pubkey || data length u32 LE || data`` for every auction account, sorted."""
    h = hashlib.sha256()
    for k in sorted(accounts):
        h.update(k + struct.pack("<I", len(accounts[k])) + accounts[k])
    return h.digest()


def auction_delta_hash(changed: dict[bytes, bytes]) -> bytes:
    """The bank-hash component of a slot that wrote auction accounts:
    ``sha256(AUCTION_DELTA_DOMAIN || auction_accounts_hash(changed accounts))``."""
    return hashlib.sha256(AUCTION_DELTA_DOMAIN + auction_accounts_hash(changed)).digest()


def votes_hash(landed: Sequence[tuple[bytes, int]]) -> bytes:
    """sha256 over ``voter || voted slot u64 LE`` of a slot's landed votes, in order."""
    h = hashlib.sha256()
    for voter, slot in landed:
        h.update(voter + struct.pack("<Q", slot))
    return h.digest()
