"""``ambient-p2p ledger``: produce a local ledger, verify it by full replay, show it.

rocksdict and solders are imported inside the handlers (via the ledger modules) so that
``ambient-p2p --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError

#: Largest slot number (slots are u64 on the wire; keys and JSON tools stay within int64).
MAX_SLOT = (1 << 63) - 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ledger", help="produce, verify and inspect a ledger (blockstore)",
                              description="Ledger tools: a single-node leader, full replay, inspection.")
    p.set_defaults(_parser=p)
    sub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")

    pr = sub.add_parser("produce", help="write N slots of PoH + transfer transactions as signed shreds")
    pr.add_argument("--slots", type=int, required=True, help="number of slots to produce (>= 1)")
    pr.add_argument("--ledger", default="ledger", help="ledger directory to create (default: ./ledger)")
    pr.add_argument("--txs-per-slot", type=int, default=48, help="transfer transactions per slot (default 48)")
    pr.add_argument("--hashes-per-tick", type=int, default=None, help="PoH hashes per tick (default 200)")
    pr.add_argument("--ticks-per-slot", type=int, default=None, help="PoH ticks per slot (default 64)")
    pr.add_argument("--seed", type=int, default=0, help="seed for the transfer workload")
    pr.set_defaults(func=_produce)

    ve = sub.add_parser("verify", help="replay every slot: shreds, recovery, PoH, transactions, bank hashes",
                        description="Replay every stored slot from genesis: shreds and their leader signatures, "
                                    "erasure recovery, PoH, transactions and votes, bank hashes. DIR is a "
                                    "'ledger produce' directory or a validator node's data directory (e.g. "
                                    "'localnet --dir D' makes D/node0), whose leaders follow the LStake schedule.")
    ve.add_argument("dir", help="ledger directory, or a validator data directory (holding blockstore/)")
    ve.add_argument("--genesis", default=None,
                    help="genesis file of a validator data directory (default: DIR/genesis.cbor or DIR/../genesis.cbor)")
    ve.add_argument("--jobs", type=int, default=None, help="processes for PoH verification (default: CPUs)")
    ve.add_argument("--mark-dead", action="store_true",
                    help="open read-write and record dead slots / bank hashes (default: read-only)")
    ve.add_argument("--quiet", action="store_true", help="no progress bar")
    ve.set_defaults(func=_verify)

    rp = sub.add_parser("repair", help="salvage a damaged blockstore (after a checksum or lost-WAL error)",
                        description="Run RocksDB's repairer over a blockstore that a node or 'ledger' command "
                                    "refused as damaged (a block checksum mismatch, a corrupt or truncated "
                                    "write-ahead log): table files that read back whole are kept, the others "
                                    "are moved to rocksdb/lost/, and the record of the highest durable root is "
                                    "reset to what survived. Slots lost this way are fetched from peers when "
                                    "the node runs again. Stop the node first.")
    rp.add_argument("dir", help="ledger directory, or a validator data directory (holding blockstore/)")
    rp.set_defaults(func=_repair)

    sh = sub.add_parser("show", help="summarize the ledger, or one slot with --slot")
    sh.add_argument("dir", help="ledger directory, or a validator data directory (holding blockstore/)")
    sh.add_argument("--genesis", default=None, help="genesis file of a validator data directory")
    sh.add_argument("--slot", type=int, default=None, help="show this slot's shreds and entries")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.set_defaults(func=_show)


def _open(dir_: str, *, read_only: bool, genesis_file: str | None = None) -> tuple[Any, Any, bool]:
    """(genesis, blockstore, is_validator_dir). ``dir_`` is a ``ledger produce`` directory
    (genesis.cbor + blockstore) or a validator node's data directory (``blockstore/``; the
    genesis from ``--genesis``, else ``genesis.cbor`` next to it, as ``localnet --dir`` lays
    it out)."""
    from ..core.codec import DecodeError, decode
    from ..core.messages import Genesis
    from ..ledger.blockstore import Blockstore, BlockstoreError
    from ..ledger.producer import GENESIS_FILE
    from ..node.validator import BLOCKSTORE_DIR

    path = Path(dir_)
    validator = (path / BLOCKSTORE_DIR).is_dir()  # 'ledger produce' keeps RocksDB in the directory itself
    if genesis_file is not None:
        gpath = Path(genesis_file)
    elif validator:
        gpath = next((p for p in (path / GENESIS_FILE, path.parent / GENESIS_FILE) if p.exists()),
                     path.parent / GENESIS_FILE)
    else:
        gpath = path / GENESIS_FILE
    if not gpath.exists():
        if validator:
            raise UserError(f"{path} is a validator data directory; name its genesis with --genesis FILE "
                            f"(not found at {gpath})")
        raise UserError(f"{path} is not a ledger directory (no {GENESIS_FILE}); create one with "
                        f"'ambient-p2p ledger produce --slots N --ledger {path}', or point at a validator "
                        f"data directory (one holding {BLOCKSTORE_DIR}/)")
    try:
        genesis = decode(gpath.read_bytes(), Genesis)
    except DecodeError as exc:
        raise UserError(f"{gpath} is not a valid genesis: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read {gpath}: {exc.strerror}") from None
    try:
        bs = Blockstore.open(path / BLOCKSTORE_DIR if validator else path, read_only=read_only)
    except BlockstoreError as exc:
        raise UserError(str(exc)) from None
    return genesis, bs, validator


def _blockstore_errors(fn: Any) -> Any:
    """A damaged blockstore found while a ledger command runs is one error line (with the
    recovery path), not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        from ..ledger.blockstore import BlockstoreError

        try:
            return int(fn(args))
        except BlockstoreError as exc:
            raise UserError(str(exc)) from None

    return wrapper


