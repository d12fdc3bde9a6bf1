"""`ambient-p2p join <bootstrap-multiaddr>`: run a networking node (and `run` for a
bootstrap node with no peer to join).

The node prints ``listening <multiaddr>`` and ``identity <address>``, then a status line
every few seconds, until SIGINT/SIGTERM, which cancel its nursery (clean shutdown; a
watchdog forces exit if py-libp2p fails to unwind within a few seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

DEFAULT_CHAIN_ID = "localnet"
SHUTDOWN_WATCHDOG_S = 10.0
#: Bounds of the numeric node options (checked before the node starts).
MIN_TARGET_PEERS, MAX_TARGET_PEERS = 1, 1000
MAX_JOIN_TIMEOUT_S = 86_400.0
#: A status line at most ten times a second (0 printed 40,000 lines in 8 s).
MIN_STATUS_INTERVAL_S = 0.1


def _add_node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keypair", metavar="FILE", help="Solana-format identity keypair (default: DIR/identity.json, generated)"
    )
    p.add_argument(
        "--listen",
        metavar="MULTIADDR",
        action="append",
        help="listen address (repeatable; default /ip4/127.0.0.1/tcp/0)",
    )
    p.add_argument(
        "--ledger",
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        help="node directory: identity, node.json, control socket (default ./ambient-node)",
    )
    p.add_argument("--genesis", metavar="FILE", help="genesis file (canonical CBOR Genesis); sets the chain id")
    p.add_argument("--chain-id", default=None, help=f"chain id when no --genesis is given (default {DEFAULT_CHAIN_ID})")
    p.add_argument("--expected-genesis-hash", metavar="HEX", default=None,
                   help="join: refuse a network whose genesis hash (sha256 of the genesis file, 64 hex digits, "
                        "printed by 'localnet' and by a node that fetched it) is not HEX. Without --genesis, "
                        "join fetches the genesis from the bootstrap peer and keeps it in DIR/genesis.cbor; "
                        "a restart uses that one and refuses a network with another (spec/join.md)")
    p.add_argument(
        "--peer", metavar="MULTIADDR", action="append", default=[], help="additional peer to dial (repeatable)"
    )
    p.add_argument("--target-peers", type=int, default=8, help="connections to maintain (default 8)")
    p.add_argument(
        "--join-timeout",
        type=float,
        default=15.0,
        help="seconds to reach a bootstrap peer before giving up (default 15)",
    )
    p.add_argument("--status-interval", type=float, default=2.0, help="seconds between status lines (default 2)")
    p.add_argument("--quiet", action="store_true", help="no status lines")
    p.add_argument("--verbose", action="store_true", help="show py-libp2p's own warnings")
    p.add_argument("--validator", action="store_true",
                   help="run the validator too (needs --genesis, or join fetches it): produce, replay, vote, finalize")
    p.add_argument("--miner", action="store_true",
                   help="also mine (needs --genesis, or join fetches it; runs the validator's replay): register, bid on queries for "
                        "the embedded model, serve the ones won (spec/auction.md)")
    p.add_argument("--miner-price", type=int, default=None, metavar="LAMPORTS_PER_TOKEN",
                   help="miner: the price asked per output token (default: DEFAULT_PRICE_PER_TOKEN of "
                        "ambient_p2p/node/miner.py)")
    p.add_argument("--miner-threads", type=int, default=None, metavar="N",
                   help="miner: torch CPU threads for the model (default 1)")
    p.add_argument("--route", action="append", default=None, metavar="A:B@MULTIADDR",
                   help="miner: serve won queries through stage servers (sharded inference, spec/shard.md), one "
                        "flag per server, e.g. 0:15@/ip4/127.0.0.1/tcp/4001/p2p/PEER; the stages are paid their "
                        "layers x tokens share at settlement. Such a miner loads no weights (only the "
                        "embedded model's id, layer count and EOS from its GGUF header) and measures its speed "
                        "through the route at start-up")
    p.add_argument("--poh-clock", choices=("service", "instant"), default=None,
                   help="service: a leader's slot runs on the real PoH clock (a worker process hashes it in real "
                        "time, shreds go out during the slot); instant: the whole slot is computed when the "
                        "leader builds it (default: service; spec/node.md)")
    p.add_argument("--ledger-keep-slots", type=int, default=None, metavar="N",
                   help="validator: slots of ledger history kept below the root by the cleanup "
                        "(default: DEFAULT_KEEP_SLOTS of ambient_p2p/ledger/cleanup.py; spec/blockstore.md)")
    p.add_argument("--snapshot-interval-slots", type=int, default=None, metavar="N",
                   help="validator: write a node snapshot at the first root past each multiple of N slots, "
                        "agave's --full-snapshot-interval-slots (default: SNAPSHOT_INTERVAL_SLOTS of "
                        "ambient_p2p/core/history.py, 64; spec/blockstore.md)")
    p.add_argument("--logit-pool", action="store_true",
                   help="validator: load the embedded model and check the answers this node is drawn to "
                        "validate (spec/logit_pool.md); needs --validator (or --miner)")
    p.add_argument("--pool-audit-percent", type=int, default=None, metavar="P",  # jury (issue 13)
                   help="--logit-pool: re-check P percent (0-100) of the verified results this node was not "
                        "drawn for while their bond is held, and post a fraud proof against any that fails "
                        "(default: DEFAULT_AUDIT_PERCENT of ambient_p2p/node/validator_pool.py, 10; "
                        "spec/logit_pool.md 'The node side')")
    p.add_argument("--rpc-port", type=int, default=None, metavar="PORT",
                   help="validator: serve Solana JSON-RPC, the OpenAI API (/v1) and /metrics on PORT and the "
                        "PubSub WebSocket on PORT+1 (default 8899; spec/rpc.md)")
    p.add_argument("--rpc-bind", default=None, metavar="ADDRESS",
                   help="address the RPC ports bind to (default 127.0.0.1: this machine only)")
    p.add_argument("--no-rpc", action="store_true", help="validator: serve no RPC")
    p.add_argument("--rpc-rate-limit", type=float, default=None, metavar="PER_S",
                   help="RPC requests per second per client address (default 2000)")
    p.add_argument("--rpc-requester-keypair", default=None, metavar="FILE",
                   help="the key that pays for /v1/chat/completions queries (default: the node's identity)")
    p.add_argument("--rpc-chat-keys", default=None, metavar="FILE",
                   help="JSON object {bearer token: keypair file}: a chat completion is paid by the key its "
                        "bearer token maps to, other tokens get 401 (default: no tokens; the requester key pays)")
    p.add_argument("--rpc-chat-pay", type=int, default=None, metavar="LAMPORTS_PER_TOKEN",
                   help="most lamports per output token a chat completion offers (default 100)")
    p.add_argument("--rpc-chat-wait", default=None, choices=("posted", "settled"),
                   help="when /v1/chat/completions answers: at the result's post_result with settlement "
                        "\"pending\" (posted, the default), or once the Logit Pool settled it, with the verdicts "
                        "and the lamports paid and refunded (settled; needs --logit-pool validators on the "
                        "chain). A request's \"ambient\": {\"wait\": ...} overrides it")
    p.add_argument("--no-snapshot-fetch", action="store_true",
                   help="join --validator: do not download a snapshot; repair and replay every slot from genesis "
                        "(default: a new node starts from a snapshot that 2/3 of the genesis LStake attested, "
                        "spec/join.md)")
    p.add_argument("--snapshot-fault", default=None, help=argparse.SUPPRESS)  # test harness: node/snapshot_sync.py
    p.add_argument("--snapshot-chunk-bytes", type=int, default=None, help=argparse.SUPPRESS)  # test harness
    p.add_argument("--serve-layers", default=None, metavar="A:B",
                   help="serve layers A:B (half-open) of the embedded model to route drivers over the stage "
                        "protocol and announce them on the stages topic (sharded inference, spec/shard.md); "
                        "only those layers are loaded")
    p.add_argument("--verify-jobs", type=int, default=None, metavar="N",  # perf (issue 17)
                   help="validator: signature-verify worker processes for arriving transactions (0: a thread of "
                        "the node's own process; default: half the cores, at least 1; spec/tpu.md)")
    p.add_argument("--miner-fault", default=None, help=argparse.SUPPRESS)  # test harness: devnet/miner_faults.py
    p.add_argument("--pool-fault", default=None, help=argparse.SUPPRESS)  # test harness: devnet/miner_faults.py
    p.add_argument("--equivocate-slot", type=int, default=None, help=argparse.SUPPRESS)  # test harness
    p.add_argument("--equivocate-split", action="store_true", help=argparse.SUPPRESS)  # test harness


def register(sub: Any) -> None:
    p = sub.add_parser("join", help="run a node that joins the network through a bootstrap peer")
    p.add_argument("bootstrap", help="bootstrap peer, e.g. /ip4/127.0.0.1/tcp/9000/p2p/12D3KooW...")
    _add_node_args(p)
    p.set_defaults(func=cmd_join)
    r = sub.add_parser("run", help="run a node without joining anyone (a network's first, bootstrap node)")
    _add_node_args(r)
    r.set_defaults(func=cmd_run, bootstrap=None)


def load_identity(keypair: str | None, data_dir: Path) -> Any:
    from ..core.crypto import CryptoError, Keypair, read_keypair_file, write_keypair_file

    try:
        if keypair:
            return read_keypair_file(keypair)
        path = data_dir / "identity.json"
        if path.exists():
            return read_keypair_file(path)
        kp = Keypair.generate()
        write_keypair_file(path, kp)
        return kp
    except CryptoError as exc:
        raise UserError(str(exc)) from None


def load_chain_id(genesis: str | None, chain_id: str | None) -> str:
    from ..core.codec import DecodeError, decode
    from ..core.messages import Genesis

    if genesis is None:
        return chain_id or DEFAULT_CHAIN_ID
    try:
        data = Path(genesis).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read genesis file {genesis}: {exc.strerror}") from None
    try:
        g = decode(data, expected=Genesis)
    except DecodeError as exc:
        raise UserError(f"{genesis} is not a genesis file: {exc}") from None
    if chain_id and chain_id != g.chain_id:
        raise UserError(f"--chain-id {chain_id} contradicts the genesis file's chain id {g.chain_id}")
    return g.chain_id


def check_node_options(args: argparse.Namespace) -> None:
    """Numeric options, before anything is written (``--status-interval 0`` printed 40,000
    lines in 8 s; ``--target-peers -5`` and ``--join-timeout nan`` were accepted)."""
    if not MIN_TARGET_PEERS <= args.target_peers <= MAX_TARGET_PEERS:
        raise UserError(f"--target-peers must be {MIN_TARGET_PEERS}..{MAX_TARGET_PEERS}, not {args.target_peers}")
    if not (math.isfinite(args.join_timeout) and 0 < args.join_timeout <= MAX_JOIN_TIMEOUT_S):
        raise UserError(f"--join-timeout must be a number of seconds in (0, {MAX_JOIN_TIMEOUT_S:g}], "
                        f"not {args.join_timeout:g}")
    if getattr(args, "snapshot_fault", None) is not None:
        from ..node.snapshot_sync import FAULTS

        if args.snapshot_fault not in FAULTS:
            raise UserError(f"--snapshot-fault must be one of {', '.join(FAULTS)}")
    if getattr(args, "snapshot_chunk_bytes", None) is not None:
        from ..core.join import SNAPSHOT_CHUNK_BYTES

        if not 1 <= args.snapshot_chunk_bytes <= SNAPSHOT_CHUNK_BYTES:
            raise UserError(f"--snapshot-chunk-bytes must be 1..{SNAPSHOT_CHUNK_BYTES}")
    for flag, value, low in (("--ledger-keep-slots", getattr(args, "ledger_keep_slots", None), 0),
                             ("--snapshot-interval-slots", getattr(args, "snapshot_interval_slots", None), 1)):
        if value is not None and not getattr(args, "validator", False):
            raise UserError(f"{flag} needs --validator")
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, not {value}")
    if getattr(args, "verify_jobs", None) is not None:  # perf (issue 17)
        from ..node.tpu import MAX_VERIFY_JOBS

        if not 0 <= args.verify_jobs <= MAX_VERIFY_JOBS:
            raise UserError(f"--verify-jobs must be 0..{MAX_VERIFY_JOBS}, not {args.verify_jobs}")
    if not (math.isfinite(args.status_interval) and args.status_interval >= MIN_STATUS_INTERVAL_S):
        raise UserError(f"--status-interval must be at least {MIN_STATUS_INTERVAL_S:g} seconds "
                        f"(use --quiet for none), not {args.status_interval:g}")


def check_data_dir(data_dir: Path, *, validator: bool) -> None:
    """Everything about the data directory that would otherwise fail with a traceback once
    the node runs, checked before anything is written (spec/network.md "User errors")."""
    from ..net.node import CONTROL_SOCKET, MAX_UNIX_SOCKET_PATH_BYTES

    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"{data_dir} is not a directory")
    existing = next((p for p in (data_dir, *data_dir.absolute().parents) if p.exists()), None)
    # access(2) also reports a read-only file system to root (EROFS), unlike a write probe's
    # permission bits; it writes nothing
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing} is not writable (read-only file system or permissions); "
                        "the node keeps its identity, ledger and control socket there")
    sock = data_dir / CONTROL_SOCKET
    if len(os.fsencode(str(sock))) > MAX_UNIX_SOCKET_PATH_BYTES:
        raise UserError(f"the control socket path {sock} is longer than the {MAX_UNIX_SOCKET_PATH_BYTES}-byte "
                        "limit of a Unix socket path; use a shorter --ledger directory")
    if sock.exists() and not stat.S_ISSOCK(sock.lstat().st_mode):
        raise UserError(f"{sock} exists and is not a socket; remove it (the node creates its control socket there)")
    if not validator:
        return
    from ..node.validator import BLOCKSTORE_DIR, TOWER_FILE

    bs = data_dir / BLOCKSTORE_DIR
    if bs.exists() and not bs.is_dir():
        raise UserError(f"{bs} is not a directory (the validator keeps its RocksDB ledger there)")
    tower = data_dir / TOWER_FILE
    if tower.exists() or tower.is_symlink():
        from ..core.codec import DecodeError, decode
        from ..core.tower import TowerRecord

        how = ("move it away only if this identity has not voted with another copy of it; the node "
               "then starts without a tower (spec/tower.md)")
        if not tower.is_file():
            raise UserError(f"{tower} is not a file; {how}")
        try:
            decode(tower.read_bytes(), expected=TowerRecord)
        except OSError as exc:
            raise UserError(f"cannot read {tower}: {exc.strerror}") from None
        except DecodeError as exc:
            raise UserError(f"{tower} is damaged ({exc}); {how}") from None


def cmd_join(args: argparse.Namespace) -> int:
    return _run_node(args, [args.bootstrap, *args.peer])


def cmd_run(args: argparse.Namespace) -> int:
    return _run_node(args, list(args.peer))


def _run_node(args: argparse.Namespace, bootstrap: list[str]) -> int:
    data_dir = Path(args.data_dir or "ambient-node")
    _check_miner_args(args)
    _check_rpc_args(args)
    serve_layers = _check_serve_layers(args)
    # validate user input before the (slow) libp2p import
    from ..net.host import HostError, parse_multiaddr, parse_peer_multiaddr

    try:
        for b in bootstrap:
            parse_peer_multiaddr(b)
        for a in args.listen or []:
            parse_multiaddr(a)
    except HostError as exc:
        raise UserError(str(exc)) from None
    check_node_options(args)
    check_data_dir(data_dir, validator=bool(args.validator))
    fetched = resolve_genesis(args, data_dir, bootstrap)  # may ask the bootstrap peer (spec/join.md)
    chain_id = load_chain_id(args.genesis, args.chain_id) if fetched is None else _fetched_chain_id(args, fetched)
    rpc_sockets = _bind_rpc(args)  # a port in use is one error line, before anything is written
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {data_dir}: {exc.strerror}") from None
    if fetched is not None:
        _store_genesis(data_dir, fetched)
        args.genesis = str(_stored_genesis(data_dir))
    kp = load_identity(args.keypair, data_dir)
    if args.validator and bootstrap and args.genesis and not args.no_snapshot_fetch:
        _snapshot_phase(args, data_dir, bootstrap)

    import logging

    import trio

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    # py-libp2p logs every failed stream open and dropped message as a multi-line warning;
    # our status line counts those events instead.
    logging.getLogger("libp2p").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)

    from ..net.node import JoinError, NetNode, NodeConfig

    cfg = NodeConfig(
        keypair=kp,
        chain_id=chain_id,
        listen=list(args.listen or ["/ip4/127.0.0.1/tcp/0"]),
        bootstrap=bootstrap,
        data_dir=data_dir,
        target_peers=args.target_peers,
        join_timeout_s=args.join_timeout,
        status_interval_s=args.status_interval,
        print_status=not args.quiet,
    )
    validator = _make_validator(args, kp, data_dir)
    blobs = _make_blobs(args, data_dir)
    roles = _compose_roles(args, validator, blobs)
    rpc = _make_rpc(args, validator, kp, chain_id, rpc_sockets)
    interrupted = {"sig": 0}

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def on_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                    async for sig in sigs:
                        interrupted["sig"] = sig
                        # watchdog: py-libp2p must unwind promptly; never hang on shutdown
                        t = threading.Timer(SHUTDOWN_WATCHDOG_S, lambda: os._exit(3))
                        t.daemon = True
                        t.start()
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(on_signals)
            from ..node.blobs import BlobExtension
            from ..node.compose import compose
            from ..node.tpu import SigVerifier, Tpu, TpuExtension

            # the TPU first: it answers submit_tx (leaders direct, gossip as fallback; spec/tpu.md)
            tpu = (Tpu(validator, SigVerifier(getattr(args, "verify_jobs", None)))
                   if validator is not None else None)
            if rpc is not None and tpu is not None:
                rpc.tpu_submit = tpu.submit_transactions  # sendTransaction through the TPU
            stage_ext = None
            if serve_layers is not None:
                from ..node.stage_server import StageExtension

                stage_ext = StageExtension(kp, "default", *serve_layers)
            ext = compose(TpuExtension(tpu) if tpu is not None else None, roles, BlobExtension(blobs), rpc,
                          _genesis_server(args), _snapshot_server(args, validator, kp),
                          _join_status(args, validator, chain_id, bootstrap), stage_ext)
            if rpc is not None and ext is not None:
                rpc.control_fn = ext.control  # the chat door submits through the node's own commands
            await NetNode(cfg, ext).run()

    restore_error: tuple[type[Exception], ...] = ()
    if validator is not None:
        from ..ledger.restore import RestoreError

        restore_error = (RestoreError,)  # the ledger cannot restart (another chain, pruned history)
    from ..ledger.blockstore import BlockstoreError

    # a blockstore that turns out damaged while the node runs (a checksum mismatch on a read)
    # stops it with the same one line as at start, recovery path included
    fatal: tuple[type[Exception], ...] = (JoinError, HostError, BlockstoreError, *restore_error)

    def line(exc: BaseException) -> str:
        return f"cannot restart the validator from {data_dir}: {exc}" if isinstance(exc, restore_error) else str(exc)

    try:
        trio.run(main)
    except fatal as exc:
        raise UserError(line(exc)) from None
    except BaseExceptionGroup as eg:
        leaf = _first_leaf(eg, fatal)
        if leaf is not None:
            raise UserError(line(leaf)) from None
        raise
    finally:
        if validator is not None:
            validator.close()
    if interrupted["sig"]:
        print(f"stopped ({signal.Signals(interrupted['sig']).name})", file=sys.stderr, flush=True)
    return 0


def _stored_genesis(data_dir: Path) -> Path:
    from ..node.genesis_sync import stored_genesis_path

    return stored_genesis_path(data_dir)


def _read_genesis(path: Path, what: str) -> tuple[bytes, Any]:
    from ..core.join import JoinRejected, genesis_from_answer

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return raw, genesis_from_answer(raw, None)
    except JoinRejected as exc:
        raise UserError(f"{path} is not a genesis file: {exc}") from None


def resolve_genesis(args: argparse.Namespace, data_dir: Path, bootstrap: list[str]) -> Any:
    """Which genesis the node runs with (spec/join.md "Genesis"), checked before anything
    is written. ``--genesis FILE`` wins; else the one stored in DIR by an earlier join; else,
    for ``join``, the bootstrap peer's, fetched now. ``--expected-genesis-hash`` must match
    whichever it is, and a stored one must match both ``--genesis`` and the network's.
    Returns the freshly fetched genesis (the caller stores it once DIR exists), or None."""
    from ..core.crypto import sha256
    from ..core.join import parse_genesis_hash

    expected = None
    if args.expected_genesis_hash is not None:
        try:
            expected = parse_genesis_hash(args.expected_genesis_hash)
        except ValueError as exc:
            raise UserError(f"--expected-genesis-hash: {exc}") from None
    stored_path = _stored_genesis(data_dir)
    stored = _read_genesis(stored_path, "the stored genesis")[0] if stored_path.exists() else None
    raw: bytes | None = stored
    if args.genesis:
        raw = _read_genesis(Path(args.genesis), "genesis file")[0]
        if stored is not None and sha256(stored) != sha256(raw):
            raise UserError(f"{args.genesis} (genesis {sha256(raw).hex()}) is not the genesis this node joined "
                            f"with ({stored_path}: {sha256(stored).hex()})")
    if raw is not None:
        if expected is not None and sha256(raw) != expected:
            raise UserError(f"genesis hash {sha256(raw).hex()} is not the expected {expected.hex()}")
        if stored is not None and not args.genesis:
            args.genesis = str(stored_path)
            if bootstrap:  # a restart refuses a network with another genesis
                _check_network_genesis(args, bootstrap, raw)
        return None
    if not bootstrap:
        if args.validator:
            raise UserError("--validator needs --genesis (or join a network, which hands it over)")
        if expected is not None:
            raise UserError("--expected-genesis-hash needs --genesis on a node that joins no one")
        return None
    fetched = _fetch(args, bootstrap, expected, required=expected is not None or bool(args.validator))
    if fetched is not None and not args.quiet:
        print(f"genesis {sha256(fetched.raw).hex()} chain {fetched.genesis.chain_id} (from {fetched.peer})",
              flush=True)
    return fetched


def _fetch(args: argparse.Namespace, bootstrap: list[str], expected: bytes | None, *, required: bool) -> Any:
    from ..node.genesis_sync import GenesisFetchError, fetch_genesis_blocking

    if not args.quiet:
        print(f"join: connecting to {bootstrap[0]}", flush=True)
    try:
        return fetch_genesis_blocking(bootstrap, expected, args.join_timeout)
    except GenesisFetchError as exc:
        if exc.not_found and not required:
            return None  # a gossip-only network: join its gossip, as before (no genesis)
        raise UserError(str(exc)) from None


def _check_network_genesis(args: argparse.Namespace, bootstrap: list[str], raw: bytes) -> None:
    from ..core.crypto import sha256
    from ..node.genesis_sync import GenesisFetchError, fetch_genesis_blocking

    try:
        fetch_genesis_blocking(bootstrap, sha256(raw), args.join_timeout)
    except GenesisFetchError as exc:
        if exc.not_found or exc.unreachable:
            return  # the node's own join reports an unreachable peer; a genesis-less one is harmless
        raise UserError(f"{exc} (this node's data directory holds genesis {sha256(raw).hex()})") from None


def _fetched_chain_id(args: argparse.Namespace, fetched: Any) -> str:
    cid = str(fetched.genesis.chain_id)
    if args.chain_id and args.chain_id != cid:
        raise UserError(f"--chain-id {args.chain_id} contradicts the network's genesis chain id {cid}")
    return cid


def _store_genesis(data_dir: Path, fetched: Any) -> None:
    from ..ledger.durable import write_durable

    write_durable(_stored_genesis(data_dir), fetched.raw)


def _genesis_server(args: argparse.Namespace) -> Any:
    """Every node with a genesis serves it on /ambient/genesis/1 (spec/join.md)."""
    if not args.genesis:
        return None
    from ..node.genesis_sync import GenesisExtension

    return GenesisExtension(Path(args.genesis).read_bytes())


def _join_status(args: argparse.Namespace, validator: Any, chain_id: str, bootstrap: list[str]) -> Any:
    """``status()["join"]`` and the join's progress lines, on a node that joined someone."""
    if not bootstrap:
        return None
    from ..core.crypto import sha256
    from ..node.genesis_sync import JoinStatus

    gh = sha256(Path(args.genesis).read_bytes()) if args.genesis else None

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    return JoinStatus(gh, chain_id, validator, getattr(args, "snapshot_report", None), args.status_interval, say)


