"""Durable file replacement for the node's small state files (the tower, the blockstore's
``max-root`` witness): write a temporary file, fsync it, rename it over the old one, fsync
the directory, so a crash leaves either the old or the new content, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path


def write_durable(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably (raises OSError; the caller words it)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
