"""Replay: rebuild bank state from a blockstore and genesis, slot by slot, and reject any
slot that does not hold up (normative text: spec/replay.md).

For each slot, children after parents starting from the genesis bank (slot 0):

1. every stored shred (data and coding) parses, sanitizes and carries the slot leader's
   signature over its recomputed Merkle root; all shreds of a FEC set share one root;
2. FEC sets missing data shreds are recovered in memory from coding shreds (any 32 of 64);
3. FEC sets chain: each set's chained Merkle root is the previous set's root (the first
   set of a slot chains to the parent slot's last set; slot 1 chains to the genesis hash);
4. data shreds 0..last are contiguous, the last is LAST_IN_SLOT, every data set ends on
   DATA_COMPLETE and deserializes as a bincode ``Vec<Entry>``;
5. PoH verifies from the parent's last entry hash (in parallel when given a pool), with
   ``ticks_per_slot`` ticks of ``hashes_per_tick`` hashes;
6. transactions execute in the bank; the bank freezes; when a bank hash was recorded for
   the slot (by its producer) it must match.

The first failure makes the slot dead with ``"<code>: <detail>"``; its descendants are
skipped as ``parent-dead``. A read-only run reports without writing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.bank import Bank, BlockError, verify_transaction_signatures
from ..core.crypto import ZERO_SIGNATURE
from ..core.errors import ProtocolError
from ..core.messages import Genesis
from ..core.poh import Entry, PohError, check_slot_ticks, deserialize_entries, verify_entries
from ..core.shred import Shred, ShredError, deshred, parse_shred, recover, verify_shred
from .blockstore import Blockstore
from .meta import BankHashRecord
from .producer import genesis_bank, open_bank
from .snapshot import bank_to_snapshot, snapshot_matches

PohVerifyFn = Callable[[bytes, Sequence[Entry]], "int | None"]


class SlotRejected(ProtocolError):
    """Replay refused a slot (the slot is dead); ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)


@dataclass
class SlotOutcome:
    slot: int
    ok: bool
    reason: str | None = None
    bank_hash: bytes | None = None
    entries: int = 0
    transactions: int = 0
    recovered_shreds: int = 0


