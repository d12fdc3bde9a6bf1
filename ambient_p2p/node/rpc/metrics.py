"""``GET /metrics`` in the Prometheus text format (prometheus-client). A collector reads
the node's ``status`` (the same figures ``ambient-p2p status`` prints) at scrape time, so
nothing is counted twice and a scrape costs one status call; the process collector adds
RSS and CPU. Names: spec/rpc.md "Metrics"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]], extra: Callable[[], dict[str, Any]]) -> None:
        self.status, self.extra = status, extra

    def collect(self) -> Iterator[Any]:
        st = self.status()
        c = st.get("consensus", {})
        slot = GaugeMetricFamily("ambient_slot", "slot by commitment level", labels=["level"])
        for level in ("slot", "processed", "confirmed", "finalized", "root"):
            if isinstance(c.get(level), int):
                slot.add_metric(["current" if level == "slot" else level], c[level])
        yield slot
        yield GaugeMetricFamily("ambient_peers", "connected peers", value=st.get("peers", 0))
        g = st.get("gossip", {})
        gm = CounterMetricFamily("ambient_gossip_messages", "gossip messages by topic and direction",
                                 labels=["topic", "direction"])
        for direction, key in (("in", "delivered"), ("out", "published"), ("rejected", "rejected"),
                               ("dropped", "delivery_dropped")):
            for topic, n in (g.get(key) or {}).items():
                gm.add_metric([topic, direction], n)
        yield gm
        gl = GaugeMetricFamily("ambient_gossip_latency_ms", "gossip delivery latency (receipt minus the "
                               "originator's wall clock), ms", labels=["topic", "quantile"])
        for topic, row in (st.get("latency") or {}).items():
            for q, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
                if row.get(key) is not None:
                    gl.add_metric([topic, q], float(row[key]))
        yield gl
        counters = {"produced": "slots this node produced", "replayed": "slots replayed", "dead": "dead slots",
                    "votes_in": "votes received", "votes_out": "votes sent", "txs_in": "transactions received",
                    "txs_included": "transactions included by this leader", "shreds_in": "shreds received",
                    "shreds_rejected": "shreds rejected", "repair_requests": "repair requests sent",
                    "repaired_shreds": "shreds repaired"}
        for k, doc in counters.items():
            if isinstance(c.get(k), int):
                yield CounterMetricFamily(f"ambient_{k}", doc, value=c[k])
        stall = c.get("loop_stall_ms") or {}
        ls = GaugeMetricFamily("ambient_loop_stall_ms", "event-loop lateness, ms", labels=["quantile"])
        for q in ("p50", "p99", "max"):
            if stall.get(q) is not None:
                ls.add_metric([q], float(stall[q]))
        yield ls
        lat = c.get("confirm_latency_ms") or {}
        cl = GaugeMetricFamily("ambient_confirm_latency_ms", "leader receipt to confirmation, ms", labels=["quantile"])
        for q in ("p50", "p95"):
            if lat.get(q) is not None:
                cl.add_metric([q], float(lat[q]))
        yield cl
        lst = GaugeMetricFamily("ambient_lstake_weight", "vote weight (LStake) by identity", labels=["identity"])
        for who, row in (c.get("lstake") or {}).items():
            lst.add_metric([who], row.get("weight", 0))
        yield lst
        miner = (st.get("roles") or {}).get("miner")
        if miner:
            for k in ("auctions_entered", "auctions_won", "queries_served", "auctions_lost", "expired"):
                if isinstance(miner.get(k), int):
                    yield CounterMetricFamily(f"ambient_miner_{k}", f"miner {k.replace('_', ' ')}", value=miner[k])
            mt = GaugeMetricFamily("ambient_model_ms_per_token", "the miner's measured model speed", labels=["kind"])
            for kind in ("output", "prompt"):
                val = miner.get(f"ms_per_{kind}_token")
                if val is not None:
                    mt.add_metric([kind], float(val))
            yield mt
        pool = (st.get("roles") or {}).get("pool") or {}
        pv = CounterMetricFamily("ambient_pool_verdicts", "Logit Pool work of this validator (drawn, verdicts sent, "
                                 "accepted, rejected, settles sent)", labels=["kind"])
        for k in ("drawn", "verdicts_sent", "accepted", "rejected", "settles_sent", "openings_served"):
            if isinstance(pool.get(k), int):
                pv.add_metric([k], pool[k])
        yield pv
        chain = pool.get("chain") or {}
        qc = GaugeMetricFamily("ambient_chain_queries", "query accounts on the chain by status (best bank)",
                               labels=["status"])
        for k, n in chain.items():
            if isinstance(n, int):
                qc.add_metric([str(k)], n)
        yield qc
        x = self.extra()
        hist = HistogramMetricFamily("ambient_op_seconds", "duration of the node's operations: worker-thread jobs "
                                     "(insert, replay, build, disk, serve, cleanup), model runs (model_prove), RPC "
                                     "history writes (rpc_history_write)", labels=["op"])
        for op, h in sorted((x.get("timings") or {}).items()):
            hist.add_metric([op], buckets=[(le, n) for le, n in h["buckets"]], sum_value=h["sum_s"])
        yield hist
        rq = CounterMetricFamily("ambient_rpc_requests", "RPC requests by outcome", labels=["outcome"])
        for k in ("requests", "errors", "rate_limited", "too_large"):
            rq.add_metric([k], x.get(k, 0))
        yield rq
        qs = CounterMetricFamily("ambient_chat_queries", "chat completions by outcome", labels=["outcome"])
        for k, n in (x.get("chat") or {}).items():
            qs.add_metric([k], n)
        yield qs
        ps = GaugeMetricFamily("ambient_peer_score", "gossip score of each connected peer", labels=["peer"])
        for peer, score in (x.get("peer_scores") or {}).items():
            ps.add_metric([peer], float(score))
        yield ps
        yield GaugeMetricFamily("ambient_indexed_blocks", "blocks in the RPC's transaction index",
                                value=x.get("indexed_blocks", 0))


def make_registry(status: Callable[[], dict[str, Any]], extra: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(NodeCollector(status, extra))
    ProcessCollector(registry=reg)  # process_resident_memory_bytes, CPU seconds, open fds
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return bytes(generate_latest(reg))
