"""`ambient-p2p localnet --nodes N`: a genesis with N bootstrap identities and N validator
processes on loopback (node 0 bootstraps, the others join it; ambient_p2p/devnet/). The
last ``--miners`` nodes (default: half) also mine with the embedded model, and a stream of
demo queries (``ambient-p2p query`` runs through the non-mining nodes, as the funded test
users) shows real questions answered on the live chain. Prints the PoH parameters it runs
next to mainnet's, then one live status line per second (slot, confirmed, finalized,
leader, peers of every node; queries served per miner), one line per demo query answered,
writes the nodes' own output to DIR/nodes.log, and stops them all on Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core.genesis import MAINNET_HASHES_PER_TICK, MAINNET_TICKS_PER_SLOT
from ..core.messages import PohParams
from ..devnet.genesis import LOCALNET_HASHES_PER_TICK, LOCALNET_SLOT_MS, LOCALNET_TICKS_PER_SLOT
from ..errors import UserError

STATUS_INTERVAL_S = 1.0
#: Demo queries a localnet sends by default (one at a time; the last one ends the stream).
DEMO_QUERIES = 20
#: The localnet's miners ask 10, 15, 20, ... lamports per token: the cheapest wins and is
#: paid the next one's price (the second-price rule, visible in the demo lines).
MINER_PRICE_BASE = 10
MINER_PRICE_STEP = 5
#: Solana mainnet's slot (64 ticks x 6.25 ms).
MAINNET_SLOT_MS = 400


def register(sub: Any) -> None:
    p = sub.add_parser("localnet", help="run N validators as separate processes on 127.0.0.1")
    p.add_argument("--nodes", type=int, default=4, help="number of nodes (default 4)")
    p.add_argument("--dir", default=None, help="directory for node data (default: a new temporary directory)")
    p.add_argument("--chain-id", default="localnet")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--slot-ms", type=int, default=LOCALNET_SLOT_MS,
                   help=f"slot duration in ms (default {LOCALNET_SLOT_MS}; mainnet {MAINNET_SLOT_MS})")
    p.add_argument("--ticks-per-slot", type=int, default=LOCALNET_TICKS_PER_SLOT,
                   help=f"PoH ticks per slot (default {LOCALNET_TICKS_PER_SLOT}; mainnet {MAINNET_TICKS_PER_SLOT})")
    p.add_argument("--hashes-per-tick", type=int, default=LOCALNET_HASHES_PER_TICK,
                   help=f"PoH hashes per tick (default {LOCALNET_HASHES_PER_TICK}; mainnet {MAINNET_HASHES_PER_TICK:,})")
    p.add_argument("--miners", type=int, default=None, metavar="K",
                   help="how many nodes (the last K) also mine with the embedded model (default: half, rounded "
                        "down, at least 1; 0: none)")
    p.add_argument("--demo-queries", type=int, default=DEMO_QUERIES, metavar="Q",
                   help=f"demo queries to send, one after another (default {DEMO_QUERIES}; 0: none)")
    p.add_argument("--rpc-port", type=int, default=8899, metavar="PORT",
                   help="node i serves JSON-RPC + the OpenAI API on PORT+2i and PubSub on PORT+2i+1 (default 8899)")
    p.add_argument("--no-rpc", action="store_true", help="the nodes serve no RPC")
    p.add_argument("--poh-clock", choices=("service", "instant"), default=None,
                   help="passed to every node (`run`/`join --poh-clock`; default: the node's default)")
    p.add_argument("--logit-pool", action="store_true",
                   help="every node also checks the answers it is drawn to validate (`--logit-pool`, "
                        "spec/logit_pool.md): queries settle FINALIZED_VERIFIED or FINALIZED_REJECTED")
    p.set_defaults(func=cmd_localnet)


def status_line(net: Any, t0: float) -> str:
    """One line for the whole network: the highest slot and leader, then per node
    ``confirmed/finalized`` and peer count (``down`` for a node that does not answer),
    ``+m<served>`` for a miner (``+m..`` while it loads its model)."""
    cells = []
    slot = leader = None
    for n in net.nodes:
        try:
            st = n.control({"cmd": "status"}, timeout_s=2.0)
            c = st["consensus"]
            if slot is None or c["slot"] > slot:
                slot, leader = c["slot"], c["leader"]
            m = st.get("roles", {}).get("miner")
            mark = "" if m is None else f"+m{m['queries_served']}" if "queries_served" in m else "+m.."
            cells.append(f"{c['confirmed']}/{c['finalized']}/{st['peers']}p{mark}")
        except (OSError, ValueError, KeyError):
            cells.append("down")
    return (f"[{time.monotonic() - t0:6.1f}s] slot={slot} leader={(leader or '-')[:8]} "
            f"confirmed/finalized/peers: {' '.join(cells)}")


def poh_line(poh: PohParams) -> str:
    """What the localnet's PoH is, next to mainnet's (spec/node.md, "Localnet parameters")."""
    slot_ms = poh.slot_duration_us / 1000
    rate = poh.hashes_per_tick * poh.ticks_per_slot / (slot_ms / 1000)
    mainnet_rate = MAINNET_HASHES_PER_TICK * MAINNET_TICKS_PER_SLOT / (MAINNET_SLOT_MS / 1000)
    return (f"localnet: PoH {poh.ticks_per_slot} ticks/slot x {poh.hashes_per_tick:,} hashes/tick, "
            f"{slot_ms:g} ms slots ({rate:,.0f} hashes/s, {rate / mainnet_rate:.2%} of mainnet's "
            f"{MAINNET_TICKS_PER_SLOT} x {MAINNET_HASHES_PER_TICK:,} per {MAINNET_SLOT_MS} ms)")


def cmd_localnet(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 64:
        raise UserError("--nodes must be between 1 and 64")
    if not 40 <= args.slot_ms <= 60_000:
        raise UserError("--slot-ms must be between 40 and 60000")
    if not 1 <= args.ticks_per_slot <= 1024 or not 2 <= args.hashes_per_tick <= 10_000_000:
        raise UserError("--ticks-per-slot must be 1..1024 and --hashes-per-tick 2..10000000")
    miners = max(1, args.nodes // 2) if args.miners is None else args.miners
    if not 0 <= miners <= args.nodes:
        raise UserError(f"--miners must be 0..{args.nodes} (the number of nodes), not {args.miners}")
    if args.demo_queries < 0:
        raise UserError(f"--demo-queries must be >= 0, not {args.demo_queries}")
    if not args.no_rpc and not 1 <= args.rpc_port <= 65535 - 2 * args.nodes:
        raise UserError(f"--rpc-port must be 1..{65535 - 2 * args.nodes} for {args.nodes} node(s), not {args.rpc_port}")
    from ..devnet.demo import DemoQueries
    from ..devnet.genesis import localnet_poh
    from ..devnet.localnet import Localnet

    try:
        poh = localnet_poh(args.slot_ms, args.ticks_per_slot, args.hashes_per_tick)
    except ValueError as exc:
        raise UserError(str(exc)) from None

    if args.dir:
        from ..net.node import CONTROL_SOCKET, MAX_UNIX_SOCKET_PATH_BYTES

        root = Path(args.dir)
        if root.exists() and not root.is_dir():
            raise UserError(f"--dir {root} exists and is not a directory")
        sock = root / f"node{args.nodes - 1}" / CONTROL_SOCKET
        if len(os.fsencode(str(sock))) > MAX_UNIX_SOCKET_PATH_BYTES:
            raise UserError(f"--dir {root} is too long: a node's control socket path ({sock}) would exceed the "
                            f"{MAX_UNIX_SOCKET_PATH_BYTES}-byte limit of a Unix socket path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --dir {root}: {exc.strerror}") from None
    else:
        root = Path(tempfile.mkdtemp(prefix="ambient-localnet-"))
    log = open(root / "nodes.log", "a", encoding="utf-8")  # noqa: SIM115 - closed below
    miner_nodes = list(range(args.nodes - miners, args.nodes))
    net = Localnet(root, args.nodes, chain_id=args.chain_id, validator=True, echo=log,
                   genesis_kw={"poh": poh},
                   node_args={i: ["--miner", "--miner-price", str(MINER_PRICE_BASE + MINER_PRICE_STEP * k)]
                              for k, i in enumerate(miner_nodes)},
                   extra_args=(["--poh-clock", args.poh_clock] if args.poh_clock else [])
                   + (["--logit-pool"] if args.logit_pool else []),
                   rpc_base_port=None if args.no_rpc else args.rpc_port)
    demo = None
    stop = {"sig": 0}

    def on_signal(sig: int, _frame: Any) -> None:
        stop["sig"] = sig

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"localnet: {args.nodes} validator(s) in {root}, miner(s): nodes {miner_nodes or 'none'} "
              f"(node output: {root / 'nodes.log'})", flush=True)
        print(poh_line(poh), flush=True)
        try:
            net.start()
        except (RuntimeError, TimeoutError) as exc:
            raise UserError(f"localnet failed to start: {exc}") from None
        print(f"localnet: bootstrap {net.bootstrap_addr()}", flush=True)
        print(f"localnet: a newcomer joins with: {newcomer_command(net)}", flush=True)
        if not args.no_rpc:
            for n in net.nodes:
                port = net.rpc_port(n.index)
                print(f"localnet: node{n.index} RPC http://127.0.0.1:{port}  PubSub ws://127.0.0.1:{port + 1}  "
                      f"OpenAI http://127.0.0.1:{port}/v1  metrics http://127.0.0.1:{port}/metrics", flush=True)
        if miners and args.demo_queries:
            entry = [n.data_dir for n in net.nodes if n.index not in miner_nodes] or [net.nodes[0].data_dir]
            demo = DemoQueries(root, net.chain_id, entry, args.demo_queries,
                               lambda line: print(f"localnet: {line}", flush=True),
                               miner_dirs=[net.nodes[i].data_dir for i in miner_nodes])
            demo.start()
        t0 = time.monotonic()
        next_line = t0
        while not stop["sig"] and (not args.duration or time.monotonic() - t0 < args.duration):
            if not all(n.alive() for n in net.nodes):
                dead = [n.index for n in net.nodes if not n.alive()]
                print(f"localnet: node(s) {dead} exited", flush=True)
                break
            if time.monotonic() >= next_line:
                print(status_line(net, t0), flush=True)
                next_line += STATUS_INTERVAL_S
            time.sleep(0.1)
    finally:
        print("localnet: stopping", flush=True)
        if demo is not None:
            demo.stop()
        net.stop()
        log.close()
        for s, h in old.items():
            signal.signal(s, h)
    codes = [n.proc.returncode for n in net.nodes]
    print(f"localnet: stopped (exit codes {codes})", flush=True)
    return 0


def newcomer_command(net: Any) -> str:
    """What a person types to join this localnet from another terminal (spec/join.md): the
    bootstrap multiaddr and the genesis hash; join fetches the genesis itself."""
    from ..core.crypto import sha256

    gh = sha256(net.genesis_path.read_bytes()).hex()
    return (f"ambient-p2p join {net.bootstrap_addr()} --expected-genesis-hash {gh} "
            f"--validator --no-rpc --ledger ./newcomer")

