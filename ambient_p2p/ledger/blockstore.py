"""The blockstore: shreds and slot metadata in RocksDB (rocksdict), modelled on agave's
``ledger/src/blockstore.rs`` and ``blockstore_meta.rs`` (normative text: spec/blockstore.md).

Column families and keys (integers big-endian so RocksDB's byte order is numeric order)::

    meta             slot u64                      -> SlotMeta
    data_shred       slot u64 || index u32         -> data shred payload (1203 bytes)
    code_shred       slot u64 || index u32         -> coding shred payload (1228 bytes)
    erasure_meta     slot u64 || fec_set_index u32 -> ErasureMeta
    merkle_root_meta slot u64 || fec_set_index u32 -> MerkleRootMeta
    index            slot u64                      -> ShredIndex
    root             slot u64                      -> b"\\x01"
    dead_slots       slot u64                      -> DeadSlot (reason)
    duplicate_slots  slot u64                      -> DuplicateSlotProof
    orphans          slot u64                      -> b"\\x01"
    bank_hashes      slot u64                      -> BankHashRecord
    bank_snapshots   slot u64                      -> BankSnapshot
    node_snapshots   slot u64                      -> NodeSnapshot (ledger/snapshot.py)
    block_status     slot u64                      -> BlockStatus (ledger/txstatus.py, the RPC's history)
    tx_status        slot u64 || position u32      -> TxStatus (ledger/txstatus.py)

(agave keys shreds by ``(slot, u64 index)``; we use a u32 index, which holds every legal
index, as spec/blockstore.md says.)

Crash safety: :meth:`Blockstore.insert_shreds` validates everything first, then applies
*all* of its effects (shreds, recovered shreds, metas, index, duplicate proofs) in ONE
RocksDB WriteBatch. RocksDB applies a batch atomically and writes it to the WAL before
``write`` returns, so a process killed at any point (SIGKILL) reopens to a state that
either contains a batch entirely or not at all, and every batch whose insert returned is
present. ``sync=True`` additionally fsyncs the WAL (power-loss safety, slower).

Integrity (spec/blockstore.md "Integrity"): RocksDB is opened with ``paranoid_checks`` and
the ``absolute_consistency`` WAL recovery mode (a corrupt WAL record refuses the open
instead of silently dropping the rest; a record cut off at the log's very end, a write that
never returned, is dropped by a second open: :data:`WAL_TAIL_CUT_ERRORS`); every read and every iteration checks RocksDB's
block checksums and raises :class:`BlockstoreCorruption` instead of ending early (a
corrupt SST block used to end an iteration silently); a read-write open scans every column
family once (:meth:`Blockstore.verify`). RocksDB cannot see a WAL cut at its tail, so the
highest root ever set is also kept in a small fsynced file next to the database
(:data:`ROOT_WITNESS_FILE`, written after the root's batch, which is written with a WAL
sync): a read-write open whose database has a lower highest root refuses to start. The
recovery path for all of these is ``ambient-p2p ledger repair DIR`` (RocksDB's repairer
keeps every table file that reads back whole, moves the others to ``rocksdb/lost/``, replays
what it can of the WAL, and the witness is reset to what survived), after which the node
fetches what it is missing from peers like any node that was down.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ..core import codec
from ..core.crypto import ZERO_SIGNATURE
from ..core.shred import (
    DATA_COMPLETE_SHRED,
    LAST_SHRED_IN_SLOT,
    MerkleMemo,
    Shred,
    ShredError,
    bad_signature,
    parse_shred,
    recover,
    root_signature_ok,
    scan_batch,
    verify_shred,
)
from .durable import write_durable
from .meta import (
    BankHashRecord,
    BankSnapshot,
    DeadSlot,
    DuplicateSlotProof,
    ErasureMeta,
    MerkleRootMeta,
    ShredIndex,
    SlotMeta,
    decode_bank_snapshot,
    encode_meta_exact,
)

COLUMN_FAMILIES = (
    "meta",
    "data_shred",
    "code_shred",
    "erasure_meta",
    "merkle_root_meta",
    "index",
    "root",
    "dead_slots",
    "duplicate_slots",
    "orphans",
    "bank_hashes",
    "bank_snapshots",
    "node_snapshots",
    # the RPC's transaction history (ledger/txstatus.py); slot-first keys, so purge_slots drops it too
    "block_status",
    "tx_status",
)
PRESENT = b"\x01"
_SHRED_CFS = frozenset({"data_shred", "code_shred"})

LeaderFn = Callable[[int], "bytes | None"]


class BlockstoreError(Exception):
    """The blockstore cannot be opened or used (missing, locked, read-only, corrupt)."""


#: What a user does about a corrupt or truncated blockstore (in every corruption error).
RECOVERY_HINT = ("recover with 'ambient-p2p ledger repair {dir}' (keeps what reads back; the node then "
                 "fetches what is missing from peers), or move {dir} away to re-sync from peers")
#: Passed shred signature checks remembered across inserts, as (leader, Merkle root,
#: signature) triples (one per FEC set; about 200 bytes each): past this many the memory is
#: emptied and checks run again. A few seconds of slots at 32:32 FEC sets.
VERIFIED_CACHE_MAX = 4096
#: Decoded metadata records remembered across inserts (Blockstore._remember), and the
#: largest encoding remembered: bounds the memory to a few MB whatever the records hold.
DECODED_CACHE_MAX = 1024
DECODED_CACHE_MAX_BYTES = 2048
#: Whether insert_shreds tries the batch fast path (``_insert_fast``) before the per-shred
#: path; tests switch it off to compare the two.
_FAST_PATH = True
#: Next to the RocksDB directory: the highest root ever set, fsynced (see module docstring).
ROOT_WITNESS_FILE = "max-root"


class BlockstoreCorruption(BlockstoreError):
    """The blockstore's data failed a checksum, or it lost records it had made durable."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"the blockstore at {path} is damaged: {what}; "
                         + RECOVERY_HINT.format(dir=path))
        self.path = path


_SHRED_KEY = struct.Struct(">QI")
_UNSET: Any = object()  # "not looked up yet" in _Pending.objs (None means "absent")


def slot_key(slot: int) -> bytes:
    return struct.pack(">Q", slot)


def shred_key(slot: int, index: int) -> bytes:
    return struct.pack(">QI", slot, index)


def split_shred_key(key: bytes) -> tuple[int, int]:
    slot, index = struct.unpack(">QI", key)
    return slot, index


@dataclass
class InsertResult:
    """What one :meth:`Blockstore.insert_shreds` call did."""

    inserted: int = 0
    recovered: int = 0
    already_present: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (position in input, reason)
    duplicates: list[tuple[int, str]] = field(default_factory=list)  # (slot, kind)
    completed_slots: list[int] = field(default_factory=list)