def _validator_schedule(genesis: Any, bs: Any, snap: Any = None) -> tuple[Any, Any]:
    """A validator ledger's leader schedule, as the node derives it: the LStake-weighted
    schedule (core/schedule.py), credited from the stored roots as they replay (leader slots
    and landed votes), so epochs >= 2 verify against the schedule the network used. From a
    node snapshot ``snap`` (pruned ledger) the book starts from the snapshot's state."""
    from ..core.schedule import ScheduleBook

    book = ScheduleBook(genesis) if snap is None else ScheduleBook.from_state(genesis, snap.schedule)
    roots = set(bs.roots())

    def on_replayed(slot: int, res: Any) -> None:
        if slot in roots:
            book.credit_replayed_root(slot, res.bank.landed_votes, res.bank.work_events)

    return book.leader, on_replayed


@_blockstore_errors
def _produce(args: argparse.Namespace) -> int:
    from ..devnet.genesis import LEDGER_USERS, ledger_genesis
    from ..devnet.users import ledger_leader_keypair, ledger_user_keypairs
    from ..ledger.producer import GENESIS_FILE, produce

    if args.slots < 1:
        raise UserError("--slots must be >= 1")
    if args.txs_per_slot < 0:
        raise UserError("--txs-per-slot must be >= 0")
    ledger = Path(args.ledger)
    if (ledger / GENESIS_FILE).exists():
        raise UserError(f"{ledger} already holds a ledger; choose a new directory")
    kw = {}
    if args.hashes_per_tick is not None:
        if args.hashes_per_tick < 2:
            raise UserError("--hashes-per-tick must be >= 2 (a tick needs room for a transaction record)")
        kw["hashes_per_tick"] = args.hashes_per_tick
    if args.ticks_per_slot is not None:
        if args.ticks_per_slot < 1:
            raise UserError("--ticks-per-slot must be >= 1")
        kw["ticks_per_slot"] = args.ticks_per_slot
    genesis = ledger_genesis(num_users=LEDGER_USERS, **kw)
    from tqdm import tqdm

    with tqdm(total=args.slots, unit="slot", desc="produce", file=sys.stderr, disable=None) as bar:
        produced = produce(ledger, args.slots, genesis=genesis, leader=ledger_leader_keypair(),
                           users=ledger_user_keypairs(LEDGER_USERS), txs_per_slot=args.txs_per_slot,
                           seed=args.seed, on_slot=lambda _p: bar.update(1))
    txs = sum(p.transactions for p in produced)
    shreds = sum(p.data_shreds + p.code_shreds for p in produced)
    print(f"produced slots 1..{args.slots} in {ledger}: {txs} transactions, {shreds} shreds; "
          f"last bank hash {produced[-1].bank_hash.hex()}")
    return 0


