"""Snapshot sync on a live multi-process localnet (issue 20, spec/join.md "Snapshot sync"):
4 validators, one attesting a bank hash nobody else rooted (``--snapshot-fault
false-bank-hash``), one serving corrupted chunks (``--snapshot-fault corrupt-chunk``), every
server cutting its snapshot into 1 KiB chunks so that each of them is asked for some. A fifth
node joins with the bootstrap address and the genesis hash: it trusts the snapshot the honest
3/4 of the LStake attest, avoids the corrupting server, installs the snapshot, repairs only
the slots after it and catches up."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.core.crypto import sha256
from ambient_p2p.core.join import CAUGHT_UP_MAX_LAG_SLOTS
from ambient_p2p.devnet.localnet import NodeProc, ValidatorLocalnet
from ambient_p2p.ledger.snapshot import SNAPSHOT_INTERVAL_SLOTS

from .test_join_genesis import ROOT, _cons, _env, _wait

#: The cluster must root past SNAPSHOT_INTERVAL_SLOTS (64) before anyone has a snapshot:
#: ~100 slots of 800 ms, on a loaded 2-core machine up to twice that.
SNAPSHOT_TIMEOUT_S = 300.0
CATCH_UP_TIMEOUT_S = 240.0


@pytest.mark.slow
def test_newcomer_starts_from_the_snapshot_the_supermajority_attests_and_avoids_liars(tmp_path: Path) -> None:
    faults = {2: ["--snapshot-fault", "false-bank-hash"], 3: ["--snapshot-fault", "corrupt-chunk"]}
    with open(tmp_path / "nodes.log", "w") as log, ValidatorLocalnet(
            tmp_path / "net", 4, echo=log, extra_args=["--snapshot-chunk-bytes", "1024"], node_args=faults) as net:

        def snapshots() -> list[Any]:
            out = []
            for n in net.nodes:
                c = _cons(n)
                out.append(None if c is None else c["ledger"]["snapshots"])
            return out

        _wait(lambda: all(snapshots()), SNAPSHOT_TIMEOUT_S, "a node snapshot on every node", snapshots)
        boot = net.bootstrap_addr()
        gh = sha256(net.genesis_path.read_bytes()).hex()
        newcomer = tmp_path / "newcomer"
        proc = subprocess.Popen([sys.executable, "-m", "ambient_p2p", "join", boot, "--ledger", str(newcomer),
                                 "--expected-genesis-hash", gh, "--validator", "--no-rpc", "--status-interval", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                start_new_session=True, cwd=ROOT)
        node = NodeProc(99, newcomer, proc, log)
        try:
            _wait(lambda: any("join: snapshot of slot" in ln for ln in node.lines) or not node.alive()
                  or any("repairing from genesis" in ln for ln in node.lines), 120.0, "the snapshot phase",
                  lambda: node.lines[-10:])
            text = "\n".join(node.lines)
            installed = [ln for ln in node.lines if "join: snapshot of slot" in ln]
            assert installed, text
            slot = int(installed[0].split("join: snapshot of slot ")[1].split()[0])
            assert slot >= SNAPSHOT_INTERVAL_SLOTS
            attested = text.split(" attested by ")[1].split(" LStake")[0].split("/")
            assert 4 * int(attested[0]) == 3 * int(attested[1]), text  # the three that told the truth
            # the corrupting server was asked, caught and avoided
            avoided = [ln for ln in node.lines if ln.startswith("warning: snapshot servers avoided")]
            assert avoided and net.keys[3].pubkey.hex() in avoided[0] and "chunk-mismatch" in avoided[0], text
            assert net.keys[2].pubkey.hex() not in avoided[0]  # the liar was never a server of the trusted one
            assert any(ln.startswith("join: snapshot ") and "KiB/" in ln for ln in node.lines)

            def lag() -> int | None:
                mine, theirs = _cons(node), _cons(net.nodes[0])
                if mine is None or theirs is None:
                    return None
                return int(theirs["processed"]) - int(mine["processed"])

            _wait(lambda: (x := lag()) is not None and x <= CAUGHT_UP_MAX_LAG_SLOTS, CATCH_UP_TIMEOUT_S,
                  "the newcomer to catch up", lambda: (lag(), node.lines[-5:]))
            c = _cons(node)
            assert c is not None and c["ledger"]["snapshot_slot"] == slot
            # it replayed from the snapshot, not from genesis: no slot at or below it was replayed
            chain = node.control({"cmd": "chain"}, timeout_s=20.0)
            roots = sorted(int(s) for s, _h in chain["roots"])
            assert roots and roots[0] >= slot, roots[:5]
        finally:
            node.stop(signal.SIGTERM)
