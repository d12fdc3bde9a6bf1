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


def _logit_row(n: int, scale: float, seed: int, neg_inf: int, *, ties: bool = False) -> torch.Tensor:
    """A seeded row of ``n`` logits; ``ties`` rounds them (exact ties inside and across
    blocks); the first ``neg_inf`` entries masked out (-inf) when the row is longer."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale
    if ties:
        x = torch.round(x)
    if n > neg_inf:
        x[:neg_inf] = -math.inf  # masked-out vocabulary entries
    return x


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 60_000),
    st.floats(1e-3, 200.0),
    st.integers(0, 2**31 - 1),
    st.integers(0, 3),
    st.sampled_from([1, 2]),
)
def test_logsumexp_with_max_is_bit_identical(n: int, scale: float, seed: int, neg_inf: int, threads: int) -> None:
    x = _logit_row(n, scale, seed, neg_inf)
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


# --- The compiled kernel (core/_native_pol.c, the CPU default where built) -----------------

try:
    from ambient_p2p.core import _native_pol as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None  # type: ignore[assignment]
needs_native = pytest.mark.skipif(_native is None, reason="PoL kernel not built (scripts/setup.sh)")

#: what spec/pol.md ("Fingerprint") allows the miner's normaliser to deviate from float64
NORMALISER_TOLERANCE_NATS = 1e-6


def _lse64(x: torch.Tensor) -> float:
    d = x.double()
    m = float(d.max())
    return m + math.log(float(torch.exp(d - m).sum()))


@needs_native
@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 60_000),
    st.floats(1e-3, 200.0),
    st.integers(0, 2**31 - 1),
    st.integers(0, 3),
    st.booleans(),
    st.integers(1, 64),
)
def test_native_fingerprint_is_the_exact_top_k_and_the_float64_normaliser(
    n: int, scale: float, seed: int, neg_inf: int, ties: bool, k: int
) -> None:
    """Top-k values are torch.topk's (largest first, the first id is torch.argmax's first
    occurrence), ids distinct and holding those values; the log-normaliser is within 1e-6
    nats of the float64 definition; each value is float64(x[id]) - lse."""
    k = min(k, n)
    x = _logit_row(n, scale, seed, neg_inf, ties=ties)
    res = _native.fingerprint(x.data_ptr(), n, k)
    assert res is not None
    ids, lps = res
    assert len(ids) == len(lps) == k == len(set(ids))
    want = torch.topk(x, k).values
    assert torch.equal(x[list(ids)], want)
    assert ids[0] == int(torch.argmax(x))
    if not ties:
        assert list(ids) == torch.topk(x, k).indices.tolist() or len(set(x.tolist())) < n
    lse = float(x[ids[0]]) - lps[0]
    assert abs(lse - _lse64(x)) <= NORMALISER_TOLERANCE_NATS
    assert all(lp == float(x[i]) - lse for i, lp in zip(ids, lps, strict=True))


@needs_native
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20_000), st.integers(0, 2**31 - 1), st.booleans())
def test_native_argmax_and_its_scratch_give_the_same_fingerprint(n: int, seed: int, ties: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 5
    if ties:
        x = torch.round(x)
    k = min(pol.TOP_K, n)
    scratch = bytearray(_native.scratch_size(n))
    assert _native.argmax(x.data_ptr(), n, scratch) == _native.argmax(x.data_ptr(), n) == int(torch.argmax(x))
    assert _native.fingerprint(x.data_ptr(), n, k, scratch) == _native.fingerprint(x.data_ptr(), n, k)


@needs_native
def test_native_scratch_of_another_row_and_bad_arguments_are_refused() -> None:
    a, b = torch.randn(4096), torch.randn(4096)
    scratch = bytearray(_native.scratch_size(4096))
    _native.argmax(a.data_ptr(), 4096, scratch)
    with pytest.raises(ValueError, match="another row"):
        _native.fingerprint(b.data_ptr(), 4096, 8, scratch)
    with pytest.raises(ValueError, match="another row"):
        _native.fingerprint(a.data_ptr(), 4000, 8, scratch)
    with pytest.raises(ValueError, match="scratch"):
        _native.argmax(a.data_ptr(), 4096, bytearray(8))
    with pytest.raises(BufferError):
        _native.argmax(a.data_ptr(), 4096, b"read-only")
    for k in (0, 65, 4097):
        with pytest.raises(ValueError, match="k <= 64"):
            _native.fingerprint(a.data_ptr(), 4096, k)
    with pytest.raises(ValueError, match="non-null address"):
        _native.fingerprint(0, 4096, 8)


@needs_native
@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("where", [0, 200, 4095])
def test_native_non_finite_row_gives_no_fingerprint(bad: float, where: int) -> None:
    x = torch.randn(4096)
    x[where] = bad
    assert _native.fingerprint(x.data_ptr(), 4096, 8) is None
    assert _native.fingerprint(torch.full((300,), -math.inf).data_ptr(), 300, 8) is None
    # runner.top_logprobs then takes the torch path, whose values are not finite (the
    # quantization rejects a NaN log-prob)
    _ids, lps = runner.top_logprobs(x, 8)
    assert not all(math.isfinite(v) for v in lps)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 49_151), min_size=8, max_size=8, unique=True),
                          st.lists(st.floats(-40.0, 1e-6), min_size=8, max_size=8)), min_size=1, max_size=20))
def test_candidates_batch_equals_candidates_from_top(rows: list[tuple[list[int], list[float]]]) -> None:
    assert runner.candidates_batch(rows) == [pol.candidates_from_top(i, v) for i, v in rows]


_u32 = st.one_of(st.integers(0, 30), st.integers(0, 300), st.integers(0, 70_000), st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.lists(_u32, min_size=n, max_size=n),
                                                      st.lists(_u32, min_size=n, max_size=n))), _u32, _u32)
def test_leaf_bytes_is_the_canonical_encoding(cand: tuple[list[int], list[int]], pos: int, tok: int) -> None:
    from ambient_p2p.core.codec import decode, encode

    fp = pol.LogitFingerprint(pos=pos, tok=tok, ids=tuple(cand[0]), lps=tuple(cand[1]))
    assert pol.leaf_bytes(fp) == encode(fp)
    assert decode(pol.leaf_bytes(fp), pol.LogitFingerprint) == fp


@pytest.mark.parametrize(("bad", "reason"), [(-1, "out-of-range"), (2**32, "out-of-range"), (True, "wrong-type")])
def test_leaf_bytes_out_of_range_fails_like_encode(bad: object, reason: str) -> None:
    from ambient_p2p.core.codec import EncodeError, encode

    fp = pol.LogitFingerprint(pos=0, tok=1, ids=(1, bad), lps=(0, 3))  # type: ignore[arg-type]
    for f in (encode, pol.leaf_bytes):
        with pytest.raises(EncodeError, match=reason):
            f(fp)


def test_native_and_torch_paths_agree_on_a_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path and the torch path (the fallback without the kernel, and on other
    devices) emit the same greedy tokens and fingerprints within one grid unit."""
    cfg = dict(runner.TINY_CONFIG, vocab_size=8192)
    lm = runner.random_model(5, config=cfg)
    native = runner.generate(lm, [1, 2, 3, 4], 20, stop_at_eos=False)
    monkeypatch.setattr(runner, "_native_pol", None)
    fallback = runner.generate(lm, [1, 2, 3, 4], 20, stop_at_eos=False)
    assert native.output == fallback.output
    for a, b in zip(native.fingerprints, fallback.fingerprints, strict=True):
        assert a.tok == b.tok and set(a.ids) == set(b.ids)
        da, db = dict(zip(a.ids, a.lps, strict=True)), dict(zip(b.ids, b.lps, strict=True))
        assert all(abs(da[i] - db[i]) <= 1 for i in da)


_POLY_CHECK = """
import math, torch
from ambient_p2p.core import _native_pol as k
g = torch.Generator().manual_seed(7)
worst = 0.0
for n, scale in [(49_152, 4.0), (49_152 + 37, 30.0), (300, 1.0), (5, 0.01), (60_000, 200.0)]:
    x = torch.randn(n, generator=g) * scale
    ids, lps = k.fingerprint(x.data_ptr(), n, min(8, n))
    d = x.double(); m = float(d.max())
    worst = max(worst, abs(float(x[ids[0]]) - lps[0] - (m + math.log(float(torch.exp(d - m).sum())))))
print(worst)
"""


@needs_native
def test_native_polynomial_exp_path_meets_the_same_bound() -> None:
    """The exp used on CPUs without AVX-512 (forced here by AMBIENT_POL_EXP=poly, read once
    per process, hence the subprocess) keeps the normaliser within the same bound."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _POLY_CHECK], env={**os.environ, "AMBIENT_POL_EXP": "poly"},
                         capture_output=True, text=True, timeout=300, check=True)
    assert 0.0 <= float(out.stdout.strip()) <= NORMALISER_TOLERANCE_NATS
