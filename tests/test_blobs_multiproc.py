"""Blobs between real node processes (spec/blobs.md): ``put_blob`` on one
``ambient-p2p run/join`` process, ``get_blob`` on another returns the bytes over libp2p
(``/ambient/blob/1``), verified and cached; expired blobs are pruned on the chain's slot
clock. Every process is started through Localnet (SIGTERM, then SIGKILL on exit) and
every wait is bounded."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from ambient_p2p.core.blobs import token_blob
from ambient_p2p.core.crypto import sha256
from ambient_p2p.devnet.localnet import Localnet, ValidatorLocalnet
from ambient_p2p.node.blobs import BLOB_PRUNE_INTERVAL_S, BLOBS_DIR

pytestmark = pytest.mark.integration


def _put(node: object, data: bytes, keep_until_slot: int) -> dict[str, object]:
    return node.control({"cmd": "put_blob", "data_b64": base64.b64encode(data).decode(),  # type: ignore[attr-defined, no-any-return]
                         "keep_until_slot": keep_until_slot})


def test_put_on_one_node_get_on_another_over_libp2p(tmp_path: Path) -> None:
    prompt = token_blob([int.from_bytes(os.urandom(2), "big") for _ in range(16384)])  # the largest prompt
    h = sha256(prompt)
    with Localnet(tmp_path, 2) as net:
        a, b = net.nodes
        assert net.wait_for(lambda: all(s["peers"] >= 1 for s in net.statuses()), 40), net.statuses()
        assert _put(a, prompt, 10**9) == {"ok": True, "sha256": h.hex(), "bytes": len(prompt)}
        assert (a.data_dir / BLOBS_DIR / f"{h.hex()}.blob").exists()
        r = b.control({"cmd": "get_blob", "sha256": h.hex(), "timeout_s": 30}, timeout_s=60)
        assert r["ok"], (r, b.status()["blobs"])
        assert base64.b64decode(r["data_b64"]) == prompt
        sa, sb = a.status()["blobs"], b.status()["blobs"]
        assert sa["served"] == 1 and sb["fetched"] == 1 and sb["blobs"] == 1 and sb["rejected"] == {}
        # B keeps a verified copy: a second get is local, A is not asked again
        r = b.control({"cmd": "get_blob", "sha256": h.hex(), "timeout_s": 5})
        assert r["ok"] and base64.b64decode(r["data_b64"]) == prompt
        assert b.status()["blobs"]["local_hits"] == 1 and a.status()["blobs"]["served"] == 1
        # nobody holds this one: a clear miss, bounded by the timeout
        miss = b.control({"cmd": "get_blob", "sha256": sha256(b"nobody").hex(), "timeout_s": 5})
        assert miss["ok"] is False and miss["code"] == "not-found"
        assert a.status()["blobs"]["served_missing"] >= 1
        # refusals come back as one error, nothing stored
        big = _put(a, bytes(70_000), 10**9)
        assert big["ok"] is False and big["code"] == "too-large"
        # a blob pinned only until slot 0 is pruned by the node's slot clock
        gone = _put(a, b"short-lived", 0)
        assert gone["ok"]
        assert net.wait_for(lambda: a.status()["blobs"]["pruned"] >= 1, 6 * BLOB_PRUNE_INTERVAL_S)
        st = a.status()["blobs"]
        assert st["blobs"] == 1 and not (a.data_dir / BLOBS_DIR / f"{gone['sha256']}.blob").exists()


def test_blobs_beside_the_validator(tmp_path: Path) -> None:
    """With ``--validator`` the blob service is composed beside the consensus service
    (node/compose.py): both protocols' handlers, both control command sets, both statuses."""
    answer = token_blob(list(range(4096)))  # the largest answer
    with ValidatorLocalnet(tmp_path, 2) as net:
        a, b = net.nodes
        assert net.wait_for(lambda: all(s["peers"] >= 1 for s in net.statuses()), 40), net.statuses()
        assert _put(b, answer, 10**9)["ok"]
        r = a.control({"cmd": "get_blob", "sha256": sha256(answer).hex(), "timeout_s": 30}, timeout_s=60)
        assert r["ok"] and base64.b64decode(r["data_b64"]) == answer, r
        assert a.control({"cmd": "chain"})["ok"]  # the validator's own command still answers
        st = a.status()
        assert st["blobs"]["fetched"] == 1 and "slot" in st["consensus"]
        assert net.wait_for(lambda: all(s["consensus"]["processed"] > 0 for s in net.statuses()), 60)
