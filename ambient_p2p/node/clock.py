"""The validator's one clock: wall time (the slot clock, vote timestamps) and monotonic
time (timeouts, receipt ages), both in ms, injected so that tests drive them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Clock:
    wall_ms: Callable[[], int]
    mono_ms: Callable[[], int]

    @classmethod
    def system(cls) -> Clock:
        return cls(lambda: int(time.time() * 1000), lambda: int(time.monotonic() * 1000))

    @classmethod
    def fixed(cls, wall_ms: Callable[[], int]) -> Clock:
        """A test clock: both readings follow one function of the test."""
        return cls(wall_ms, wall_ms)
