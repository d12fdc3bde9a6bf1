"""Release tarballs of the interop vectors (interop/README.md "Releases").

A release is one gzip'd tar, ``ambient-interop-vectors-<version>-<hash12>.tar.gz``, holding a
single top-level folder of the same name with every format's vectors, the README when there
is one, and ``SHA256SUMS`` (``sha256sum`` format: ``<hex>  <path>``, one line per file, sorted
by path). ``<hash12>`` is the first 12 hex digits of sha256(SHA256SUMS), so the name changes
whenever any vector does. A ``SHA256SUMS`` next to the tarball lists the tarball itself.

The tarball is deterministic: the same vectors give byte-identical bytes (members in sorted
order, mtime 0, uid/gid 0, no user/group names, fixed modes, a gzip header without a name or
time), so a release can be rebuilt and compared by anyone.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import format_modules

RELEASE_PREFIX = "ambient-interop-vectors"
SUMS_NAME = "SHA256SUMS"
CONTENT_HASH_HEX_DIGITS = 12  # 48 bits: enough to tell releases apart, short enough to read
_GZIP_LEVEL = 9  # fixed: another level gives other bytes
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_SUMS_LINE_RE = re.compile(r"^([0-9a-f]{64})  (\S.*)$")


class ReleaseError(Exception):
    """A release (tarball or extracted copy) that does not match its checksums."""


@dataclass(frozen=True)
class Release:
    tarball: Path
    sha256: str  # of the tarball bytes
    files: int  # vector files inside (SHA256SUMS not counted)


def _release_files(src: Path) -> dict[str, bytes]:
    """What a release of ``src`` holds: every file of every vector format (other top-level
    folders such as verifier-ts/ are not vectors) and README.md if present, by relative path."""
    fmts = format_modules()
    out: dict[str, bytes] = {}
    readme = src / "README.md"
    if readme.is_file():
        out["README.md"] = readme.read_bytes()
    for fdir in sorted(p for p in src.iterdir() if p.is_dir() and p.name in fmts):
        for p in sorted(fdir.rglob("*")):
            if p.is_file():
                out[p.relative_to(src).as_posix()] = p.read_bytes()
    return out


def sums_text(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())).encode()


def parse_sums(text: bytes) -> dict[str, str]:
    """path -> sha256 hex from a SHA256SUMS file; raises ReleaseError on a malformed line."""
    out: dict[str, str] = {}
    try:
        lines = text.decode().splitlines()
    except UnicodeDecodeError:
        raise ReleaseError(f"{SUMS_NAME} is not UTF-8 text") from None
    for line in lines:
        m = _SUMS_LINE_RE.match(line)
        if m is None:
            raise ReleaseError(f"{SUMS_NAME}: malformed line {line[:80]!r}")
        name = m.group(2).lstrip("*")  # sha256sum's binary-mode marker
        if name in out:
            raise ReleaseError(f"{SUMS_NAME}: {name} listed twice")
        out[name] = m.group(1)
    return out


def release_name(sums: bytes, version: str) -> str:
    """``version`` is the package version (the caller passes ``ambient_p2p.__version__``)."""
    return f"{RELEASE_PREFIX}-{version}-{hashlib.sha256(sums).hexdigest()[:CONTENT_HASH_HEX_DIGITS]}"


def tarball_bytes(src: Path, version: str) -> tuple[str, bytes, int]:
    """(release name, deterministic .tar.gz bytes, number of vector files) for the vectors in ``src``."""
    files = _release_files(src)
    if not any("/" in name for name in files):
        raise ReleaseError(f"no vectors under {src}")
    sums = sums_text(files)
    name = release_name(sums, version)
    members = {**files, SUMS_NAME: sums}
    dirs = sorted({"/".join(p.split("/")[:i]) for p in members for i in range(1, p.count("/") + 1)})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def info(path: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
            ti = tarfile.TarInfo(f"{name}/{path}" if path else name)
            ti.type, ti.mode, ti.size = kind, mode, size
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
            return ti

        tar.addfile(info("", tarfile.DIRTYPE, _DIR_MODE, 0))
        for d in dirs:
            tar.addfile(info(d, tarfile.DIRTYPE, _DIR_MODE, 0))
        for path in sorted(members):
            data = members[path]
            tar.addfile(info(path, tarfile.REGTYPE, _FILE_MODE, len(data)), io.BytesIO(data))
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, compresslevel=_GZIP_LEVEL, mtime=0) as f:
        f.write(raw.getvalue())
    return name, gz.getvalue(), len(files)


def write_release(src: Path, out_dir: Path, version: str) -> Release:
    """Write the release tarball of ``src``'s vectors into ``out_dir`` and list it in
    ``out_dir/SHA256SUMS`` (other lines of an existing SHA256SUMS are kept)."""
    name, data, n = tarball_bytes(src, version)
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_name = f"{name}.tar.gz"
    (out_dir / tar_name).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    sums_path = out_dir / SUMS_NAME
    listed: dict[str, str] = {}
    if sums_path.is_file():
        try:
            listed = parse_sums(sums_path.read_bytes())
        except ReleaseError:
            listed = {}  # not ours to keep: rewritten below
    listed[tar_name] = digest
    sums_path.write_text("".join(f"{h}  {p}\n" for p, h in sorted(listed.items())))
    return Release(out_dir / tar_name, digest, n)


def check_tree(root: Path) -> None:
    """An extracted release: every file listed in ``root/SHA256SUMS`` is present with that
    hash, and no file is unlisted. Raises ReleaseError naming the first problem."""
    listed = parse_sums((root / SUMS_NAME).read_bytes())
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {SUMS_NAME}
    for path in sorted(set(listed) - present):
        raise ReleaseError(f"{path} is listed in {SUMS_NAME} but missing")
    for path in sorted(present - set(listed)):
        raise ReleaseError(f"{path} is not listed in {SUMS_NAME}")
    for path in sorted(listed):
        if hashlib.sha256((root / path).read_bytes()).hexdigest() != listed[path]:
            raise ReleaseError(f"{path} does not match its sha256 in {SUMS_NAME}")


def is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


def check_tarball_sidecar(tarball: Path) -> bool:
    """Check ``tarball`` against a SHA256SUMS next to it, if that lists it. Returns whether it
    was checked; raises ReleaseError on a mismatch."""
    sums_path = tarball.parent / SUMS_NAME
    if not sums_path.is_file():
        return False
    listed = parse_sums(sums_path.read_bytes())
    if tarball.name not in listed:
        return False
    if hashlib.sha256(tarball.read_bytes()).hexdigest() != listed[tarball.name]:
        raise ReleaseError(f"{tarball.name} does not match its sha256 in {sums_path}")
    return True


def extract(tarball: Path, dest: Path) -> Path:
    """Extract a release tarball into ``dest`` (regular files and folders only, every path
    inside its one top-level folder) and check it against its SHA256SUMS; returns that folder."""
    try:
        # decompress all of it first: gzip's CRC-32 and length trailer are checked only at the
        # end of the stream, which tarfile would stop short of
        raw = gzip.decompress(tarball.read_bytes())
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = tar.getmembers()
            tops = {m.name.split("/")[0] for m in members}
            if len(tops) != 1:
                raise ReleaseError(f"{tarball.name}: expected one top-level folder, found {len(tops)}")
            top = tops.pop()
            for m in members:
                parts = m.name.split("/")
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in parts:
                    raise ReleaseError(f"{tarball.name}: refusing member {m.name!r}")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReleaseError(f"{tarball.name} is not a readable release tarball: {exc}") from None
    root = dest / top
    if not (root / SUMS_NAME).is_file():
        raise ReleaseError(f"{tarball.name} holds no {SUMS_NAME}")
    check_tree(root)
    content_hash = hashlib.sha256((root / SUMS_NAME).read_bytes()).hexdigest()[:CONTENT_HASH_HEX_DIGITS]
    if not (top.startswith(RELEASE_PREFIX + "-") and top.endswith("-" + content_hash)):
        raise ReleaseError(f"{tarball.name}: folder {top!r} does not carry the hash of its {SUMS_NAME}")
    return root


def extract_to_temp(tarball: Path) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    tmp = tempfile.TemporaryDirectory(prefix="ambient-interop-")
    try:
        return tmp, extract(tarball, Path(tmp.name))
    except BaseException:
        tmp.cleanup()
        raise
