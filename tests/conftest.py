"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ambient_p2p.ledger.blockstore import Blockstore


@pytest.fixture
def bs(tmp_path: Path) -> Iterator[Blockstore]:
    """A fresh RocksDB blockstore under ``tmp_path`` whose root is slot 0 (genesis)."""
    store = Blockstore.open(tmp_path / "ledger")
    store.set_roots([0])
    yield store
    store.close()
