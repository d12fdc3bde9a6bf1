"""Work from the first epoch (issue 20 item 3, spec/join.md "A newcomer earns its place"):
a 4-node localnet whose validators all run the Logit Pool; a fifth node that is not in
genesis joins with nothing but the bootstrap multiaddr and ``--expected-genesis-hash``,
started with ``--miner --validator --logit-pool``. It is the only miner, so every query
is its work. Queries flow from three requesters; the test asserts, from node 0's view
of the chain, that

1. the newcomer's answers settle verified and its work account counts the tokens;
2. its LStake is then above zero in a later epoch's snapshot (its vote weight, node 0's
   ``status`` LStake table) although genesis gave it none: the weight comes from work;
3. its votes land and are credited (``vote_credits``), and it reports a vote weight itself;
4. it appears in a later epoch's leader schedule and produces a slot that is rooted
   (``leader_slots`` credited on node 0).

Epochs are short (64 slots, leaders rotate every 2) so that "the epoch after it has some"
is tens of seconds. The newcomer's identity is a genesis-funded test user (it has lamports
for fees and bid bonds, and no LStake): a real newcomer is sent lamports by someone first.
Every wait is bounded; every process is a child of this test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.core.crypto import encode_address, sha256, write_keypair_file
from ambient_p2p.devnet.genesis import LOCALNET_CHAIN_ID
from ambient_p2p.devnet.localnet import Localnet, NodeProc
from ambient_p2p.devnet.users import user_keypairs

from .test_join_genesis import ROOT, _env, _wait

#: 64 slots of 800 ms (51 s): the newcomer's work counts two epochs after it is credited.
#: (Four nodes loading the model at once on a loaded machine can produce nothing for a whole
#: epoch; tests/test_newcomer_schedule.py pins that the chain still has leaders after it.)
SLOTS_PER_EPOCH = 64
#: 32 leader terms an epoch: a small LStake share still gets a term within an epoch or two
LEADER_SLOTS = 2
EPOCH_S = SLOTS_PER_EPOCH * 0.8
MAX_TOKENS = 32
PAY = 50
#: the cluster's first node snapshot (64 slots of 800 ms rooted), on a loaded machine
SNAPSHOT_TIMEOUT_S = 300.0
#: the newcomer's snapshot sync, then its model load, calibration and miner registration
MINER_READY_TIMEOUT_S = 400.0
QUERY_TIMEOUT_S = 240.0
#: first verified answer settled (auction windows + serve + the pool's verdicts) and rooted
WORK_TIMEOUT_S = 400.0
#: from work credited to a vote weight: the snapshot of epoch E governs epoch E + 2, and the
#: root must cross into it (at most 3 epochs, twice that on a loaded machine)
WEIGHT_TIMEOUT_S = 6 * EPOCH_S
VOTES_TIMEOUT_S = 200.0
#: a leader slot is drawn LStake-weighted: the newcomer's share grows with every epoch of
#: work and votes; 10 epochs bound the wait
LEAD_TIMEOUT_S = 10 * EPOCH_S


def _status(node: NodeProc) -> dict[str, Any] | None:
    if not node.alive():
        return None
    try:
        return node.control({"cmd": "status"}, timeout_s=10.0)
    except (OSError, ValueError):
        return None


def _row(net: Localnet, who: str) -> dict[str, int]:
    st = _status(net.nodes[0])
    if st is None:
        return {}
    row: dict[str, int] = st["consensus"]["lstake"].get(who, {})
    return row


def _work(net: Localnet, who: str) -> dict[str, int]:
    st = _status(net.nodes[0])
    w = (st or {}).get("roles", {}).get("pool", {}).get("work") or {}
    out: dict[str, int] = w.get(who, {})
    return out


class _Requesters:
    """Three requesters posting queries through node 0 until stopped (one at a time each)."""

    def __init__(self, net: Localnet, keys: list[Path]) -> None:
        self.net, self.keys = net, keys
        self.stop = threading.Event()
        self.outcomes: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(len(keys))]

    def _loop(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                r = subprocess.run([sys.executable, "-m", "ambient_p2p", "query", f"Name a fruit. ({i}/{n})",
                                    "--max-tokens", str(MAX_TOKENS), "--pay", str(PAY), "--within", "60",
                                    "--node", str(self.net.nodes[i].data_dir), "--keypair", str(self.keys[i]),
                                    "--json"], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, env=_env())
                lines = r.stdout.strip().splitlines()
                self.outcomes.append(json.loads(lines[-1]).get("status", "?") if lines else f"rc={r.returncode}")
            except (subprocess.TimeoutExpired, ValueError) as exc:
                self.outcomes.append(type(exc).__name__)

    def __enter__(self) -> _Requesters:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(QUERY_TIMEOUT_S + 10)


@pytest.mark.slow
def test_a_newcomer_earns_lstake_from_work_then_votes_and_leads(tmp_path: Path) -> None:
    users = user_keypairs(LOCALNET_CHAIN_ID)
    keys = []
    for i, u in enumerate(users):
        keys.append(tmp_path / f"user{i}.json")
        write_keypair_file(keys[-1], u)
    with open(tmp_path / "nodes.log", "w") as log, Localnet(
            tmp_path / "net", 4, validator=True, echo=log, extra_args=["--logit-pool"],
            genesis_kw={"slots_per_epoch": SLOTS_PER_EPOCH, "leader_slots": LEADER_SLOTS}) as net:
        newcomer_key = users[3]
        me = encode_address(newcomer_key.pubkey)
        assert net.genesis is not None
        assert newcomer_key.pubkey not in {n.identity for n in net.genesis.bootstrap_nodes}

        def snapshots() -> list[Any]:
            return [(s or {}).get("consensus", {}).get("ledger", {}).get("snapshots") for s in map(_status, net.nodes)]

        # 3 of 4 equal stakes attest a snapshot (spec/join.md); without one the newcomer would
        # repair from genesis, which item 3 does not need, but a snapshot start is the real path
        _wait(lambda: sum(bool(x) for x in snapshots()) >= 3, SNAPSHOT_TIMEOUT_S, "node snapshots on 3 nodes",
              snapshots)
        gh = sha256(net.genesis_path.read_bytes()).hex()
        d = tmp_path / "newcomer"
        proc = subprocess.Popen([sys.executable, "-m", "ambient_p2p", "join", net.bootstrap_addr(), "--ledger", str(d),
                                 "--keypair", str(keys[3]), "--expected-genesis-hash", gh, "--validator", "--miner",
                                 "--miner-price", "20", "--logit-pool", "--no-rpc", "--status-interval", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                start_new_session=True, cwd=ROOT)
        node = NodeProc(99, d, proc, log)
        trace: dict[str, Any] = {}

        def where() -> Any:
            return {"row": _row(net, me), "work": _work(net, me), "newcomer": node.lines[-6:], **trace}

        try:
            def mining() -> bool:
                st = _status(node)
                return st is not None and st.get("roles", {}).get("miner", {}).get("state") == "mining"

            _wait(mining, MINER_READY_TIMEOUT_S, "the newcomer to register as a miner",
                  lambda: (node.lines[-8:], _status(node)))
            trace["start"] = next((ln for ln in node.lines if "join: snapshot of slot" in ln or "from genesis" in ln),
                                  None)
            assert _row(net, me).get("weight", 0) == 0  # genesis gave it nothing
            with _Requesters(net, keys[:3]) as req:
                _wait(lambda: _work(net, me).get("total_tokens_served", 0) > 0, WORK_TIMEOUT_S,
                      "a verified answer of the newcomer", lambda: (where(), req.outcomes))
                trace["work_at"] = _status(net.nodes[0])["consensus"]["processed"]  # type: ignore[index]
                # 2: LStake from work: the snapshot of a later epoch gives it a vote weight
                _wait(lambda: _row(net, me).get("weight", 0) > 0, WEIGHT_TIMEOUT_S,
                      "the newcomer's LStake to weigh its votes", where)
                # 3: its votes land and are credited; it knows its own weight
                _wait(lambda: _row(net, me).get("vote_credits", 0) > 0, VOTES_TIMEOUT_S,
                      "the newcomer's votes to land", where)
                own = _status(node)
                assert own is not None and own["roles"]["validator"]["weight"] > 0, own
                # 4: a later epoch's schedule names it, and a slot it produced is rooted
                _wait(lambda: _row(net, me).get("leader_slots", 0) > 0, LEAD_TIMEOUT_S,
                      "a rooted slot led by the newcomer", lambda: (where(), req.outcomes))
            own = _status(node)
            assert own is not None and own["consensus"]["produced"] > 0, own["consensus"] if own else None
            chain = _status(net.nodes[0])["roles"]["pool"]["chain"]  # type: ignore[index]
            print(json.dumps({"newcomer": where(), "queries": req.outcomes, "chain": chain}))
            assert chain["accepted"] >= 1 and chain["rejected"] == 0, chain  # an honest miner is never rejected
        finally:
            node.stop(signal.SIGTERM)
