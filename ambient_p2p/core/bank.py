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
* Work-credit accounts (``work_accounts``; layout in core/work.py, rules in spec/lstake.md):
  ``credit_work`` / ``slash_work``, called by the Logit Pool's settlement inside an
  instruction (journalled: an instruction error rolls them back), update an identity's
  fixed-layout account and append a ``WorkEvent`` to the slot's ``work_events``. When a
  slot wrote work accounts the bank hash gains ``work_delta_hash`` after the auction
  component (banks without work credits hash exactly as before).
* Epochs (``slots_per_epoch``, 0 = no epochs, as in the bank vectors): the bank tallies each
  identity's leader slots and landed votes of its epoch (``epoch_tally``, for rewards,
  core/rewards.py); ``pay_epoch_rewards`` pays a closed epoch's inflation into balances.

Sans-IO: no disk, clock or network; persistence is the ledger shell's job.
"""

from __future__ import annotations

import gc
import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from typing import Any, NamedTuple, TypeVar

from . import auction, rewards, svm, work
from .codec import DecodeError, decode
from .consensus import Vote
from .crypto import decode_address
from .errors import ProtocolError
from .genesis import DEFAULT_SLOT_DURATION_US
from .messages import verify_message
from .svm import DEFAULT_META, AccountMeta, account_hash

#: programs whose transactions' records keep their keys' metas (TxRecord.pre_metas)
_TOKEN_PROGRAM_IDS = frozenset((svm.SPL_TOKEN_PROGRAM_ID, svm.SPL_TOKEN_2022_PROGRAM_ID))

LAMPORTS_PER_SIGNATURE = 5_000
FEE_BURN_PERCENT = 50
MAX_PROCESSING_AGE = 150  # blockhashes a transaction may be behind (agave)
MAX_RECENT_BLOCKHASHES = 300  # kept in the queue (agave)
SYSTEM_PROGRAM_ID = bytes(32)
ZERO_HASH = bytes(32)
GENESIS_BANK_DOMAIN = b"ambient/bank-genesis/v1\x00"
#: Solana's vote program address; here it runs Ambient's vote instruction (spec/bank.md).
VOTE_PROGRAM_ID = decode_address("Vote111111111111111111111111111111111111111")
#: Ancestor (slot, bank hash) pairs a bank keeps for vote checks (Solana's SlotHashes).
MAX_SLOT_HASHES = 512
#: Programs the bank runs natively (spec/bank.md); every other instruction runs in the SVM.
NATIVE_PROGRAM_IDS = frozenset({VOTE_PROGRAM_ID, auction.AUCTION_PROGRAM_ID})
#: programs whose one-instruction transactions take ``Bank._process``, not the inline SVM path
_NOT_INLINE_PROGRAM_IDS = NATIVE_PROGRAM_IDS | {svm.COMPUTE_BUDGET_PROGRAM_ID}


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
    logs: tuple[str, ...] = ()  # the programs' log messages (SVM transactions)
    compute_units: int = 0  # compute units the SVM consumed


@dataclass(frozen=True)
class TxRecord:
    """A processed transaction as the RPC reports it (Solana's transaction status meta):
    its wire bytes, result, and its account keys' balances before and after it."""

    raw: bytes
    result: TxResult
    pre_balances: tuple[int, ...]
    post_balances: tuple[int, ...]
    #: agave's pre/postTokenBalances source (rpcmeta hook): the metas of the account keys
    #: (None: no meta) before and after, for a transaction naming SPL Token or Token-2022
    #: (() for any other); None where not recorded (history read back from the blockstore)
    pre_metas: tuple[AccountMeta | None, ...] | None = None
    post_metas: tuple[AccountMeta | None, ...] | None = None


@dataclass(frozen=True)
class ParsedTx:
    raw: bytes
    signatures: tuple[bytes, ...]
    account_keys: tuple[bytes, ...]
    signer_count: int
    writable: tuple[bool, ...]
    recent_blockhash: bytes
    instructions: tuple[tuple[int, bytes, bytes], ...]  # (program index, account idxs, data)
    #: the parsed solders ``VersionedTransaction`` (what the SVM executes)
    vtx: Any = field(default=None, compare=False, repr=False)
    #: the keys ``writable`` marks, in order (the fee payer first)
    writable_keys: tuple[bytes, ...] = field(default=(), compare=False, repr=False)


_SOLDERS_VT: Any = None


def _versioned_transaction() -> Any:
    global _SOLDERS_VT
    from solders.transaction import VersionedTransaction

    _SOLDERS_VT = VersionedTransaction
    return VersionedTransaction


def _frozen(cls: type[_T], values: dict[str, Any]) -> _T:
    """``cls(**values)`` for a frozen dataclass without its ``__init__``, which sets each
    field through ``object.__setattr__`` (0.5-0.7 us an instance; the bank builds three for
    every transaction). ``values`` must name every field; tests/test_svm.py checks that the
    bank's uses build what the constructors build."""
    obj = _new_object(cls)
    _set_attribute(obj, "__dict__", values)
    return obj


_new_object = object.__new__
_set_attribute = object.__setattr__
_T = TypeVar("_T")


def parse_transaction(raw: bytes, *, verify_signatures: bool = True) -> ParsedTx:
    """Parse, sanitize and (optionally) signature-check one wire transaction via solders."""
    if type(raw) is not bytes:
        raw = bytes(raw)
    try:
        tx = (_SOLDERS_VT or _versioned_transaction()).from_bytes(raw)
        tx.sanitize()
    except Exception as exc:  # noqa: BLE001 - solders raises several error types for malformed input
        raise BlockError("bad-transaction", f"does not parse or sanitize: {exc}") from None
    if bytes(tx) != raw:
        raise BlockError("bad-transaction", "non-canonical transaction encoding")
    # Everything below is read out of the wire bytes, whose structure solders has just parsed
    # and re-encoded byte for byte (a legacy or v0 message, compact-u16 lengths canonical):
    # reading the solders objects' fields costs 0.1-1 us each, and this runs for every
    # transaction (spec/svm.md "Performance")
    nsigs = raw[0]
    shape = None
    if nsigs < 0x80:
        msg = 1 + 64 * nsigs
        end = msg + 4 + (raw[msg] >> 7)  # [version prefix], header, key count
        if raw[end - 1] < 0x80:  # one-byte lengths: the common case
            # the header's required-signature count is the signature count (sanitized), and
            # these keys (4 or 5 bytes) are shorter than any ``_shape`` key (6 or more)
            shape = raw[msg:end]
    if shape is None:
        shape = _shape(raw)
    layout = _LAYOUTS.get(shape) or _layout(raw, shape)
    fields = layout.fields.unpack_from(raw)
    sigs = fields[:layout.nsigs]
    keys = fields[layout.nsigs:-1]
    blockhash = fields[-1]
    if layout.version is not None and layout.version != 0:  # solders parses no other version
        raise BlockError("unsupported-transaction", f"message version {layout.version} is not supported")
    versioned = layout.version is not None
    pos = layout.fields.size
    nsig = layout.nsig
    writable = layout.writable
    nix = raw[pos]
    if nix & 0x80:
        nix, pos = _shortvec(raw, pos)
    else:
        pos += 1
    ixs = []
    for _ in range(nix):
        prog = raw[pos]
        n = raw[pos + 1]
        if n & 0x80:
            n, pos = _shortvec(raw, pos + 1)
        else:
            pos += 2
        accs = raw[pos: pos + n]
        pos += n
        n = raw[pos]
        if n & 0x80:
            n, pos = _shortvec(raw, pos)
        else:
            pos += 1
        ixs.append((prog, accs, raw[pos: pos + n]))
        pos += n
    if versioned and raw[pos] != 0:  # the address table lookups' count
        raise BlockError("unsupported-transaction", "address lookup tables are not supported")
    if verify_signatures and not all(tx.verify_with_results()):
        raise BlockError("bad-signature", "a transaction signature does not verify")
    end = layout.writable_end
    parsed = _new_object(ParsedTx)  # _frozen without its call
    _set_attribute(parsed, "__dict__", {
        "raw": raw, "signatures": sigs, "account_keys": keys, "signer_count": nsig, "writable": writable,
        "recent_blockhash": blockhash, "instructions": tuple(ixs), "vtx": tx,
        "writable_keys": keys[:end] if end else keys[:layout.signed_writable] + keys[nsig:layout.unsigned_writable]})
    return parsed


class _Layout(NamedTuple):
    """Where a transaction of one shape keeps its parts (``_LAYOUTS``)."""

    fields: struct.Struct  # unpacks the signatures, the account keys and the recent blockhash
    nsigs: int
    version: int | None  # None: a legacy message
    nsig: int  # required signatures
    signed_writable: int  # keys [0, signed_writable) and [nsig, unsigned_writable) are writable
    unsigned_writable: int
    writable: tuple[bool, ...]
    #: the writable keys are ``keys[:writable_end]`` (every signer writable, or no unsigned key
    #: writable: the common shapes); 0: the two ranges above
    writable_end: int


#: transaction shape (the signature count, version prefix, header and key count as on the
#: wire) -> its layout; a few shapes make up a chain's traffic. Bounded: cleared when full.
_LAYOUTS: dict[bytes, _Layout] = {}
_MAX_LAYOUTS = 4096


def _shape(raw: bytes) -> bytes:
    """The wire bytes that fix a transaction's layout (``_LAYOUTS``' key) where a length takes
    more than one byte: the signature count, version prefix, header and key count as on the wire."""
    nsigs, pos = _shortvec(raw, 0)
    start = pos + 64 * nsigs
    head = start + (1 if raw[start] & 0x80 else 0) + 3
    _nkeys, end = _shortvec(raw, head)
    return raw[:pos] + raw[start:end]


def _layout(raw: bytes, shape: bytes) -> _Layout:
    nsigs, pos = _shortvec(raw, 0)
    fmt = "<" + "x" * pos + "64s" * nsigs
    pos += 64 * nsigs
    version = None
    if raw[pos] & 0x80:
        version = raw[pos] & 0x7F
        pos += 1
        fmt += "x"
    nsig, ro_signed, ro_unsigned = raw[pos], raw[pos + 1], raw[pos + 2]
    nkeys, end = _shortvec(raw, pos + 3)
    fmt += "x" * (end - pos) + "32s" * nkeys + "32s"
    signed_writable, unsigned_writable = nsig - ro_signed, nkeys - ro_unsigned
    writable = tuple([i < signed_writable if i < nsig else i < unsigned_writable for i in range(nkeys)])
    writable_end = (unsigned_writable if signed_writable == nsig else signed_writable if unsigned_writable <= nsig
                    else 0)
    layout = _Layout(struct.Struct(fmt), nsigs, version, nsig, signed_writable, unsigned_writable, writable,
                     writable_end)
    if len(_LAYOUTS) >= _MAX_LAYOUTS:
        _LAYOUTS.clear()
    _LAYOUTS[shape] = layout
    return layout


def _shortvec(buf: bytes, pos: int) -> tuple[int, int]:
    """Solana's compact-u16 length at ``pos``: (value, position after it)."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


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
    #: slots per epoch (genesis ``EpochParams``); 0 = the bank knows no epochs (everything
    #: is epoch 0: the interop bank vectors, unit tests)
    slots_per_epoch: int = 0
    #: work-credit accounts: identity -> fixed-layout data (core/work.py, spec/lstake.md)
    work_accounts: dict[bytes, bytes] = field(default_factory=dict)
    #: work accounts written in this slot (they enter the bank hash)
    work_modified: set[bytes] = field(default_factory=set)
    #: credits and slashes booked in this slot, in call order (LStake reads them at root)
    work_events: list[work.WorkEvent] = field(default_factory=list)
    _work_undo: dict[bytes, tuple[bytes | None, bool]] = field(default_factory=dict, repr=False)
    _work_events_before: int = field(default=0, repr=False)
    #: leader slots and landed votes per identity in epoch ``tally_epoch`` on this fork
    #: (counted at freeze when ``slots_per_epoch`` > 0; read by ``pay_epoch_rewards``)
    epoch_tally: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    tally_epoch: int = 0
    #: the rewards this bank paid (it is the first bank of an epoch on its fork), if any
    epoch_rewards: rewards.EpochRewards | None = None
    #: the Logit Pool's LStake source (spec/logit_pool.md "The draw"): epoch -> LStake of
    #: every identity (the snapshot that weighs the epoch's votes), or None when that
    #: snapshot is not final here. Set by the node on its root bank; ``child`` passes it on.
    #: None: every identity with the validator role weighs 1 (vectors, unit tests).
    lstake_provider: Callable[[int], Mapping[bytes, int] | None] | None = field(default=None, repr=False,
                                                                              compare=False)
    #: the chain's slot duration (genesis ``PohParams.slot_duration_us``): the unit of the
    #: auction's time windows (spec/auction.md "Windows"). Not hashed and not persisted:
    #: ``child_bank`` sets it on every bank of the chain's path from the genesis, ``child``
    #: passes it on; a bank without a genesis (vectors, unit tests) runs 400 ms slots.
    slot_duration_us: int = field(default=DEFAULT_SLOT_DURATION_US, compare=False)
    #: the genesis creation time (``Genesis.creation_time_s``), the origin of the Clock
    #: sysvar's ``unix_timestamp`` (spec/bank.md "Clock"); set, passed on and not persisted
    #: like ``slot_duration_us`` (0 for a bank without a genesis: vectors, unit tests).
    genesis_time_s: int = field(default=0, compare=False)
    #: record the metas of a token transaction's accounts before and after it (TxRecord
    #: pre/post_metas: the RPC's pre/postTokenBalances). Reading them takes back what the SVM
    #: executor holds, so it is off unless asked for, as agave collects token balances only
    #: for its transaction-status service; a node serving the RPC asks (node/rpc/server.py), on
    #: the root bank it restarts from, and ``child`` passes it on
    token_balances: bool = field(default=False, compare=False)
    #: owner, data, executable flag and rent epoch of every account that differs from
    #: ``svm.DEFAULT_META`` (a system account without data); lamports stay in ``accounts``.
    #: Values are immutable, so ``child`` copies only references (spec/bank.md "Accounts")
    _account_meta: dict[bytes, AccountMeta] = field(default_factory=dict)
    #: the SVM executor (core/svm.py); None: the process's shared one. ``child`` passes it on
    executor: svm.SvmExecutor | None = field(default=None, repr=False, compare=False)
    _sysvars: svm.Sysvars | None = field(default=None, repr=False, compare=False)
    #: True while the SVM executor may hold accounts this bank's SVM transactions wrote
    #: (``svm.SvmExecutor.execute``): ``_svm_sync`` takes them back before anything else
    #: reads or writes the accounts
    _svm_live: bool = field(default=False, repr=False, compare=False)
    #: ((queue length, newest blockhash), the recent blockhashes as a set): ``_recent_blockhashes``
    _recent: tuple[tuple[int, bytes], frozenset[bytes]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def genesis(cls, genesis_hash: bytes, accounts: dict[bytes, int], leader: bytes, poh_start: bytes,
                *, slots_per_epoch: int = 0,
                programs: Mapping[bytes, tuple[int, AccountMeta]] | None = None) -> Bank:
        """Slot 0's frozen bank: the genesis accounts (plus ``programs``, full accounts:
        the chain's genesis programs, ``svm.genesis_programs()``), with the PoH start hash as
        the first recent blockhash."""
        if slots_per_epoch < 0:
            raise ValueError("slots_per_epoch must be >= 0")
        b = cls(0, 0, ZERO_HASH, leader, dict(accounts), [poh_start], {}, slots_per_epoch=slots_per_epoch)
        for pk, (lamports, meta) in (programs or {}).items():
            if pk in b.accounts:
                raise ValueError("a genesis account sits at a genesis program's address")
            b.accounts[pk] = lamports
            if meta != DEFAULT_META:
                b._account_meta[pk] = meta
        b.bank_hash = hashlib.sha256(GENESIS_BANK_DOMAIN + genesis_hash
                                     + accounts_hash(b.accounts, b._account_meta)).digest()
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
        *,
        slots_per_epoch: int = 0,
        work_accounts: dict[bytes, bytes] | None = None,
        epoch_tally: dict[bytes, tuple[int, int]] | None = None,
        tally_epoch: int = 0,
        account_meta: dict[bytes, AccountMeta] | None = None,
    ) -> Bank:
        """A frozen bank rebuilt from persisted state (the ledger's BankSnapshot v4, whose
        ``auction_accounts``, ``work_accounts`` and epoch state come back here: without them
        the bank would hash differently from its peers at the first instruction touching
        one)."""
        if not blockhashes:
            raise ValueError("a bank needs at least one recent blockhash")
        for identity, data in (work_accounts or {}).items():
            if work.WorkAccount.unpack(data).identity != identity:
                raise ValueError("a work account is stored under another identity")
        return cls(slot, parent_slot, ZERO_HASH, leader, dict(accounts), list(blockhashes), dict(status_cache),
                   bank_hash=bytes(bank_hash), slot_hashes=dict(sorted((slot_hashes or {}).items())),
                   last_votes=dict(last_votes or {}), auction_accounts=dict(auction_accounts or {}),
                   slots_per_epoch=slots_per_epoch, work_accounts=dict(work_accounts or {}),
                   epoch_tally=dict(epoch_tally or {}), tally_epoch=tally_epoch,
                   _account_meta={k: m for k, m in (account_meta or {}).items() if m != DEFAULT_META})

    def state_hash(self, *, work_state: bool = True) -> bytes:
        """Digest of everything a snapshot restores (accounts, blockhashes, status cache,
        vote state, auction accounts, work-credit state), to check a persisted snapshot
        against a replayed bank. ``work_state=False`` leaves the work-credit block out (to
        compare with a snapshot written before it existed, ledger/snapshot.py)."""
        h = hashlib.sha256(accounts_hash(self.accounts, self.account_meta))
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
        if work_state and (self.work_accounts or self.epoch_tally or self.slots_per_epoch):  # likewise
            h.update(WORK_STATE_DOMAIN + struct.pack("<QQ", self.slots_per_epoch, self.tally_epoch))
            h.update(auction_accounts_hash(self.work_accounts))
            h.update(epoch_tally_hash(self.epoch_tally))
        return h.digest()

    @property
    def epoch(self) -> int:
        """This bank's epoch (0 when the bank knows no epochs)."""
        return self.slot // self.slots_per_epoch if self.slots_per_epoch else 0

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
                    auction_accounts=dict(self.auction_accounts), slots_per_epoch=self.slots_per_epoch,
                    work_accounts=dict(self.work_accounts), epoch_tally=dict(self.epoch_tally),
                    tally_epoch=self.tally_epoch, lstake_provider=self.lstake_provider,
                    slot_duration_us=self.slot_duration_us, _account_meta=dict(self._account_meta),
                    executor=self.executor, genesis_time_s=self.genesis_time_s, token_balances=self.token_balances)

    @property
    def account_meta(self) -> dict[bytes, AccountMeta]:
        """Owner, data, executable flag and rent epoch of every account that differs from
        ``svm.DEFAULT_META`` (a system account without data); lamports stay in ``accounts``.
        Values are immutable, so ``child`` copies only references (spec/bank.md "Accounts").
        Reading it first takes back what the SVM executor still holds for this bank."""
        self._svm_sync()
        return self._account_meta

    def _svm_sync(self) -> None:
        """Take back the accounts this bank's SVM transactions wrote and the executor still
        holds (their metas; lamports are always stored at once), so that ``accounts`` and
        ``account_meta`` are the whole state. Before anything but the SVM fast path reads
        or writes them: freeze, a native program, ``account_meta``, ``account``."""
        if self._svm_live:
            (self.executor or svm.shared_executor()).release(self)
            self._svm_live = False

    def _absorb_svm(self, metas: Mapping[bytes, AccountMeta]) -> None:
        """The executor hands back the metas of accounts the SVM wrote (``_svm_sync``)."""
        own = self._account_meta
        for key, meta in metas.items():
            if key in self.auction_accounts or key not in self.accounts:
                continue  # an auction account's data is the auction's; a deleted account has none
            if meta is DEFAULT_META:
                own.pop(key, None)
            else:
                own[key] = meta

    def balance(self, pubkey: bytes) -> int:
        return self.accounts.get(bytes(pubkey), 0)

    def account(self, pubkey: bytes) -> tuple[int, AccountMeta] | None:
        """The full account at ``pubkey``: (lamports, owner/data/executable/rent epoch), or
        None when no account exists (no entry, or 0 lamports and no data)."""
        pk = bytes(pubkey)
        lamports = self.accounts.get(pk)
        meta = self.account_meta.get(pk, DEFAULT_META)
        if lamports is None or (lamports == 0 and meta is DEFAULT_META):
            return None
        return lamports, meta

    def unix_timestamp(self) -> int:
        """The Clock sysvar's ``unix_timestamp`` (spec/bank.md "Clock"): the slot's start on
        the genesis schedule, ``genesis_time_s + slot * slot_duration_us // 10^6`` (agave's
        PoH estimate, which bounds its stake-weighted timestamp; equal to the RPC's blockTime)."""
        return self.genesis_time_s + self.slot * self.slot_duration_us // 1_000_000

    def sysvars(self) -> svm.Sysvars:
        """The sysvars this bank's SVM transactions see (spec/svm.md "Sysvars")."""
        if self._sysvars is None:
            self._sysvars = svm.Sysvars(self.slot, self.epoch, self.slots_per_epoch, self.unix_timestamp(),
                                        tuple(sorted(self.slot_hashes.items(), reverse=True)))
        return self._sysvars

    # -- execution --------------------------------------------------------------------
    def process_transactions(self, raws: Sequence[bytes], *, verify_signatures: bool = True) -> list[TxResult]:
        """Process a batch (an entry's transactions) in order. Raises BlockError on a
        block-invalidating transaction; the bank must then be discarded."""
        if self.bank_hash is not None:
            raise ValueError("bank is frozen")
        # The cyclic GC is paused for the batch (restored as it was, whatever happens): a
        # transaction allocates a few dozen short-lived containers, none of them in a cycle,
        # and the collections they trigger cost about 0.7 us a transaction (4% of the bank's
        # time, more in a node's large heap; spec/svm.md "Performance"). Reference counting
        # frees them as before; a cycle made here is collected at the next collection after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._process_batch(raws, verify_signatures)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _process_batch(self, raws: Sequence[bytes], verify_signatures: bool) -> list[TxResult]:
        """``process_transactions``' loop. The common transaction (one instruction, for a
        program that runs in the SVM, no token balances recorded) runs inline: the same
        checks in the same order with the same errors as :meth:`_process`, which runs every
        other one, without its call and attribute look-ups (spec/svm.md "Performance")."""
        results: list[TxResult] = []
        recent = self._recent_blockhashes()
        log = self.tx_log
        zeros = repeat(0)
        status_cache = self.status_cache
        slot = self.slot
        executor = self.executor or svm.shared_executor()
        execute = executor.execute
        sysvars = self._sysvars or self.sysvars()
        absorb, load, special = self._absorb_svm, self._svm_account, self.auction_accounts.keys()
        token_balances = self.token_balances
        not_inline = _NOT_INLINE_PROGRAM_IDS
        fee_per_signature, rent_minimum = LAMPORTS_PER_SIGNATURE, svm.RENT_EXEMPT_MINIMUM_NO_DATA
        new_object, set_attribute = _new_object, _set_attribute
        fees = signatures = count = 0
        try:
            for i, raw in enumerate(raws):
                try:
                    tx = parse_transaction(raw, verify_signatures=verify_signatures)
                    keys = tx.account_keys
                    accounts = self.accounts  # (the native path's rollback replaces it)
                    pre = tuple(map(accounts.get, keys, zeros))
                    ixs = tx.instructions
                    if (token_balances or len(ixs) != 1 or keys[ixs[0][0]] in not_inline
                            or tx.recent_blockhash not in recent or tx.signatures[0] in status_cache):
                        tok = token_balances and not _TOKEN_PROGRAM_IDS.isdisjoint(keys)
                        pre_tok = tuple(map(self.account_meta.get, keys)) if tok else ()
                        res = self._process(tx, recent)
                        post = tuple(map(self.accounts.get, keys, zeros))
                        post_tok = tuple(map(self.account_meta.get, keys)) if tok else ()
                    else:  # _process's checks and SVM path, for one non-native instruction
                        sig = tx.signatures[0]
                        nsigs = len(tx.signatures)
                        fee = fee_per_signature * nsigs
                        payer = keys[0]
                        if not tx.writable[0]:
                            raise BlockError("bad-fee-payer", "fee payer must be a writable signer")
                        balance = pre[0]
                        if balance < fee:
                            raise BlockError("insufficient-funds-for-fee", f"fee payer has {balance}, fee is {fee}")
                        if 0 < balance - fee < rent_minimum <= balance:
                            raise BlockError("insufficient-funds-for-rent", f"fee payer has {balance}, fee is {fee}: it "
                                             f"would be left below the rent-exempt minimum {rent_minimum}")
                        status_cache[sig] = slot
                        fees += fee
                        signatures += nsigs
                        count += 1
                        error, logs, units, writes, _svm_fee = execute(
                            self, absorb, tx.vtx, keys, tx.writable_keys, sysvars, fee, accounts,
                            self._account_meta, special, load)
                        self._svm_live = True
                        if error is None:
                            accounts.update(writes)
                            self.modified.update(writes)
                            if 0 in writes.values():
                                self._delete_gone(writes)
                            # the accounts it changed are all in ``writes``
                            post = tuple(map(writes.get, keys, pre))
                        else:  # the executor has let go of the payer
                            accounts[payer] -= fee
                            self.modified.add(payer)
                            post = tuple(map(accounts.get, keys, zeros))
                        res = new_object(TxResult)
                        set_attribute(res, "__dict__", {"signature": sig, "fee": fee, "error": error, "logs": logs,
                                                        "compute_units": units})
                        pre_tok = post_tok = ()
                except BlockError as exc:
                    raise BlockError(exc.reason, exc.detail, i) from None
                results.append(res)
                record = new_object(TxRecord)
                set_attribute(record, "__dict__", {"raw": tx.raw, "result": res, "pre_balances": pre,
                                                   "post_balances": post, "pre_metas": pre_tok, "post_metas": post_tok})
                log.append(record)
        finally:
            self.fees_collected += fees
            self.signature_count += signatures
            self.transaction_count += count
        return results

    def _recent_blockhashes(self) -> frozenset[bytes]:
        """The blockhashes a transaction may name (the newest ``MAX_PROCESSING_AGE``), as a
        set built once per bank (the queue changes only at freeze)."""
        key = (len(self.blockhashes), self.blockhashes[-1])
        cached = self._recent
        if cached is None or cached[0] != key:
            cached = self._recent = (key, frozenset(self.blockhashes[-MAX_PROCESSING_AGE:]))
        return cached[1]

    def _process(self, tx: ParsedTx, recent: frozenset[bytes]) -> TxResult:
        if tx.recent_blockhash not in recent:
            raise BlockError("blockhash-not-found", f"recent blockhash {tx.recent_blockhash.hex()[:16]}... "
                             f"is unknown or older than {MAX_PROCESSING_AGE} blockhashes")
        sig = tx.signatures[0]
        if sig in self.status_cache:
            raise BlockError("already-processed", f"transaction {sig.hex()[:16]}... was processed in slot "
                             f"{self.status_cache[sig]}")
        keys = tx.account_keys
        nsigs = len(tx.signatures)
        ixs = tx.instructions
        # (a one-instruction transaction, the common case, without a comprehension's frame)
        programs = {keys[ixs[0][0]]} if len(ixs) == 1 else {keys[p] for p, _accs, _data in ixs}
        if svm.COMPUTE_BUDGET_PROGRAM_ID in programs:
            fee = svm.transaction_fee(nsigs, [(keys[p], data) for p, _accs, data in tx.instructions])
            programs.discard(svm.COMPUTE_BUDGET_PROGRAM_ID)
        else:
            fee = LAMPORTS_PER_SIGNATURE * nsigs
        payer = keys[0]
        if not tx.writable[0]:
            raise BlockError("bad-fee-payer", "fee payer must be a writable signer")
        balance = self.accounts.get(payer, 0)
        if balance < fee:
            raise BlockError("insufficient-funds-for-fee", f"fee payer has {self.balance(payer)}, fee is {fee}")
        if 0 < balance - fee < svm.RENT_EXEMPT_MINIMUM_NO_DATA <= balance:
            # agave's validate_fee_payer: a rent-exempt payer may not be left rent-paying by the
            # fee (spec/svm.md "Rent"); agave does not commit such a transaction
            raise BlockError("insufficient-funds-for-rent", f"fee payer has {balance}, fee is {fee}: it would be left "
                             f"below the rent-exempt minimum {svm.RENT_EXEMPT_MINIMUM_NO_DATA}")
        self.status_cache[sig] = self.slot
        self.fees_collected += fee
        self.signature_count += nsigs
        self.transaction_count += 1
        if programs and programs.isdisjoint(NATIVE_PROGRAM_IDS):
            # the common case, one run of the SVM (spec/svm.md): on success the written
            # accounts' lamports are stored (their metas when the executor hands them back),
            # on failure only the fee is charged
            res = (self.executor or svm.shared_executor()).execute(
                self, self._absorb_svm, tx.vtx, keys, tx.writable_keys, self._sysvars or self.sysvars(), fee,
                self.accounts, self._account_meta, self.auction_accounts.keys(), self._svm_account)
            self._svm_live = True
            if res.error is None:
                self._store_svm(res.writes)
            else:  # the executor has let go of the payer: no _svm_sync needed
                self.accounts[payer] -= fee
                self.modified.add(payer)
            return _frozen(TxResult, {"signature": sig, "fee": fee, "error": res.error, "logs": res.logs,
                                      "compute_units": res.compute_units})
        self._svm_sync()  # native programs read and write the accounts from here on
        self._set(payer, self.balance(payer) - fee)
        snapshot = dict(self.accounts)
        meta_snapshot = dict(self._account_meta)
        modified_before = set(self.modified)
        votes_before = (dict(self.last_votes), len(self.landed_votes))
        self._auction_undo = {}
        self._work_undo = {}
        self._work_events_before = len(self.work_events)
        error = None
        logs: list[str] = []
        units = 0
        try:
            run: list[int] = []  # consecutive instructions for the SVM, run as one sub-transaction
            for i, (prog, accs, data) in enumerate(tx.instructions):
                if tx.account_keys[prog] in NATIVE_PROGRAM_IDS:
                    units += self._run_svm_part(tx, run, logs)
                    run = []
                    self._execute(tx, prog, accs, data)
                elif tx.account_keys[prog] != svm.COMPUTE_BUDGET_PROGRAM_ID:
                    run.append(i)
            units += self._run_svm_part(tx, run, logs)
        except _InstructionError as exc:
            self._svm_sync()
            self.accounts = snapshot
            self._account_meta = meta_snapshot
            self.modified = modified_before
            self.last_votes = votes_before[0]
            del self.landed_votes[votes_before[1]:]
            self._undo_auction()
            self._undo_work()
            error = str(exc)
        return TxResult(sig, fee, error, tuple(logs), units)

    def _run_svm(self, vtx: Any, tx: ParsedTx, fee: int) -> svm.SvmResult:
        ex = self.executor or svm.shared_executor()
        res = ex.execute(self, self._absorb_svm, vtx, tx.account_keys, tx.writable_keys,
                         self._sysvars or self.sysvars(), fee, self.accounts, self._account_meta,
                         self.auction_accounts.keys(), self._svm_account)
        self._svm_live = True
        return res

    def _run_svm_part(self, tx: ParsedTx, instructions: list[int], logs: list[str]) -> int:
        """The SVM instructions ``instructions`` of a transaction that also calls native
        programs, as one sub-transaction (spec/svm.md "Mixed transactions"); the fee is
        already charged. Raises _InstructionError on failure. Returns the compute units."""
        if not instructions:
            return 0
        res = self._run_svm(svm.sub_transaction(tx.vtx, instructions), tx, 0)
        logs.extend(res.logs)
        if res.error is not None:
            raise _InstructionError(res.error)
        self._store_svm(res.writes)
        self._svm_sync()  # the native instructions after it see (and may roll back) the whole state
        return res.compute_units

    def _svm_account(self, pubkey: bytes) -> tuple[int, AccountMeta] | None:
        """An auction-program account as the SVM sees it (a query, bid, miner or pool account,
        spec/auction.md "Account layouts"): its fixed-layout data, owned by
        ``AUCTION_PROGRAM_ID``, so an SBF program can read it (spec/svm.md "Native accounts in
        the SVM"). The executor reads every other account out of ``accounts`` and
        ``account_meta`` itself."""
        data = self.auction_accounts.get(pubkey)
        if data is not None:
            return self.accounts.get(pubkey, 0), AccountMeta(auction.AUCTION_PROGRAM_ID, data, False, 0)
        lamports = self.accounts.get(pubkey)
        return None if lamports is None else (lamports, self._account_meta.get(pubkey, DEFAULT_META))

    def _store_svm(self, writes: Mapping[bytes, int]) -> None:
        """Store the lamports of the accounts an SVM transaction wrote (their metas follow when
        the executor hands them back, ``_absorb_svm``). 0 lamports deletes an account (agave),
        except an auction account, whose data stays the auction's (no SVM program owns it)."""
        self.accounts.update(writes)
        self.modified.update(writes)
        if 0 in writes.values():
            self._delete_gone(writes)

    def _delete_gone(self, writes: Mapping[bytes, int]) -> None:
        """Delete the accounts ``writes`` left with 0 lamports (agave), except auction accounts."""
        for key, lamports in writes.items():
            if lamports == 0 and key not in self.auction_accounts:
                del self.accounts[key]
                self._account_meta.pop(key, None)

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
            except work.WorkError as exc:  # a refused work credit fails the instruction, never replay
                raise _InstructionError(f"work-credit-refused: {exc}") from None
            return
        # compute-budget instructions only set the fee and limits (svm.transaction_fee)

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

    # -- work credits (the Logit Pool's API; spec/lstake.md "Work accounts in the bank") --
    def work_account(self, identity: bytes) -> work.WorkAccount | None:
        """``identity``'s work account as this bank's epoch sees it, or None."""
        data = self.work_accounts.get(bytes(identity))
        return None if data is None else work.WorkAccount.unpack(data).at_epoch(self.epoch)

    def credit_work(self, identity: bytes, *, tokens_served: int = 0, positions_validated: int = 0) -> None:
        """Book validated work for ``identity`` in this bank's epoch: the accepted output
        tokens of a miner whose result settled ``FinalizedVerified``, or the positions a
        validator checked when its verdict counted. Called by the auction program inside an
        instruction (rolled back with it on an instruction error). A credit of zero and zero
        is a no-op (no account is created)."""
        ident = work.check_identity(identity)
        if tokens_served < 0 or positions_validated < 0:
            raise work.WorkError("work credit must be >= 0")
        if tokens_served == 0 and positions_validated == 0:
            return
        acc = self.work_account(ident) or work.WorkAccount(ident, self.epoch)
        self._set_work(ident, work.credited(acc, self.epoch, tokens_served, positions_validated))
        self.work_events.append(work.WorkEvent(ident, tokens_served, positions_validated))

    def slash_work(self, identity: bytes, reason: str) -> None:
        """Forfeit ``identity``'s work credit in the current windows (spec/lstake.md
        "Slashing"): its epoch counters in this bank go to zero (no Logit Pool reward this
        epoch) and, once the slot is rooted, its LStake work buckets of the medium window up
        to this epoch are forfeited. ``reason`` is one of ``work.SLASH_REASONS``."""
        ident = work.check_identity(identity)
        work.check_reason(reason)
        acc = self.work_account(ident) or work.WorkAccount(ident, self.epoch)
        self._set_work(ident, work.slashed(acc, self.epoch, self.slot))
        self.work_events.append(work.WorkEvent(ident, 0, 0, reason))

    def _set_work(self, identity: bytes, acc: work.WorkAccount) -> None:
        if self.bank_hash is not None:
            raise ValueError("bank is frozen")
        if identity not in self._work_undo:
            self._work_undo[identity] = (self.work_accounts.get(identity), identity in self.work_modified)
        self.work_accounts[identity] = acc.pack()
        self.work_modified.add(identity)

    def pay_epoch_rewards(self, slot_duration_us: int, vote_weights: Mapping[bytes, int]) -> rewards.EpochRewards:
        """The epoch-boundary hook (spec/rewards.md): called on the first bank of an epoch on
        its fork (``epoch > tally_epoch``), before its transactions, with the genesis slot
        duration and the vote weights of the closing epoch ``tally_epoch`` (the LStake
        snapshot that weighed its votes). Pays the closing epoch's inflation into the
        earners' balances (and their work accounts' ``total_rewards_lamports``), resets the
        tally, and commits the payout to the bank hash (``rewards_hash``)."""
        if self.bank_hash is not None:
            raise ValueError("bank is frozen")
        if not self.slots_per_epoch or self.epoch <= self.tally_epoch:
            raise ValueError("not the first bank of an epoch")
        self._svm_sync()
        closing = self.tally_epoch
        cap = sum(v for k, v in self.accounts.items() if k != auction.INCINERATOR_ID)
        units: dict[bytes, int] = {}
        for ident, data in self.work_accounts.items():
            acc = work.WorkAccount.unpack(data)
            if acc.epoch == closing:
                units[ident] = rewards.logit_pool_units(acc.tokens_served, acc.positions_validated)
        result = rewards.compute_epoch_rewards(
            epoch=closing, capitalization=cap, slots_per_epoch=self.slots_per_epoch,
            slot_duration_us=slot_duration_us, pool_units=units,
            leader_slots={k: lead for k, (lead, _v) in self.epoch_tally.items()},
            votes={k: v for k, (_lead, v) in self.epoch_tally.items()}, vote_weights=vote_weights)
        for ident, lamports in sorted(result.totals().items()):
            self._set(ident, self.balance(ident) + lamports)
            acc = self.work_account(ident) or work.WorkAccount(ident, self.epoch)
            self._set_work(ident, replace(acc, total_rewards_lamports=acc.total_rewards_lamports + lamports))
        self._work_undo = {}  # not an instruction: nothing to roll back
        self.epoch_tally, self.tally_epoch = {}, self.epoch
        self.epoch_rewards = result
        return result

    def _tally_slot(self) -> None:
        """At freeze: count this slot's leader and landed votes in the epoch tally (a tally
        of an older epoch that ``pay_epoch_rewards`` did not consume is dropped: its rewards
        are never issued on this fork)."""
        if not self.slots_per_epoch:
            return
        if self.tally_epoch != self.epoch:
            self.epoch_tally, self.tally_epoch = {}, self.epoch
        lead, votes = self.epoch_tally.get(self.leader, (0, 0))
        self.epoch_tally[self.leader] = (lead + 1, votes)
        for voter, _slot in self.landed_votes:
            lead, votes = self.epoch_tally.get(voter, (0, 0))
            self.epoch_tally[voter] = (lead, votes + 1)

    def _undo_work(self) -> None:
        for key, (old, was_modified) in self._work_undo.items():
            if old is None:
                del self.work_accounts[key]
            else:
                self.work_accounts[key] = old
            if not was_modified:
                self.work_modified.discard(key)
        self._work_undo = {}
        del self.work_events[self._work_events_before:]

    # -- freeze -----------------------------------------------------------------------
    def freeze(self, last_blockhash: bytes) -> bytes:
        """Distribute fees, register ``last_blockhash`` and compute the bank hash."""
        if self.bank_hash is not None:
            raise ValueError("bank already frozen")
        self._svm_sync()
        reward = self.fees_collected - self.fees_collected * FEE_BURN_PERCENT // 100
        if reward:
            self._set(self.leader, self.balance(self.leader) + reward)
        self.blockhashes.append(bytes(last_blockhash))
        del self.blockhashes[:-MAX_RECENT_BLOCKHASHES]
        delta = accounts_delta_hash(self, self.modified)
        h = hashlib.sha256(self.parent_hash + delta + struct.pack("<Q", self.signature_count) + bytes(last_blockhash))
        if self.landed_votes:
            h.update(votes_hash(self.landed_votes))
        if self.auction_modified:
            h.update(auction_delta_hash({k: self.auction_accounts[k] for k in self.auction_modified}))
        if self.work_modified:
            h.update(work_delta_hash({k: self.work_accounts[k] for k in self.work_modified}))
        if self.epoch_rewards is not None:
            h.update(rewards_hash(self.epoch_rewards))
        self._tally_slot()
        self.bank_hash = h.digest()
        return self.bank_hash


