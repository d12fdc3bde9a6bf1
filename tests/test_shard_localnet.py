"""A query served by a sharded route on a real localnet (issue 21 acceptance, spec/shard.md
"Payment" / "Settlement"): two stage server processes (``python -m
ambient_p2p.node.stage_server``, layers 0:11 and 11:30, each loading only its layers) and a
3-validator localnet with ``--logit-pool`` whose node 1 is a ``--miner --route`` driving
generation through those stages. The requester's query is won by node 1, generated
through the route, its result and then its route (``post_route``) land, the two drawn
validators (nodes 0 and 2) verify it, and ``settle`` pays ``clearing_price x num_tokens``
to the stages by ``split_payment`` over layers x tokens, to the lamport, and credits each
stage ``split_payment(num_tokens, same work)`` tokens of LStake work; the driver gets
neither.

Slow: five model-loading processes. Every wait is bounded; processes are ended by pid."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambient_p2p.core import auction as A
from ambient_p2p.core import shard as sh
from ambient_p2p.core.crypto import Keypair, encode_address
from ambient_p2p.node.miner import ROUTE_FALLBACK_SPEED_MS_PER_TOKEN
from tests.test_logit_pool_multiproc import balance, pool_state, run_pool
from tests.test_shard_multiproc import procs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: an uneven cut, so that the split has remainders to place (11 and 19 layers)
STAGES = [("0:11", 41), ("11:30", 42)]


def test_a_route_served_query_is_verified_and_its_payment_and_lstake_split_among_the_stages(tmp_path: Path) -> None:
    with procs([(layers, seed, ()) for layers, seed in STAGES]) as ps:
        eps = [p.wait_ready() for p in ps]
        route_args = [a for ep, (layers, _s) in zip(eps, STAGES, strict=True)
                      for a in ("--route", f"{layers}@{ep.addrs[0]}")]
        net, rec, final, draw, before, after = run_pool(tmp_path, ["--miner-price", "20", *route_args])
        try:
            q = final["query"]
            assert q["status"] == "FINALIZED_VERIFIED", final
            assert sorted(v["verdict"] for v in draw["draw"]["validators"]) == ["accept", "accept"]
            n = int(q["num_tokens"])
            pay = int(q["clearing_price"]) * n
            assert n >= 1 and pay > 0
            work = [(b - a, n) for a, b in ((int(x) for x in layers.split(":")) for layers, _s in STAGES)]
            want_pay = sh.split_payment(pay, work)
            want_tokens = sh.split_payment(n, work)
            stage_addrs = [encode_address(Keypair.deterministic("stage", seed).pubkey) for _l, seed in STAGES]
            # the stages' keys hold nothing else on this chain: their balances are their shares
            assert [balance(net, s) for s in stage_addrs] == want_pay and sum(want_pay) == pay
            assert sum(want_tokens) == n
            # LStake work, as every voter's bank records it after the settle (node 0 and 2 are
            # drawn validators, node 1 the driver)
            table = pool_state(net, 0).get("work") or {}
            got_tokens = [table.get(s, {}).get("total_tokens_served") for s in stage_addrs]
            assert got_tokens == want_tokens, table
            miner = net.nodes[1].status()["address"]
            assert table.get(miner, {}).get("total_tokens_served", 0) == 0  # the driver served no layers
            m = net.nodes[1].status()["roles"]["miner"]
            assert m["failures"] == {}, m
            # the driver loaded no weights (spec/shard.md "Route drivers hold no weights"): its
            # model name came from the GGUF header and its speed from calibrating the route
            assert m["route_calibrated"] is True and m["model"].endswith(".gguf"), m
            assert 0 < m["ms_per_output_token"] < ROUTE_FALLBACK_SPEED_MS_PER_TOKEN, m
            # the requester paid the clearing price per token and the query fee, as for an
            # unsharded answer
            paid = pay + A.QUERY_FEE_LAMPORTS // 2 * 2
            assert before - after == paid + rec["requester_tx_fees_lamports"]
        finally:
            net.stop()
