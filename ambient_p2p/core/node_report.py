"""The node's status and control answers from plain values (normative text: spec/node.md
"Commitment and status"). Pure: the shell (node/status.py) reads its handles (channels,
PoH clock, blockstore) and passes the values; the policy's own part is
``NodePolicy.report``. Nothing here decides anything; it only shapes what is reported."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .crypto import encode_address


def percentiles(samples: Sequence[float], qs: tuple[float, ...] = (0.5, 0.95)) -> dict[str, Any]:
    """``{"n", "p50", "p95", ...}`` of ``samples`` (nearest rank, rounded to 0.1)."""
    if not samples:
        return {"n": 0, **{f"p{round(q * 100)}": None for q in qs}}
    s = sorted(samples)
    return {"n": len(s), **{f"p{round(q * 100)}": round(s[min(len(s) - 1, int(q * len(s)))], 1) for q in qs}}


def lstake_rows(stakes: Mapping[bytes, int], leader_credits: Mapping[bytes, int],
                vote_credits: Mapping[bytes, int]) -> dict[str, dict[str, int]]:
    """Per identity (address order of the raw keys): its vote weight now, and its credits
    from rooted slots (all epochs)."""
    ids = set(stakes) | set(leader_credits) | set(vote_credits)
    return {encode_address(k): {"weight": stakes.get(k, 0), "leader_slots": leader_credits.get(k, 0),
                                "vote_credits": vote_credits.get(k, 0)} for k in sorted(ids)}


def stall_summary(samples: Sequence[float]) -> dict[str, Any]:
    """``loop_stall_ms``: p50, p99 and max of the stall probe's lateness (ms)."""
    return {**percentiles(samples, (0.5, 0.99)), "max": round(max(samples), 1) if samples else None}


def channel_rows(stats: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """``channels``: per bounded channel (trio ``statistics()``), use, size, waiting senders."""
    return {k: {"used": c.current_buffer_used, "size": c.max_buffer_size, "waiting_send": c.tasks_waiting_send}
            for k, c in stats.items()}


def poh_summary(clock: str, abandoned: int, late_reports: int | None = None,
                recent: Sequence[tuple[int, int]] | None = None) -> dict[str, Any]:
    """``poh``: the clock mode and abandoned slots; with a running PoH clock, its late
    reports and the recent slots' (late ticks, max lag ns) summed / maxed."""
    out: dict[str, Any] = {"clock": clock, "abandoned": abandoned}
    if recent is not None:
        out.update(late_reports=late_reports, recent_slots=len(recent),
                   recent_late_ticks=sum(late for late, _lag in recent),
                   recent_max_lag_ms=round(max((lag for _late, lag in recent), default=0) / 1e6, 1))
    return out


def status_line(c: Mapping[str, Any]) -> str:
    """The one-line status of the ``consensus`` fields."""
    return (f"slot={c['slot']} processed={c['processed']} confirmed={c['confirmed']} "
            f"finalized={c['finalized']} leader={(c['leader'] or '-')[:8]} produced={c['produced']} "
            f"votes={c['votes_out']}")


def chain_answer(roots: Iterable[tuple[int, bytes | None]], lo: int, finalized: int, root: int) -> dict[str, Any]:
    """The ``chain`` control answer: stored roots at or above ``lo`` with their bank hashes."""
    return {"ok": True, "roots": [[r, h.hex() if h is not None else None] for r, h in roots if r >= lo],
            "finalized": finalized, "root": root}


def slot_info_answer(slot: int, *, bank_hash: bytes | None, last_blockhash: bytes | None, parent: int | None,
                     rooted: bool, dead_reason: str | None, duplicate_proof: str | None) -> dict[str, Any]:
    """The ``slot_info`` control answer (None: not stored)."""
    return {"ok": True, "slot": slot, "bank_hash": bank_hash.hex() if bank_hash is not None else None,
            "last_blockhash": last_blockhash.hex() if last_blockhash is not None else None,
            "parent": parent, "rooted": rooted, "dead": dead_reason, "duplicate_proof": duplicate_proof}
