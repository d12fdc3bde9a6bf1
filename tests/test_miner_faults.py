"""Faulty miners on a real multi-process localnet (devnet/miner_faults.py, issue 12 item 6
and its acceptance): a miner that wins and never posts lets the query expire; the requester
(``ambient-p2p query`` sends ``expire`` itself) gets the whole escrow back and pays only its
two transaction fees, and the miner's bond is gone to the incinerator. The other faults
(a late post refused with ``auction-deadline-passed``, a reveal of an uncommitted price that
forfeits the bond) are slow tests. Every wait is bounded; every process is a child of the
Localnet context manager."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.core import auction as A
from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE
from ambient_p2p.core.crypto import encode_address, write_keypair_file
from ambient_p2p.devnet.localnet import Localnet
from ambient_p2p.devnet.users import user_keypairs
from tests.test_query_multiproc import MAX_TOKENS, PAY, QUERY_TIMEOUT_S, wait_miners

#: the shortest deadline the windows allow (24 slots) plus a few: the honest speed rule
#: still bids (12 tokens on SmolLM2 take ~1 s), and the test waits little for the expiry.
WITHIN_S = 24.0
INCINERATOR = encode_address(A.INCINERATOR_ID)


def run_faulty(tmp_path: Path, fault: str) -> tuple[dict[str, Any], int, int, int, dict[str, Any]]:
    with Localnet(tmp_path / "net", 2, validator=True, node_args={1: ["--miner", "--miner-fault", fault]}) as net:
        key = tmp_path / "user0.json"
        write_keypair_file(key, user_keypairs(net.chain_id)[0])
        wait_miners(net, [1])
        burned0 = int(net.nodes[0].control({"cmd": "balance", "address": INCINERATOR})["lamports"])
        r = subprocess.run([sys.executable, "-m", "ambient_p2p", "query", "What is the capital of France?",
                            "--max-tokens", str(MAX_TOKENS), "--pay", str(PAY), "--within", str(WITHIN_S),
                            "--node", str(net.nodes[0].data_dir), "--keypair", str(key), "--json"],
                           capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
        assert r.stdout.strip(), (r.returncode, r.stderr[-3000:])
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        burned1 = int(net.nodes[0].control({"cmd": "balance", "address": INCINERATOR})["lamports"])
        miner = net.nodes[1].control({"cmd": "status"})["roles"]["miner"]
        return rec, r.returncode, burned0, burned1, miner


def assert_expired_and_refunded(rec: dict[str, Any], rc: int, burned0: int, burned1: int) -> None:
    assert rc == 1  # no answer
    assert rec["status"] == "EXPIRED" and rec["answer"] is None
    # the requester paid two fees (request, expire) and got the whole escrow back
    assert rec["requester_tx_fees_lamports"] == 2 * LAMPORTS_PER_SIGNATURE
    assert rec["balance_before"] - rec["balance_after"] == 2 * LAMPORTS_PER_SIGNATURE
    # the winner's bond went to the incinerator, its bid is slashed
    bond = A.bond_for(PAY * MAX_TOKENS)
    assert burned1 - burned0 == bond
    (bid,) = rec["bids"]
    assert bid["status"] == "SLASHED" and bid["bond_lamports"] == bond


def test_a_miner_that_never_posts_loses_its_bond_and_the_requester_is_refunded(tmp_path: Path) -> None:
    rec, rc, burned0, burned1, miner = run_faulty(tmp_path, "never-post")
    assert_expired_and_refunded(rec, rc, burned0, burned1)
    assert miner["auctions_won"] == 1 and miner["expired"] == 1 and miner["bonds_locked"] == 0


@pytest.mark.slow
def test_a_late_post_is_refused_and_the_query_expires(tmp_path: Path) -> None:
    rec, rc, burned0, burned1, miner = run_faulty(tmp_path, "post-late")
    assert_expired_and_refunded(rec, rc, burned0, burned1)
    assert miner["failures"].get("fault-post-late") == 1


@pytest.mark.slow
def test_a_reveal_of_another_price_forfeits_the_bond(tmp_path: Path) -> None:
    rec, rc, burned0, burned1, _miner = run_faulty(tmp_path, "wrong-reveal")
    assert rc == 1 and rec["status"] == "REFUNDED"  # no revealed bid: the requester gets everything back
    (bid,) = rec["bids"]
    assert bid["status"] == "FORFEITED"
    assert burned1 - burned0 == A.bond_for(PAY * MAX_TOKENS)
    assert rec["balance_before"] - rec["balance_after"] == rec["requester_tx_fees_lamports"]