class _Pending:
    """Reads-through cache for one insert: what the batch will write, over the DB."""

    def __init__(self, bs: Blockstore) -> None:
        self.bs = bs
        self.writes: dict[tuple[str, bytes], bytes] = {}
        self.deletes: set[tuple[str, bytes]] = set()
        self.objs: dict[tuple[str, bytes], Any] = {}
        self.dirty: set[tuple[str, bytes]] = set()
        self.indexes: dict[int, tuple[set[int], set[int]]] = {}
        # DB reads made during this insert. Nothing else writes the DB while an insert
        # runs (this batch is written only at the end), so a key read once reads the same
        # afterwards: per-shred checks of the same key (orphans, roots) cost a dict lookup.
        self.reads: dict[tuple[str, bytes], bytes | None] = {}
        # what prefetch read, per column family: the same values, filled by one multi-get
        self.pre: dict[str, dict[bytes, bytes | None]] = {}
        self.unorphaned: set[int] = set()  # slots whose orphan mark this insert has cleared
        # The fast path's shreds, ((cf, key) list, payload list), written ahead of
        # :attr:`writes` without building a dict of them; :meth:`materialize` moves them into
        # :attr:`writes` (in front, in order) before anything reads shreds through this insert.
        self.bulk: tuple[list[tuple[str, bytes]], list[bytes]] | None = None

    def materialize(self) -> None:
        """Move :attr:`bulk` into :attr:`writes`, ahead of what is there (the same dict, and
        the same order, as putting them first)."""
        if self.bulk is not None:
            merged = dict(zip(*self.bulk, strict=True))
            self.bulk = None
            merged.update(self.writes)
            self.writes.clear()
            self.writes.update(merged)

    def get(self, cf: str, key: bytes) -> bytes | None:
        ck = (cf, key)
        if self.bulk is not None and cf in _SHRED_CFS:
            self.materialize()
        if ck in self.deletes:
            return None
        v = self.writes.get(ck)
        if v is not None:
            return v
        reads = self.reads
        if ck in reads:
            return reads[ck]
        pre = self.pre.get(cf)
        if pre is not None and key in pre:
            return pre[key]
        v = reads[ck] = self.bs._get(cf, key)
        return v

    def prefetch(self, keys: dict[str, list[bytes]]) -> None:
        """Read ``keys`` (per column family; slot-first keys) from the DB into :attr:`pre`:
        the same values :meth:`get` would read one by one. A slot with no record at all in
        the family (one iterator seek to its first key says so) reads as absent for all of
        its keys; the others are read with one multi-get per family (raw-mode rocksdict
        returns ``bytes`` or None). A fresh slot's shreds (the usual insert) then cost one
        seek instead of a point lookup each."""
        for cf, ks in keys.items():
            if not ks:
                continue
            pre = self.pre.setdefault(cf, {})
            col = self.bs._cf[cf]
            stored: set[bytes] = set()
            it = col.iter()
            for prefix in {k[:8] for k in ks}:
                it.seek(prefix)
                if it.valid():
                    if it.key()[:8] == prefix:
                        stored.add(prefix)
                else:
                    self.bs._check_iter(it, cf)
            del it
            if not stored:
                pre.update(dict.fromkeys(ks))
                continue
            look = [k for k in ks if k[:8] in stored]
            got = col.get(look)
            if len(got) != len(look):
                raise BlockstoreError(f"multi-get on {cf} returned {len(got)} values for {len(look)} keys")
            if len(look) != len(ks):
                pre.update(dict.fromkeys(ks))
            pre.update(zip(look, got))

    def any_stored(self, cf: str, prefixes: list[bytes], keys: list[bytes]) -> bool:
        """Whether any of ``keys`` (slot-first, of the slots ``prefixes``) is stored in ``cf``:
        one iterator seek per slot, and a multi-get of the keys of the slots that have
        records in ``cf`` (what :meth:`prefetch` reads, without keeping it)."""
        if not keys:
            return False
        col = self.bs._cf[cf]
        stored: set[bytes] = set()
        it = col.iter()
        for prefix in prefixes:
            it.seek(prefix)
            if it.valid():
                if it.key()[:8] == prefix:
                    stored.add(prefix)
            else:
                self.bs._check_iter(it, cf)
        del it
        if not stored:
            return False
        look = [k for k in keys if k[:8] in stored]
        got = col.get(look)
        if len(got) != len(look):
            raise BlockstoreError(f"multi-get on {cf} returned {len(got)} values for {len(look)} keys")
        return bool(got.count(None) != len(got))

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self.deletes.discard((cf, key))
        self.writes[(cf, key)] = value

    def delete(self, cf: str, key: bytes) -> None:
        self.writes.pop((cf, key), None)
        self.deletes.add((cf, key))

    def get_msg(self, cf: str, key: bytes, cls: type[Any]) -> Any:
        """Decoded record; decoded once per insert and then served from memory (strict
        CBOR decoding of a growing index on every shred would make inserts quadratic)."""
        if (cf, key) in self.objs:
            return self.objs[(cf, key)]
        raw = self.get(cf, key)
        if raw is None:
            obj = None
        else:
            decoded = self.bs._decoded
            obj = decoded.get((cls, raw))
            if obj is None:
                obj = codec.decode(raw, cls)
                self.bs._remember(cls, raw, obj)
        self.objs[(cf, key)] = obj
        return obj

    def put_msg(self, cf: str, key: bytes, msg: Any) -> None:
        """Record to write; encoded once, at :meth:`finish`."""
        self.deletes.discard((cf, key))
        self.objs[(cf, key)] = msg
        self.dirty.add((cf, key))

    def index_sets(self, slot: int) -> tuple[set[int], set[int]]:
        """Mutable (data, coding) index sets of ``slot`` for this insert; written back as a
        ShredIndex at :meth:`finish` (one encode per slot instead of one per shred)."""
        sets = self.indexes.get(slot)
        if sets is None:
            idx = self.get_msg("index", slot_key(slot), ShredIndex) or ShredIndex(slot)
            sets = (set(idx.data), set(idx.coding))
            self.indexes[slot] = sets
        return sets

    def finish(self) -> None:
        for slot, (data, coding) in self.indexes.items():
            self.put_msg("index", slot_key(slot), ShredIndex(slot, tuple(sorted(data)), tuple(sorted(coding))))
        remember = self.bs._remember
        for ck in self.dirty:
            obj = self.objs[ck]
            raw = encode_meta_exact(obj)
            if raw is None:
                raw = codec.encode(obj)
            else:  # codec.decode(raw) would give back obj: the next insert's read skips it
                remember(type(obj), raw, obj)
            self.writes[ck] = raw
        self.dirty.clear()


class _SlotState:
    """Mutable working copy of one :class:`SlotMeta` during an insert: updated in place
    for every data shred and turned back into a SlotMeta (encoded once) at the end,
    instead of a new frozen SlotMeta per shred. Fields and ``is_full`` mirror SlotMeta."""

    __slots__ = (
        "completed_data_indexes",
        "consumed",
        "is_connected",
        "last_index",
        "next_slots",
        "parent_slot",
        "received",
        "slot",
    )

    def __init__(self, m: SlotMeta) -> None:
        self.slot = m.slot
        self.consumed = m.consumed
        self.received = m.received
        self.last_index = m.last_index
        self.parent_slot = m.parent_slot
        self.next_slots = m.next_slots
        self.is_connected = m.is_connected
        self.completed_data_indexes = m.completed_data_indexes

    @property
    def is_full(self) -> bool:
        return self.last_index is not None and self.consumed == self.last_index + 1

    def to_meta(self) -> SlotMeta:
        return SlotMeta(self.slot, self.consumed, self.received, self.last_index, self.parent_slot,
                        self.next_slots, self.is_connected, self.completed_data_indexes)


def _iter_error(it: Any) -> str | None:
    """The error that stopped a rocksdict iterator, if any."""
    try:
        it.status()
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
        return str(exc)
    return None


#: What RocksDB's WAL reader says when the log ends inside a record: only a write that never
#: returned leaves that (a process killed inside RocksDB's WAL append); spec/blockstore.md
#: "Integrity". Any other corruption ("checksum mismatch", "bad record length") is refused.
WAL_TAIL_CUT_ERRORS = ("truncated record body", "error reading trailing data due to encountering EOF",
                       "truncated header")


