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

(agave keys shreds by ``(slot, u64 index)``; we use a u32 index, which holds every legal
index, as spec/blockstore.md says.)

Crash safety: :meth:`Blockstore.insert_shreds` validates everything first, then applies
*all* of its effects (shreds, recovered shreds, metas, index, duplicate proofs) in ONE
RocksDB WriteBatch. RocksDB applies a batch atomically and writes it to the WAL before
``write`` returns, so a process killed at any point (SIGKILL) reopens to a state that
either contains a batch entirely or not at all, and every batch whose insert returned is
present. ``sync=True`` additionally fsyncs the WAL (power-loss safety, slower).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from ..core import codec
from ..core.shred import Shred, ShredError, parse_shred, recover, verify_shred
from .meta import (
    BankHashRecord,
    BankSnapshot,
    DeadSlot,
    DuplicateSlotProof,
    ErasureMeta,
    MerkleRootMeta,
    ShredIndex,
    SlotMeta,
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
)
PRESENT = b"\x01"
ZERO_SIGNATURE = bytes(64)

LeaderFn = Callable[[int], "bytes | None"]


class BlockstoreError(Exception):
    """The blockstore cannot be opened or used (missing, locked, read-only, corrupt)."""


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

    def get(self, cf: str, key: bytes) -> bytes | None:
        if (cf, key) in self.deletes:
            return None
        v = self.writes.get((cf, key))
        if v is not None:
            return v
        return self.bs._get(cf, key)

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
        obj = None if raw is None else codec.decode(raw, cls)
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
        for ck in self.dirty:
            self.writes[ck] = codec.encode(self.objs[ck])
        self.dirty.clear()


