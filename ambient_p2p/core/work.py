"""Work-credit accounts: the bank state that records validated Logit Pool work per identity
(normative text: spec/lstake.md "Work accounts in the bank").

The Logit Pool (the auction program's settlement) calls ``Bank.credit_work`` when a result
settles ``FinalizedVerified`` (the miner: accepted output tokens; each validator whose verdict
counted: its positions) and ``Bank.slash_work`` when a miner's result is rejected or proven
fraudulent, or a validator accepted a fraud. Each call updates the identity's fixed-layout
*work account* (below; little-endian, u64 fields 8-aligned so an SBF program reads it in
place, as the auction accounts) and appends a :class:`WorkEvent` to the slot's list. The
accounts enter the bank hash (``work_delta_hash``); the events of a *rooted* slot become
LStake credits (core/schedule.py, core/lstake.py), as landed votes do.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum

#: Byte 0 of a work account (the auction program's kinds are 1 query, 2 bid, 3 miner).
WORK_ACCOUNT_KIND = 4
WORK_ACCOUNT_VERSION = 1
WORK_ACCOUNT_BYTES = 128
#: Slash reasons are short ASCII codes (they are logged in events, not hashed).
MAX_SLASH_REASON_BYTES = 64
#: Reasons the Logit Pool gives (spec/lstake.md); others are refused so that a typo in a
#: caller cannot invent a new kind of slash silently.
SLASH_REASONS = frozenset({
    "result-rejected",      # a quorum rejected the miner's result with valid evidence
    "fraud-proven",         # a retrospective fraud proof against a settled result
    "accepted-fraud",       # a validator accepted a result later proven fraudulent
    "false-reject",         # a validator rejected with evidence that verifies fine
    "absent",               # a drawn validator (or juror) posted no verdict in the window
    "false-challenge",      # a jury dismissed this identity's fraud proof
    "result-unavailable",   # a quorum of drawn validators could not obtain the miner's answer or openings
})
_U64 = 1 << 64

_LAYOUT = struct.Struct("<BBB5xQQQQQQQQQ32s16x")
assert _LAYOUT.size == WORK_ACCOUNT_BYTES


class WorkError(ValueError):
    """A work-credit call with invalid arguments (a caller bug, never chain data)."""


class Flag(IntEnum):
    SLASHED_THIS_EPOCH = 1  # bit 0 of byte 2


@dataclass(frozen=True)
class WorkAccount:
    """One identity's work account (spec/lstake.md "Work account layout")."""

    identity: bytes
    epoch: int = 0  # epoch the epoch counters belong to
    flags: int = 0
    tokens_served: int = 0  # accepted output tokens served as a miner, in ``epoch``
    positions_validated: int = 0  # positions checked by a counted verdict, in ``epoch``
    slashes: int = 0  # slash_work calls in ``epoch``
    total_tokens_served: int = 0
    total_positions_validated: int = 0
    total_slashes: int = 0
    last_slash_slot: int = 0
    total_rewards_lamports: int = 0  # inflation rewards paid to the identity (all epochs)

    def pack(self) -> bytes:
        return _LAYOUT.pack(WORK_ACCOUNT_KIND, WORK_ACCOUNT_VERSION, self.flags, self.epoch, self.tokens_served,
                            self.positions_validated, self.slashes, self.total_tokens_served,
                            self.total_positions_validated, self.total_slashes, self.last_slash_slot,
                            self.total_rewards_lamports, self.identity)

    @classmethod
    def unpack(cls, data: bytes) -> WorkAccount:
        if len(data) != WORK_ACCOUNT_BYTES:
            raise WorkError(f"a work account is {WORK_ACCOUNT_BYTES} bytes, not {len(data)}")
        (kind, version, flags, epoch, tokens, positions, slashes, t_tokens, t_positions, t_slashes,
         last_slash, rewards, identity) = _LAYOUT.unpack(data)
        if kind != WORK_ACCOUNT_KIND or version != WORK_ACCOUNT_VERSION:
            raise WorkError(f"not a work account (kind {kind}, version {version})")
        return cls(identity, epoch, flags, tokens, positions, slashes, t_tokens, t_positions, t_slashes,
                   last_slash, rewards)

    def at_epoch(self, epoch: int) -> WorkAccount:
        """The account as seen in ``epoch``: epoch counters of an older epoch read as zero."""
        if epoch < self.epoch:
            raise WorkError(f"work account is at epoch {self.epoch}, above {epoch}")
        if epoch == self.epoch:
            return self
        return replace(self, epoch=epoch, flags=0, tokens_served=0, positions_validated=0, slashes=0)


@dataclass(frozen=True)
class WorkEvent:
    """One credit or slash booked in a slot, in call order. ``reason`` is None for a credit."""

    identity: bytes
    tokens_served: int
    positions_validated: int
    reason: str | None = None

    @property
    def is_slash(self) -> bool:
        return self.reason is not None


def credited(acc: WorkAccount, epoch: int, tokens_served: int, positions_validated: int) -> WorkAccount:
    """``acc`` after a credit in ``epoch`` (u64 counters; a credit that would overflow one is
    refused, unreachable with real token counts)."""
    if tokens_served < 0 or positions_validated < 0:
        raise WorkError("work credit must be >= 0")
    a = acc.at_epoch(epoch)
    new = replace(a, tokens_served=a.tokens_served + tokens_served,
                  positions_validated=a.positions_validated + positions_validated,
                  total_tokens_served=a.total_tokens_served + tokens_served,
                  total_positions_validated=a.total_positions_validated + positions_validated)
    if max(new.tokens_served, new.positions_validated, new.total_tokens_served,
           new.total_positions_validated) >= _U64:
        raise WorkError("work counter overflows u64")
    return new


def slashed(acc: WorkAccount, epoch: int, slot: int) -> WorkAccount:
    """``acc`` after a slash in ``epoch`` at ``slot``: the epoch's Logit Pool work is
    forfeited (it earns no reward), the slash is counted and flagged."""
    a = acc.at_epoch(epoch)
    return replace(a, flags=a.flags | Flag.SLASHED_THIS_EPOCH, tokens_served=0, positions_validated=0,
                   slashes=a.slashes + 1, total_slashes=a.total_slashes + 1, last_slash_slot=slot)


def check_identity(identity: bytes) -> bytes:
    b = bytes(identity)
    if len(b) != 32:
        raise WorkError("identity must be a 32-byte public key")
    return b


def check_reason(reason: str) -> str:
    if reason not in SLASH_REASONS:
        raise WorkError(f"unknown slash reason {reason!r} (one of {sorted(SLASH_REASONS)})")
    return reason
