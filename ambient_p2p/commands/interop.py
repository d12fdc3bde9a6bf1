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
    gen = s.add_parser(
        "generate",
        help="write all vectors into DIR (and/or a release tarball)",
        description=(
            "Write all vectors into DIR (replacing each format's folder). With --release OUT, also "
            "write OUT/ambient-interop-vectors-<version>-<hash>.tar.gz (deterministic: the same vectors "
            "give the same bytes; <hash> = first 12 hex digits of the sha256 of the SHA256SUMS inside) "
            "and list it in OUT/SHA256SUMS. DIR may be left out with --release (then nothing else is written)."
        ),
    )
    gen.add_argument("dir", type=Path, nargs="?", help="vector folder to (re)write, e.g. interop")
    gen.add_argument("--release", type=Path, metavar="OUT", help="folder for the release tarball and its SHA256SUMS")
    gen.set_defaults(func=_generate)
    ver = s.add_parser(
        "verify",
        help="check every vector in DIR (or a release tarball) against this implementation",
        description=(
            "Check every vector in DIR; print each failing case with the reason; exit 1 if any fails. "
            "Top-level folders that are not a vector format (e.g. verifier-ts/) are skipped and named. "
            "DIR may be a release tarball (.tar.gz: checked against the SHA256SUMS next to it, if any, "
            "and the one inside) or an extracted release (its SHA256SUMS is checked first)."
        ),
    )
    ver.add_argument("dir", type=Path, metavar="DIR|TARBALL")
    ver.add_argument("--verbose", "-v", action="store_true", help="also list passing cases")
    ver.set_defaults(func=_verify)


def _generate(args: argparse.Namespace) -> int:
    import tempfile

    from .. import __version__, interop
    from ..interop import release

    if args.dir is None and args.release is None:
        raise UserError("give DIR, --release OUT, or both")
    for path in (args.dir, args.release):
        if path is not None and path.exists() and not path.is_dir():
            raise UserError(f"{path} exists and is not a directory")
    try:
        if args.dir is not None:
            n = interop.generate(args.dir)
            print(f"wrote {n} vectors to {args.dir}")
        if args.release is not None:
            with tempfile.TemporaryDirectory(prefix="ambient-interop-") as tmp:
                src = args.dir
                if src is None:
                    src = Path(tmp)
                    interop.generate(src)
                rel = release.write_release(src, args.release, __version__)
            print(f"wrote {rel.tarball} ({rel.files} files, sha256 {rel.sha256}) and {args.release / release.SUMS_NAME}")
    except OSError as exc:
        raise UserError(f"cannot write vectors: {exc.strerror} ({exc.filename})") from None
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..interop import release

    if release.is_tarball(args.dir):
        try:
            if release.check_tarball_sidecar(args.dir):
                print(f"{args.dir.name}: matches {args.dir.parent / release.SUMS_NAME}", file=sys.stderr)
            tmp, root = release.extract_to_temp(args.dir)
        except release.ReleaseError as exc:
            print(f"FAIL {args.dir}: {exc}", file=sys.stderr)
            return 1
        with tmp:
            return _verify_tree(root, args.verbose)
    if not args.dir.is_dir():
        raise UserError(f"{args.dir} is not a directory of vectors or a .tar.gz release (create one with 'interop generate')")
    if (args.dir / release.SUMS_NAME).is_file():  # an extracted release: its checksums first
        try:
            release.check_tree(args.dir)
        except (release.ReleaseError, OSError) as exc:
            print(f"FAIL {args.dir}: {exc}", file=sys.stderr)
            return 1
        print(f"{args.dir}: every file matches its {release.SUMS_NAME}", file=sys.stderr)
    return _verify_tree(args.dir, args.verbose)


def _verify_tree(root: Path, verbose: bool) -> int:
    from .. import interop

    results = interop.verify(root)
    for name in interop.non_format_dirs(root):
        print(f"skipped {name}/: not a vector format", file=sys.stderr)
    if not results:
        raise UserError(f"no vectors found under {root}")
    failed = [r for r in results if not r.ok]
    for r in results:
        if not r.ok:
            print(f"FAIL {r.path}: {r.message}", file=sys.stderr)
        elif verbose:
            print(f"ok   {r.path}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
