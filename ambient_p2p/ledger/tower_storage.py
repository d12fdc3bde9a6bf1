"""The tower file (agave core/src/consensus/tower_storage.rs): the node's tower record,
replaced durably before any vote it holds leaves the node (node/voting.py), read back at
start (spec/tower.md)."""

from __future__ import annotations

from pathlib import Path

from ..core.codec import decode, encode
from ..core.tower import Tower, TowerRecord
from .durable import write_durable


def write_tower(path: Path, rec: TowerRecord) -> None:
    """Durably replace the tower file (write, fsync, rename, fsync the directory)."""
    write_durable(path, encode(rec), 0o600)


def read_tower(path: Path, identity: bytes) -> Tower | None:
    if not path.exists():
        return None
    return Tower.from_record(decode(path.read_bytes(), expected=TowerRecord), identity)
