"""What the validator reports: the ``status`` fields, the LStake table, the one-line
status, and the node's control commands (``chain``, ``slot_info``, ``submit_tx``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.crypto import encode_address
from ..core.node_policy import percentiles

if TYPE_CHECKING:  # pragma: no cover
    from .validator import Validator


def status_fields(v: Validator) -> dict[str, Any]:
    """The policy's report (``NodePolicy.report``) with the shell's own figures."""
    now = v.clock.wall_ms()
    leader = v.book.leader(v.slot_at(now))
    stall = list(v.loop_stall)
    chans = {"inbox": v.inbox_send.statistics(), "shreds": v.shreds_send.statistics(),
             "votes": v.voting.send.statistics()}
    return {
        **v.report(now, v.clock.mono_ms()),
        "leader": encode_address(leader) if leader else None, "lstake": v.lstake_table(),
        "loop_stall_ms": {**percentiles(stall, (0.5, 0.99)), "max": round(max(stall), 1) if stall else None},
        "channels": {k: {"used": c.current_buffer_used, "size": c.max_buffer_size,
                         "waiting_send": c.tasks_waiting_send} for k, c in chans.items()},
        "drops": {"inbox": v.inbox_dropped, "votes": v.voting.dropped},
        "poh": _poh(v),
        **v.producer.status(),
    }


def _poh(v: Validator) -> dict[str, Any]:
    """The leader's PoH clock (node/production.py)."""
    out: dict[str, Any] = {"clock": v.poh_clock, "abandoned": v.stats.produce_abandoned}
    if v.poh is not None:
        recent = v.poh.recent_stats()
        out.update(late_reports=v.poh.late_reports, recent_slots=len(recent),
                   recent_late_ticks=sum(s.late_ticks for s in recent),
                   recent_max_lag_ms=round(max((s.max_lag_ns for s in recent), default=0) / 1e6, 1))
    return out


def lstake_table(v: Validator) -> dict[str, dict[str, int]]:
    """Per identity: its vote weight now, and its credits from rooted slots (all epochs)."""
    b = v.book
    ids = set(v.cons.stakes) | set(b.leader_credits) | set(b.vote_credits)
    return {encode_address(k): {"weight": v.cons.stakes.get(k, 0), "leader_slots": b.leader_credits[k],
                                "vote_credits": b.vote_credits[k]} for k in sorted(ids)}


def status_line(v: Validator) -> str:
    c = status_fields(v)
    return (f"slot={c['slot']} processed={c['processed']} confirmed={c['confirmed']} "
            f"finalized={c['finalized']} leader={(c['leader'] or '-')[:8]} produced={c['produced']} "
            f"votes={c['votes_out']}")


async def control(v: Validator, req: dict[str, Any]) -> dict[str, Any] | None:
    cmd = req.get("cmd")
    if cmd == "chain":
        lo = int(req.get("from", 0))
        out = []
        for r in v.bs.roots():
            if r >= lo:
                rec = v.bs.bank_hash(r)
                out.append([r, rec.bank_hash.hex() if rec else None])
        return {"ok": True, "roots": out, "finalized": v.finalized_slot(), "root": v.cons.finalized_slot()}
    if cmd == "slot_info":
        slot = int(req["slot"])
        rec = v.bs.bank_hash(slot)
        proof = v.bs.duplicate_proof(slot)
        return {"ok": True, "slot": slot, "bank_hash": rec.bank_hash.hex() if rec else None,
                "last_blockhash": rec.last_blockhash.hex() if rec else None,
                "parent": rec.parent_slot if rec else None, "rooted": v.bs.is_root(slot),
                "dead": (d.reason if (d := v.bs.dead_slot(slot)) else None),
                "duplicate_proof": proof.kind if proof else None}
    if cmd == "submit_tx":
        raw = bytes.fromhex(req["tx_hex"])
        v.add_tx(raw)
        if v.port is not None:
            await v.port.publish("txs", raw)
        return {"ok": True}
    return None
