"""`ambient-p2p`: the command-line shell.

Each command group lives in its own module under :mod:`ambient_p2p.commands` and exposes
``register(subparsers)``; this file only discovers and dispatches them. Commands import
heavy dependencies (torch, rocksdict, libp2p) inside their handlers so that ``--help``
and light commands start fast.

User mistakes raise :class:`UserError` (or a core ``CryptoError``/``DecodeError`` about
user-supplied input): main prints one ``error: ...`` line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__
from .errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ambient-p2p",
        description=(
            "Node for the Ambient protocol: Proof-of-History + Tower BFT where leaders and votes "
            "are weighted by LStake (validated LLM work), with proof-of-logits validation."
        ),
        epilog="Run 'ambient-p2p COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"ambient-p2p {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # a group without a subcommand, or no command at all: show the relevant help
        (getattr(args, "_parser", None) or parser).print_help()
        return EXIT_USER_ERROR
    try:
        rc = func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into e.g. `head`: stop quietly like other Unix tools
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