def _snapshot_server(args: argparse.Namespace, validator: Any, kp: Any) -> Any:
    """A validator serves its rooted node snapshots (spec/join.md "Snapshot sync")."""
    if validator is None:
        return None
    from ..core.join import SNAPSHOT_CHUNK_BYTES
    from ..node.snapshot_sync import SnapshotServer

    return SnapshotServer(validator.bs, kp, validator.genesis.hash(), fault=args.snapshot_fault,
                          chunk_bytes=args.snapshot_chunk_bytes or SNAPSHOT_CHUNK_BYTES)


def _snapshot_phase(args: argparse.Namespace, data_dir: Path, bootstrap: list[str]) -> None:
    """A new validator (no blockstore yet) starts from a snapshot its peers attest, when
    one is trusted (spec/join.md); otherwise it repairs from genesis as before."""
    from ..node.validator import BLOCKSTORE_DIR

    if (data_dir / BLOCKSTORE_DIR).exists():
        return  # a restart: the node's own ledger and snapshots
    from ..core.codec import DecodeError, decode
    from ..core.messages import Genesis
    from ..node.snapshot_sync import SnapshotSyncError, sync_snapshot_blocking

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    genesis = decode(Path(args.genesis).read_bytes(), expected=Genesis)
    try:
        rep = sync_snapshot_blocking(bootstrap, genesis, data_dir, args.join_timeout, say)
    except (SnapshotSyncError, DecodeError) as exc:
        print(f"warning: snapshot download failed ({exc}); repairing from genesis", file=sys.stderr, flush=True)
        return
    if rep.avoided:
        print(f"warning: snapshot servers avoided: {rep.avoided}", file=sys.stderr, flush=True)
    if rep.slot is None:
        say(f"join: {rep.note}; repairing from genesis")
        return
    args.snapshot_report = {"slot": rep.slot, "bytes": rep.size, "seconds": round(rep.seconds, 3),
                            "attested_stake": rep.attested_stake, "total_stake": rep.total_stake,
                            "avoided": rep.avoided}
    say(f"join: snapshot of slot {rep.slot} verified and installed ({rep.size:,} bytes in {rep.seconds:.2f} s); "
        "repairing the slots after it")


