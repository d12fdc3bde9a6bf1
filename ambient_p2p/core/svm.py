"""The SVM executor: every instruction that is not addressed to a native Ambient program
runs in LiteSVM (``solders.litesvm``, the agave SVM with the BPF loaders and the builtin
programs), against accounts loaded from the executing bank (normative text: spec/svm.md).

Why here, in the sans-IO core: LiteSVM is a pure, deterministic computation (no disk, clock
or network), like the ``solders`` transaction parsing the bank already uses, and every bank
of every node must run it identically; an executor injected only by the shells could be
forgotten by one caller and silently fork that caller's chain.

The executor keeps one LiteSVM instance (building one costs tens of milliseconds and
compiles the builtin programs) and a mirror of what it last stored there per address, so
that an account unchanged since the previous transaction is not copied again. Before each
transaction every account the transaction names (and the programdata account of every
upgradeable program it names) is made equal to the bank's, so LiteSVM's own state never
leaks into a result, whichever bank or fork ran before.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from .crypto import decode_address

if TYPE_CHECKING:
    from solders.account import Account
    from solders.litesvm import LiteSVM
    from solders.rent import Rent
    from solders.transaction import VersionedTransaction
    from solders.transaction_metadata import TransactionMetadata

SYSTEM_PROGRAM_ID = bytes(32)
NATIVE_LOADER_ID = decode_address("NativeLoader1111111111111111111111111111111")
SYSVAR_OWNER_ID = decode_address("Sysvar1111111111111111111111111111111111111")
BPF_LOADER_UPGRADEABLE_ID = decode_address("BPFLoaderUpgradeab1e11111111111111111111111")
COMPUTE_BUDGET_PROGRAM_ID = decode_address("ComputeBudget111111111111111111111111111111")
#: The programs present from slot 0 at their mainnet addresses (spec/svm.md "Genesis programs"):
#: read out of LiteSVM 0.15 (solders 0.29.0) with their programdata accounts.
SPL_TOKEN_PROGRAM_ID = decode_address("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
SPL_TOKEN_2022_PROGRAM_ID = decode_address("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
SPL_ASSOCIATED_TOKEN_PROGRAM_ID = decode_address("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SPL_MEMO_PROGRAM_ID = decode_address("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
GENESIS_PROGRAM_IDS = (SPL_TOKEN_PROGRAM_ID, SPL_TOKEN_2022_PROGRAM_ID, SPL_ASSOCIATED_TOKEN_PROGRAM_ID,
                       SPL_MEMO_PROGRAM_ID)

# Fees (agave ``FeeStructure`` and ``compute_budget``): a signature fee plus a prioritization fee.
LAMPORTS_PER_SIGNATURE = 5_000
MICRO_LAMPORTS_PER_LAMPORT = 1_000_000
DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT = 200_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000
COMPUTE_BUDGET_SET_COMPUTE_UNIT_LIMIT = 2
COMPUTE_BUDGET_SET_COMPUTE_UNIT_PRICE = 3
# Rent (spec/svm.md "Rent"): agave's mainnet Rent, 3,480 lamports per byte-year with accounts
# exempt at 2 years' rent (6,960 lamports per byte) and half of any collected rent burned, written
# as LiteSVM 0.15 / agave 3 write it (SIMD-0194: ``lamports_per_byte`` 6,960 with an exemption
# threshold of 1.0), the representation in which every formula gives the same minimum.
RENT_LAMPORTS_PER_BYTE = 6_960
RENT_EXEMPTION_THRESHOLD = 1.0
RENT_BURN_PERCENT = 50
#: Bytes every account is charged rent for on top of its data (agave ``ACCOUNT_STORAGE_OVERHEAD``).
ACCOUNT_STORAGE_OVERHEAD_BYTES = 128


def rent_exempt_minimum(data_len: int) -> int:
    """agave's ``Rent::minimum_balance(data_len)`` under this chain's Rent: the fewest lamports an
    account with ``data_len`` bytes of data may hold, other than 0 (890,880 for no data,
    1,461,600 for a mint's 82 bytes, 2,039,280 for a token account's 165)."""
    return (ACCOUNT_STORAGE_OVERHEAD_BYTES + data_len) * RENT_LAMPORTS_PER_BYTE


#: The rent-exempt minimum of an account without data (a system account, e.g. a fee payer).
RENT_EXEMPT_MINIMUM_NO_DATA = rent_exempt_minimum(0)

#: Upgradeable-loader account state tag of a program account (``UpgradeableLoaderState::Program``),
#: followed by its programdata address.
UPGRADEABLE_PROGRAM_TAG = 2


class AccountMeta(NamedTuple):
    """Everything of a Solana account except its lamports (kept in ``Bank.accounts``): owner,
    data, executable flag and rent epoch. Accounts with :data:`DEFAULT_META` have no entry.
    (A named tuple, not a dataclass: the executor builds one per written account, and tuple
    construction and comparison are several times cheaper.)"""

    owner: bytes
    data: bytes
    executable: bool
    rent_epoch: int


DEFAULT_META = AccountMeta(SYSTEM_PROGRAM_ID, b"", False, 0)


def account_hash(pubkey: bytes, lamports: int, meta: AccountMeta) -> bytes:
    """The per-account hash (spec/bank.md "Account hash"): agave's ``hash_account_data``
    field order with sha256 in place of blake3: ``lamports u64 LE || rent_epoch u64 LE ||
    data || executable u8 || owner || pubkey``; 32 zero bytes for an account with 0 lamports
    (agave: ``Hash::default()``, the account does not exist)."""
    if lamports == 0:
        return bytes(32)
    h = hashlib.sha256(struct.pack("<QQ", lamports, meta.rent_epoch))
    h.update(meta.data)
    h.update(b"\x01" if meta.executable else b"\x00")
    h.update(meta.owner + pubkey)
    return h.digest()


class SvmResult(NamedTuple):
    """One transaction's run in the SVM. ``writes``: the lamports after the run of every
    writable account, the fee payer's already net of ``fee`` (empty on failure; their metas
    stay live in the executor, :meth:`SvmExecutor.execute`); ``error``: agave's
    ``TransactionError`` text, None on success. (A named tuple: one per transaction, on the
    hot path.)"""

    error: str | None
    logs: tuple[str, ...]
    compute_units: int
    writes: Mapping[bytes, int]
    svm_fee: int


_new_tuple = tuple.__new__


@dataclass(frozen=True)
class Sysvars:
    """The sysvars a slot's transactions see, from the executing bank (spec/svm.md)."""

    slot: int
    epoch: int
    slots_per_epoch: int
    unix_timestamp: int
    slot_hashes: tuple[tuple[int, bytes], ...]  # newest first, as the SlotHashes sysvar


