"""`interop generate|verify`: conformance vectors for other implementations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "interop",
        help="generate or verify interop test vectors",
        description=(
            "Interop vectors let another implementation check itself against this one. Layout: "
            "DIR/<format>/<handler>/<case>/{input.*, output.json, meta.json}; a case without "
            "output.json must be rejected. See interop/README.md."
        ),
    )
    p.set_defaults(_parser=p)
    s = p.add_subparsers(dest="interop_command", metavar="SUBCOMMAND")
    gen = s.add_parser("generate", help="write all vectors into DIR", description="Write all vectors into DIR (replacing each format's folder).")
    gen.add_argument("dir", type=Path)
    gen.set_defaults(func=_generate)
    ver = s.add_parser(
        "verify",
        help="check every vector in DIR against this implementation",
        description=(
            "Check every vector in DIR; print each failing case with the reason; exit 1 if any fails. "
            "Top-level folders that are not a vector format (e.g. verifier-ts/) are skipped and named."
        ),
    )
    ver.add_argument("dir", type=Path)
    ver.add_argument("--verbose", "-v", action="store_true", help="also list passing cases")
    ver.set_defaults(func=_verify)


def _generate(args: argparse.Namespace) -> int:
    from .. import interop

    try:
        n = interop.generate(args.dir)
    except OSError as exc:
        raise UserError(f"cannot write vectors to {args.dir}: {exc.strerror}") from None
    print(f"wrote {n} vectors to {args.dir}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .. import interop

    if not args.dir.is_dir():
        raise UserError(f"{args.dir} is not a directory of vectors (create one with 'interop generate')")
    results = interop.verify(args.dir)
    for name in interop.non_format_dirs(args.dir):
        print(f"skipped {name}/: not a vector format", file=sys.stderr)
    if not results:
        raise UserError(f"no vectors found under {args.dir}")
    failed = [r for r in results if not r.ok]
    for r in results:
        if not r.ok:
            print(f"FAIL {r.path}: {r.message}", file=sys.stderr)
        elif args.verbose:
            print(f"ok   {r.path}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