def _db_options(*, create: bool, drop_cut_wal_tail: bool = False) -> Any:
    """RocksDB options of every blockstore open (module docstring, "Integrity");
    ``drop_cut_wal_tail``: the reopen after :data:`WAL_TAIL_CUT_ERRORS`."""
    from rocksdict import DBRecoveryMode, Options

    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.create_missing_column_families(create)
    # stop at, rather than skip, inconsistencies it can see (SST sizes against the manifest,
    # a failed write makes the DB read-only instead of carrying on)
    opts.set_paranoid_checks(True)
    # a corrupt record in the middle of the WAL refuses the open (default PointInTime
    # silently drops it and everything after it); TolerateCorruptedTailRecords, used only
    # once AbsoluteConsistency named a cut at the log's end, drops that unreturned record
    # (it also drops a checksum mismatch anywhere silently, so it is never the first try)
    opts.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records() if drop_cut_wal_tail
                               else DBRecoveryMode.absolute_consistency())
    return opts


class Blockstore:
    """A RocksDB blockstore at ``path``. Open with :meth:`open`; use as a context manager
    or call :meth:`close` (which releases RocksDB's LOCK file)."""

    def __init__(self, db: Any, path: Path, read_only: bool, sync: bool, present: set[str] | None = None) -> None:
        self._db = db
        self.path = path
        self.read_only = read_only
        self._sync = sync
        # A read-only open of a ledger written before a column family existed opens the
        # families it has; the missing ones read as empty (see ``open``).
        names = [n for n in COLUMN_FAMILIES if n in present] if present is not None else COLUMN_FAMILIES
        self._cf = {name: db.get_column_family(name) for name in names}
        self._cfh = {name: db.get_column_family_handle(name) for name in names}
        self._closed = False
        # (leader, root, signature) triples whose ed25519 check passed (insert_shreds)
        self._verified: set[tuple[bytes, bytes, bytes]] = set()
        # codec.decode results by (class, encoded bytes), for the records inserts read back
        # (a slot's meta, index, FEC set metas): a decode is a pure function of the bytes,
        # and the bytes are still read from RocksDB every time (_remember)
        self._decoded: dict[tuple[type, bytes], Any] = {}
        self._witness: int | None = None  # the root witness as last read or written
        self.close_error: str | None = None  # why RocksDB's close failed, if it did
        #: RocksDB's words when this open dropped a WAL record cut off at the log's end
        self.dropped_wal_tail: str | None = None

    def _remember(self, cls: type, raw: bytes, obj: Any) -> None:
        """Keep ``codec.decode(raw, cls) == obj`` for later reads (small records only;
        emptied past :data:`DECODED_CACHE_MAX` entries)."""
        if len(raw) <= DECODED_CACHE_MAX_BYTES:
            if len(self._decoded) >= DECODED_CACHE_MAX:
                self._decoded.clear()
            self._decoded[(cls, raw)] = obj

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, create: bool = True, sync: bool = False,
             verify: bool = True) -> Blockstore:
        """Open (and create) the blockstore at ``path``; a read-write open ``verify``-ies it
        first (:meth:`verify`). Raises BlockstoreError, BlockstoreCorruption."""
        from rocksdict import AccessType, Options, Rdict, WriteOptions

        p = Path(path) / "rocksdb"
        if not p.exists():
            if read_only or not create:
                raise BlockstoreError(f"no blockstore at {path} (expected {p})")
            try:
                p.mkdir(parents=True)
            except OSError as exc:  # e.g. DIR/blockstore is a file, or a read-only directory
                raise BlockstoreError(f"cannot create a blockstore at {p}: {exc.strerror}") from None
        opts = _db_options(create=not read_only)
        present: set[str] | None = None
        if read_only:
            try:
                present = set(Rdict.list_cf(str(p), opts))
            except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception for IO errors
                raise BlockstoreError(f"cannot open blockstore at {p}: {exc}") from None
        cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES if present is None or name in present}
        access = AccessType.read_only() if read_only else AccessType.read_write()
        dropped_wal_tail: str | None = None
        try:
            try:
                db = Rdict(str(p), options=opts, column_families=cfs, access_type=access)
            except Exception as exc:  # rocksdict raises plain Exception; re-raised unless a cut tail
                if not any(m in str(exc) for m in WAL_TAIL_CUT_ERRORS):
                    raise
                dropped_wal_tail = str(exc)  # a write that never returned: drop it and open
                db = Rdict(str(p), options=_db_options(create=not read_only, drop_cut_wal_tail=True),
                           column_families=cfs, access_type=access)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception for lock/IO errors
            if "Corruption" in str(exc):
                raise BlockstoreCorruption(Path(path), str(exc)) from None
            raise BlockstoreError(f"cannot open blockstore at {p}: {exc}") from None
        if not read_only:
            wo = WriteOptions()
            wo.sync = sync
            db.set_write_options(wo)
        bs = cls(db, p, read_only, sync, present)
        bs.dropped_wal_tail = dropped_wal_tail
        if dropped_wal_tail is not None:
            logging.getLogger(__name__).warning(
                "blockstore at %s: dropped one write cut off at the end of its write-ahead log by the last crash "
                "(it had not returned; RocksDB: %s)", path, dropped_wal_tail)
        # rocksdict releases the LOCK only when the last reference to the DB goes: a raised
        # error's traceback keeps this frame, so it must not hold the DB
        del db
        if not read_only:
            try:
                bs._witness = bs._read_witness()
                if verify:
                    bs.verify()
            except BaseException:
                bs.close()
                raise
        return bs

    @classmethod
    def repair(cls, path: str | Path) -> None:
        """RocksDB's repairer over the blockstore at ``path`` (it keeps every table file that
        reads back whole and moves the others to ``rocksdb/lost/``), then the root witness is
        reset to what survived."""
        from rocksdict import Rdict

        p = Path(path) / "rocksdb"
        if not p.is_dir():
            raise BlockstoreError(f"no blockstore at {path} (expected {p})")
        try:
            Rdict.repair(str(p), _db_options(create=False))
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
            raise BlockstoreError(f"RocksDB could not repair {p}: {exc}") from None
        with contextlib.suppress(FileNotFoundError):
            (p.parent / ROOT_WITNESS_FILE).unlink()
        with cls.open(path, create=False, verify=True) as bs:
            top = bs.max_root()
            if top is not None:
                bs._write_witness(top)

    def verify(self) -> int:
        """Read every record of every column family with checksum verification (RocksDB's
        ``VerifyChecksum`` is not exposed by rocksdict) and compare the highest root with the
        root witness; returns the number of records read. Raises BlockstoreCorruption."""
        # the scan runs in its own frame: a traceback must not keep an iterator or a column
        # family view, which keep the DB (and its LOCK) alive after close
        n, err = self._scan_all()
        if err is not None:
            raise BlockstoreCorruption(self.path.parent, err)
        witness = self._read_witness()
        top = self.max_root()
        if witness is not None and (top is None or top < witness):
            raise BlockstoreCorruption(
                self.path.parent,
                f"it made root {witness} durable but its highest root is now {top} (write-ahead log "
                f"truncated or lost)")
        return n

    def _scan_all(self) -> tuple[int, str | None]:
        n = 0
        for cf, col in self._cf.items():
            it = col.iter()
            it.seek_to_first()
            while it.valid():
                n += 1
                it.next()
            err = _iter_error(it)
            if err is not None:
                return n, f"column family {cf}: {err}"
        return n, None

    def _write_error(self, what: str) -> BlockstoreError:
        """A failed write as one clear error (with paranoid checks RocksDB also turns
        read-only after it, so the node must stop; its ledger stays consistent)."""
        if "No space left" in what or "ENOSPC" in what:
            return BlockstoreError(f"the disk holding the blockstore at {self.path.parent} is full ({what}); "
                                   "free space and start the node again: it resumes from its ledger")
        return BlockstoreError(f"cannot write the blockstore at {self.path.parent}: {what}")

    def _witness_path(self) -> Path:
        return self.path.parent / ROOT_WITNESS_FILE

    def _read_witness(self) -> int | None:
        try:
            text = self._witness_path().read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BlockstoreError(f"cannot read {self._witness_path()}: {exc.strerror}") from None
        try:
            return int(text.strip())
        except ValueError:
            raise BlockstoreCorruption(self.path.parent, f"{self._witness_path()} is not a slot number") from None

    def _write_witness(self, root: int) -> None:
        """Durably replace the witness (write, fsync, rename, fsync the directory)."""
        path = self._witness_path()
        try:
            write_durable(path, f"{root}\n".encode())
        except OSError as exc:
            raise self._write_error(f"{path}: {exc.strerror}") from None
        self._witness = root

    def _check_iter(self, it: Any, cf: str) -> None:
        """An iteration that stopped: raise if it stopped on an error (RocksDB invalidates
        the iterator on a corrupt block; rocksdict's ``valid()`` then just reads False)."""
        err = _iter_error(it)
        if err is not None:
            raise BlockstoreCorruption(self.path.parent, f"column family {cf}: {err}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Column-family views and handles each keep the DB alive (and its LOCK held):
            # drop them before closing so that the LOCK is released now.
            self._cf.clear()
            self._cfh.clear()
            try:
                self._db.close()
            except Exception as exc:  # noqa: BLE001 - e.g. disk full while flushing memtables
                # nothing the WAL holds is lost; the write that failed first has been raised
                # already, and a close in a ``finally`` must not replace that error
                self.close_error = str(exc)
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- column families of other ledger modules (ledger/txstatus.py) ---------------------
    # The public face of the raw access below for records this class does not interpret:
    # a module that owns a column family (declared in COLUMN_FAMILIES, keys starting with
    # the big-endian slot so that purge_slots drops them) reads and writes it through these.
    def cf_get(self, cf: str, key: bytes) -> bytes | None:
        """The value at ``key`` in column family ``cf`` (None: absent, or a family this
        older, read-only ledger lacks). Raises BlockstoreCorruption."""
        return self._get(cf, key)

    def cf_write(self, writes: dict[tuple[str, bytes], bytes], deletes: Iterable[tuple[str, bytes]] = (), *,
                 sync: bool = False) -> None:
        """Put ``{(cf, key): value}`` and delete ``(cf, key)`` in one atomic batch (``sync``:
        with a WAL fsync). Raises BlockstoreError (read-only, disk full)."""
        self._write(writes, deletes, sync=sync)

    def cf_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Records of ``cf`` whose key starts with ``prefix``, in key order."""
        return self._iter_prefix(cf, prefix)

    def cf_slots(self, cf: str, start: int, end: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Records of ``cf`` of slots ``start <= slot < end`` (None: no upper bound), in key
        order: one seek, then a scan of just those records."""
        return self._iter_range(cf, start, end)

    # -- raw access -------------------------------------------------------------------
    def _get(self, cf: str, key: bytes) -> bytes | None:
        col = self._cf.get(cf)
        if col is None:  # a family this (read-only, older) ledger does not have
            return None
        try:
            v = col.get(key)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception (Corruption, IO)
            raise BlockstoreCorruption(self.path.parent, f"column family {cf}: {exc}") from None
        return None if v is None else bytes(v)

    def _get_msg(self, cf: str, key: bytes, cls: type[Any]) -> Any:
        raw = self._get(cf, key)
        return None if raw is None else codec.decode(raw, cls)

    def _write(self, writes: dict[tuple[str, bytes], bytes], deletes: Iterable[tuple[str, bytes]] = (),
               *, sync: bool = False, bulk: tuple[list[tuple[str, bytes]], list[bytes]] | None = None) -> None:
        """One batch: ``bulk`` (``((cf, key) list, value list)``: insert_shreds' shreds) put
        first, in order, then ``writes``, then the ``deletes``."""
        from rocksdict import WriteBatch

        if self.read_only:
            raise BlockstoreError("blockstore is open read-only")
        wb = WriteBatch(raw_mode=True)
        cfh = self._cfh
        put = wb.put
        if bulk is not None:
            for (cf, key), value in zip(*bulk, strict=True):
                put(key, value, cfh[cf])
        for (cf, key), value in writes.items():
            put(key, value, cfh[cf])
        for cf, key in deletes:
            wb.delete(key, cfh[cf])
        self._commit(wb, sync=sync)

    def _commit(self, wb: Any, *, sync: bool = False) -> None:
        """Write one batch (``sync``: with a WAL fsync); a failure is a BlockstoreError."""
        from rocksdict import WriteOptions

        try:
            if sync and not self._sync:
                wo = WriteOptions()
                wo.sync = True
                self._db.write(wb, wo)
            else:
                self._db.write(wb)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception for IO errors
            raise self._write_error(str(exc)) from None

    def _iter_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if cf not in self._cf:
            return
        it = self._cf[cf].iter()
        it.seek(prefix)
        while it.valid():
            k = bytes(it.key())
            if not k.startswith(prefix):
                break
            yield k, bytes(it.value())
            it.next()
        self._check_iter(it, cf)

    def _iter_all(self, cf: str) -> Iterator[tuple[bytes, bytes]]:
        yield from self._iter_range(cf, 0)

    def _iter_range(self, cf: str, start: int, end: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Records of slots ``start <= slot < end`` (``end`` None: no upper bound), in slot
        order: keys begin with the big-endian slot, so this is one seek and a scan of just
        those records, not of the whole column family."""
        if cf not in self._cf:
            return
        it = self._cf[cf].iter()
        it.seek(slot_key(start))
        hi = None if end is None else slot_key(end)
        while it.valid():
            k = bytes(it.key())
            if hi is not None and k[:8] >= hi:
                break
            yield k, bytes(it.value())
            it.next()
        self._check_iter(it, cf)

    def _edge_key(self, cf: str, *, last: bool) -> bytes | None:
        """The first (or last) key of a column family: one seek."""
        if cf not in self._cf:
            return None
        it = self._cf[cf].iter()
        if last:
            it.seek_to_last()
        else:
            it.seek_to_first()
        if it.valid():
            return bytes(it.key())
        self._check_iter(it, cf)
        return None

    # -- reads ------------------------------------------------------------------------
    def slot_meta(self, slot: int) -> SlotMeta | None:
        return self._get_msg("meta", slot_key(slot), SlotMeta)  # type: ignore[no-any-return]

    def slot_metas(self, start: int = 0, end: int | None = None) -> Iterator[SlotMeta]:
        """Slot metas of slots ``start <= slot < end`` in slot order. Callers that need only
        the unrooted slots ask ``slot_metas(start=root + 1)``: one seek, no scan of the
        rooted history below."""
        for _k, v in self._iter_range("meta", start, end):
            yield codec.decode(v, SlotMeta)

    def first_slot_in(self, cf: str) -> int | None:
        """The lowest slot with a record in column family ``cf`` (one seek)."""
        k = self._edge_key(cf, last=False)
        return None if k is None else int.from_bytes(k[:8], "big")

    def slots_in(self, cf: str, start: int = 0, end: int | None = None) -> Iterator[int]:
        """Distinct slots ``start <= slot < end`` with records in ``cf``, ascending; reads
        keys only."""
        if cf not in self._cf:
            return
        it = self._cf[cf].iter()
        it.seek(slot_key(start))
        hi = None if end is None else slot_key(end)
        last = None
        while it.valid():
            k = bytes(it.key())[:8]
            if hi is not None and k >= hi:
                break
            if k != last:
                last = k
                yield int.from_bytes(k, "big")
            it.next()
        self._check_iter(it, cf)

    def lowest_slot(self) -> int | None:
        """The lowest slot with a meta (agave ``lowest_slot``); after cleanup, everything
        below it has been purged."""
        k = self._edge_key("meta", last=False)
        return None if k is None else int.from_bytes(k[:8], "big")

    def highest_slot(self) -> int | None:
        k = self._edge_key("meta", last=True)
        return None if k is None else int.from_bytes(k[:8], "big")

    def max_root(self) -> int | None:
        k = self._edge_key("root", last=True)
        return None if k is None else int.from_bytes(k[:8], "big")

    def is_pruned(self) -> bool:
        """True once cleanup purged the start of the history (slot 0's root record is gone
        while later roots exist): replay from genesis is then impossible, only from a node
        snapshot (spec/blockstore.md, "Cleanup")."""
        return not self.is_root(0) and self.max_root() is not None

    def shred_index(self, slot: int) -> ShredIndex:
        return self._get_msg("index", slot_key(slot), ShredIndex) or ShredIndex(slot)

    def get_data_shred(self, slot: int, index: int) -> bytes | None:
        return self._get("data_shred", shred_key(slot, index))

    def get_code_shred(self, slot: int, index: int) -> bytes | None:
        return self._get("code_shred", shred_key(slot, index))

    def slot_shred_payloads(self, slot: int, *, data: bool) -> list[tuple[int, bytes]]:
        """(index, payload) of every stored data (or coding) shred of ``slot``, in order."""
        cf = "data_shred" if data else "code_shred"
        return [(split_shred_key(k)[1], v) for k, v in self._iter_prefix(cf, slot_key(slot))]

    def erasure_metas(self, slot: int) -> list[ErasureMeta]:
        return [codec.decode(v, ErasureMeta) for _k, v in self._iter_prefix("erasure_meta", slot_key(slot))]

    def merkle_root_meta(self, slot: int, fec_set_index: int) -> MerkleRootMeta | None:
        return self._get_msg("merkle_root_meta", shred_key(slot, fec_set_index), MerkleRootMeta)  # type: ignore[no-any-return]

    def is_root(self, slot: int) -> bool:
        return self._get("root", slot_key(slot)) is not None

    def roots(self, start: int = 0) -> list[int]:
        """Stored roots ``>= start``, ascending."""
        return [struct.unpack(">Q", k)[0] for k, _v in self._iter_range("root", start)]

    def is_orphan(self, slot: int) -> bool:
        return self._get("orphans", slot_key(slot)) is not None

    def dead_slot(self, slot: int) -> DeadSlot | None:
        return self._get_msg("dead_slots", slot_key(slot), DeadSlot)  # type: ignore[no-any-return]

    def dead_slots(self) -> list[DeadSlot]:
        return [codec.decode(v, DeadSlot) for _k, v in self._iter_all("dead_slots")]

    def duplicate_proof(self, slot: int) -> DuplicateSlotProof | None:
        return self._get_msg("duplicate_slots", slot_key(slot), DuplicateSlotProof)  # type: ignore[no-any-return]

    def bank_hash(self, slot: int) -> BankHashRecord | None:
        return self._get_msg("bank_hashes", slot_key(slot), BankHashRecord)  # type: ignore[no-any-return]

    def bank_snapshot(self, slot: int) -> BankSnapshot | None:
        raw = self._get("bank_snapshots", slot_key(slot))
        return None if raw is None else decode_bank_snapshot(raw)  # v2 records read as without auctions

    def latest_bank_snapshot(self) -> BankSnapshot | None:
        k = self._edge_key("bank_snapshots", last=True)
        return None if k is None else self.bank_snapshot(int.from_bytes(k[:8], "big"))

    def node_snapshot_raw(self, slot: int) -> bytes | None:
        """The encoded NodeSnapshot stored at ``slot`` (decoded by ledger/snapshot.py)."""
        return self._get("node_snapshots", slot_key(slot))

    def node_snapshot_slots(self) -> list[int]:
        return [int.from_bytes(k[:8], "big") for k, _v in self._iter_all("node_snapshots")]

    def missing_data_indexes(self, slot: int, limit: int = 1024) -> list[int]:
        """Data shred indexes to ask peers for (agave ``find_missing_data_indexes``): the
        gaps below ``received`` (or below ``last_index + 1`` once known), at most ``limit``.
        A slot with no meta yields [0] so that repair can start it."""
        meta = self.slot_meta(slot)
        if meta is None:
            return [0][:limit]
        end = meta.last_index + 1 if meta.last_index is not None else meta.received
        present = set(self.shred_index(slot).data)
        out = [i for i in range(meta.consumed, end) if i not in present][:limit]
        if not out and meta.last_index is None:
            out = [meta.received][:limit]  # the tail is unknown: ask for the next one
        return out

    # -- small writes -----------------------------------------------------------------
    def purge_slots(self, first: int, last: int) -> None:
        """Delete every record of slots ``first..last`` (inclusive) in one batch (agave
        ``purge_slots``; the dump of a slot, and ledger cleanup below the root through
        ledger/cleanup.py). Parents keep their ``next_slots`` entries, as in agave.

        One range delete per column family (keys start with the big-endian slot, so a slot
        range is a key range): the batch holds one tombstone per family whatever the number
        of slots or shreds, and costs the same for 1 slot or 10,000 (measured in
        tests/test_cleanup.py against point deletes)."""
        from rocksdict import WriteBatch

        if self.read_only:
            raise BlockstoreError("blockstore is open read-only")
        if last < first:
            return
        wb = WriteBatch(raw_mode=True)
        lo, hi = slot_key(first), slot_key(last + 1) if last + 1 < 1 << 64 else b"\xff" * 9
        for name in self._cfh:
            wb.delete_range(lo, hi, self._cfh[name])
        self._commit(wb)

    def compact_slots(self, first: int, last: int) -> None:
        """Compact the key range of slots ``first..last`` in every column family, so that
        the space of purged records (range tombstones) is given back to the file system now
        rather than whenever RocksDB's background compaction reaches it (agave instead
        deletes whole SST files in the range, ``delete_file_in_range``, which rocksdict
        does not offer)."""
        if last < first:
            return
        lo, hi = slot_key(first), slot_key(last + 1) if last + 1 < 1 << 64 else b"\xff" * 9
        for col in self._cf.values():
            col.compact_range(lo, hi)

    def disk_bytes(self) -> int:
        """Bytes of the live SST files and logs under the RocksDB directory."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def set_roots(self, slots: Iterable[int]) -> None:
        """Mark ``slots`` rooted. The batch is written with a WAL sync and then the root
        witness is raised (fsynced), so a later open can tell a lost WAL tail from a root
        that was never written (module docstring, "Integrity")."""
        slots = list(slots)
        keys = [slot_key(s) for s in slots]
        top = max(slots, default=None)
        raise_witness = top is not None and (self._witness is None or top > self._witness)
        self._write({("root", k): PRESENT for k in keys}, [("orphans", k) for k in keys], sync=raise_witness)
        if raise_witness and top is not None:
            self._write_witness(top)

    def mark_dead(self, slot: int, reason: str) -> None:
        self._write({("dead_slots", slot_key(slot)): codec.encode(DeadSlot(slot, reason[:500]))})

    def clear_dead(self, slot: int) -> None:
        self._write({}, [("dead_slots", slot_key(slot))])

    def put_bank_snapshot(self, snap: BankSnapshot) -> None:
        self._write({("bank_snapshots", slot_key(snap.slot)): codec.encode(snap)})

    def put_node_snapshot(self, slot: int, encoded: bytes, *, keep_from: int | None = None) -> None:
        """Store an encoded NodeSnapshot at ``slot``; with ``keep_from``, node snapshots
        below that slot are deleted in the same batch (ledger/snapshot.py keeps a few)."""
        from rocksdict import WriteBatch

        if self.read_only:
            raise BlockstoreError("blockstore is open read-only")
        wb = WriteBatch(raw_mode=True)
        h = self._cfh["node_snapshots"]
        if keep_from is not None and keep_from > 0:
            wb.delete_range(slot_key(0), slot_key(min(keep_from, slot)), h)
        wb.put(slot_key(slot), encoded, h)
        self._commit(wb)

    def put_bank_hash(self, rec: BankHashRecord) -> None:
        self._write({("bank_hashes", slot_key(rec.slot)): codec.encode(rec)})

    # -- insert -----------------------------------------------------------------------
    def insert_shreds(
        self,
        packets: Sequence[bytes],
        leader_for_slot: LeaderFn,
        *,
        recover_missing: bool = True,
        signatures_verified: bool = False,
    ) -> InsertResult:
        """Validate and store shreds; recover FEC sets that became recoverable; update slot
        metas. Invalid shreds are rejected (reported, never stored); equivocation stores a
        :class:`DuplicateSlotProof` (first one per slot) and keeps the first shred.
        Everything lands in one atomic write batch.

        ``signatures_verified=True`` skips the ed25519 check, for callers whose sigverify
        stage already did it (agave's blockstore never verifies signatures itself); parsing,
        sanitizing, Merkle roots and every consistency rule still apply.

        The common case (every packet well formed, fresh FEC sets, no conflict) runs as one
        C call over the batch (:func:`scan_batch`) and per-slot bookkeeping
        (:meth:`_insert_fast`); every other batch runs packet by packet (:meth:`_insert_each`).
        Both leave the same result, records and database (tests/test_blockstore_fastpath.py,
        spec/blockstore.md "Performance")."""
        result = InsertResult()
        pend = _Pending(self)
        touched_sets: set[tuple[int, int]] = set()
        metas: dict[int, _SlotState] = {}
        # (leader, root, signature) triples whose ed25519 check passed: all shreds of a
        # Merkle FEC set sign one root, so one check per set; kept across calls (bounded)
        # because a node inserts a FEC set in several batches. A triple is only ever added
        # after its own check passed, so a hit is exactly a repeated check's answer: a
        # different signature over a cached root, or the same root and signature under
        # another slot's leader, is a different triple and is checked (and refused) anew.
        verified = self._verified
        if len(verified) > VERIFIED_CACHE_MAX:
            verified.clear()
        leaders: dict[int, bytes | None] = {}  # leader_for_slot, asked once per slot
        failed: set[tuple[bytes, bytes, bytes]] = set()  # triples whose check failed in this call
        # The common case in one C call and per-slot bookkeeping (_insert_fast); anything
        # it does not vouch for goes through the per-shred path, which decides every case.
        scanned = scan_batch(packets) if scan_batch is not None and _FAST_PATH else None
        if scanned is None or not self._insert_fast(scanned, pend, metas, result, touched_sets, leaders,
                                                    leader_for_slot, not signatures_verified, failed):
            self._insert_each(packets, pend, metas, result, touched_sets, leaders, leader_for_slot,
                              not signatures_verified, failed)
        if recover_missing:
            for slot, fec in sorted(touched_sets):
                self._try_recover(slot, fec, pend, metas, result)
        for slot, meta in metas.items():
            pend.put_msg("meta", slot_key(slot), meta.to_meta())
        pend.finish()
        self._write(pend.writes, pend.deletes, bulk=pend.bulk)
        return result

    def _insert_fast(
        self,
        scanned: Any,
        pend: _Pending,
        metas: dict[int, _SlotState],
        result: InsertResult,
        touched: set[tuple[int, int]],
        leaders: dict[int, bytes | None],
        leader_for_slot: LeaderFn,
        verify: bool,
        failed: set[tuple[bytes, bytes, bytes]],
    ) -> bool:
        """Insert a batch that :func:`scan_batch` found simple (every packet parsed and
        sanitized; distinct keys; per slot one parent and at most one LAST_IN_SLOT shred,
        none below another data shred; per FEC set one root, one signature, one erasure
        configuration) with per-slot and per-FEC-set work only, when the stored state
        makes every shred's outcome an insert: all signatures verify, no shred is stored
        yet, stored Merkle roots and erasure configurations agree, the slot's stored meta
        names the same parent and leaves every index below its last index. Then the state
        left in ``pend``, ``metas``, ``result`` and ``touched`` is exactly what
        :meth:`_insert_each` leaves (tests/test_blockstore_fastpath.py compares the two on
        random and hostile batches). Returns False, having changed nothing but read
        caches, ``leaders``, the verified-signature cache and ``failed``, otherwise."""
        cks, payloads, data_keys, code_keys, slots = scanned
        # -- checks: nothing below changes pend or metas until every one has passed --------
        if verify:
            verified = self._verified
            for st in slots:
                slot = st[0]
                if slot in leaders:
                    leader = leaders[slot]
                else:
                    leader = leaders[slot] = leader_for_slot(slot)
                    if leader is not None:
                        leader = leaders[slot] = bytes(leader)
                if leader is None:
                    return False
                for st_set in st[9]:
                    triple = (leader, st_set[1], st_set[2])
                    if triple in verified:
                        continue
                    if triple in failed or not root_signature_ok(leader, st_set[1], st_set[2]):
                        failed.add(triple)
                        return False
                    verified.add(triple)
        if (pend.any_stored("data_shred", [slot_key(st[0]) for st in slots if st[1] is not None], data_keys)
                or pend.any_stored("code_shred", [slot_key(st[0]) for st in slots if st[7]], code_keys)):
            return False  # already-present or duplicate: the per-shred path says which
        get_msg = pend.get_msg
        pack = _SHRED_KEY.pack
        for slot, po, _fd, _ld, last_in, max_data, _di, _ci, _co, sets in slots:
            if po is not None:
                m = get_msg("meta", slot_key(slot), SlotMeta)
                if m is not None:
                    if m.parent_slot is not None and m.parent_slot != slot - po:
                        return False  # parent-mismatch
                    if m.last_index is not None:
                        if last_in is not None or max_data > m.last_index:
                            return False  # index-past-last-in-slot
                    elif last_in is not None and m.received > last_in + 1:
                        return False  # last-in-slot-below-received
            for fec, root, _sig, _fi, _fd2, nd, nc, first_coding in sets:
                mkey = pack(slot, fec)
                mrm = get_msg("merkle_root_meta", mkey, MerkleRootMeta)
                if mrm is not None and mrm.merkle_root != root:
                    return False  # merkle-root-conflict
                if nd is not None:
                    em = get_msg("erasure_meta", mkey, ErasureMeta)
                    if em is not None and (em.fec_set_index, em.num_data, em.num_coding,
                                           em.first_coding_index) != (fec, nd, nc, first_coding):
                        return False  # erasure-config-conflict
        # -- apply: what _insert_one does shred by shred, per slot and per FEC set ----------
        pend.bulk = (cks, payloads)  # stored ahead of pend.writes (see _Pending.materialize)
        result.inserted += len(cks)
        objs = pend.objs
        for slot, _po, _fd, _ld, _li, _md, data_idx, code_idx, _co, sets in slots:
            index_sets = pend.index_sets(slot)
            index_sets[0].update(data_idx)
            index_sets[1].update(code_idx)
            for fec, root, _sig, first_index, first_is_data, nd, nc, first_coding in sets:
                mkey = pack(slot, fec)
                if objs[("merkle_root_meta", mkey)] is None:
                    pend.put_msg("merkle_root_meta", mkey, MerkleRootMeta(root, first_index, first_is_data))
                if nd is not None and objs[("erasure_meta", mkey)] is None:
                    pend.put_msg("erasure_meta", mkey, ErasureMeta(fec, nd, nc, first_coding))
                touched.add((slot, fec))
            if slot not in metas:
                self._meta(slot, pend, metas)
        # Slot metas in the order of each slot's first data shred: a slot's orphan mark and
        # its parent's depend on which of the two had a data shred in first.
        completions: list[tuple[int, int]] = []
        for slot, po, _fd, last_data, last_in, max_data, _di, _ci, complete, _s in sorted(
                (st for st in slots if st[1] is not None), key=lambda st: st[2]):
            meta = metas[slot]
            last_index = meta.last_index
            was_full = last_index is not None and meta.consumed == last_index + 1  # meta.is_full
            present = pend.indexes[slot][0]
            consumed = meta.consumed
            while consumed in present:
                consumed += 1
            meta.consumed = consumed
            if meta.received < max_data + 1:
                meta.received = max_data + 1
            if complete:
                meta.completed_data_indexes = tuple(sorted({*meta.completed_data_indexes, *complete}))
            if last_in is not None:
                meta.last_index = last_index = last_in
            parent_slot = slot - po
            meta.parent_slot = parent_slot  # slot 0 never comes here (scan_batch)
            pend.unorphaned.add(slot)
            skey = slot_key(slot)
            if pend.get("orphans", skey) is not None:
                pend.delete("orphans", skey)
            self._link_to_parent(slot, parent_slot, pend, metas)
            if not was_full and last_index is not None and consumed == last_index + 1:  # meta.is_full
                completions.append((last_data, slot))
        # A slot completes at its last data shred; connectedness propagated at the end is
        # the same closure as propagated slot by slot.
        for _pos, slot in sorted(completions):
            result.completed_slots.append(slot)
            self._propagate_connected(slot, pend, metas)
        return True

    def _insert_each(
        self,
        packets: Sequence[bytes],
        pend: _Pending,
        metas: dict[int, _SlotState],
        result: InsertResult,
        touched_sets: set[tuple[int, int]],
        leaders: dict[int, bytes | None],
        leader_for_slot: LeaderFn,
        verify: bool,
        failed: set[tuple[bytes, bytes, bytes]],
    ) -> None:
        """The per-shred path: every packet parsed, checked and stored in order."""
        verified = self._verified
        memo: MerkleMemo = {}  # inner Merkle nodes shared by the shreds of a FEC set
        # Parse everything first (pure; errors are reported in packet order below), so that
        # the stored copies of all these shreds can be read in one multi-get per column
        # family instead of one RocksDB get per shred in _insert_one.
        parsed: list[Shred | ShredError] = []
        keys: list[bytes] = []  # each parsed shred's key, packed once
        data_keys: list[bytes] = []
        code_keys: list[bytes] = []
        pack = _SHRED_KEY.pack
        for packet in packets:
            try:
                shred = parse_shred(packet)
            except ShredError as exc:
                parsed.append(exc)
                keys.append(b"")
                continue
            parsed.append(shred)
            key = pack(shred.slot, shred.index)
            keys.append(key)
            (data_keys if shred.variant.is_data else code_keys).append(key)
        pend.prefetch({"data_shred": data_keys, "code_shred": code_keys})
        for pos, item in enumerate(parsed):
            root = None
            if isinstance(item, ShredError):
                result.rejected.append((pos, f"{item.reason}: {item.detail}"))
                continue
            shred = item
            if verify:
                slot = shred.slot
                if slot in leaders:
                    leader = leaders[slot]
                else:
                    leader = leaders[slot] = leader_for_slot(slot)
                    if leader is not None:
                        leader = leaders[slot] = bytes(leader)
                try:
                    if leader is None:
                        raise ShredError("unknown-leader", f"no leader known for slot {shred.slot}")
                    root = shred.merkle_root(memo)
                    triple = (leader, root, shred.signature)
                    if triple not in verified:
                        if triple in failed:  # checked (and refused) earlier in this call
                            raise bad_signature(root)
                        # not checked yet: the full check, with its refusal reason
                        verify_shred(shred, leader, verified, memo)
                except ShredError as exc:
                    result.rejected.append((pos, f"{exc.reason}: {exc.detail}"))
                    continue
            self._insert_one(shred, pend, metas, result, touched_sets, root, memo, keys[pos])

    def _meta(self, slot: int, pend: _Pending, metas: dict[int, _SlotState]) -> _SlotState:
        m = metas.get(slot)
        if m is None:
            m = metas[slot] = _SlotState(pend.get_msg("meta", slot_key(slot), SlotMeta) or SlotMeta(slot, 0, 0))
        return m

    def _duplicate(self, shred: Shred, other: bytes, kind: str, pend: _Pending, result: InsertResult) -> None:
        result.duplicates.append((shred.slot, kind))
        key = slot_key(shred.slot)
        if pend.get_msg("duplicate_slots", key, DuplicateSlotProof) is None:
            pend.put_msg("duplicate_slots", key, DuplicateSlotProof(shred.slot, kind, other, shred.payload))

    def _insert_one(
        self,
        shred: Shred,
        pend: _Pending,
        metas: dict[int, _SlotState],
        result: InsertResult,
        touched: set[tuple[int, int]],
        root: bytes | None = None,
        memo: MerkleMemo | None = None,
        key: bytes | None = None,
    ) -> bool:
        """Store one parsed (and, unless the caller vouches, verified) shred after the
        consistency checks. ``root``: the shred's Merkle root when the caller already
        computed it (:func:`verify_shred` returns it); otherwise computed here. ``key``:
        its ``(slot, index)`` key when the caller already packed it.

        This runs once per shred, so the _Pending lookups are inlined; each one is the
        same read :meth:`_Pending.get` / :meth:`_Pending.get_msg` would make."""
        # Retransmitter signatures are a transport artefact (checked by the turbine stage
        # against the sender, outside the leader's Merkle leaf): store them zeroed, so that
        # copies relayed by different nodes are the same shred, not equivocation, and so
        # that replay can treat any nonzero byte there as corruption (spec/blockstore.md).
        # (The field lies after the leaf and the proof: zeroing it leaves the root as is.)
        variant = shred.variant
        is_data = variant.is_data
        if variant.resigned:
            off = variant._rs_offset  # type: ignore[attr-defined]
            if shred.payload[off : off + 64] != ZERO_SIGNATURE:
                shred = shred.with_retransmitter_signature(ZERO_SIGNATURE)
        slot = shred.slot
        index = shred.index
        fec = shred.fec_set_index
        payload = shred.payload
        cf = "data_shred" if is_data else "code_shred"
        if key is None:
            key = _SHRED_KEY.pack(slot, index)
        ck = (cf, key)
        writes = pend.writes
        # existing = pend.get(cf, key), inlined (writes and deletes never share a key)
        existing = writes.get(ck)
        if existing is None and ck not in pend.deletes:
            pre = pend.pre.get(cf)
            existing = _UNSET if pre is None else pre.get(key, _UNSET)
            if existing is _UNSET:
                existing = pend.get(cf, key)
        if existing is not None:
            if existing == payload:
                result.already_present += 1
            else:
                self._duplicate(shred, existing, "same-index-different-payload", pend, result)
            return False
        # One Merkle root per FEC set.
        if root is None:
            root = shred.merkle_root(memo)
        mkey = _SHRED_KEY.pack(slot, fec)
        objs = pend.objs
        mrm = objs.get(("merkle_root_meta", mkey), _UNSET)
        if mrm is _UNSET:
            mrm = pend.get_msg("merkle_root_meta", mkey, MerkleRootMeta)
        if mrm is not None and mrm.merkle_root != root:
            other = pend.get("data_shred" if mrm.first_received_is_data else "code_shred",
                             shred_key(slot, mrm.first_received_index)) or b""
            self._duplicate(shred, other, "merkle-root-conflict", pend, result)
            return False
        meta = metas.get(slot)
        if meta is None:
            meta = self._meta(slot, pend, metas)
        if is_data:
            flags: int = shred.flags  # type: ignore[assignment]
            last_in_slot = (flags & LAST_SHRED_IN_SLOT) == LAST_SHRED_IN_SLOT
            parent_slot = slot - shred.parent_offset  # type: ignore[operator]
            if meta.last_index is not None and index > meta.last_index:
                other = pend.get("data_shred", shred_key(slot, meta.last_index)) or b""
                self._duplicate(shred, other, "index-past-last-in-slot", pend, result)
                return False
            if last_in_slot and meta.received > index + 1:
                other = pend.get("data_shred", shred_key(slot, meta.received - 1)) or b""
                self._duplicate(shred, other, "last-in-slot-below-received", pend, result)
                return False
            if meta.parent_slot is not None and meta.parent_slot != parent_slot:
                reason = (f"parent-mismatch: slot {slot} shred {index} names parent "
                          f"{parent_slot}, slot has {meta.parent_slot}")
                result.rejected.append((-1, reason))
                return False
        else:
            em = objs.get(("erasure_meta", mkey), _UNSET)
            if em is _UNSET:
                em = pend.get_msg("erasure_meta", mkey, ErasureMeta)
            nd = shred.num_data_shreds or 0
            nc = shred.num_coding_shreds or 0
            first_coding = index - shred.position  # type: ignore[operator]
            # em != ErasureMeta(fec, nd, nc, first_coding), field by field (dataclass __eq__)
            if em is not None and (em.fec_set_index, em.num_data, em.num_coding, em.first_coding_index) != (
                    fec, nd, nc, first_coding):
                others = [v for _i, v in self._stored_set(slot, fec, pend, data=False)]
                self._duplicate(shred, others[0] if others else b"", "erasure-config-conflict", pend, result)
                return False
            if em is None:
                pend.put_msg("erasure_meta", mkey, ErasureMeta(fec, nd, nc, first_coding))
        if mrm is None:
            pend.put_msg("merkle_root_meta", mkey, MerkleRootMeta(root, index, is_data))
        pend.deletes.discard(ck)  # pend.put(cf, key, payload)
        writes[ck] = payload
        sets = pend.indexes.get(slot)
        if sets is None:
            sets = pend.index_sets(slot)
        touched.add((slot, fec))
        result.inserted += 1
        if not is_data:
            sets[1].add(index)
            return True
        present = sets[0]
        present.add(index)
        # Slot meta update (agave update_slot_data_meta), in place on this insert's copy.
        last_index = meta.last_index
        was_full = last_index is not None and meta.consumed == last_index + 1  # meta.is_full
        consumed = meta.consumed
        while consumed in present:
            consumed += 1
        meta.consumed = consumed
        if meta.received < index + 1:
            meta.received = index + 1
        if flags & DATA_COMPLETE_SHRED:
            meta.completed_data_indexes = tuple(sorted({*meta.completed_data_indexes, index}))
        if last_in_slot:
            meta.last_index = last_index = index
        if slot == 0:
            meta.parent_slot = None
        else:
            meta.parent_slot = parent_slot
            # Once a data shred of `slot` is in, its orphan mark is gone for the rest of this
            # insert: only a slot whose received == 0 is marked, and received never drops.
            # So the check runs once per slot (same outcome as running it every time).
            if slot not in pend.unorphaned:
                pend.unorphaned.add(slot)
                skey = key[:8]  # slot_key(slot)
                if pend.get("orphans", skey) is not None:
                    pend.delete("orphans", skey)
            self._link_to_parent(slot, parent_slot, pend, metas)
        if not was_full and last_index is not None and consumed == last_index + 1:  # meta.is_full
            result.completed_slots.append(slot)
            self._propagate_connected(slot, pend, metas)
        return True

    def _link_to_parent(self, slot: int, parent_slot: int, pend: _Pending, metas: dict[int, _SlotState]) -> None:
        """``slot`` is a child of ``parent_slot``: listed in the parent's ``next_slots``, and
        the parent marked an orphan while nothing of it arrived and it is not a root."""
        parent = metas.get(parent_slot)
        if parent is None:
            parent = self._meta(parent_slot, pend, metas)
        if slot not in parent.next_slots:
            parent.next_slots = tuple(sorted({*parent.next_slots, slot}))
        if parent.received == 0:
            pkey = slot_key(parent_slot)
            if not pend.get("root", pkey):
                pend.put("orphans", pkey, PRESENT)

    def _propagate_connected(self, slot: int, pend: _Pending, metas: dict[int, _SlotState]) -> None:
        meta = metas[slot]
        parent_ok = meta.parent_slot is not None and (
            pend.get("root", slot_key(meta.parent_slot)) is not None
            or self._meta(meta.parent_slot, pend, metas).is_connected
        )
        if not (meta.is_full and parent_ok):
            return
        stack = [slot]
        while stack:
            s = stack.pop()
            m = self._meta(s, pend, metas)
            if m.is_connected or not m.is_full:
                continue
            m.is_connected = True
            stack.extend(m.next_slots)

    def _stored_set(self, slot: int, fec: int, pend: _Pending, *, data: bool) -> list[tuple[int, bytes]]:
        pend.materialize()
        cf = "data_shred" if data else "code_shred"
        out = {i: v for i, v in self.slot_shred_payloads(slot, data=data)}
        for (c, k), v in pend.writes.items():
            if c == cf and k[:8] == slot_key(slot):
                out[split_shred_key(k)[1]] = v
        return sorted(out.items())

    def _try_recover(
        self, slot: int, fec: int, pend: _Pending, metas: dict[int, _SlotState], result: InsertResult,
        memo: MerkleMemo | None = None,
    ) -> None:
        em = pend.get_msg("erasure_meta", shred_key(slot, fec), ErasureMeta)
        if em is None:
            return
        # Decide from the index first; read shreds only when recovery will actually run.
        have_data, have_code = pend.index_sets(slot)
        # how many of the set's data and coding indexes are present (counted in C)
        n_data = len(have_data.intersection(range(fec, fec + em.num_data)))
        n_code = len(have_code.intersection(range(em.first_coding_index, em.first_coding_index + em.num_coding)))
        if n_data >= em.num_data or n_data + n_code < em.num_data:
            return
        data = [(i, v) for i, v in self._stored_set(slot, fec, pend, data=True) if fec <= i < fec + em.num_data]
        code = [(i, v) for i, v in self._stored_set(slot, fec, pend, data=False)
                if em.first_coding_index <= i < em.first_coding_index + em.num_coding]
        if len(data) >= em.num_data or len(data) + len(code) < em.num_data:
            return
        pend.materialize()  # _insert_one reads pend.writes directly
        shreds = [parse_shred(v) for _i, v in data + code]
        try:
            recovered = recover(shreds)
        except ShredError as exc:
            result.rejected.append((-1, f"recovery-failed: slot {slot} FEC set {fec}: {exc}"))
            return
        dummy: set[tuple[int, int]] = set()
        for s in recovered:
            if self._insert_one(s, pend, metas, result, dummy, None, memo):
                result.inserted -= 1
                result.recovered += 1
