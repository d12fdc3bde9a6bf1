"""`keygen` and `address`: node identities in the Solana CLI keypair format."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core import crypto
from ..errors import UserError

DEFAULT_KEYPAIR_PATH = Path("~/.config/ambient/id.json")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "keygen",
        help="create a new ed25519 identity (Solana keypair JSON format)",
        description=(
            "Create a new ed25519 keypair and write it as a Solana CLI keypair file (a JSON "
            "array of the 64 bytes secret||public), readable by solana-keygen. The file is "
            "written with mode 0600 and is never overwritten unless --force is given."
        ),
    )
    p.add_argument(
        "--outfile",
        "-o",
        type=Path,
        default=DEFAULT_KEYPAIR_PATH,
        help=f"where to write the keypair (default: {DEFAULT_KEYPAIR_PATH})",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument(
        "--seed-label",
        metavar="LABEL",
        help="derive the key deterministically from LABEL (tests and localnets only: anyone "
        "who knows the label knows the secret)",
    )
    p.set_defaults(func=_keygen)

    a = sub.add_parser(
        "address",
        help="print the base58 address of a keypair file",
        description="Print the base58 address (public key) of a Solana-format keypair file.",
    )
    a.add_argument("keypair", type=Path, help="keypair file")
    a.set_defaults(func=_address)


def _keygen(args: argparse.Namespace) -> int:
    kp = crypto.Keypair.deterministic(args.seed_label) if args.seed_label else crypto.Keypair.generate()
    path = args.outfile.expanduser()
    try:
        crypto.write_keypair_file(path, kp, overwrite=args.force)
    except crypto.CryptoError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    print(f"Wrote keypair to {path}")
    print(f"address: {kp.address}")
    return 0


def _address(args: argparse.Namespace) -> int:
    try:
        kp = crypto.read_keypair_file(args.keypair)
    except crypto.CryptoError as exc:
        raise UserError(str(exc)) from None
    print(kp.address)
    return 0
