"""`localnet`: a local multi-node network on embedded defaults.

It prepares the network (deterministic identities for N bootstrap nodes, a genesis giving
each of them equal LStake, one data directory per node), then starts node 0 with
``ambient-p2p run`` and nodes 1..N-1 with ``ambient-p2p join <node 0>`` as separate OS
processes on 127.0.0.1, streams their output, and stops them all on Ctrl-C / SIGTERM
(``--prepare-only`` stops after preparing). The node processes grow, issue by issue, into
nodes that produce, vote on and finalize slots and serve and validate a real query; today
they join, gossip and answer repair (spec/network.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core import codec, crypto
from ..core import genesis as g
from ..errors import UserError
from .genesis import default_model_file, file_sha256, read_genesis, write_file_atomic

MAX_LOCALNET_NODES = 32


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "localnet",
        help="run a local multi-node network on embedded defaults",
        description=(
            "Set up a local Ambient network: N bootstrap identities (deterministic, publicly "
            "derivable: for local testing only), a genesis with equal LStake for each, and a "
            "data directory per node under --dir. An existing localnet directory is reused."
        ),
    )
    p.add_argument("--nodes", type=int, default=4, help="number of nodes (default: 4)")
    p.add_argument("--dir", type=Path, default=Path("localnet"), help="where node data lives (default: ./localnet)")
    p.add_argument("--reset", action="store_true", help="delete an existing localnet directory first")
    p.add_argument("--prepare-only", action="store_true", help="prepare the directory; do not start node processes")
    p.add_argument("--duration", type=float, default=0.0, help="stop the nodes after this many seconds (default: run until Ctrl-C)")
    p.set_defaults(func=_localnet)


def prepare(root: Path, nodes: int, reset: bool = False) -> tuple[Path, list[crypto.Keypair]]:
    """Create (or reuse) a localnet directory; returns the genesis path and identities."""
    if not 1 <= nodes <= MAX_LOCALNET_NODES:
        raise UserError(f"--nodes must be between 1 and {MAX_LOCALNET_NODES}")
    if reset and root.exists():
        import shutil

        shutil.rmtree(root)
    ids = g.localnet_identities(nodes)
    gpath = root / "genesis.cbor"
    if gpath.exists():
        gen = read_genesis(gpath)
        if [n.identity for n in gen.bootstrap_nodes] != [k.pubkey for k in ids]:
            raise UserError(f"{root} holds a localnet of {len(gen.bootstrap_nodes)} node(s); use --reset to start over with {nodes}")
    else:
        model = default_model_file()
        gen = g.build_genesis(
            bootstrap=[k.pubkey for k in ids],
            creation_time_s=int(time.time()),
            accounts=[(g.localnet_faucet().pubkey, g.DEFAULT_FAUCET_LAMPORTS)],
            model_digest=file_sha256(model) if model else None,
        )
        write_file_atomic(gpath, codec.encode(gen))
    for i, kp in enumerate(ids):
        kpath = root / f"node-{i}" / "identity.json"
        if not kpath.exists():
            crypto.write_keypair_file(kpath, kp)
    fpath = root / "faucet.json"
    if not fpath.exists():
        crypto.write_keypair_file(fpath, g.localnet_faucet())
    return gpath, ids


def _localnet(args: argparse.Namespace) -> int:
    gpath, ids = prepare(args.dir, args.nodes, args.reset)
    gen = read_genesis(gpath)
    print(f"localnet in {args.dir}: chain {gen.chain_id}, genesis {crypto.encode_address(gen.hash())}")
    for i, kp in enumerate(ids):
        print(f"  node-{i}  {kp.address}  LStake {gen.bootstrap_nodes[i].lstake}")
    print(f"  model: {gen.model.name}" + (f" (sha256 {gen.model.digest.hex()[:16]}...)" if gen.model.digest else ""))
    if args.prepare_only:
        return 0
    return _run_processes(args.dir, gpath, ids, gen.chain_id, args.duration)


def _run_processes(root: Path, gpath: Path, ids: list[crypto.Keypair], chain_id: str, duration: float) -> int:
    """Run the prepared localnet as N processes until Ctrl-C/SIGTERM (or ``duration``)."""
    import signal
    import sys

    from ..net.localnet import Localnet

    net = Localnet(root, len(ids), chain_id=chain_id, echo=sys.stdout, keys=ids, genesis_path=gpath, dir_name="node-{i}")
    stop = {"sig": 0}

    def on_signal(sig: int, _frame: object) -> None:
        stop["sig"] = sig

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            net.start()
        except (RuntimeError, TimeoutError) as exc:
            raise UserError(f"localnet failed to start: {exc}") from None
        print(f"localnet: bootstrap {net.bootstrap_addr()}", flush=True)
        t0 = time.monotonic()
        while not stop["sig"] and (not duration or time.monotonic() - t0 < duration):
            if not all(n.alive() for n in net.nodes):
                print(f"localnet: node(s) {[n.index for n in net.nodes if not n.alive()]} exited", flush=True)
                break
            time.sleep(0.2)
    finally:
        print("localnet: stopping", flush=True)
        net.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"localnet: stopped (exit codes {[n.proc.returncode for n in net.nodes]})", flush=True)
    return 0
