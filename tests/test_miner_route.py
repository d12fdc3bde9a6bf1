"""A route miner (``--miner --route``, spec/shard.md "Route drivers") starts without the
model's weights: ``runner.load_model`` is made to fail, and the miner still comes up with
the model id, layer count and eos from ``model/stages.py model_meta``, measures its speed
by calibration generations through real stage servers (in-process libp2p hosts, tiny seeded
model), and proves a query through the route with the same bytes as the unsharded miner.
Without a reachable route it bids with the documented fallback speed. Every wait is bounded."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trio

from ambient_p2p.core import pol
from ambient_p2p.core.codec import encode
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.model import runner, stages
from ambient_p2p.node import miner as M
from tests.net_helpers import run_trio
from tests.test_shard import cluster

SEED = 5
SPEC = f"random:{SEED}"


def _no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a route miner loaded the model's weights")

    for name in ("load_model", "load_gguf", "random_model"):
        monkeypatch.setattr(runner, name, refuse)
    monkeypatch.setattr(stages, "random_model", refuse)


def _validator(host: Any, tmp_path: Path) -> Any:
    return SimpleNamespace(kp=Keypair.deterministic("miner", 0), slot_ms=400, loaded=False,
                           frozen_event=trio.Event(), data_dir=tmp_path, banks={},
                           cons=SimpleNamespace(processed_slot=lambda: 0),
                           port=SimpleNamespace(node=SimpleNamespace(host=host)))


async def _started(svc: M.MinerService, nursery: trio.Nursery) -> None:
    nursery.start_soon(svc.run)
    with trio.fail_after(60):
        while svc.book is None:
            assert not svc.state.startswith("model-failed"), svc.state
            await trio.sleep(0.05)


def test_a_route_miner_starts_without_weights_and_calibrates_through_the_route(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    lm = runner.load_model(SPEC)  # the reference the stages are cut from (before the patch)
    parts = [(0, 1), (1, 2)]
    prompt, n = [7, 8, 9, 10, 11, 12], 6
    ref = encode(runner.prove(lm, Keypair.deterministic("miner", 0), prompt, n)[0])
    _no_weights(monkeypatch)

    async def main() -> None:
        async with cluster(lm, parts) as (eps, _scopes, servers, dh):
            route = tuple(f"{e.start}:{e.end}@{e.addrs[0]}" for e in eps)
            svc = M.MinerService(_validator(dh, tmp_path), M.MinerOptions(model=SPEC, route=route), blobs=None)  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:
                await _started(svc, nursery)
                assert svc.lm is None and svc.meta is not None and svc.route_calibrated
                book = svc.book
                assert book is not None and book.cfg.model_id == lm.model_id
                assert svc.meta.total_layers == 2 and svc.meta.eos_token_id == lm.eos_token_id
                # the calibration ran through both stages: warm-up 2 + 1 + CALIBRATION_TOKENS frames each
                assert all(s.stats.frames == 2 + 1 + M.CALIBRATION_TOKENS for s in servers)
                assert all(s.sessions == {} for s in servers)
                assert 0 < book.speed.ms_per_output_token < M.ROUTE_FALLBACK_SPEED_MS_PER_TOKEN
                assert book.speed.ms_per_prompt_token > 0
                st = svc.status()
                assert st["model"] == lm.name and st["model_id"] == lm.model_id.hex() and st["route_calibrated"]
                # a recalibration (the "declined as too slow" rule) measures the route again
                await svc._recalibrate(None)
                assert svc.recalibrations == 1 and svc.route_calibrated
                assert all(s.stats.frames == 2 * (2 + 1 + M.CALIBRATION_TOKENS) for s in servers)
                # a won query through the route: the unsharded miner's proof, byte for byte
                q = SimpleNamespace(max_output_tokens=n, temp_milli=0, sample_seed=pol.ZERO_HASH)
                path = tmp_path / "proof.cbor"
                job = await svc._prove_route(prompt, q, b"q" * 32, path)  # type: ignore[arg-type]
                assert path.read_bytes() == ref and len(job.route) == 2
                nursery.cancel_scope.cancel()

    run_trio(main, 180)


def test_a_route_miner_without_a_reachable_route_bids_with_the_fallback_speed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_weights(monkeypatch)
    monkeypatch.setattr(M, "ROUTE_CALIBRATION_TIMEOUT_S", 2.5)
    route = ("0:2@/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",)

    async def main() -> None:
        svc = M.MinerService(_validator(None, tmp_path), M.MinerOptions(model=SPEC, route=route), blobs=None)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await _started(svc, nursery)  # no libp2p host: every try fails, bounded by the timeout
            assert svc.lm is None and not svc.route_calibrated and svc.book is not None
            assert svc.book.speed.ms_per_output_token == M.ROUTE_FALLBACK_SPEED_MS_PER_TOKEN
            assert svc.status()["route_calibrated"] is False
            nursery.cancel_scope.cancel()

    run_trio(main, 60)