@dataclass
class ReplayReport:
    outcomes: list[SlotOutcome] = field(default_factory=list)
    #: The highest-slot bank that replayed successfully (to persist as a snapshot).
    last_bank: Bank | None = None

    @property
    def failed(self) -> list[SlotOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class SlotResult:
    bank: Bank
    last_entry_hash: bytes
    last_root: bytes
    entries: int
    transactions: int
    recovered: int


def _load_fec_sets(bs: Blockstore, slot: int, leader: bytes,
                   shreds_verified: bool = False) -> tuple[dict[int, list[Shred]], int]:
    """Parse and verify every stored shred of ``slot``; group by FEC set; recover missing
    data. Returns ({fec_set_index: data shreds of the set, sorted}, recovered count).
    ``shreds_verified``: the blockstore insert verified the leader's signatures (the node's
    own insert path); Merkle roots are still recomputed, the ed25519 checks are skipped."""
    sets: dict[int, list[Shred]] = {}
    roots: dict[int, bytes] = {}
    verified: set[tuple[bytes, bytes, bytes]] = set()
    for is_data in (True, False):
        for index, payload in bs.slot_shred_payloads(slot, data=is_data):
            kind = "data" if is_data else "coding"
            try:
                s = parse_shred(payload)
                if s.slot != slot or s.index != index or s.is_data != is_data:
                    raise ShredError("misplaced-shred", f"stored under ({slot}, {index}) but is "
                                     f"{'data' if s.is_data else 'coding'} shred ({s.slot}, {s.index})")
                root = s.merkle_root() if shreds_verified else verify_shred(s, leader, verified)
                if s.variant.resigned and s.retransmitter_signature != ZERO_SIGNATURE:
                    raise ShredError("bad-retransmitter-field", "stored shreds keep a zeroed retransmitter "
                                     "signature; this one is not (corrupted)")
            except ShredError as exc:
                raise SlotRejected(exc.reason, f"{kind} shred {index}: {exc.detail}") from None
            if roots.setdefault(s.fec_set_index, root) != root:
                raise SlotRejected("merkle-root-conflict", f"FEC set {s.fec_set_index} has two signed roots")
            sets.setdefault(s.fec_set_index, []).append(s)
    out: dict[int, list[Shred]] = {}
    recovered = 0
    for fec, shreds in sorted(sets.items()):
        data = [s for s in shreds if s.is_data]
        codes = [s for s in shreds if not s.is_data]
        # Without coding shreds the set's size is unknown here; its data shreds must then be
        # complete, which deshred's contiguity check below enforces.
        nd = codes[0].num_data_shreds if codes else None
        if nd is not None and len(data) < nd:
            try:
                rec = recover(shreds)
            except ShredError as exc:
                raise SlotRejected(exc.reason, f"FEC set {fec}: {exc.detail} (have {len(data)} data, "
                                   f"{len(codes)} coding)") from None
            data += [s for s in rec if s.is_data]
            recovered += len(rec)
        out[fec] = sorted(data, key=lambda s: s.index)
    return out, recovered


def replay_slot(
    bs: Blockstore,
    genesis: Genesis,
    parent: SlotResult,
    slot: int,
    leader: bytes,
    *,
    poh_verify: PohVerifyFn | None = None,
    shreds_verified: bool = False,
    known_verified: Callable[[bytes], bool] | None = None,
) -> SlotResult:
    """``known_verified``: transactions whose exact bytes this node verified already
    (at admission, spec/tpu.md) skip the signature batch."""
    sets, recovered = _load_fec_sets(bs, slot, leader, shreds_verified)
    if not sets:
        raise SlotRejected("empty-slot", "no shreds stored")
    # Chaining and slot shape.
    expect_root = parent.last_root
    expect_fec = 0
    data: list[Shred] = []
    for fec in sorted(sets):
        shreds = sets[fec]
        if fec != expect_fec:
            raise SlotRejected("missing-shreds", f"no shred of the FEC set starting at data shred {expect_fec}")
        if not shreds:
            raise SlotRejected("missing-shreds", f"FEC set {fec} has no data shreds")
        expect_fec = shreds[-1].index + 1
        first = shreds[0]
        if first.chained_merkle_root != expect_root:
            raise SlotRejected("bad-chained-merkle-root", f"FEC set {fec} does not chain to the previous set")
        if first.parent_slot != parent.bank.slot:
            raise SlotRejected("bad-parent", f"shreds name parent {first.parent_slot}, replaying on "
                               f"{parent.bank.slot}")
        expect_root = first.merkle_root()
        data.extend(shreds)
    if not data[-1].last_in_slot:
        raise SlotRejected("incomplete-slot", f"no LAST_IN_SLOT shred (last data shred present: {data[-1].index})")
    if any(s.last_in_slot for s in data[:-1]):
        raise SlotRejected("bad-flags", "LAST_IN_SLOT before the last data shred")
    try:
        data_sets = deshred(data)
    except ShredError as exc:
        raise SlotRejected(exc.reason, exc.detail) from None
    entries = []
    for first_i, last_i, blob in data_sets:
        try:
            entries.extend(deserialize_entries(blob))
        except PohError as exc:
            raise SlotRejected(exc.reason, f"data set {first_i}..{last_i}: {exc}") from None
    # Tick shape first (agave verify_ticks runs before PoH): it is cheap and bounds every
    # entry's num_hashes by hashes_per_tick, so hostile counts cannot stall the verifier.
    # As agave, a slot carries the ticks of the slots skipped since its parent too.
    try:
        check_slot_ticks(entries, genesis.poh.hashes_per_tick, genesis.poh.ticks_per_slot * (slot - parent.bank.slot))
    except PohError as exc:
        raise SlotRejected(exc.reason, str(exc)) from None
    bad = (poh_verify or verify_entries)(parent.last_entry_hash, entries)
    if bad is not None:
        raise SlotRejected("bad-poh", f"entry {bad} does not follow from its predecessor's hash")
    # Signatures of the whole slot first, as one batch (agave's sigverify stage), then
    # execution without repeating the ed25519 work.
    flat = [(i, tx) for i, e in enumerate(entries) for tx in e.transactions
            if known_verified is None or not known_verified(tx)]
    for (i, _tx), problem in zip(flat, verify_transaction_signatures([tx for _i, tx in flat])):
        if problem is not None:
            raise SlotRejected(problem.split(":", 1)[0], f"entry {i}: {problem}")
    try:
        bank = open_bank(genesis, parent.bank, slot, leader)
    except ValueError as exc:  # the closing epoch's vote weights are not known here (yet)
        raise SlotRejected("unknown-vote-weights", str(exc)) from None
    ntx = 0
    for i, e in enumerate(entries):
        if e.transactions:
            try:
                bank.process_transactions(e.transactions, verify_signatures=False)
            except BlockError as exc:
                raise SlotRejected(exc.reason, f"entry {i}: {exc}") from None
            ntx += len(e.transactions)
    bank_hash = bank.freeze(entries[-1].hash)
    recorded = bs.bank_hash(slot)
    if recorded is not None and recorded.bank_hash != bank_hash:
        raise SlotRejected("bank-hash-mismatch", f"replayed {bank_hash.hex()[:16]}..., recorded "
                           f"{recorded.bank_hash.hex()[:16]}...")
    snap = bs.bank_snapshot(slot)
    if snap is not None and not snapshot_matches(snap, bank):
        raise SlotRejected("snapshot-mismatch", "the persisted bank snapshot differs from the replayed bank")
    return SlotResult(bank, entries[-1].hash, expect_root, len(entries), ntx, recovered)


def replay(
    bs: Blockstore,
    genesis: Genesis,
    *,
    leader_for_slot: Callable[[int], bytes | None] | None = None,
    poh_verify: PohVerifyFn | None = None,
    mark_dead: bool = False,
    progress: Callable[[SlotOutcome], None] | None = None,
    on_replayed: Callable[[int, SlotResult], None] | None = None,
    start: tuple[int, SlotResult] | None = None,
) -> ReplayReport:
    """Replay every slot reachable from slot 0 (or from ``start``: a slot and its frozen
    result, e.g. a node snapshot's on a ledger whose history was pruned below it), parents
    before children. With ``mark_dead``
    (and a writable blockstore) failures are stored in ``dead_slots`` and successes in
    ``bank_hashes``. ``leader_for_slot`` may answer None (schedule unknown): the slot then
    fails with ``unknown-leader``. ``on_replayed`` sees every successful slot's result
    before its children replay (a validator ledger's schedule is fed from it)."""
    leader_for_slot = leader_for_slot or (lambda _s: genesis.bootstrap_nodes[0].identity)
    report = ReplayReport()
    if start is None:
        start = (0, SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0))
    start_slot, root = start
    children: dict[int, list[int]] = {}
    for m in bs.slot_metas(start=start_slot + 1):
        if m.parent_slot is not None:
            children.setdefault(m.parent_slot, []).append(m.slot)
    stack: list[tuple[int, SlotResult | None]] = [(c, root) for c in sorted(children.get(start_slot, []),
                                                                             reverse=True)]
    while stack:
        slot, parent = stack.pop()
        if parent is None:
            outcome = SlotOutcome(slot, False, "parent-dead: an ancestor failed replay")
            res = None
        else:
            try:
                leader = leader_for_slot(slot)
                if leader is None:
                    raise SlotRejected("unknown-leader", f"the leader schedule of slot {slot}'s epoch is not known")
                res = replay_slot(bs, genesis, parent, slot, leader, poh_verify=poh_verify)
                if on_replayed is not None:
                    on_replayed(slot, res)
                outcome = SlotOutcome(slot, True, None, res.bank.bank_hash, res.entries, res.transactions,
                                      res.recovered)
            except SlotRejected as exc:
                res = None
                outcome = SlotOutcome(slot, False, str(exc))
        if mark_dead and not bs.read_only:
            if outcome.ok and res is not None:
                if bs.bank_hash(slot) is None:
                    b = res.bank
                    assert b.bank_hash is not None
                    bs.put_bank_hash(BankHashRecord(slot, b.parent_slot, b.bank_hash, b.last_blockhash,
                                                    b.signature_count, b.transaction_count))
            else:
                bs.mark_dead(slot, outcome.reason or "")
        report.outcomes.append(outcome)
        if res is not None and (report.last_bank is None or res.bank.slot > report.last_bank.slot):
            report.last_bank = res.bank
        if progress:
            progress(outcome)
        for c in sorted(children.get(slot, []), reverse=True):
            stack.append((c, res))
    last = report.last_bank
    if mark_dead and not bs.read_only and last is not None and bs.bank_snapshot(last.slot) is None:
        bs.put_bank_snapshot(bank_to_snapshot(last))
    return report
