"""A single-leader validator's ledger life, without the network: every slot is built by
the node's own production code (node/leader.py ``build_slot``), inserted through the real
blockstore, rooted ``ROOT_LAG`` slots later and credited to the schedule book, with node
snapshots (ledger/snapshot.py) and cleanup (ledger/cleanup.py) at the validator's
intervals. tests/test_cleanup.py and tests/test_snapshot_restart.py drive it; run as a
script for the 20,000-slot acceptance figures::

    .venv/bin/python -m tests.ledger_chain --slots 20000 --keep 1024
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.genesis import build_genesis
from ambient_p2p.core.lstake import epoch_of
from ambient_p2p.core.messages import EpochParams, Genesis, LStakeParams, PohParams
from ambient_p2p.core.schedule import ScheduleBook
from ambient_p2p.ledger.blockstore import COLUMN_FAMILIES, Blockstore
from ambient_p2p.ledger.cleanup import CLEANUP_INTERVAL_SLOTS, cleanup_due, purge_below
from ambient_p2p.ledger.producer import genesis_bank, transfer_tx
from ambient_p2p.ledger.replay import SlotResult, replay_slot
from ambient_p2p.ledger.restore import Restored, restore
from ambient_p2p.ledger.snapshot import (
    SNAPSHOT_INTERVAL_SLOTS,
    make_node_snapshot,
    save_node_snapshot,
    snapshot_due,
)
from ambient_p2p.node.leader import build_slot

LEADER = Keypair.deterministic("ledger-chain-leader")
USERS = [Keypair.deterministic("ledger-chain-user", i) for i in range(4)]
#: Slots between a slot and its rooting (about a tower's depth of 32 votes).
ROOT_LAG = 32
SLOTS_PER_EPOCH = 256


def chain_genesis() -> Genesis:
    """Tiny PoH (cheap slots) and short epochs, so that 20,000 slots span 78 epochs and the
    LStake buckets must be pruned to stay bounded."""
    return build_genesis(
        bootstrap=[LEADER.pubkey], creation_time_s=0, chain_id="ledger-chain", bootstrap_lstake=1,
        accounts=[(u.pubkey, 10**12) for u in USERS], node_lamports=10**9,
        poh=PohParams(4, 2, 6_250), epoch=EpochParams(slots_per_epoch=SLOTS_PER_EPOCH, leader_slots=4),
        lstake=LStakeParams(1, 4, 5000, 5000), model_name="none",
    )


@dataclass
class ChainRun:
    genesis: Genesis
    path: Path
    slots: int
    root: int = 0
    rooted_count: int = 0
    purged: int = 0
    purges: int = 0
    snapshots: int = 0
    book: ScheduleBook | None = None
    tip: SlotResult | None = None
    seconds: float = 0.0
    purge_seconds: list[float] = field(default_factory=list)
    snapshot_seconds: list[float] = field(default_factory=list)


def run_chain(path: Path, slots: int, *, keep_slots: int | None, cleanup_interval: int = CLEANUP_INTERVAL_SLOTS,
              snapshot_interval: int = SNAPSHOT_INTERVAL_SLOTS, txs: bool = True,
              extra_txs: Callable[[int, bytes], list[bytes]] | None = None) -> ChainRun:
    """Build slots 1..``slots`` at ``path`` (``keep_slots`` None: no cleanup);
    ``extra_txs(slot, parent's last blockhash)`` adds transactions to a slot."""
    genesis = chain_genesis()
    run = ChainRun(genesis, path, slots)
    book = ScheduleBook(genesis)
    t0 = time.perf_counter()
    results: dict[int, SlotResult] = {0: SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0)}
    last_purge = 0
    with Blockstore.open(path) as bs:
        bs.set_roots([0])
        for slot in range(1, slots + 1):
            parent = results[slot - 1]
            tx = []
            if txs:
                a, b = USERS[slot % len(USERS)], USERS[(slot + 1) % len(USERS)]
                tx = [transfer_tx(a, b.pubkey, 1 + slot % 1000, parent.bank.last_blockhash)]
            if extra_txs is not None:
                tx += extra_txs(slot, parent.bank.last_blockhash)
            built = build_slot(LEADER, genesis, slot - 1, parent, slot, tx)
            res = bs.insert_shreds(built.packets, book.leader, signatures_verified=True)
            assert not res.rejected and res.completed_slots == [slot], res.rejected[:2]
            bs.put_bank_hash(built.record)
            results[slot] = built.result
            root = slot - ROOT_LAG
            if root >= 1:
                bs.set_roots([root])
                book.on_rooted([root], root, lambda _s: [])
                run.rooted_count += 1
                if snapshot_due(run.root, root, snapshot_interval):
                    t = time.perf_counter()
                    save_node_snapshot(bs, make_node_snapshot(genesis.hash(), results[root], run.rooted_count,
                                                              book.to_state()))
                    run.snapshot_seconds.append(time.perf_counter() - t)
                    run.snapshots += 1
                book.ledger.prune(epoch_of(root, book.spe))
                run.root = root
                del results[root - 1]
                if keep_slots is not None and cleanup_due(last_purge, root, cleanup_interval):
                    t = time.perf_counter()
                    run.purged += purge_below(bs, root, keep_slots)
                    run.purge_seconds.append(time.perf_counter() - t)
                    run.purges += 1
                    last_purge = root
        run.tip = results[slots]
    run.book = book
    run.seconds = time.perf_counter() - t0
    return run