def _check_miner_args(args: argparse.Namespace) -> None:
    """The miner options, before anything is written (a miner follows the chain: it runs
    the validator's replay, so ``--miner`` implies ``--validator``)."""
    if getattr(args, "logit_pool", False) and not (args.validator or args.miner):
        raise UserError("--logit-pool needs --validator")
    if getattr(args, "pool_fault", None) is not None:
        from ..devnet.miner_faults import POOL_FAULTS

        if not args.logit_pool:
            raise UserError("--pool-fault needs --logit-pool")
        if args.pool_fault not in POOL_FAULTS:
            raise UserError(f"--pool-fault must be one of {', '.join(POOL_FAULTS)}")
    audit = getattr(args, "pool_audit_percent", None)
    if audit is not None:
        if not getattr(args, "logit_pool", False):
            raise UserError("--pool-audit-percent needs --logit-pool")
        if not 0 <= audit <= 100:
            raise UserError(f"--pool-audit-percent must be 0..100, not {audit}")
    if not args.miner:
        if args.miner_price is not None or args.miner_threads is not None or args.miner_fault is not None:
            raise UserError("--miner-price, --miner-threads and --miner-fault need --miner")
        if getattr(args, "route", None):
            raise UserError("--route needs --miner")
        return
    if getattr(args, "route", None):
        from ..node.route import parse_stage_spec

        try:
            for spec in args.route:
                parse_stage_spec(spec)
        except ValueError as exc:
            raise UserError(f"--route: {exc}") from None
    if args.miner_fault is not None:
        from ..devnet.miner_faults import FAULTS

        if args.miner_fault not in FAULTS:
            raise UserError(f"--miner-fault must be one of {', '.join(FAULTS)}")
    if not args.genesis and args.bootstrap is None:
        raise UserError("--miner needs --genesis (or join a network, which hands it over)")
    if args.miner_price is not None and not 1 <= args.miner_price <= 2**63:
        raise UserError(f"--miner-price must be a positive number of lamports per token, not {args.miner_price}")
    if args.miner_threads is not None and not 1 <= args.miner_threads <= 256:
        raise UserError(f"--miner-threads must be 1..256, not {args.miner_threads}")
    args.validator = True


