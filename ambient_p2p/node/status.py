"""What the validator reports: the ``status`` fields, the LStake table, the one-line
status, and the node's control commands (``chain``, ``slot_info``, ``submit_tx``). The
values are read here from the validator's handles; their shape is core/node_report.py's.
The ``Validator`` takes these functions as its methods of the same names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import node_report as rep
from ..ledger.jobs import chain_rows, slot_facts

if TYPE_CHECKING:  # pragma: no cover
    from .validator import Validator


def status_fields(v: Validator) -> dict[str, Any]:
    """The policy's report (``NodePolicy.report``) with the shell's own figures."""
    chans = {"inbox": v.inbox_send.statistics(), "shreds": v.shreds_send.statistics(),
             "votes": v.voting.send.statistics()}
    recent = None if v.poh is None else [(s.late_ticks, s.max_lag_ns) for s in v.poh.recent_stats()]
    return {
        **v.report(v.clock.wall_ms(), v.clock.mono_ms()),
        "loop_stall_ms": rep.stall_summary(list(v.loop_stall)), "channels": rep.channel_rows(chans),
        "drops": {"inbox": v.inbox_dropped, "votes": v.voting.dropped},
        "poh": rep.poh_summary(v.poh_clock, v.stats.produce_abandoned,
                               None if v.poh is None else v.poh.late_reports, recent),
        **v.producer.status(),
    }


def status(v: Validator) -> dict[str, Any]:
    return {"consensus": status_fields(v)}


def status_line(v: Validator) -> str:
    return rep.status_line(status_fields(v))


async def control(v: Validator, req: dict[str, Any]) -> dict[str, Any] | None:
    cmd = req.get("cmd")
    if cmd == "chain":
        lo = int(req.get("from", 0))
        return rep.chain_answer(chain_rows(v.bs, lo), lo, v.finalized_slot(), v.cons.finalized_slot())
    if cmd == "slot_info":
        return rep.slot_info_answer(int(req["slot"]), **slot_facts(v.bs, int(req["slot"])))
    if cmd == "submit_tx":
        raw = bytes.fromhex(req["tx_hex"])
        v.add_tx(raw)
        if v.port is not None:
            await v.port.publish("txs", raw)
        return {"ok": True}
    return None
