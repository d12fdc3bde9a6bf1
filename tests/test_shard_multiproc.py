"""Sharded SmolLM2 across real processes (issue 21 acceptance, spec/shard.md): stage servers
``python -m ambient_p2p.node.stage_server --layers A:B`` on 127.0.0.1, each loading only its
layers, driven by a RouteDriver in this process.

* three processes serving 0:10, 10:20, 20:30 answer with logits bitwise equal to the
  unsharded model on this machine;
* killing the 10:20 process mid-generation: the driver replays its frames on a spare 10:20
  process and the answer (tokens, fingerprints) is identical;
* a 10:20 process whose weights carry 1e-3 relative noise is blamed as stage 1 at every
  checked position, its neighbours never; the honest route is never rejected.

Slow (four to five model-loading processes); every wait is bounded, processes are ended by
pid."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from ambient_p2p.core import shard as sh
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.model import runner, stages
from ambient_p2p.net.host import HostConfig, open_host
from ambient_p2p.node.route import RouteDriver, StageEndpoint
from tests.net_helpers import run_trio

pytestmark = [pytest.mark.slow, pytest.mark.integration]

START_TIMEOUT_S = 180.0
QUERY = bytes(range(32))
PROMPT = "Name three rivers in Europe."


class StageProc:
    def __init__(self, layers: str, seed: int, *extra: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ambient_p2p.node.stage_server", "--layers", layers, "--key-seed", str(seed), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.layers = layers
        self.info: dict[str, Any] = {}
        done = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line:
                self.info = json.loads(line)
            done.set()

        threading.Thread(target=read, daemon=True).start()
        self._ready = done

    def wait_ready(self) -> StageEndpoint:
        assert self._ready.wait(START_TIMEOUT_S) and self.info, f"stage {self.layers} did not start"
        a, b = stages.parse_range(self.layers)
        return StageEndpoint(self.info["peer"], tuple(self.info["addrs"]), a, b, 10.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL this pid only
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)


@contextlib.contextmanager
def procs(specs: list[tuple[str, int, tuple[str, ...]]]) -> Iterator[list[StageProc]]:
    ps = [StageProc(layers, seed, *extra) for layers, seed, extra in specs]
    try:
        yield ps
    finally:
        for p in ps:
            p.stop()


@pytest.fixture(scope="module")
def lm() -> runner.LoadedModel:
    torch.set_num_threads(1)
    return runner.load_model()


def _reference_logits(lm: runner.LoadedModel, prompt: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    from transformers import DynamicCache

    cache, ids, logits, toks = DynamicCache(), torch.tensor([prompt]), [], []
    with torch.inference_mode():
        for _ in range(n):
            out = lm.model(input_ids=ids, use_cache=True, **runner.cache_kwargs(lm.model, cache))
            logits.append(out.logits[0, -1].clone())
            toks.append(int(out.logits[0, -1].argmax()))
            ids = torch.tensor([[toks[-1]]])
    return toks, logits


def test_three_processes_bitwise_and_a_killed_stage_is_replaced(lm: runner.LoadedModel) -> None:
    prompt = lm.encode_prompt(PROMPT)
    n = 12
    toks, ref = _reference_logits(lm, prompt, n)
    gen = runner.generate(lm, prompt, n, stop_at_eos=False)
    assert gen.output == toks
    with procs([("0:10", 0, ()), ("10:20", 1, ()), ("20:30", 2, ()), ("10:20", 3, ())]) as ps:
        eps = [p.wait_ready() for p in ps]
        eps[3] = StageEndpoint(eps[3].peer, eps[3].addrs, 10, 20, 5.0)  # the spare is slower: not on the route

        async def main() -> None:
            async with open_host(Keypair.deterministic("driver", 1), HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))) as h:
                d = RouteDriver(h, eps, total_layers=30, model_id=lm.model_id)
                ans = await d.generate(QUERY, prompt, n, want_logits=True)
                assert ans.output == toks and not ans.replacements
                assert all(torch.equal(torch.from_numpy(a), b) for a, b in zip(ans.logits, ref, strict=True))
                assert ans.fps == gen.fingerprints
                assert stages.blame_route(lm, ans.commitments, ans.prompt, ans.output,
                                          {x: ans.fps[x] for x in range(n)}, {x: ans.open(x) for x in range(n)}).ok

                def kill(x: int, _tok: int) -> None:
                    if x == 5:
                        ps[1].stop()

                ans2 = await RouteDriver(h, eps, total_layers=30, model_id=lm.model_id).generate(
                    QUERY[::-1], prompt, n, on_token=kill)
                assert ans2.output == toks and ans2.fps == gen.fingerprints
                assert [(k, new) for k, _o, new in ans2.replacements] == [(1, eps[3].peer)]
                assert ans2.commitments[1].stage == Keypair.deterministic("stage", 3).pubkey

        run_trio(main, 600)


def test_perturbed_middle_stage_is_blamed_honest_route_never(lm: runner.LoadedModel) -> None:
    prompt = lm.encode_prompt("Write one sentence about the sea.")
    n = 12
    with procs([("0:10", 0, ()), ("10:20", 5, ("--perturb", "1e-3")), ("20:30", 2, ()), ("10:20", 1, ())]) as ps:
        eps = [p.wait_ready() for p in ps]

        async def main() -> None:
            async with open_host(Keypair.deterministic("driver", 2), HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))) as h:
                cheat = await RouteDriver(h, eps[:3], total_layers=30, model_id=lm.model_id).generate(QUERY, prompt, n)
                honest = await RouteDriver(h, [eps[0], eps[3], eps[2]], total_layers=30,
                                           model_id=lm.model_id).generate(QUERY, prompt, n)
            for x in range(n):
                b = stages.blame_route(lm, cheat.commitments, cheat.prompt, cheat.output, {x: cheat.fps[x]},
                                       {x: cheat.open(x)})
                assert (b.who, b.reason, b.stage) == (sh.Blamed.STAGE, sh.ShardReason.BOUNDARY_OUT_OF_TOLERANCE, 1), x
                ok = stages.blame_route(lm, honest.commitments, honest.prompt, honest.output, {x: honest.fps[x]},
                                        {x: honest.open(x)})
                assert ok.ok, (x, ok)

        run_trio(main, 600)