def _check_serve_layers(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--serve-layers A:B``: a well-formed range inside the embedded model (read from the
    GGUF header, nothing dequantized), before anything is written."""
    if getattr(args, "serve_layers", None) is None:
        return None
    from ..model.stages import model_layers, parse_range

    try:
        a, b = parse_range(args.serve_layers)
        total = model_layers()
    except (ValueError, OSError) as exc:
        raise UserError(f"--serve-layers: {exc}") from None
    if b > total:
        raise UserError(f"--serve-layers: the model has {total} layers, {a}:{b} is outside 0:{total}")
    return a, b


def _check_rpc_args(args: argparse.Namespace) -> None:
    """The RPC options (spec/rpc.md): the doors read the validator's banks, so they run
    with ``--validator`` (or ``--miner``), on by default there."""
    given = [n for n, v in (("--rpc-port", args.rpc_port), ("--rpc-bind", args.rpc_bind),
                            ("--rpc-rate-limit", args.rpc_rate_limit),
                            ("--rpc-requester-keypair", args.rpc_requester_keypair),
                            ("--rpc-chat-pay", args.rpc_chat_pay), ("--rpc-chat-keys", args.rpc_chat_keys),
                            ("--rpc-chat-wait", args.rpc_chat_wait))
             if v is not None]
    if given and args.no_rpc:
        raise UserError(f"{given[0]} contradicts --no-rpc")
    if given and not args.validator:
        raise UserError(f"{given[0]} needs --validator (the RPC reads the validator's banks)")
    if args.rpc_port is not None and not 1 <= args.rpc_port <= 65534:
        raise UserError(f"--rpc-port must be 1..65534 (PubSub takes the next port), not {args.rpc_port}")
    if args.rpc_rate_limit is not None and not (args.rpc_rate_limit > 0 and args.rpc_rate_limit < float("inf")):
        raise UserError(f"--rpc-rate-limit must be a positive number of requests per second, not {args.rpc_rate_limit}")
    if args.rpc_chat_pay is not None and not 1 <= args.rpc_chat_pay < 2**63 // 4096:
        raise UserError(f"--rpc-chat-pay must be a positive number of lamports per token, not {args.rpc_chat_pay}")
    # read now: a bad token file is one error line before anything is written
    args.rpc_chat_key_table = _chat_keys(args.rpc_chat_keys) if args.rpc_chat_keys else None
    if args.rpc_bind is not None:
        import ipaddress

        try:
            ipaddress.ip_address(args.rpc_bind)
        except ValueError:
            raise UserError(f"--rpc-bind must be an IP address, not {args.rpc_bind!r}") from None


def _bind_rpc(args: argparse.Namespace) -> list[Any] | None:
    if not args.validator or args.no_rpc:
        return None
    from ..node.rpc.server import DEFAULT_RPC_BIND, DEFAULT_RPC_PORT, bind_sockets

    try:
        return bind_sockets(args.rpc_bind or DEFAULT_RPC_BIND, args.rpc_port or DEFAULT_RPC_PORT)
    except OSError as exc:
        raise UserError(f"{exc.strerror} (choose another --rpc-port, or --no-rpc)") from None


def _make_rpc(args: argparse.Namespace, validator: Any, kp: Any, chain_id: str, sockets: list[Any] | None) -> Any:
    """The node's doors (node/rpc: JSON-RPC, PubSub, OpenAI API, metrics), or None. The
    airdrop faucet exists only where the genesis funds the localnet's publicly derivable
    test user (devnet/users.py): a localnet."""
    if validator is None or sockets is None:
        return None
    from .. import __version__
    from ..core.crypto import CryptoError, read_keypair_file
    from ..devnet.users import TEST_USERS, user_keypairs
    from ..node.rpc.openai_api import DEFAULT_CHAT_PAY_PER_TOKEN, DEFAULT_CHAT_WAIT, ChatOptions
    from ..node.rpc.server import DEFAULT_RATE_LIMIT_RPS, DEFAULT_RPC_BIND, RpcConfig, RpcExtension
    from ..node.rpc.solana import RpcOptions

    faucet = user_keypairs(chain_id)[TEST_USERS - 1]
    funded = {a.pubkey for a in validator.genesis.accounts if a.lamports > 0}
    requester = kp
    if args.rpc_requester_keypair:
        try:
            requester = read_keypair_file(args.rpc_requester_keypair)
        except CryptoError as exc:
            raise UserError(str(exc)) from None
    keys = getattr(args, "rpc_chat_key_table", None)
    cfg = RpcConfig(port=sockets[0].getsockname()[1], bind=args.rpc_bind or DEFAULT_RPC_BIND,
                    rate_limit_rps=args.rpc_rate_limit or DEFAULT_RATE_LIMIT_RPS,
                    opts=RpcOptions(faucet=faucet if faucet.pubkey in funded else None, identity=kp.pubkey,
                                    version=__version__),
                    chat=ChatOptions(requester, pay_per_token=args.rpc_chat_pay or DEFAULT_CHAT_PAY_PER_TOKEN,
                                     keys=keys, wait=args.rpc_chat_wait or DEFAULT_CHAT_WAIT))
    return RpcExtension(validator, cfg, sockets)


#: Shortest bearer token --rpc-chat-keys accepts (a guessable token would spend its key).
MIN_CHAT_TOKEN_CHARS = 16


def _chat_keys(path: str) -> dict[str, Any]:
    """--rpc-chat-keys FILE: {token: keypair file (relative to FILE's directory)}."""
    import json

    from ..core.crypto import CryptoError, read_keypair_file

    try:
        table = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read --rpc-chat-keys {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"--rpc-chat-keys {path} is not JSON: {exc}") from None
    if not isinstance(table, dict) or not table:
        raise UserError(f"--rpc-chat-keys {path} must be a JSON object {{token: keypair file}}")
    out: dict[str, Any] = {}
    for token, key in table.items():
        if len(token) < MIN_CHAT_TOKEN_CHARS or not token.isprintable() or " " in token or not isinstance(key, str):
            raise UserError(f"--rpc-chat-keys {path}: each token must be {MIN_CHAT_TOKEN_CHARS}+ printable characters "
                            "without spaces, mapped to a keypair file name")
        try:
            out[token] = read_keypair_file(Path(path).parent / key)
        except CryptoError as exc:
            raise UserError(f"--rpc-chat-keys {path}: {exc}") from None
    return out


def _compose_roles(args: argparse.Namespace, validator: Any, blobs: Any) -> Any:
    """The validator's roles (node/roles.py: the validator, the auction control commands,
    and with ``--miner`` the miner beside it, using the node's blob service), or None."""
    if validator is None:
        return None
    from ..node.miner import DEFAULT_MODEL_THREADS, DEFAULT_PRICE_PER_TOKEN, MinerOptions, MinerService
    from ..node.roles import RoleNode

    pool = None
    if args.logit_pool:
        from ..node.validator_pool import PoolValidator

        audit = getattr(args, "pool_audit_percent", None)
        pool = PoolValidator(validator, blobs) if audit is None else PoolValidator(validator, blobs,
                                                                                 audit_percent=audit)
        if getattr(args, "pool_fault", None) is not None:  # test harness (hidden flag)
            from ..devnet.miner_faults import faulty_pool

            pool = faulty_pool(args.pool_fault, validator, blobs)
    if not args.miner:
        return RoleNode(validator, pool=pool)
    opts = MinerOptions(price_per_token=args.miner_price or DEFAULT_PRICE_PER_TOKEN,
                        threads=args.miner_threads or DEFAULT_MODEL_THREADS, route=tuple(args.route or ()))
    if args.miner_fault is not None:  # test harness (hidden flag)
        from ..devnet.miner_faults import faulty_miner

        return RoleNode(validator, faulty_miner(args.miner_fault, validator, opts, blobs), pool)
    return RoleNode(validator, MinerService(validator, opts, blobs), pool)


def _make_validator(args: argparse.Namespace, kp: Any, data_dir: Path) -> Any:
    """The consensus service composed onto the node (ambient_p2p/node), or None."""
    if not args.validator:
        return None
    if not args.genesis:
        raise UserError("--validator needs --genesis")
    from ..core.codec import decode
    from ..core.messages import Genesis
    from ..core.tower import TowerError
    from ..node.validator import LedgerHistory, Validator

    genesis = decode(Path(args.genesis).read_bytes(), expected=Genesis)
    from ..node.validator import BLOCKSTORE_DIR

    if args.bootstrap is None and not (data_dir / BLOCKSTORE_DIR).exists():
        late = late_genesis_warning(genesis, time.time())
        if late:
            print(late, file=sys.stderr, flush=True)
    producer = None
    if args.equivocate_slot is not None or args.equivocate_split:  # test harness (hidden flags)
        import random

        from ..devnet.equivocate import EquivocatingProducer

        producer = EquivocatingProducer(genesis, args.equivocate_slot, args.equivocate_split, random.Random())
    # measurement knob: AMBIENT_NODE_INLINE_WORK=1 runs insert/replay/build/tower writes on
    # the event loop (the pre-issue-11 shape), for A/B loop-stall figures (spec/node.md)
    inline = os.environ.get("AMBIENT_NODE_INLINE_WORK") == "1"
    from ..node.production import DEFAULT_POH_CLOCK

    history = LedgerHistory()
    if args.ledger_keep_slots is not None:  # checked by check_node_options
        history = dataclasses.replace(history, keep_slots=args.ledger_keep_slots)
    if args.snapshot_interval_slots is not None:
        history = dataclasses.replace(history, snapshot_interval_slots=args.snapshot_interval_slots)
    from ..ledger.blockstore import BlockstoreError

    try:
        validator = Validator(kp, genesis, data_dir, producer=producer, offload=not inline, history=history,
                              poh_clock=args.poh_clock or DEFAULT_POH_CLOCK)
    except TowerError as exc:
        raise UserError(f"{data_dir}: {exc}") from None
    except BlockstoreError as exc:
        raise UserError(str(exc)) from None
    if kp.pubkey not in {n.identity for n in genesis.bootstrap_nodes}:
        # not a refusal: LStake comes from work (spec/join.md "A newcomer earns its place");
        # said once the ledger opened, so a refusal stays the only line
        print("note: this identity has no LStake in genesis: it follows the chain, and votes and leads from "
              "the second epoch after it earns LStake from work (--miner answers queries; spec/lstake.md)",
              file=sys.stderr)
    return validator


def late_genesis_warning(genesis: Any, now_s: float) -> str | None:
    """What happens when the first node of a chain starts long after its genesis was
    written (issue 16: it never produced, silently). Slots run on the wall clock from the
    genesis creation time, so every slot before now is skipped; epoch 0's and 1's leader
    schedules come from genesis, epoch E >= 2's from the LStake ledger once epoch E-2 is
    rooted (core/schedule.py). A first node that starts in epoch 1 must root a slot of it
    before epoch 2 begins, or production stops there (status line ``leader=-``); one that
    starts in epoch 2 or later can never compute a schedule."""
    from ..node.validator import slot_duration_ms

    slot_ms = slot_duration_ms(genesis)
    spe = genesis.epoch.slots_per_epoch
    slot = int(max(0.0, now_s * 1000 - genesis.creation_time_s * 1000) // slot_ms)
    epoch = slot // spe
    if epoch == 0:
        return None
    age = now_s - genesis.creation_time_s
    head = (f"warning: genesis was created {age:,.0f} s ago: the slot clock starts at slot {slot} "
            f"(epoch {epoch}; {spe} slots of {slot_ms:g} ms per epoch) and the slots before it are skipped")
    if epoch == 1:
        left_s = ((2 * spe - slot) * slot_ms) / 1000
        return (f"{head}; unless a slot of epoch 1 is finalized within {left_s:,.0f} s, epoch 2 has no "
                "leader schedule and production stops (write a new genesis, or start the first node "
                "sooner after writing it)")
    return (f"{head}; epoch {epoch}'s leader schedule needs a finalized slot of epoch {epoch - 2}, "
            "which this new chain never had: no slot will be produced. Write a new genesis "
            "('ambient-p2p genesis') and start the first node soon after")


def _make_blobs(args: argparse.Namespace, data_dir: Path) -> Any:
    """The node's blob service (spec/blobs.md): every node serves and caches blobs; with a
    genesis it knows the slot and prunes expired ones."""
    from ..node.blobs import BLOBS_DIR, BlobService, BlobStore, genesis_slot_clock

    slot_now = None
    if args.genesis:
        from ..core.codec import decode
        from ..core.messages import Genesis
        from ..node.validator import slot_duration_ms

        g = decode(Path(args.genesis).read_bytes(), expected=Genesis)
        slot_now = genesis_slot_clock(g.creation_time_s, slot_duration_ms(g))
    try:
        store = BlobStore(data_dir / BLOBS_DIR)
    except OSError as exc:
        raise UserError(f"cannot open the blob store in {data_dir / BLOBS_DIR}: {exc.strerror}") from None
    return BlobService(store, slot_now=slot_now)


def _first_leaf(eg: BaseExceptionGroup, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` inside a (nested) trio exception group."""
    for e in eg.exceptions:
        if isinstance(e, types):
            return e
        if isinstance(e, BaseExceptionGroup):
            found = _first_leaf(e, types)
            if found is not None:
                return found
    return None
