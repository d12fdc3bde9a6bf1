"""The one test double of a frozen slot for the sans-IO node policy's direct tests
(tests/test_node_policy_rules.py, tests/test_node_policy_shell.py): ``NodePolicy`` reads a
frozen result's ``bank`` (``core/node_policy.py`` ``FrozenResult``) and of the bank only
these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeBank:
    slot: int
    bank_hash: bytes
    last_blockhash: bytes = b"\x07" * 32
    landed_votes: list[tuple[bytes, int]] = field(default_factory=list)
    work_events: list[Any] = field(default_factory=list)
    blockhashes: list[bytes] = field(default_factory=lambda: [b"\x07" * 32])  # mempool admission reads these
    status_cache: dict[bytes, int] = field(default_factory=dict)


@dataclass
class FakeResult:
    bank: Any