def compute_budget(instructions: Sequence[tuple[bytes, bytes]]) -> tuple[int, int]:
    """(compute unit limit, compute unit price in micro-lamports) of a transaction's
    ``(program id, data)`` instructions, by agave's rules: the last ``SetComputeUnitLimit``
    (capped at 1.4 M) or 200,000 per instruction that is not a compute-budget instruction
    (capped), and the last ``SetComputeUnitPrice`` (0 if none). Malformed compute-budget data
    counts as absent here; the SVM fails such a transaction."""
    limit: int | None = None
    price = 0
    others = 0
    for program, data in instructions:
        if program != COMPUTE_BUDGET_PROGRAM_ID:
            others += 1
            continue
        if len(data) == 5 and data[0] == COMPUTE_BUDGET_SET_COMPUTE_UNIT_LIMIT:
            limit = struct.unpack_from("<I", data, 1)[0]
        elif len(data) == 9 and data[0] == COMPUTE_BUDGET_SET_COMPUTE_UNIT_PRICE:
            price = struct.unpack_from("<Q", data, 1)[0]
    if limit is None:
        limit = others * DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT
    return min(limit, MAX_COMPUTE_UNIT_LIMIT), price


def transaction_fee(signatures: int, instructions: Sequence[tuple[bytes, bytes]]) -> int:
    """agave's fee: ``LAMPORTS_PER_SIGNATURE`` per signature plus the prioritization fee
    ``ceil(compute unit price x compute unit limit / 10^6)``."""
    limit, price = compute_budget(instructions)
    return LAMPORTS_PER_SIGNATURE * signatures + -(-(price * limit) // MICRO_LAMPORTS_PER_LAMPORT)


def _x87_reset() -> Callable[[], None]:
    """A function that executes ``emms`` (x86-64): LiteSVM (solders 0.29.0) leaves the x87/MMX
    register tags in use after some programs run (seen after the ATA program's CPI), and the
    next x87 computation in the process gets NaN: RocksDB then fails to open a database with
    ``std::bad_alloc`` (a size computed in ``long double``), which aborts the process ("Rust
    cannot catch foreign exceptions"). ``emms`` marks the registers empty again, as the x86-64
    ABI requires on return from any function. A no-op elsewhere, or where executable
    memory cannot be mapped."""
    import ctypes
    import mmap
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return lambda: None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return lambda: None
    page.write(b"\x0f\x77\xc3")  # emms; ret
    fn = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    _X87_PAGES.append(page)  # the code page lives as long as the process
    return fn


_X87_PAGES: list[object] = []


def _new_litesvm() -> LiteSVM:
    from solders.litesvm import LiteSVM

    # signatures and blockhashes are the bank's checks (done once, never twice); no history:
    # the bank's status cache answers "already processed", per fork
    svm = LiteSVM().with_sigverify(False).with_blockhash_check(False).with_transaction_history(0)
    svm.set_rent(rent_sysvar())
    return svm


def rent_sysvar() -> Rent:
    """The Rent sysvar every executor runs with: the one source of the rent-exempt minimum
    (the RPC's getMinimumBalanceForRentExemption answers ``minimum_balance`` of it)."""
    from solders.rent import Rent

    # agave's mainnet Rent (spec/svm.md "Rent"): the SVM refuses a transaction that leaves a
    # new or resized account below the rent-exempt minimum (InsufficientFundsForRent)
    return Rent(RENT_LAMPORTS_PER_BYTE, RENT_EXEMPTION_THRESHOLD, RENT_BURN_PERCENT)


@lru_cache(maxsize=1)
def genesis_programs() -> Mapping[bytes, tuple[int, AccountMeta]]:
    """The genesis program accounts (SPL Token, Token-2022, ATA, Memo and the programdata
    accounts of the upgradeable ones), as LiteSVM holds them: address -> (lamports, meta)."""
    from solders.pubkey import Pubkey

    svm = _new_litesvm()
    out: dict[bytes, tuple[int, AccountMeta]] = {}
    for pid in GENESIS_PROGRAM_IDS:
        acc = svm.get_account(Pubkey(pid))
        if acc is None:
            raise RuntimeError(f"LiteSVM has no program at {Pubkey(pid)}")
        out[pid] = _from_account(acc)
        pd = _programdata_address(acc.owner.__bytes__(), bytes(acc.data))
        if pd is not None:
            pda = svm.get_account(Pubkey(pd))
            if pda is None:
                raise RuntimeError(f"LiteSVM has no programdata at {Pubkey(pd)}")
            out[pd] = _from_account(pda)
    return dict(sorted(out.items()))


def _programdata_address(owner: bytes, data: bytes) -> bytes | None:
    if owner == BPF_LOADER_UPGRADEABLE_ID and len(data) >= 36 and data[0] == UPGRADEABLE_PROGRAM_TAG:
        return data[4:36]
    return None


def _from_account(acc: Account) -> tuple[int, AccountMeta]:
    meta = AccountMeta(bytes(acc.owner), acc.data, acc.executable, acc.rent_epoch)
    return acc.lamports, DEFAULT_META if meta == DEFAULT_META else meta


class SvmExecutor:
    """One LiteSVM instance, its mirror and the live accounts of the bank that ran last (see
    the module docstring). Shared by the threads of a process (:func:`shared_executor`):
    replay and slot building run banks in different worker threads, and LiteSVM's pyo3
    object refuses a call made while another thread is inside it ("Already mutably
    borrowed"), so :meth:`execute` and :meth:`release` hold one lock each call."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        from solders.account import Account
        from solders.clock import Clock
        from solders.epoch_schedule import EpochSchedule
        from solders.hash import Hash
        from solders.pubkey import Pubkey

        self._Account, self._Pubkey, self._Clock, self._Hash = Account, Pubkey, Clock, Hash
        self._EpochSchedule = EpochSchedule
        from solders.transaction_metadata import FailedTransactionMetadata

        self._Failed = FailedTransactionMetadata
        self.svm = _new_litesvm()
        # the pyo3 object's methods, without the ``solders.litesvm`` wrapper's Python frame
        inner = self.svm._inner
        self._send, self._get_account, self._set_account = inner.send_transaction, inner.get_account, inner.set_account
        self._get_balance = inner.get_balance
        #: address -> the (lamports, meta) stored in LiteSVM by us or read back from it (the
        #: bank's own objects where they were equal, so the next comparison is by identity);
        #: stale for the addresses in ``_dirty``
        self._mirror: dict[bytes, tuple[int, AccountMeta]] = dict(genesis_programs())
        #: addresses LiteSVM owns and the bank never stores: native builtins and sysvars
        self._reserved: set[bytes] = set()
        #: the bank whose transactions ran last, while its accounts are live here (below)
        self._owner: object | None = None
        self._absorb: Callable[[Mapping[bytes, AccountMeta]], None] | None = None
        #: addresses whose account in LiteSVM is the owner's, lamports and meta (the meta of
        #: those in ``_dirty`` is known only here): a transaction naming them loads nothing
        self._live: set[bytes] = set()
        #: live addresses an SVM transaction wrote: their owner, data, executable flag and
        #: rent epoch go to the owner once, when it takes them back (:meth:`release`)
        self._dirty: set[bytes] = set()
        self._sysvars: Sysvars | None = None
        self._x87_reset = _x87_reset()
        self._pubkeys: dict[bytes, Any] = {}  # address -> solders Pubkey (building one costs ~2 us)
        self._owners: dict[Any, bytes] = {}  # solders Pubkey -> address, for owners

    def _pk(self, key: bytes) -> Any:
        pk = self._pubkeys.get(key)
        if pk is None:
            if len(self._pubkeys) > 1 << 16:
                self._pubkeys.clear()
            pk = self._pubkeys[key] = self._Pubkey(key)
        return pk

    def _read(self, key: bytes) -> tuple[int, AccountMeta]:
        acc = self._get_account(self._pk(key))
        if acc is None:
            return 0, DEFAULT_META
        owner_pk = acc.owner
        owner = self._owners.get(owner_pk)
        if owner is None:
            if len(self._owners) > 1 << 12:
                self._owners.clear()
            owner = self._owners[owner_pk] = bytes(owner_pk)
        meta = AccountMeta(owner, acc.data, acc.executable, acc.rent_epoch)
        return acc.lamports, DEFAULT_META if meta == DEFAULT_META else meta

    def _take_back(self, keys: Iterable[bytes]) -> dict[bytes, AccountMeta]:
        """The metas of the dirty ``keys`` as LiteSVM holds them; ``keys`` are no longer
        dirty nor live, and the mirror learns them."""
        out: dict[bytes, AccountMeta] = {}
        for k in keys:
            if k in self._dirty:
                self._dirty.discard(k)
                lamports, meta = self._read(k)
                out[k] = meta
                self._mirror[k] = (lamports, meta)
            self._live.discard(k)
        return out

    def release(self, owner: object | None = None) -> None:
        """:meth:`_release` under the executor's lock."""
        with self._lock:
            self._release(owner)

    def _release(self, owner: object | None = None) -> None:
        """Hand the live accounts back to their bank (all of them, or only where ``owner`` is
        that bank): the dirty accounts' metas go to it through the ``absorb`` it gave
        :meth:`execute`. Called before another bank runs here, and by the bank whenever
        anything but the SVM reads or writes its accounts (spec/svm.md "Loading and storing
        accounts")."""
        if self._owner is None or (owner is not None and owner is not self._owner):
            return
        absorb = self._absorb
        self._owner = self._absorb = None
        metas = self._take_back(list(self._dirty))
        self._live.clear()
        if absorb is not None and metas:
            absorb(metas)

    def _sync_sysvars(self, sv: Sysvars) -> None:
        if sv == self._sysvars:
            self._sysvars = sv  # the next comparison is by identity
            return
        svm = self.svm
        old = self._sysvars
        svm.set_clock(self._Clock(sv.slot, 0, sv.epoch, sv.epoch + 1, sv.unix_timestamp))
        if old is None or old.slot_hashes != sv.slot_hashes:
            svm.set_slot_hashes([(s, self._Hash(h)) for s, h in sv.slot_hashes])
        if old is None or old.slots_per_epoch != sv.slots_per_epoch:
            spe = sv.slots_per_epoch or (1 << 63)  # no epochs: one endless epoch 0
            svm.set_epoch_schedule(self._EpochSchedule.custom(spe, spe, False))
        self._sysvars = sv

    def _is_reserved(self, key: bytes) -> bool:
        if key in self._reserved:
            return True
        acc = self.svm.get_account(self._pk(key))
        if acc is not None and bytes(acc.owner) in (NATIVE_LOADER_ID, SYSVAR_OWNER_ID):
            self._reserved.add(key)
            return True
        return False

    def _load(self, key: bytes, state: tuple[int, AccountMeta]) -> None:
        """Make LiteSVM's account at ``key`` equal to ``state`` (the mirror says whether it is)."""
        # a builtin or sysvar address stays the SVM's even where the bank holds lamports there
        # (e.g. fees credited to a leader whose key is all zeros: the system program's address)
        if key not in self._mirror and self._is_reserved(key):
            return
        cur = self._mirror.get(key)
        if cur is None or cur != state:
            lamports, m = state
            self._set_account(self._pk(key), self._Account(lamports, m.data, self._pk(m.owner), m.executable,
                                                           m.rent_epoch))
        self._mirror[key] = state  # the bank's objects: the next comparison is by identity

    def _load_all(self, keys: Sequence[bytes], lamports: Mapping[bytes, int], metas: Mapping[bytes, AccountMeta],
                  special: AbstractSet[bytes], load: Callable[[bytes], tuple[int, AccountMeta] | None] | None) -> None:
        """Load every account of ``keys`` that is not live (see :meth:`execute`), and the
        programdata account of every upgradeable program among them, before the program."""
        live, reserved = self._live, self._reserved
        states: list[tuple[int, AccountMeta] | None] = []  # None: live or reserved, nothing to load
        for k in keys:
            if k in live or k in reserved:
                states.append(None)
                continue
            if k in special and load is not None:
                state = load(k) or (0, DEFAULT_META)
            else:
                lam = lamports.get(k)
                state = (0, DEFAULT_META) if lam is None else (lam, metas.get(k, DEFAULT_META))
            states.append(state)
            m = state[1]
            if m.executable:  # programdata first: storing an upgradeable program compiles it
                pd = _programdata_address(m.owner, m.data)
                if pd is not None and pd not in keys and pd not in live:
                    pd_state = load(pd) if pd in special and load is not None else None
                    if pd_state is None:
                        pd_lam = lamports.get(pd)
                        pd_state = (0, DEFAULT_META) if pd_lam is None else (pd_lam, metas.get(pd, DEFAULT_META))
                    self._load(pd, pd_state)
        for k, st in zip(keys, states):
            if st is not None:
                self._load(k, st)

    def execute(self, owner: object, absorb: Callable[[Mapping[bytes, AccountMeta]], None],
                tx: VersionedTransaction, keys: Sequence[bytes], writable_keys: Sequence[bytes], sysvars: Sysvars,
                fee: int, lamports: Mapping[bytes, int], metas: Mapping[bytes, AccountMeta],
                special: AbstractSet[bytes] = frozenset(),
                load: Callable[[bytes], tuple[int, AccountMeta] | None] | None = None) -> SvmResult:
        """:meth:`_execute` under the executor's lock."""
        with self._lock:
            return self._execute(owner, absorb, tx, keys, writable_keys, sysvars, fee, lamports, metas, special, load)

    def _execute(self, owner: object, absorb: Callable[[Mapping[bytes, AccountMeta]], None],
                 tx: VersionedTransaction, keys: Sequence[bytes], writable_keys: Sequence[bytes], sysvars: Sysvars,
                 fee: int, lamports: Mapping[bytes, int], metas: Mapping[bytes, AccountMeta],
                 special: AbstractSet[bytes] = frozenset(),
                 load: Callable[[bytes], tuple[int, AccountMeta] | None] | None = None) -> SvmResult:
        """Run ``tx`` (whose account keys are ``keys``, ``writable_keys`` those it may write,
        the fee payer first) with ``sysvars`` for the bank
        ``owner``, whose accounts are ``lamports`` and ``metas`` (no entry: no account, or
        :data:`DEFAULT_META`), except the addresses in ``special``, whose account ``load``
        answers (None: no such account). The fee payer is loaded with its balance before the
        fee. On success ``writes`` holds every writable account's lamports after the run (the
        fee payer's net of ``fee``, the bank's fee; 0: the account is gone); their owner,
        data, executable flag and rent epoch stay here, live, until the bank takes them back
        (:meth:`release`; ``absorb`` receives them), so an account written by one transaction
        and named by the next is neither read back nor loaded again (spec/svm.md
        "Performance"). The bank's accounts must change only through ``writes`` while they
        are live: the bank calls :meth:`release` before it changes or reads them otherwise."""
        if owner is not self._owner:
            self._release()
            self._owner, self._absorb = owner, absorb
        if sysvars is not self._sysvars:
            self._sync_sysvars(sysvars)
        mirror, reserved, live = self._mirror, self._reserved, self._live
        all_live = live.issuperset(keys)
        if not all_live:  # (in the common case nothing is loaded)
            self._load_all(keys, lamports, metas, special, load)
        try:
            res = self._send(tx)
        except BaseException as exc:  # pyo3 PanicException derives from BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            # a panic inside LiteSVM fails the transaction (fee charged) on every node alike;
            # LiteSVM stores accounts only at the end of a run, so the live accounts are
            # taken back as they are, and then every account is loaded again from the bank
            self._x87_reset()
            self._release()
            mirror.clear()
            return SvmResult(f"svm-panic: {exc}", (), 0, {}, 0)
        self._x87_reset()
        if type(res) is self._Failed:
            # LiteSVM stored only the fee payer charged its fee (agave's rollback account;
            # tests/test_svm_live.py); the bank charges its own: the writable accounts are
            # taken back (their metas are as before the run) and load again next time
            metas_back = self._take_back(writable_keys)
            for k in writable_keys:
                mirror.pop(k, None)
            if metas_back:
                absorb(metas_back)
            meta = res.meta()
            logs = tuple(meta.logs())
            return SvmResult(_error_text(str(res.err()), logs), logs, int(meta.compute_units_consumed()), {},
                             int(meta.fee()))
        ok: TransactionMetadata = res  # type: ignore[assignment]  # (not ``cast``: a call per transaction)
        svm_fee = ok.fee()
        if not all_live:  # every account it named is now as LiteSVM holds it
            live.update([k for k in keys if k not in reserved])
        if not reserved.isdisjoint(writable_keys):
            writable_keys = [k for k in writable_keys if k not in reserved]
        try:
            balances: list[int | None] = list(map(self._get_balance, map(self._pubkeys.__getitem__, writable_keys)))
        except KeyError:
            balances = list(map(self._get_balance, map(self._pk, writable_keys)))
        writes: dict[bytes, int] = dict(zip(writable_keys, balances))  # type: ignore[arg-type]  # None: below
        if None in balances or 0 in balances or (special and not special.isdisjoint(writable_keys)):
            for k, lam in writes.items():
                if not lam:  # gone (agave): the bank deletes it, LiteSVM gets it again from there
                    writes[k] = 0
                    live.discard(k)
                    self._dirty.discard(k)
                    mirror.pop(k, None)
                elif k in special:  # only its lamports can change (no SVM program owns it)
                    live.discard(k)
                    mirror[k] = (lam, mirror[k][1])
                else:
                    self._dirty.add(k)
        else:
            self._dirty.update(writable_keys)
        if svm_fee != fee:  # the bank's payer differs from LiteSVM's: it loads again
            payer = keys[0]
            if payer in writes:
                writes[payer] += svm_fee - fee
            metas_back = self._take_back([payer])
            mirror.pop(payer, None)
            if metas_back:
                absorb(metas_back)
        # (``tuple.__new__``: the named tuple's own ``__new__`` is a Python frame)
        return _new_tuple(SvmResult, (None, tuple(ok.logs()), ok.compute_units_consumed(), writes, svm_fee))


def sub_transaction(tx: VersionedTransaction, instructions: Sequence[int]) -> VersionedTransaction:
    """``tx`` with only the instructions at ``instructions`` (same keys, header, blockhash and
    signatures): the SVM part of a transaction that also calls native programs. Its
    signatures no longer sign its message, which the SVM does not check (sigverify is the
    bank's, on the whole transaction)."""
    from solders.message import Message, MessageV0
    from solders.transaction import VersionedTransaction

    msg = tx.message
    ixs = [msg.instructions[i] for i in instructions]
    sub: Message | MessageV0
    if isinstance(msg, Message):
        h = msg.header
        sub = Message.new_with_compiled_instructions(h.num_required_signatures, h.num_readonly_signed_accounts,
                                                     h.num_readonly_unsigned_accounts, msg.account_keys,
                                                     msg.recent_blockhash, ixs)
    else:
        sub = MessageV0(msg.header, msg.account_keys, msg.recent_blockhash, ixs, [])
    return VersionedTransaction.populate(sub, tx.signatures)


def _error_text(err: str, logs: Sequence[str]) -> str:
    """``svm-error: <agave TransactionError>`` plus the last program message of the logs (a
    line not of the ``Program <id> ...`` frame), which says why in words."""
    err = err.removeprefix("TransactionError")
    said = [line for line in logs if not line.startswith("Program ")]
    return f"svm-error: {err}" + (f": {said[-1]}" if said else "")


_SHARED: SvmExecutor | None = None


def shared_executor() -> SvmExecutor:
    """The process's executor (created on first use): banks share it, as its mirror makes
    every transaction's result independent of what ran before."""
    global _SHARED
    if _SHARED is None:
        _SHARED = SvmExecutor()
    return _SHARED