class _InstructionError(Exception):
    pass


def child_bank(parent: Bank, slot: int, leader: bytes, slot_duration_us: int,
               vote_weights: Callable[[int], Mapping[bytes, int] | None]) -> Bank:
    """``parent.child(slot, leader)``, running the epoch-boundary hook when the child opens
    an epoch on its fork (spec/rewards.md "In the bank"): ``vote_weights(E)`` answers the
    vote weights of epoch ``E`` (core/schedule.py ``ScheduleBook.vote_weights``), known
    wherever a slot of a later epoch can be replayed or produced. The one call every
    producer and replayer of a chain must make instead of ``child`` once rewards are on."""
    bank = parent.child(slot, leader)
    bank.slot_duration_us = slot_duration_us
    if bank.slots_per_epoch and bank.epoch > bank.tally_epoch:
        weights = vote_weights(bank.tally_epoch)
        if weights is None:
            raise ValueError(f"the vote weights of epoch {bank.tally_epoch} are not known here")
        bank.pay_epoch_rewards(slot_duration_us, weights)
    return bank


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

    @property
    def slot_duration_us(self) -> int:
        return self._bank.slot_duration_us

    # -- the Logit Pool's view (core/logit_pool.py PoolView) ----------------------------------
    def poh_hash_at_or_after(self, slot: int) -> tuple[int, bytes] | None:
        """The first ancestor ``s >= slot`` and its last blockhash. Every frozen bank appended
        exactly one blockhash, so ancestor ``s`` (in ``slot_hashes``) registered
        ``blockhashes[-1 - #(ancestors above s)]`` (the executing bank has not frozen)."""
        b = self._bank
        later = sorted(s for s in b.slot_hashes if s >= slot)
        if not later:
            return None
        s = later[0]
        idx = len(b.blockhashes) - len(later)
        if idx < 0:
            return None
        return s, b.blockhashes[idx]

    def validator_weights(self, active_since_slot: int) -> Mapping[bytes, int]:
        b = self._bank
        active = [v for v, s in b.last_votes.items() if s >= active_since_slot]
        if b.lstake_provider is None:
            return dict.fromkeys(active, 1)
        stakes = b.lstake_provider(b.epoch) or {}
        return {v: stakes[v] for v in active if stakes.get(v, 0) > 0}

    def credit_work(self, identity: bytes, *, tokens_served: int = 0, positions_validated: int = 0) -> None:
        self._bank.credit_work(identity, tokens_served=tokens_served, positions_validated=positions_validated)

    def slash_work(self, identity: bytes, reason: str) -> None:
        self._bank.slash_work(identity, reason)

    def work_account(self, identity: bytes) -> work.WorkAccount | None:
        return self._bank.work_account(identity)

    def epoch(self) -> int:  # the Logit Pool's dynamic difficulty is per epoch
        return self._bank.epoch


