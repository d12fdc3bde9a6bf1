"""ledger/durable.py, the one home of "temp file, fsync, rename, fsync the directory":
the new content or the old one, never a torn file, and no temporary left behind."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.ledger.durable import write_durable


@settings(max_examples=25, deadline=None)
@given(old=st.binary(max_size=4096), new=st.binary(max_size=70_000), unique=st.booleans())
def test_replaces_exactly_and_leaves_no_temporary(tmp_path_factory: pytest.TempPathFactory, old: bytes, new: bytes,
                                                  unique: bool) -> None:
    d = tmp_path_factory.mktemp("d")
    p = d / "f"
    p.write_bytes(old)
    write_durable(p, new, 0o600, unique_tmp=unique)
    assert p.read_bytes() == new
    assert os.listdir(d) == ["f"]
    assert p.stat().st_mode & 0o777 == 0o600  # the replacement is a new inode with the asked mode


def test_a_failed_write_keeps_the_old_content_and_removes_its_temporary(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space left"):
        write_durable(p, b"new", unique_tmp=True)
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_concurrent_writers_of_one_path_never_tear_it(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    payloads = [bytes([i]) * 50_000 for i in range(8)]

    def writer(data: bytes) -> None:
        for _ in range(5):
            write_durable(p, data, unique_tmp=True)

    with ThreadPoolExecutor(len(payloads)) as pool:  # map re-raises a writer's exception here
        list(pool.map(writer, payloads, timeout=60))
    assert p.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["blob"]