@_blockstore_errors
def _verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.codec import DecodeError
    from ..ledger.parallel import PohVerifier
    from ..ledger.replay import replay
    from ..ledger.snapshot import load_node_snapshot, snapshot_slot_result

    genesis, bs, validator = _open(args.dir, read_only=not args.mark_dead, genesis_file=args.genesis)
    start, snap = None, None
    if bs.is_pruned():
        # Cleanup purged the history below some slot: replay from genesis is impossible;
        # verify what replays from the oldest node snapshot kept (it covers the most slots).
        lowest = bs.lowest_slot()
        slots = bs.node_snapshot_slots()
        if not slots:
            bs.close()
            raise UserError(f"history pruned below slot {lowest} and no node snapshot kept: nothing can replay")
        try:
            snap = load_node_snapshot(bs, slots[0])
        except DecodeError as exc:  # e.g. a NodeSnapshot v1, written before auction accounts
            bs.close()
            raise UserError(f"the node snapshot at slot {slots[0]} cannot be read: {exc}") from None
        if snap is None or snap.genesis_hash != genesis.hash():
            bs.close()
            raise UserError(f"the node snapshot at slot {slots[0]} does not belong to this genesis")
        start = (snap.slot, snapshot_slot_result(snap))
        print(f"history pruned below slot {lowest}: verifying the slots above the node snapshot at slot "
              f"{snap.slot} (its bank is taken as is)")
    leader_for_slot, on_replayed = _validator_schedule(genesis, bs, snap) if validator else (None, None)
    if validator and leader_for_slot is not None:  # the Logit Pool's draw weighs by the book's LStake, as a node
        from ..ledger.producer import genesis_bank
        from ..ledger.replay import SlotResult

        if start is None:
            start = (0, SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0))
        book = leader_for_slot.__self__
        start[1].bank.lstake_provider = lambda epoch: book.vote_weights(epoch)
    with bs, PohVerifier(args.jobs) as pv:
        total = sum(1 for m in bs.slot_metas(start=1 if start is None else start[0] + 1))
        with tqdm(total=total, unit="slot", desc="verify", file=sys.stderr, disable=True if args.quiet else None) as bar:
            report = replay(bs, genesis, poh_verify=pv.verify, mark_dead=args.mark_dead,
                            progress=lambda _o: bar.update(1), leader_for_slot=leader_for_slot,
                            on_replayed=on_replayed, start=start)
    skipped = 0
    for o in report.failed:
        if (o.reason or "").startswith("parent-dead"):
            skipped += 1
        else:
            print(f"slot {o.slot}: DEAD: {o.reason}")
    if skipped:
        print(f"{skipped} descendant slot(s) not replayed: parent-dead")
    good = [o for o in report.outcomes if o.ok]
    recovered = sum(o.recovered_shreds for o in good)
    if report.outcomes:
        last = report.outcomes[-1]
        tail = f"; last bank hash {last.bank_hash.hex()}" if last.ok and last.bank_hash else ""
    else:
        tail = ""
    print(f"verified {len(good)} of {len(report.outcomes)} slots, {sum(o.transactions for o in good)} transactions"
          f", {recovered} shreds recovered from erasure coding{tail}")
    return 0 if report.ok and report.outcomes else 1