def accounts_hash(accounts: Mapping[bytes, int], meta: Mapping[bytes, AccountMeta] | None = None) -> bytes:
    """sha256 over ``pubkey || account_hash`` for every account, sorted by pubkey
    (spec/bank.md "Account hash"); ``meta`` holds the accounts that are not plain system
    accounts without data."""
    h = hashlib.sha256()
    m = meta or {}
    for k in sorted(accounts):
        h.update(k + account_hash(k, accounts[k], m.get(k, DEFAULT_META)))
    return h.digest()


def accounts_delta_hash(bank: Bank, keys: set[bytes]) -> bytes:
    """``accounts_hash`` over the accounts in ``keys`` (those written in the slot; a deleted
    account counts with 0 lamports), 32 zero bytes when ``keys`` is empty."""
    if not keys:
        return ZERO_HASH
    return accounts_hash({k: bank.balance(k) for k in keys}, bank.account_meta)


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


WORK_DELTA_DOMAIN = b"ambient/work-delta/v1\x00"
WORK_STATE_DOMAIN = b"ambient/work-state/v1\x00"


def work_delta_hash(changed: dict[bytes, bytes]) -> bytes:
    """The bank-hash component of a slot that wrote work accounts:
    ``sha256(WORK_DELTA_DOMAIN || auction_accounts_hash(changed work accounts))`` (the same
    ``identity || len u32 LE || data`` list, sorted by identity)."""
    return hashlib.sha256(WORK_DELTA_DOMAIN + auction_accounts_hash(changed)).digest()


