"""A transfer submitted through the TPU path (spec/tpu.md) on a real multi-process
validator localnet (3 processes on 127.0.0.1) finalizes: the submitting node sends it to
the leaders over ``/ambient/tpu/1`` (acknowledged batches, no gossip fallback), the chain
finalizes it, the receiver's balance rises by the amount, a copy sent again is refused as a
duplicate or already processed, and a forged copy is refused with ``bad-signature``. Every
wait is bounded; every process is a child of the Localnet context manager."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ambient_p2p.bench.chain import presign
from ambient_p2p.devnet.localnet import Localnet
from ambient_p2p.devnet.users import user_keypairs

#: First finalized slot on a loaded 2-core machine, then the transfer's finalization.
WARMUP_TIMEOUT_S = 240.0
FINALIZE_TIMEOUT_S = 120.0


def _wait(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    return False


def test_transfer_via_tpu_finalizes(tmp_path: Path) -> None:
    with Localnet(tmp_path, 3, validator=True) as net:
        assert _wait(lambda: net.nodes[0].status()["consensus"]["finalized_slots"] > 0, WARMUP_TIMEOUT_S)
        users = user_keypairs(net.chain_id)
        c = net.nodes[2].status()["consensus"]
        bh = bytes.fromhex(net.nodes[2].control({"cmd": "slot_info", "slot": c["processed"]})["last_blockhash"])
        (tx,) = presign(users, 1, bh, start=7)  # users[3] -> users[0], 2 lamports
        to = users[0].address
        before = net.nodes[0].control({"cmd": "balance", "address": to})["lamports"]
        r = net.nodes[2].control({"cmd": "submit_tx", "tx_hex": tx.hex()})
        assert r["ok"] and r["admitted"] == 1 and r["queued"] == 1, r
        sig = tx[1:65].hex()
        assert _wait(lambda: net.nodes[0].control({"cmd": "tx_status", "sigs_hex": [sig]})["status"] == ["finalized"],
                     FINALIZE_TIMEOUT_S)
        assert net.nodes[0].control({"cmd": "balance", "address": to})["lamports"] - before >= 2
        tpu = net.nodes[2].status()["tpu"]
        # the batch reached the leaders directly, not by gossip
        assert tpu["gossip_fallback"] == 0 and (tpu["batches_out"] >= 1 or tpu["forward_self"] == 1), tpu
        # sent again: refused before signature work; a forged copy: refused by the signature check
        again = net.nodes[1].control({"cmd": "submit_tx", "tx_hex": tx.hex()})
        assert again["admitted"] == 0 and set(again["refused"]) <= {"duplicate", "already-processed"}, again
        (other,) = presign(users, 1, bh, start=8)
        forged = other[:1] + bytes([other[1] ^ 1]) + other[2:]
        bad = net.nodes[1].control({"cmd": "submit_tx", "tx_hex": forged.hex()})
        assert bad["admitted"] == 0 and bad["refused"] == {"bad-signature": 1}, bad
