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


# --- Batched greedy fingerprints (runner.topk_rows, runner.fingerprint_rows) --------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.sampled_from([64, 128, 4096, 4096 + 64, 8192, 49_152]),
    st.integers(0, 2**31 - 1),
    st.floats(1e-2, 50.0),
    st.booleans(),
)
def test_topk_rows_equals_torch_topk(rows: int, n: int, seed: int, scale: float, ties: bool) -> None:
    """The two-stage top-k returns torch.topk's values (sorted, largest first) and, where
    values are distinct, its indices; on ties, indices of entries holding those values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g) * scale
    if ties:  # coarse values: many exact ties, also across block boundaries
        x = torch.round(x)
    want = torch.topk(x, pol.TOP_K, dim=1)
    values, idx = runner.topk_rows(x.clone(), pol.TOP_K)
    assert torch.equal(values, want.values)
    assert torch.equal(torch.gather(x, 1, idx), values)
    assert all(len(set(r)) == pol.TOP_K for r in idx.tolist())  # no index twice
    if not ties:
        assert torch.equal(idx, want.indices)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 60_000), st.integers(0, 2**31 - 1), st.floats(1e-3, 200.0), st.integers(0, 3))
def test_fingerprint_rows_normaliser_is_bit_identical(rows: int, n: int, seed: int, scale: float, neg_inf: int) -> None:
    """The batched in-place normaliser has, row by row, the bits of torch.logsumexp."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g) * scale
    if n > neg_inf:
        x[:, :neg_inf] = -math.inf
    k = min(pol.TOP_K, n)
    want = [torch.logsumexp(x[r], dim=0).item() for r in range(rows)]
    _idx, values, lse = runner.fingerprint_rows(x.clone(), k)
    assert lse.tolist() == want
    assert torch.equal(values, torch.topk(x, k, dim=1).values)


def test_fingerprint_rows_non_finite_row_falls_back() -> None:
    x = torch.tensor([[0.5, -1.0, math.inf, 2.0] * 64, [0.1, 0.2, 0.3, 0.4] * 64])
    want = torch.logsumexp(x, dim=1).tolist()
    assert runner.fingerprint_rows(x.clone(), 4)[2].tolist() == want


def test_greedy_chunked_fingerprints_match_full_softmax_on_a_large_vocabulary() -> None:
    """With a vocabulary large enough for the two-stage top-k (8,192 entries: 64 blocks) and
    more tokens than one chunk, every committed fingerprint is still the reference one."""
    cfg = dict(runner.TINY_CONFIG, vocab_size=8192)
    lm = runner.random_model(3, config=cfg)
    n = runner.FINGERPRINT_CHUNK + 5
    gen = runner.generate(lm, [1, 2, 3, 4], n, stop_at_eos=False, keep_logprobs=True)
    assert len(gen.fingerprints) == len(gen.output) == n
    assert 0 <= gen.fingerprint_cpu_s <= gen.total_cpu_s
    for pos, (fp, lps) in enumerate(zip(gen.fingerprints, gen.logprobs, strict=True)):
        ref = pol.candidates_from_logprobs(lps.numpy(), pol.TOP_K)
        assert fp.pos == pos and fp.tok == gen.output[pos] == ref.ids[0]
        assert fp.ids == ref.ids
        assert all(abs(a - b) <= 1 for a, b in zip(fp.lps, ref.lps, strict=True))