REWARDS_DOMAIN = b"ambient/epoch-rewards/v1\x00"


def rewards_hash(r: rewards.EpochRewards) -> bytes:
    """The bank-hash component of a bank that paid an epoch's rewards: sha256(domain ||
    epoch || capitalization || rate_ppb || issuance || the three pool amounts (u64 LE each)
    || for each pool in order, its payouts sorted by identity: identity || lamports u64 LE
    || a u32 LE count before each pool's list)."""
    h = hashlib.sha256(REWARDS_DOMAIN + struct.pack("<QQQQ", r.epoch, r.capitalization, r.rate_ppb, r.issuance))
    h.update(struct.pack("<QQQ", *r.pools))
    for pool in r.payouts:
        h.update(struct.pack("<I", len(pool)))
        for k in sorted(pool):
            h.update(k + struct.pack("<Q", pool[k]))
    return h.digest()


def epoch_tally_hash(tally: dict[bytes, tuple[int, int]]) -> bytes:
    """sha256 over ``identity || leader_slots u64 LE || votes u64 LE``, sorted by identity."""
    h = hashlib.sha256()
    for k in sorted(tally):
        h.update(k + struct.pack("<QQ", *tally[k]))
    return h.digest()


def votes_hash(landed: Sequence[tuple[bytes, int]]) -> bytes:
    """sha256 over ``voter || voted slot u64 LE`` of a slot's landed votes, in order."""
    h = hashlib.sha256()
    for voter, slot in landed:
        h.update(voter + struct.pack("<Q", slot))
    return h.digest()


def pool_view(bank: Bank) -> _AuctionView:
    """The Logit Pool's view of the chain as of the frozen ``bank`` (what an instruction in
    its next slot sees): for the draw outside the bank (``pol draw``, the validator service)."""
    return _AuctionView(bank.child(bank.slot + 1, bank.leader))
