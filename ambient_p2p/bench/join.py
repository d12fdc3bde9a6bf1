"""``ambient-p2p bench join``: joining a long history from a snapshot, against replaying it
from genesis, in the same run (issue 20).

Procedure:

1. produce a ``--slots``-slot single-leader ledger (ledger/producer.py; tiny PoH so that it
   is built quickly) into a validator data directory;
2. **reference**: replay every slot from genesis in this process (ledger/replay.py, the work a
   from-genesis join does once the shreds are on disk; the network transfer of the shreds is
   not counted, so this is a lower bound on a from-genesis join);
3. from the tip's frozen result, write a node snapshot (ledger/snapshot.py) and root the tip;
4. start that directory as a validator process (``ambient-p2p run --validator``, the ledger's
   leader identity, which holds all of the genesis LStake): it restarts from the snapshot and
   serves it;
5. **measured**: start ``ambient-p2p join <its address> --validator --expected-genesis-hash``
   in a fresh directory and time it from process start to its ``status`` reporting the tip as
   processed (genesis fetch, offers, chunk download over libp2p, checks, install, restore).

The ledger's chain is not live (its genesis is at time 0 and nobody produces), so the
newcomer's repair of slots after the snapshot is not exercised here (tests/test_join_multiproc.py
does that on a live localnet).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

#: The newcomer must be at the tip within this long or the run fails.
JOIN_TIMEOUT_S = 300.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("join", help="join a long history from a snapshot vs replay it from genesis (spec/join.md)")
    p.add_argument("--slots", type=int, default=20_000, help="history length in slots (default 20000)")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_join)


def _produce(server: Path, slots: int) -> Any:
    from ..devnet.genesis import LEDGER_USERS, ledger_genesis
    from ..devnet.users import ledger_leader_keypair, ledger_user_keypairs
    from ..ledger.producer import produce

    genesis = ledger_genesis(num_users=LEDGER_USERS, ticks_per_slot=4, hashes_per_tick=8)
    produce(server / "blockstore", slots, genesis=genesis, leader=ledger_leader_keypair(),
            users=ledger_user_keypairs(LEDGER_USERS), txs_per_slot=1, seed=1)
    return genesis


def _replay_from_genesis(server: Path, genesis: Any, slots: int) -> tuple[float, Any]:
    from ..devnet.users import ledger_leader_keypair
    from ..ledger.blockstore import Blockstore
    from ..ledger.producer import genesis_bank
    from ..ledger.replay import SlotResult, replay_slot

    leader = ledger_leader_keypair().pubkey
    with Blockstore.open(server / "blockstore") as bs:
        res = SlotResult(genesis_bank(genesis), genesis.hash(), genesis.hash(), 0, 0, 0)
        t0 = time.perf_counter()
        for slot in range(1, slots + 1):
            res = replay_slot(bs, genesis, res, slot, leader)
        return time.perf_counter() - t0, res


def _snapshot_tip(server: Path, genesis: Any, tip: Any, slots: int) -> int:
    import dataclasses

    from ..core import codec
    from ..core.schedule import ScheduleBook
    from ..ledger.blockstore import Blockstore
    from ..ledger.snapshot import make_node_snapshot

    state = dataclasses.replace(ScheduleBook(genesis).to_state(), credited_through=slots)
    snap = make_node_snapshot(genesis.hash(), tip, slots, state)
    raw = codec.encode(snap)
    with Blockstore.open(server / "blockstore") as bs:
        bs.put_node_snapshot(slots, raw)
        bs.set_roots(range(1, slots + 1))
    return len(raw)


def _env() -> dict[str, str]:
    import os

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _status(d: Path) -> dict[str, Any] | None:
    from ..net.node import control_request

    try:
        return control_request(d, {"cmd": "status"}, timeout_s=5.0)
    except (OSError, ValueError):
        return None


def _wait(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise UserError(f"bench join: timed out after {timeout_s:g} s waiting for {what}")


def cmd_join(args: argparse.Namespace) -> int:
    if args.slots < 100:
        raise UserError("--slots must be >= 100")
    from ..core.crypto import write_keypair_file
    from ..devnet.users import ledger_leader_keypair

    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        server, newcomer = root / "server", root / "newcomer"
        if server.exists() or newcomer.exists():
            raise UserError(f"{root} already holds a bench run; choose a new --dir")
        t0 = time.perf_counter()
        genesis = _produce(server, args.slots)
        produce_s = time.perf_counter() - t0
        replay_s, tip = _replay_from_genesis(server, genesis, args.slots)
        size = _snapshot_tip(server, genesis, tip, args.slots)
        gpath = server / "genesis.cbor"
        gpath.write_bytes((server / "blockstore" / "genesis.cbor").read_bytes())
        write_keypair_file(server / "identity.json", ledger_leader_keypair())
        procs: list[subprocess.Popen[str]] = []
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ambient_p2p", "run", "--validator", "--no-rpc", "--quiet",
                 "--genesis", str(gpath), "--ledger", str(server)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=_env()))
            _wait(lambda: (st := _status(server)) and st.get("consensus", {}).get("processed", -1) >= args.slots,
                  JOIN_TIMEOUT_S, "the serving node")
            addr = json.loads((server / "node.json").read_text())["addrs"][0]
            t1 = time.perf_counter()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ambient_p2p", "join", addr, "--validator", "--no-rpc",
                 "--expected-genesis-hash", genesis.hash().hex(), "--ledger", str(newcomer)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()))
            _wait(lambda: (st := _status(newcomer)) and st.get("consensus", {}).get("processed", -1) >= args.slots,
                  JOIN_TIMEOUT_S, "the newcomer to reach the tip")
            join_s = time.perf_counter() - t1
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        lines = procs[1].stdout.read().splitlines() if procs[1].stdout else []
        installed = next((ln for ln in lines if "verified and installed" in ln), "")
        out = {"slots": args.slots, "produce_s": round(produce_s, 2),
               "replay_from_genesis_s": round(replay_s, 2),
               "replay_ms_per_slot": round(replay_s * 1000 / args.slots, 3),
               "snapshot_bytes": size, "join_from_snapshot_s": round(join_s, 2),
               "speedup": round(replay_s / join_s, 1) if join_s > 0 else None, "installed_line": installed}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"history: {args.slots} slots (produced in {produce_s:.1f} s); snapshot {size:,} bytes")
        print(f"reference  replay from genesis (local, no network): {replay_s:8.2f} s "
              f"({out['replay_ms_per_slot']} ms/slot)")
        print(f"measured   join from a snapshot (processes, libp2p): {join_s:8.2f} s "
              f"(x{out['speedup']} faster)")
        print(f"           {installed}")
    return 0
