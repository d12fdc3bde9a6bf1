"""Issue 12's loop on a real multi-process localnet (validator processes on 127.0.0.1):
``ambient-p2p query`` (a subprocess) submits a request through a node that does not mine,
a ``--miner`` node bids, wins, fetches the prompt blob from its peers, runs the embedded
SmolLM2 with PoL fingerprints, posts the result; the requester prints the answer fetched
from the miner through its own node, and its balance fell by exactly the escrow the chain
holds plus its one transaction fee.

The default run is one query on 2 nodes; the acceptance run (10 queries, 4 nodes, 2
miners) is marked slow. Every process is a child of the Localnet context manager and every
wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.core import auction as A
from ambient_p2p.core import pol
from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE
from ambient_p2p.core.codec import decode
from ambient_p2p.core.crypto import decode_address, write_keypair_file
from ambient_p2p.devnet.localnet import Localnet
from ambient_p2p.devnet.users import user_keypairs

#: Model load and calibration, then registration, on a loaded 2-core machine.
MINER_READY_TIMEOUT_S = 150.0
QUERY_TIMEOUT_S = 240.0
MAX_TOKENS = 12
PAY = 50


def miner_state(net: Localnet, i: int) -> dict[str, Any]:
    try:
        st = net.nodes[i].control({"cmd": "status"}, timeout_s=10.0)
    except (OSError, ValueError):
        return {}
    m: dict[str, Any] = st.get("roles", {}).get("miner", {})
    return m


def wait_miners(net: Localnet, miners: list[int]) -> None:
    deadline = time.monotonic() + MINER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(miner_state(net, i).get("state") == "mining" for i in miners):
            return
        time.sleep(1.0)
    raise AssertionError(f"miners not ready: {[miner_state(net, i) for i in miners]}")


def run_query(node_dir: Path, key: Path, prompt: str, within_s: float = 60.0) -> tuple[dict[str, Any], str]:
    r = subprocess.run([sys.executable, "-m", "ambient_p2p", "query", prompt, "--max-tokens", str(MAX_TOKENS),
                        "--pay", str(PAY), "--within", str(within_s), "--node", str(node_dir), "--keypair", str(key),
                        "--json"], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def check_record(net: Localnet, rec: dict[str, Any], miner_dirs: dict[str, Path]) -> None:
    assert rec["status"] == "RESULT_POSTED"
    assert isinstance(rec["answer"], str) and rec["answer"].strip()
    assert rec["miner"] in miner_dirs
    escrow = PAY * MAX_TOKENS + A.QUERY_FEE_LAMPORTS
    assert rec["escrow_lamports"] == escrow  # held until the Logit Pool settles
    assert rec["requester_tx_fees_lamports"] == LAMPORTS_PER_SIGNATURE  # the request only: miners closed
    assert rec["balance_before"] - rec["balance_after"] == escrow + LAMPORTS_PER_SIGNATURE
    assert 1 <= rec["num_tokens"] <= MAX_TOKENS and rec["result_slot"] < rec["deadline_slot"]
    # the chain holds the escrow in the query account
    q = net.nodes[0].control({"cmd": "balance", "address": rec["query"]})
    assert q["lamports"] == escrow
    # the miner kept the PoL proof whose commitment the chain holds (the Logit Pool's openings)
    proof = decode((miner_dirs[rec["miner"]] / "pol-proofs" / f"{decode_address(rec['query']).hex()}.cbor")
                   .read_bytes(), expected=pol.PolProof)
    assert proof.commitment.root.hex() == rec["pol_root"]
    assert proof.commitment.hash().hex() == rec["pol_commitment_hash"]
    assert pol.tokens_hash(proof.output).hex() == rec["output_hash"] and len(proof.output) == rec["num_tokens"]


def test_a_query_is_answered_by_a_miner_on_another_node(tmp_path: Path) -> None:
    with Localnet(tmp_path / "net", 2, validator=True, node_args={1: ["--miner", "--miner-price", "20"]}) as net:
        key = tmp_path / "user0.json"
        write_keypair_file(key, user_keypairs(net.chain_id)[0])
        wait_miners(net, [1])
        miner = net.nodes[1].status()["address"]
        rec, progress = run_query(net.nodes[0].data_dir, key, "What is the capital of France?")
        check_record(net, rec, {miner: net.nodes[1].data_dir})
        assert rec["clearing_price_per_token"] == PAY  # one revealed bid: the requester's maximum
        for step in ("request landed", "1 bid(s) committed", "1 bid(s) revealed", "auction closed: winner",
                     "result posted"):
            assert step in progress, progress
        m = miner_state(net, 1)
        assert (m["auctions_entered"], m["auctions_won"]) == (1, 1)
        assert m["bonds_locked"] == A.bond_for(PAY * MAX_TOKENS)  # the winner's bond waits for settlement


@pytest.mark.slow
def test_acceptance_ten_queries_two_miners_four_nodes(tmp_path: Path) -> None:
    """Issue 12 acceptance: a 4-node localnet with 2 miners answers 10 queries."""
    with Localnet(tmp_path / "net", 4, validator=True,
                  node_args={2: ["--miner", "--miner-price", "20"], 3: ["--miner", "--miner-price", "30"]}) as net:
        keys = []
        for i, u in enumerate(user_keypairs(net.chain_id)):
            keys.append(tmp_path / f"user{i}.json")
            write_keypair_file(keys[-1], u)
        wait_miners(net, [2, 3])
        miners = {net.nodes[i].status()["address"]: net.nodes[i].data_dir for i in (2, 3)}
        t0 = time.monotonic()
        recs = []
        for n in range(10):
            rec, _ = run_query(net.nodes[n % 2].data_dir, keys[n % len(keys)], f"Name a colour. ({n})")
            check_record(net, rec, miners)
            recs.append(rec)
        elapsed = time.monotonic() - t0
        print(json.dumps({"queries": len(recs), "seconds": round(elapsed, 1),
                          "per_query_s": [r["seconds"] for r in recs],
                          "winners": [r["miner"][:8] for r in recs],
                          "prices": [r["clearing_price_per_token"] for r in recs]}))
        # both miners bid on every query, the cheaper one wins at the dearer one's price
        assert all(len(r["bids"]) == 2 for r in recs)
        cheap = next(a for a, d in miners.items() if d == net.nodes[2].data_dir)
        assert all(r["miner"] == cheap and r["clearing_price_per_token"] == 30 for r in recs)
