"""Interop vectors: generation from the implementation and verification (interop/README.md).

Layout (consensus-spec-tests style)::

    <dir>/<format>/<handler>/<case>/
        input.cbor | input.json   the input, exactly as another implementation would receive it
        output.json               the expected result; ABSENT means "must be rejected"
        meta.json                 description, input file name, sha256 of the input, and for
                                  must-reject cases our reject reason code

Each format is a module in :mod:`ambient_p2p.interop.formats` exposing ``FORMAT`` (its
name), ``cases()`` (the vectors to write) and ``run(handler, data)`` (process one input:
return the JSON output, or raise :class:`Rejected`). Adding vectors for a new concern means
adding one module there; the generator, verifier and test suite pick it up.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core.errors import ProtocolError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,79}$")


class Rejected(ProtocolError):
    """The implementation rejected an input; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)


@dataclass(frozen=True)
class Case:
    handler: str
    name: str
    input: bytes
    output: Any | None  # None: must reject
    description: str
    reason: str | None = None  # our reject code for must-reject cases
    input_file: str = "input.cbor"
    extra_meta: dict[str, Any] = field(default_factory=dict)


def case_from_run(
    run: Callable[[str, bytes], Any], handler: str, name: str, data: bytes, desc: str, input_file: str
) -> Case:
    """A case whose expected result is what ``run`` answers for ``data`` now: its output,
    or a must-reject case with the reject code."""
    try:
        out = run(handler, data)
    except Rejected as rej:
        return Case(handler, name, data, None, desc, reason=rej.reason, input_file=input_file)
    return Case(handler, name, data, out, desc, input_file=input_file)


@dataclass
class CaseResult:
    path: str
    ok: bool
    message: str


def format_modules() -> dict[str, ModuleType]:
    """Every vector format module by format name."""
    pkg = importlib.import_module(f"{__name__}.formats")

    out = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        out[mod.FORMAT] = mod
    return out


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def generate(root: Path) -> int:
    """Write every format's vectors under ``root`` (replacing what each format owned).
    Returns the number of cases written."""
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for fmt, mod in format_modules().items():
        fdir = root / fmt
        if fdir.exists():
            shutil.rmtree(fdir)
        seen: set[tuple[str, str]] = set()
        for case in mod.cases():
            for part in (case.handler, case.name):
                if not _NAME_RE.match(part):
                    raise ValueError(f"bad vector name {part!r} in format {fmt}")
            if (case.handler, case.name) in seen:
                raise ValueError(f"duplicate vector {fmt}/{case.handler}/{case.name}")
            seen.add((case.handler, case.name))
            cdir = fdir / case.handler / case.name
            cdir.mkdir(parents=True)
            (cdir / case.input_file).write_bytes(case.input)
            meta = {
                "description": case.description,
                "input": case.input_file,
                "input_sha256": hashlib.sha256(case.input).hexdigest(),
                "expect": "reject" if case.output is None else "accept",
                **case.extra_meta,
            }
            if case.reason is not None:
                meta["reason"] = case.reason
            (cdir / "meta.json").write_text(_dump_json(meta))
            if case.output is not None:
                (cdir / "output.json").write_text(_dump_json(case.output))
            n += 1
    return n


def non_format_dirs(root: Path) -> list[str]:
    """Top-level directories of ``root`` that are not a vector format of this implementation
    (``interop/verifier-ts/`` with its ``node_modules/``, another tool's files): :func:`verify`
    skips them instead of reading their sub-folders as cases."""
    fmts = format_modules()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in fmts)


def iter_case_dirs(root: Path) -> Iterator[tuple[str, str, Path]]:
    """Every ``<format>/<handler>/<case>`` directory under ``root`` whose format is one of
    :func:`format_modules` (other top-level directories are not vectors)."""
    fmts = format_modules()
    for fdir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in fmts):
        for hdir in sorted(p for p in fdir.iterdir() if p.is_dir()):
            for cdir in sorted(p for p in hdir.iterdir() if p.is_dir()):
                yield fdir.name, hdir.name, cdir


def verify_case(mod: ModuleType, handler: str, cdir: Path) -> str | None:
    """Check one case directory. Returns None if it passes, else what is wrong."""
    try:
        meta = json.loads((cdir / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json unreadable: {exc}"
    input_name = meta.get("input", "input.cbor")
    try:
        data = (cdir / input_name).read_bytes()
    except OSError as exc:
        return f"{input_name} unreadable: {exc}"
    out_path = cdir / "output.json"
    expected = json.loads(out_path.read_text()) if out_path.exists() else None
    problems = []
    try:
        got = mod.run(handler, data)
        if expected is None:
            problems.append(f"must be rejected ({meta.get('reason', 'any reason')}) but was accepted")
        elif got != expected:
            problems.append(f"output differs from output.json: got {json.dumps(got, sort_keys=True)[:300]}")
    except Rejected as rej:
        if expected is not None:
            problems.append(f"expected to be accepted but was rejected: {rej}")
        elif meta.get("reason") and rej.reason != meta["reason"]:
            problems.append(f"rejected for {rej.reason!r} ({rej.detail}), expected {meta['reason']!r}")
    digest = hashlib.sha256(data).hexdigest()
    if meta.get("input_sha256") and digest != meta["input_sha256"]:
        problems.append(f"{input_name} does not match its sha256 in meta.json (file altered or corrupt)")
    return "; ".join(problems) or None


def verify(root: Path) -> list[CaseResult]:
    fmts = format_modules()
    results = []
    for fmt, handler, cdir in iter_case_dirs(root):
        rel = str(cdir.relative_to(root))
        problem = verify_case(fmts[fmt], handler, cdir)
        results.append(CaseResult(rel, problem is None, problem or "ok"))
    return results
