"""The PoL fingerprint path's shortcuts change no committed value: the log-normaliser taken
from the top-k's maximum has exactly the bits of ``torch.logsumexp`` (one vocabulary pass
fewer), and generation runs without autograd (inference mode), as the runner intends."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import pol
from ambient_p2p.model import runner


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 60_000),
    st.floats(1e-3, 200.0),
    st.integers(0, 2**31 - 1),
    st.integers(0, 3),
    st.sampled_from([1, 2]),
)
def test_logsumexp_with_max_is_bit_identical(n: int, scale: float, seed: int, neg_inf: int, threads: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * scale
    if n > neg_inf:
        x[:neg_inf] = -math.inf  # masked-out vocabulary entries
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        want = torch.logsumexp(x, dim=0)
        got = runner.logsumexp_with_max(x, torch.topk(x, min(pol.TOP_K, n)).values[0])
    finally:
        torch.set_num_threads(old)
    assert got.dtype == want.dtype
    assert got.item() == want.item() or (math.isnan(got.item()) and math.isnan(want.item()))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_logsumexp_with_max_non_finite_max_falls_back(bad: float) -> None:
    x = torch.tensor([0.5, -1.0, bad])
    want = torch.logsumexp(x, dim=0).item()
    got = runner.logsumexp_with_max(x, torch.tensor(bad)).item()
    assert got == want or (math.isnan(got) and math.isnan(want))


def test_generation_runs_in_inference_mode_and_fingerprints_match_full_softmax() -> None:
    lm = runner.random_model(0)
    seen: list[bool] = []
    handle = lm.model.register_forward_hook(lambda *_: seen.append(torch.is_inference_mode_enabled()))
    try:
        gen = runner.generate(lm, [1, 2, 3, 4], 6, stop_at_eos=False, keep_logprobs=True)
    finally:
        handle.remove()
    assert seen and all(seen)
    # Each committed fingerprint is the reference fingerprint of the full float64 log-softmax
    # at that step (greedy), to the grid.
    for pos, (fp, lps) in enumerate(zip(gen.fingerprints, gen.logprobs, strict=True)):
        ref = pol.candidates_from_logprobs(lps.numpy(), pol.TOP_K)
        assert fp.pos == pos and fp.tok == gen.output[pos] == ref.ids[0]
        assert fp.ids == ref.ids
        assert all(abs(a - b) <= 1 for a, b in zip(fp.lps, ref.lps, strict=True))
