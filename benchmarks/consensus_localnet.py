"""Consensus benchmark on a 4-node localnet (issue 6): confirmation latency (p50/p95 from
the including leader's receipt of a transfer to that slot being confirmed at the leader)
and slot rates (produced / finalized slots per second) relative to the configured slot
time.

    cd <repo> && python benchmarks/consensus_localnet.py --seconds 60 --tps 4 [--slot-ms 800]

Transfers between the deterministic localnet test users are submitted to every node (so
whichever node leads includes them; "leader receipt" is the submit time at that leader).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ambient_p2p.ledger.producer import transfer_tx  # noqa: E402
from ambient_p2p.devnet.localnet import ValidatorLocalnet  # noqa: E402
from ambient_p2p.devnet.users import user_keypairs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tps", type=float, default=4.0)
    ap.add_argument("--slot-ms", type=int, default=800)
    ap.add_argument("--nodes", type=int, default=4)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-consensus-"))
    log = open(root / "nodes.log", "w")  # noqa: SIM115
    net = ValidatorLocalnet(root, args.nodes, echo=log, genesis_kw={"tick_duration_us": args.slot_ms * 125})
    rng = random.Random(1)
    with net:
        users = user_keypairs(net.chain_id)
        # wait for the chain to finalize something first
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            st = net.nodes[0].control({"cmd": "status"})["consensus"]
            if st["finalized_slots"] > 0:
                break
            time.sleep(1)
        s0 = [n.control({"cmd": "status"})["consensus"] for n in net.nodes]
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < args.seconds:
            st = net.nodes[0].control({"cmd": "status"})["consensus"]
            info = net.nodes[0].control({"cmd": "slot_info", "slot": st["processed"]})
            if info.get("last_blockhash"):
                a, b = rng.sample(range(len(users)), 2)
                tx = transfer_tx(users[a], users[b].pubkey, rng.randint(1, 1000), bytes.fromhex(info["last_blockhash"]))
                for n in net.nodes:
                    n.control({"cmd": "submit_tx", "tx_hex": tx.hex()})
                sent += 1
            time.sleep(1.0 / args.tps)
        time.sleep(10 * args.slot_ms / 1000)
        dt = time.monotonic() - t0
        s1 = [n.control({"cmd": "status"})["consensus"] for n in net.nodes]
    slot_rate = 1000.0 / args.slot_ms
    out = {
        "nodes": args.nodes,
        "slot_ms": args.slot_ms,
        "seconds": round(dt, 1),
        "transfers_sent": sent,
        "inclusions_counting_forks": sum(b["txs_included"] - a["txs_included"] for a, b in zip(s0, s1, strict=True)),
        "confirm_latency_ms_per_leader": [b["confirm_latency_ms"] for b in s1],
        "clock_slots_per_s": round(slot_rate, 3),
        "produced_slots_per_s": round(sum(b["produced"] - a["produced"] for a, b in zip(s0, s1, strict=True)) / dt, 3),
        "finalized_slots_per_s": round((s1[0]["finalized_slots"] - s0[0]["finalized_slots"]) / dt, 3),
    }
    out["produced_vs_clock"] = round(out["produced_slots_per_s"] / slot_rate, 3)
    out["finalized_vs_clock"] = round(out["finalized_slots_per_s"] / slot_rate, 3)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