def _repair(args: argparse.Namespace) -> int:
    from ..ledger.blockstore import Blockstore, BlockstoreError
    from ..node.validator import BLOCKSTORE_DIR

    path = Path(args.dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")
    store = path / BLOCKSTORE_DIR if (path / BLOCKSTORE_DIR).is_dir() else path
    try:
        Blockstore.repair(store)
        with Blockstore.open(store, read_only=True) as bs:
            roots = bs.roots()
            lost = store / "rocksdb" / "lost"
            moved = sorted(p.name for p in lost.iterdir()) if lost.is_dir() else []
    except BlockstoreError as exc:
        raise UserError(str(exc)) from None
    print(f"repaired {store}: {len(roots)} roots kept (highest {roots[-1] if roots else None}); "
          f"{len(moved)} damaged or superseded files in {store / 'rocksdb' / 'lost'}")
    return 0


@_blockstore_errors
def _show(args: argparse.Namespace) -> int:
    from ..core.poh import PohError, deserialize_entries
    from ..core.shred import ShredError, deshred, parse_shred

    if args.slot is not None and not 0 <= args.slot <= MAX_SLOT:
        raise UserError(f"--slot must be 0..{MAX_SLOT}, not {args.slot}")
    genesis, bs, _validator = _open(args.dir, read_only=True, genesis_file=args.genesis)
    with bs:
        if args.slot is None:
            out: dict[str, Any] = {
                "chain_id": genesis.chain_id,
                "genesis_hash": genesis.hash().hex(),
                "poh": {"hashes_per_tick": genesis.poh.hashes_per_tick, "ticks_per_slot": genesis.poh.ticks_per_slot},
                "roots": bs.roots(),
                # cleanup purged every slot below this one (null: full history from genesis)
                "pruned_below": bs.lowest_slot() if bs.is_pruned() else None,
                "node_snapshots": bs.node_snapshot_slots(),
                "slots": [],
            }
            for m in bs.slot_metas():
                bh = bs.bank_hash(m.slot)
                dead = bs.dead_slot(m.slot)
                out["slots"].append({
                    "slot": m.slot, "parent": m.parent_slot, "consumed": m.consumed, "received": m.received,
                    "last_index": m.last_index, "full": m.is_full, "connected": m.is_connected,
                    "children": list(m.next_slots), "bank_hash": bh.bank_hash.hex() if bh else None,
                    "dead": dead.reason if dead else None,
                    "duplicate": bs.duplicate_proof(m.slot).kind if bs.duplicate_proof(m.slot) else None,
                })
            if args.json:
                print(json.dumps(out, indent=2))
            else:
                print(f"chain {out['chain_id']} genesis {out['genesis_hash']}  roots {out['roots']}")
                if out["pruned_below"] is not None:
                    print(f"history pruned below slot {out['pruned_below']}; node snapshots at {out['node_snapshots']}")
                print(f"{'slot':>6} {'parent':>6} {'shreds':>9} {'full':>5} {'conn':>5}  bank hash / status")
                for s in out["slots"]:
                    status = f"DEAD {s['dead']}" if s["dead"] else (s["bank_hash"] or "-")[:16]
                    if s["duplicate"]:
                        status += f" DUPLICATE({s['duplicate']})"
                    print(f"{s['slot']:>6} {s['parent']!s:>6} {s['consumed']:>4}/{s['received']!s:<4} "
                          f"{s['full']!s:>5} {s['connected']!s:>5}  {status}")
            return 0
        meta = bs.slot_meta(args.slot)
        if meta is None:
            if bs.is_pruned() and args.slot < (bs.lowest_slot() or 0):
                raise UserError(f"slot {args.slot} was pruned: history is kept from slot {bs.lowest_slot()}")
            raise UserError(f"slot {args.slot} is not in the ledger")
        shreds = []
        for is_data in (True, False):
            for index, payload in bs.slot_shred_payloads(args.slot, data=is_data):
                try:
                    shreds.append(parse_shred(payload).describe())
                except ShredError as exc:
                    shreds.append({"index": index, "type": "data" if is_data else "code", "invalid": str(exc)})
        entries_out: list[Any] = []
        try:
            data = sorted((parse_shred(p) for _i, p in bs.slot_shred_payloads(args.slot, data=True)),
                          key=lambda s: s.index)
            for _a, _b, blob in deshred(data):
                for e in deserialize_entries(blob):
                    entries_out.append({"num_hashes": e.num_hashes, "hash": e.hash.hex(),
                                        "transactions": len(e.transactions)})
        except (ShredError, PohError) as exc:
            entries_out.append({"error": str(exc)})
        out = {"slot": args.slot, "parent": meta.parent_slot, "consumed": meta.consumed,
               "last_index": meta.last_index, "completed_data_indexes": list(meta.completed_data_indexes),
               "shreds": shreds, "entries": entries_out}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"slot {args.slot} parent {meta.parent_slot} data shreds {meta.consumed} "
                  f"(last index {meta.last_index}) data sets end at {list(meta.completed_data_indexes)}")
            for s in shreds:
                if "invalid" in s:
                    print(f"  {s['type']:4} {s['index']:>5} INVALID {s['invalid']}")
                else:
                    print(f"  {s['type']:4} {s['index']:>5} fec {s['fec_set_index']:>5} variant {s['variant']:#04x} "
                          f"root {str(s['merkle_root'])[2:18]}")
            ticks = sum(1 for e in entries_out if e.get("transactions") == 0)
            print(f"  {len(entries_out)} entries, {ticks} ticks, "
                  f"{sum(e.get('transactions', 0) for e in entries_out)} transactions")
        return 0