class Blockstore:
    """A RocksDB blockstore at ``path``. Open with :meth:`open`; use as a context manager
    or call :meth:`close` (which releases RocksDB's LOCK file)."""

    def __init__(self, db: Any, path: Path, read_only: bool, sync: bool) -> None:
        self._db = db
        self.path = path
        self.read_only = read_only
        self._sync = sync
        self._cf = {name: db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._cfh = {name: db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, create: bool = True, sync: bool = False) -> Blockstore:
        from rocksdict import AccessType, Options, Rdict, WriteOptions

        p = Path(path) / "rocksdb"
        if not p.exists():
            if read_only or not create:
                raise BlockstoreError(f"no blockstore at {path} (expected {p})")
            p.mkdir(parents=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(not read_only)
        opts.create_missing_column_families(not read_only)
        cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
        try:
            db = Rdict(
                str(p),
                options=opts,
                column_families=cfs,
                access_type=AccessType.read_only() if read_only else AccessType.read_write(),
            )
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception for lock/IO errors
            raise BlockstoreError(f"cannot open blockstore at {p}: {exc}") from None
        if not read_only:
            wo = WriteOptions()
            wo.sync = sync
            db.set_write_options(wo)
        return cls(db, p, read_only, sync)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Column-family views and handles each keep the DB alive (and its LOCK held):
            # drop them before closing so that the LOCK is released now.
            self._cf.clear()
            self._cfh.clear()
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw access -------------------------------------------------------------------
    def _get(self, cf: str, key: bytes) -> bytes | None:
        v = self._cf[cf].get(key)
        return None if v is None else bytes(v)

    def _get_msg(self, cf: str, key: bytes, cls: type[Any]) -> Any:
        raw = self._get(cf, key)
        return None if raw is None else codec.decode(raw, cls)

    def _write(self, writes: dict[tuple[str, bytes], bytes], deletes: Iterable[tuple[str, bytes]] = ()) -> None:
        from rocksdict import WriteBatch

        if self.read_only:
            raise BlockstoreError("blockstore is open read-only")
        wb = WriteBatch(raw_mode=True)
        for (cf, key), value in writes.items():
            wb.put(key, value, self._cfh[cf])
        for cf, key in deletes:
            wb.delete(key, self._cfh[cf])
        self._db.write(wb)

    def _iter_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self._cf[cf].iter()
        it.seek(prefix)
        while it.valid():
            k = bytes(it.key())
            if not k.startswith(prefix):
                break
            yield k, bytes(it.value())
            it.next()

    def _iter_all(self, cf: str) -> Iterator[tuple[bytes, bytes]]:
        it = self._cf[cf].iter()
        it.seek_to_first()
        while it.valid():
            yield bytes(it.key()), bytes(it.value())
            it.next()

    # -- reads ------------------------------------------------------------------------
    def slot_meta(self, slot: int) -> SlotMeta | None:
        return self._get_msg("meta", slot_key(slot), SlotMeta)  # type: ignore[no-any-return]

    def slot_metas(self) -> Iterator[SlotMeta]:
        for _k, v in self._iter_all("meta"):
            yield codec.decode(v, SlotMeta)

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

    def roots(self) -> list[int]:
        return [struct.unpack(">Q", k)[0] for k, _v in self._iter_all("root")]

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
        return self._get_msg("bank_snapshots", slot_key(slot), BankSnapshot)  # type: ignore[no-any-return]

    def latest_bank_snapshot(self) -> BankSnapshot | None:
        last = None
        for _k, v in self._iter_all("bank_snapshots"):
            last = v
        return None if last is None else codec.decode(last, BankSnapshot)

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
        ``purge_slots``; for ledger cleanup below the root). Parents keep their
        ``next_slots`` entries, as in agave."""
        from rocksdict import WriteBatch

        if self.read_only:
            raise BlockstoreError("blockstore is open read-only")
        if last < first:
            return
        wb = WriteBatch(raw_mode=True)
        lo, hi = slot_key(first), slot_key(last + 1) if last + 1 < 1 << 64 else b"\xff" * 9
        for name in COLUMN_FAMILIES:
            wb.delete_range(lo, hi, self._cfh[name])
        self._db.write(wb)
    def set_roots(self, slots: Iterable[int]) -> None:
        keys = [slot_key(s) for s in slots]
        self._write({("root", k): PRESENT for k in keys}, [("orphans", k) for k in keys])

    def mark_dead(self, slot: int, reason: str) -> None:
        self._write({("dead_slots", slot_key(slot)): codec.encode(DeadSlot(slot, reason[:500]))})

    def clear_dead(self, slot: int) -> None:
        self._write({}, [("dead_slots", slot_key(slot))])

    def put_bank_snapshot(self, snap: BankSnapshot) -> None:
        self._write({("bank_snapshots", slot_key(snap.slot)): codec.encode(snap)})

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
        sanitizing, Merkle roots and every consistency rule still apply."""
        result = InsertResult()
        pend = _Pending(self)
        touched_sets: set[tuple[int, int]] = set()
        metas: dict[int, SlotMeta] = {}
        verified: set[tuple[bytes, bytes, bytes]] = set()
        for pos, packet in enumerate(packets):
            try:
                shred = parse_shred(packet)
                if not signatures_verified:
                    leader = leader_for_slot(shred.slot)
                    if leader is None:
                        raise ShredError("unknown-leader", f"no leader known for slot {shred.slot}")
                    verify_shred(shred, leader, verified)
            except ShredError as exc:
                result.rejected.append((pos, f"{exc.reason}: {exc.detail}"))
                continue
            self._insert_one(shred, pend, metas, result, touched_sets)
        if recover_missing:
            for slot, fec in sorted(touched_sets):
                self._try_recover(slot, fec, pend, metas, result)
        for slot, meta in metas.items():
            pend.put_msg("meta", slot_key(slot), meta)
        pend.finish()
        self._write(pend.writes, pend.deletes)
        return result

    def _meta(self, slot: int, pend: _Pending, metas: dict[int, SlotMeta]) -> SlotMeta:
        m = metas.get(slot)
        if m is None:
            m = pend.get_msg("meta", slot_key(slot), SlotMeta) or SlotMeta(slot, 0, 0)
            metas[slot] = m
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
        metas: dict[int, SlotMeta],
        result: InsertResult,
        touched: set[tuple[int, int]],
    ) -> bool:
        # Retransmitter signatures are a transport artefact (checked by the turbine stage
        # against the sender, outside the leader's Merkle leaf): store them zeroed, so that
        # copies relayed by different nodes are the same shred, not equivocation, and so
        # that replay can treat any nonzero byte there as corruption (spec/blockstore.md).
        if shred.variant.resigned and shred.retransmitter_signature != ZERO_SIGNATURE:
            shred = shred.with_retransmitter_signature(ZERO_SIGNATURE)
        slot = shred.slot
        cf = "data_shred" if shred.is_data else "code_shred"
        key = shred_key(slot, shred.index)
        existing = pend.get(cf, key)
        if existing is not None:
            if existing == shred.payload:
                result.already_present += 1
            else:
                self._duplicate(shred, existing, "same-index-different-payload", pend, result)
            return False
        # One Merkle root per FEC set.
        root = shred.merkle_root()
        mkey = shred_key(slot, shred.fec_set_index)
        mrm = pend.get_msg("merkle_root_meta", mkey, MerkleRootMeta)
        if mrm is not None and mrm.merkle_root != root:
            other = pend.get("data_shred" if mrm.first_received_is_data else "code_shred",
                             shred_key(slot, mrm.first_received_index)) or b""
            self._duplicate(shred, other, "merkle-root-conflict", pend, result)
            return False
        meta = self._meta(slot, pend, metas)
        if shred.is_data:
            if meta.last_index is not None and shred.index > meta.last_index:
                other = pend.get("data_shred", shred_key(slot, meta.last_index)) or b""
                self._duplicate(shred, other, "index-past-last-in-slot", pend, result)
                return False
            if shred.last_in_slot and meta.received > shred.index + 1:
                other = pend.get("data_shred", shred_key(slot, meta.received - 1)) or b""
                self._duplicate(shred, other, "last-in-slot-below-received", pend, result)
                return False
            if meta.parent_slot is not None and meta.parent_slot != shred.parent_slot:
                reason = (f"parent-mismatch: slot {slot} shred {shred.index} names parent "
                          f"{shred.parent_slot}, slot has {meta.parent_slot}")
                result.rejected.append((-1, reason))
                return False
        else:
            ekey = shred_key(slot, shred.fec_set_index)
            em = pend.get_msg("erasure_meta", ekey, ErasureMeta)
            mine = ErasureMeta(shred.fec_set_index, shred.num_data_shreds or 0, shred.num_coding_shreds or 0,
                               shred.first_coding_index)
            if em is not None and em != mine:
                others = [v for _i, v in self._stored_set(slot, shred.fec_set_index, pend, data=False)]
                self._duplicate(shred, others[0] if others else b"", "erasure-config-conflict", pend, result)
                return False
            if em is None:
                pend.put_msg("erasure_meta", ekey, mine)
        if mrm is None:
            pend.put_msg("merkle_root_meta", mkey, MerkleRootMeta(root, shred.index, shred.is_data))
        pend.put(cf, key, shred.payload)
        present_data, present_coding = pend.index_sets(slot)
        (present_data if shred.is_data else present_coding).add(shred.index)
        touched.add((slot, shred.fec_set_index))
        result.inserted += 1
        if shred.is_data:
            self._update_slot_meta(shred, present_data, pend, metas, result)
        return True

    def _update_slot_meta(
        self, shred: Shred, present: set[int], pend: _Pending, metas: dict[int, SlotMeta], result: InsertResult
    ) -> None:
        slot = shred.slot
        meta = self._meta(slot, pend, metas)
        was_full = meta.is_full
        consumed = meta.consumed
        while consumed in present:
            consumed += 1
        completed = meta.completed_data_indexes
        if shred.data_complete:
            completed = tuple(sorted({*completed, shred.index}))
        meta = replace(
            meta,
            consumed=consumed,
            received=max(meta.received, shred.index + 1),
            last_index=shred.index if shred.last_in_slot else meta.last_index,
            parent_slot=shred.parent_slot if slot != 0 else None,
            completed_data_indexes=completed,
        )
        metas[slot] = meta
        if slot != 0 and pend.get("orphans", slot_key(slot)) is not None:
            pend.delete("orphans", slot_key(slot))
        if meta.parent_slot is not None and slot != 0:
            parent = self._meta(meta.parent_slot, pend, metas)
            if slot not in parent.next_slots:
                parent = replace(parent, next_slots=tuple(sorted({*parent.next_slots, slot})))
                metas[meta.parent_slot] = parent
            if parent.received == 0 and not pend.get("root", slot_key(meta.parent_slot)):
                pend.put("orphans", slot_key(meta.parent_slot), PRESENT)
        if meta.is_full and not was_full:
            result.completed_slots.append(slot)
            self._propagate_connected(slot, pend, metas)

    def _propagate_connected(self, slot: int, pend: _Pending, metas: dict[int, SlotMeta]) -> None:
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
            metas[s] = replace(m, is_connected=True)
            stack.extend(m.next_slots)

    def _stored_set(self, slot: int, fec: int, pend: _Pending, *, data: bool) -> list[tuple[int, bytes]]:
        cf = "data_shred" if data else "code_shred"
        out = {i: v for i, v in self.slot_shred_payloads(slot, data=data)}
        for (c, k), v in pend.writes.items():
            if c == cf and k[:8] == slot_key(slot):
                out[split_shred_key(k)[1]] = v
        return sorted(out.items())

    def _try_recover(
        self, slot: int, fec: int, pend: _Pending, metas: dict[int, SlotMeta], result: InsertResult
    ) -> None:
        em = pend.get_msg("erasure_meta", shred_key(slot, fec), ErasureMeta)
        if em is None:
            return
        # Decide from the index first; read shreds only when recovery will actually run.
        have_data, have_code = pend.index_sets(slot)
        n_data = sum(1 for i in range(fec, fec + em.num_data) if i in have_data)
        n_code = sum(1 for i in range(em.first_coding_index, em.first_coding_index + em.num_coding)
                     if i in have_code)
        if n_data >= em.num_data or n_data + n_code < em.num_data:
            return
        data = [(i, v) for i, v in self._stored_set(slot, fec, pend, data=True) if fec <= i < fec + em.num_data]
        code = [(i, v) for i, v in self._stored_set(slot, fec, pend, data=False)
                if em.first_coding_index <= i < em.first_coding_index + em.num_coding]
        if len(data) >= em.num_data or len(data) + len(code) < em.num_data:
            return
        shreds = [parse_shred(v) for _i, v in data + code]
        try:
            recovered = recover(shreds)
        except ShredError as exc:
            result.rejected.append((-1, f"recovery-failed: slot {slot} FEC set {fec}: {exc}"))
            return
        dummy: set[tuple[int, int]] = set()
        for s in recovered:
            if self._insert_one(s, pend, metas, result, dummy):
                result.inserted -= 1
                result.recovered += 1