def restart(path: Path, genesis: Genesis) -> tuple[Restored, dict[int, SlotResult], float, float]:
    """Restart as a validator would: :func:`restore`, then replay the slots above the root
    (parents first), crediting the roots above the snapshot as they replay. Returns the
    restore, the replayed results and the seconds of each part."""
    with Blockstore.open(path) as bs:
        t0 = time.perf_counter()
        r = restore(bs, genesis, LEADER.pubkey)
        t1 = time.perf_counter()
        frozen = {r.root: r.result}
        above = set(r.roots_above)
        for slot in r.above.replay:
            meta = bs.slot_meta(slot)
            assert meta is not None and meta.parent_slot in frozen, (slot, meta)
            leader = r.book.leader(slot)
            assert leader is not None
            res = replay_slot(bs, genesis, frozen[meta.parent_slot], slot, leader)
            frozen[slot] = res
            if slot in above:
                r.book.credit_replayed_root(slot, res.bank.landed_votes)
                r.rooted_count += 1
        t2 = time.perf_counter()
    return r, frozen, t1 - t0, t2 - t1


def census(path: Path) -> tuple[dict[str, int], int]:
    """Slots with records per column family, and bytes on disk."""
    with Blockstore.open(path, read_only=True) as bs:
        return {cf: sum(1 for _ in bs.slots_in(cf)) for cf in COLUMN_FAMILIES}, bs.disk_bytes()


def measure_purge(base: Path, slots: int) -> None:  # pragma: no cover - measurement script
    """Purge the lower half of a ``slots``-slot ledger three ways, same run: range deletes
    (Blockstore.purge_slots), then compaction of the range, against point deletes of every
    key (batches of 10,000 keys)."""
    import shutil

    run_chain(base / "src", slots, keep_slots=None, snapshot_interval=10**9)
    half = slots // 2
    for way in ("range", "point"):
        shutil.copytree(base / "src", base / way)
        with Blockstore.open(base / way) as bs:
            keys = sum(1 for cf in COLUMN_FAMILIES for _k in bs._iter_range(cf, 0, half))
            t0 = time.perf_counter()
            if way == "range":
                bs.purge_slots(0, half - 1)
            else:
                batch: list[tuple[str, bytes]] = []
                for cf in COLUMN_FAMILIES:
                    for k, _v in bs._iter_range(cf, 0, half):
                        batch.append((cf, k))
                        if len(batch) == 10_000:
                            bs._write({}, batch)
                            batch = []
                bs._write({}, batch)
            t1 = time.perf_counter()
            bs.compact_slots(0, half - 1)
            t2 = time.perf_counter()
            left = sum(1 for cf in COLUMN_FAMILIES for _k in bs._iter_range(cf, 0, half))
            assert left == 0
            print(f"{way}: delete {half} slots ({keys} records) {1000 * (t1 - t0):.1f} ms, "
                  f"then compaction {1000 * (t2 - t1):.0f} ms; disk after {bs.disk_bytes()} bytes")


def main() -> None:  # pragma: no cover - measurement script
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=20_000)
    ap.add_argument("--keep", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp/ledger-chain")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--measure-purge", action="store_true", help="time range vs point deletes instead")
    args = ap.parse_args()
    import shutil

    base = Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    if args.measure_purge:
        measure_purge(base, args.slots)
        return
    runs = [("cleanup", args.keep)] + ([] if args.no_baseline else [("no-cleanup", None)])
    for name, keep in runs:
        run = run_chain(base / name, args.slots, keep_slots=keep)
        per_cf, nbytes = census(base / name)
        r, frozen, t_restore, t_replay = restart(base / name, run.genesis)
        assert frozen[max(frozen)].bank.bank_hash == run.tip.bank.bank_hash  # type: ignore[union-attr]
        print(f"{name}: built {args.slots} slots in {run.seconds:.1f} s; root {run.root}; purges {run.purges} "
              f"({run.purged} slots, max {max(run.purge_seconds, default=0) * 1000:.0f} ms); snapshots "
              f"{run.snapshots} (max {max(run.snapshot_seconds, default=0) * 1000:.1f} ms)")
        print(f"  slots per column family: {per_cf}")
        print(f"  disk bytes: {nbytes}")
        print(f"  restart: restore {t_restore * 1000:.1f} ms from slot {r.root}, replay {len(r.above.replay)} slots "
              f"{t_replay:.2f} s, total {t_restore + t_replay:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
