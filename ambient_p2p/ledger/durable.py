"""Durable file replacement for the node's files (the tower, the blockstore's ``max-root``
witness, the fetched genesis, blobs, a written genesis): write a temporary file, fsync it,
rename it over the old one, fsync the directory, so a crash leaves either the old or the
new content, never a torn file. The one home of that sequence (review finding D: it had
three copies)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def write_durable(path: Path, data: bytes, mode: int = 0o644, *, unique_tmp: bool = False) -> None:
    """Replace ``path`` with ``data`` durably (raises OSError; the caller words it).

    ``unique_tmp``: the temporary file gets a random name, for writers that may replace the
    same path from several threads at once (the blob store); otherwise it is ``path.tmp``.
    A failed write removes its temporary file."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp" if unique_tmp else f"{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
