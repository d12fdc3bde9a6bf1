"""Measurements behind spec/pol.md: honest drift, honest acceptance, detection of cheating
producers, and the cost figures of ``ambient-p2p bench pol``.

Design of the detection experiment (so its numbers can be trusted and reproduced):

* Every proof is one independent generation from its own prompt (``PROMPTS``, 200+
  distinct short prompts), produced by the *cheating* model with a left-padded batched
  KV-cache loop (:func:`generate_batch`) and committed exactly as a miner would.
* The validator is the honest fp32 model. For each proof it runs ONE forward pass over the
  whole output and records the check result at every position; the verdict for the
  default challenge (``DEFAULT_CHECKED_POSITIONS`` positions from
  :func:`ambient_p2p.core.pol.select_positions`) is then the first failure among the
  challenged positions. A position's result does not depend on which other positions are
  challenged, so this is exactly what :func:`ambient_p2p.model.validate.validate` decides,
  while also giving per-position rates for any other challenge size.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core import crypto, pol
from ..core.codec import encode
from ..model import runner, validate

SUBJECTS = [
    "the moon", "a volcano", "honey bees", "the Roman empire", "rain", "a lighthouse", "chess", "bread",
    "the ocean", "a violin", "glaciers", "electric cars", "the printing press", "owls", "coffee", "deserts",
    "a rainbow", "the internet", "tigers", "paper", "mountains", "a library", "bicycles", "the sun",
    "photosynthesis", "castles", "snow", "a compass", "whales", "gardens", "trains", "clocks",
    "the brain", "copper", "bridges", "penguins", "the wind", "pottery", "a river", "telescopes",
    "salt", "music", "forests", "airplanes", "maps",
]
TEMPLATES = ["Tell me about", "Write one sentence about", "Explain", "A fact about", "Describe"]
DETECTION_CASES = (
    "honest",
    "different-model",
    "noise-1e-3",
    "bf16-producer",
    "int8-weights",
    "int4-weights",
    "prompt-1-token",
    "output-1-token",
    "forged-opening",
)
INT4_GROUP_SIZE = 32
NOISE_REL = 1e-3
CHALLENGE_LABEL = b"ambient/pol-bench-poh/v1\x00"
BENCH_MINER = crypto.Keypair.deterministic("pol-bench-miner", 0)
BENCH_VALIDATOR = crypto.Keypair.deterministic("pol-bench-validator", 0)


def prompts(n: int) -> list[str]:
    """``n`` distinct deterministic prompts (up to len(SUBJECTS) * len(TEMPLATES))."""
    out = [f"{t} {s}." for s in SUBJECTS for t in TEMPLATES]
    if n > len(out):
        raise ValueError(f"at most {len(out)} distinct prompts")
    return out[:n]


# ---------------------------------------------------------------------------------------
# batched generation (the way a busy miner or a cheater produces many proofs)
# ---------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_batch(
    lm: runner.LoadedModel, batch_prompts: Sequence[Sequence[int]], n_new: int, top_k: int = pol.TOP_K, keep_hidden: bool = False
) -> list[tuple[list[int], list[pol.LogitFingerprint], list[torch.Tensor]]]:
    """Greedy, fixed-length, left-padded batched KV-cache generation with fingerprints.
    With ``keep_hidden`` also returns each sequence's final hidden states in TOPLOC's
    layout: [prefill rows of the prompt, then one vector per later step]."""
    from transformers import DynamicCache

    b = len(batch_prompts)
    width = max(len(p) for p in batch_prompts)
    ids = torch.zeros((b, width), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(batch_prompts):
        ids[i, width - len(p) :] = torch.tensor(list(p))
        mask[i, width - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dev = lm.device
    cache = DynamicCache()
    outs: list[list[int]] = [[] for _ in range(b)]
    fps: list[list[pol.LogitFingerprint]] = [[] for _ in range(b)]
    hidden: list[list[torch.Tensor]] = [[] for _ in range(b)]
    step_ids = ids
    for step in range(n_new):
        out = lm.model.model(
            input_ids=step_ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True,
            **runner.cache_kwargs(lm.model.model, cache)
        )
        h = out.last_hidden_state
        if keep_hidden:
            for i, p in enumerate(batch_prompts):
                hidden[i].append(h[i, width - len(p) :].cpu() if step == 0 else h[i, -1].cpu())
        logits = lm.model.lm_head(h[:, -1]).to(torch.float32)
        lse = torch.logsumexp(logits, dim=-1, keepdim=True).to(torch.float64)
        top = torch.topk(logits, top_k, dim=-1)
        vals = (top.values.to(torch.float64) - lse).cpu().tolist()
        idx = top.indices.cpu().tolist()
        toks = []
        for i in range(b):
            cand = pol.candidates_from_top(idx[i], vals[i])
            tok = pol.sample_token(cand, 0, pol.ZERO_HASH, step)
            fps[i].append(pol.make_fingerprint(step, tok, cand))
            outs[i].append(tok)
            toks.append(tok)
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], dim=1)
        pos = pos[:, -1:] + 1
        step_ids = torch.tensor(toks)[:, None]
    return list(zip(outs, fps, hidden, strict=True))


def commit_as(
    honest: runner.LoadedModel, prompt: Sequence[int], output: Sequence[int], fps: Sequence[pol.LogitFingerprint], tier: pol.Tier = pol.Tier.FP32
) -> pol.PolProof:
    """Commit under the honest model's id (what a cheater claims)."""
    return pol.commit(
        BENCH_MINER, model_id=honest.model_id, tier=tier, vocab=honest.vocab_size, top_k=pol.TOP_K,
        temp_milli=0, sample_seed=pol.ZERO_HASH, prompt=prompt, output=output, fps=fps,
    )


# ---------------------------------------------------------------------------------------
# cheating producers
# ---------------------------------------------------------------------------------------
def variant(lm: runner.LoadedModel, transform: Callable[[torch.nn.Module], None], dtype: torch.dtype | None = None) -> runner.LoadedModel:
    """A deep copy of ``lm`` with its weights transformed in place (the copy keeps the
    honest model id: it is what a cheater would claim)."""
    m = copy.deepcopy(lm.model)
    with torch.no_grad():
        transform(m)
    if dtype is not None:
        m = m.to(dtype)
    return dataclasses.replace(lm, model=m, dtype=dtype or lm.dtype)


def _weights(m: torch.nn.Module) -> list[torch.Tensor]:
    """Matrices a quantizer would touch (linear layers and the tied embedding)."""
    return [p for n, p in m.named_parameters() if p.dim() == 2]


def add_noise(rel: float, seed: int = 1) -> Callable[[torch.nn.Module], None]:
    def f(m: torch.nn.Module) -> None:
        g = torch.Generator().manual_seed(seed)
        for p in m.parameters():
            p.mul_(1 + rel * torch.randn(p.shape, generator=g))

    return f


def int8_per_channel(m: torch.nn.Module) -> None:
    """Symmetric int8 with one scale per output row, dequantized back to float32."""
    for w in _weights(m):
        s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
        w.copy_(torch.round(w / s).clamp(-127, 127) * s)


def int4_grouped(m: torch.nn.Module) -> None:
    """Symmetric int4 with one scale per group of INT4_GROUP_SIZE inputs (GPTQ/Q4-like)."""
    for w in _weights(m):
        g = w.reshape(w.shape[0], -1, INT4_GROUP_SIZE)
        s = g.abs().amax(dim=2, keepdim=True).clamp(min=1e-12) / 7
        w.copy_((torch.round(g / s).clamp(-7, 7) * s).reshape(w.shape))


def different_model(lm: runner.LoadedModel, seed: int = 1) -> runner.LoadedModel:
    """Same architecture, seeded random weights (scale matched per tensor)."""

    def f(m: torch.nn.Module) -> None:
        g = torch.Generator().manual_seed(seed)
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * p.std().clamp(min=1e-3) + p.mean())

    return variant(lm, f)


# ---------------------------------------------------------------------------------------
# validation of many proofs: per-position results from one pass per proof
# ---------------------------------------------------------------------------------------
def position_checks(
    lm: runner.LoadedModel, views: Sequence[tuple[pol.PolProof, Sequence[pol.PolOpening] | None]]
) -> list[tuple[list[pol.Check], bool]]:
    """For each ``(proof, openings)`` view of the SAME prompt and output (e.g. one
    commitment per tier), from one shared forward pass: the check result at every
    position, and whether the greedy argmax rule fails anywhere in the output (what
    :func:`ambient_p2p.model.validate.validate` checks at every position of greedy proofs)."""
    first = views[0][0]
    n = first.commitment.num_tokens
    lps = validate.recompute_logprobs(lm, first.prompt, first.output, list(range(n)))
    q = [pol.quantize_logprobs(lps[x]) for x in range(n)]
    gaps = [int(q[x][first.output[x]] - q[x].min()) for x in range(n)]
    results = []
    for proof, openings in views:
        cmt = proof.commitment
        tau = pol.TIERS[pol.Tier(cmt.tier)].tau_units
        greedy_bad = cmt.temp_milli == 0 and max(gaps) > tau
        head = pol.check_commitment(
            cmt, expected_model_id=lm.model_id, expected_vocab=lm.vocab_size, prompt=proof.prompt, output=proof.output
        )
        if not head.ok:
            results.append(([head] * n, greedy_bad))
            continue
        ops = list(openings) if openings is not None else pol.open_positions(proof, range(n))
        out = []
        for p in range(n):
            c = pol.check_opening(cmt, ops[p], p, proof.output)
            if c.ok:
                c = pol.check_token_rule(cmt, ops[p].fp)
            if c.ok:
                c = pol.compare(cmt, ops[p].fp, lps[p])
            out.append(c)
        results.append((out, greedy_bad))
    return results


@dataclass
class CaseResult:
    """Detection (or, for ``honest``, acceptance) figures for one case."""

    case: str
    proofs: int = 0
    positions: int = 0
    failed_positions: int = 0
    rejected_proofs: int = 0  # with the default challenge
    rejected_proofs_bf16_tier: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    max_dev_units: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        devs = sorted(self.max_dev_units) or [0]
        return {
            "case": self.case,
            "proofs": self.proofs,
            "positions": self.positions,
            "position_fail_rate": self.failed_positions / max(1, self.positions),
            "proof_reject_rate": self.rejected_proofs / max(1, self.proofs),
            "proof_reject_rate_bf16_tier": self.rejected_proofs_bf16_tier / max(1, self.proofs),
            "reasons": dict(sorted(self.reasons.items())),
            "median_max_dev_units": statistics.median(devs),
            "seconds": round(self.seconds, 1),
        }


def tally(
    res: CaseResult,
    proof: pol.PolProof,
    checks: Sequence[pol.Check],
    greedy_bad: bool,
    bf16_checks: Sequence[pol.Check],
    bf16_greedy_bad: bool,
    idx: int,
    k: int,
) -> None:
    """Add one proof: the default challenge's verdict is the first failure among the
    challenged positions, else a greedy-rule failure anywhere in the output."""
    cmt = proof.commitment
    poh = crypto.sha256(CHALLENGE_LABEL, idx.to_bytes(4, "big"))
    chosen = pol.select_positions(pol.challenge_seed(poh, BENCH_VALIDATOR.pubkey, cmt.hash()), cmt.num_tokens, k)
    res.proofs += 1
    res.positions += len(checks)
    res.failed_positions += sum(not c.ok for c in checks)
    first_bad = next((checks[p] for p in chosen if not checks[p].ok), None)
    reason = first_bad.reason if first_bad is not None else (pol.Reason.TOKEN_NOT_ARGMAX + " (unopened)" if greedy_bad else None)
    if reason is not None:
        res.rejected_proofs += 1
        res.reasons[reason] = res.reasons.get(reason, 0) + 1
    if bf16_greedy_bad or any(not bf16_checks[p].ok for p in chosen):
        res.rejected_proofs_bf16_tier += 1
    res.max_dev_units.append(max((c.dev_units or 0) for c in checks))


def _bf16_view(proof: pol.PolProof) -> pol.PolProof:
    """The same proof judged under the bf16 tier's tolerance (re-signed, same leaves)."""
    c = proof.commitment
    return pol.commit(
        BENCH_MINER, model_id=c.model_id, tier=pol.Tier.BF16, vocab=c.vocab, top_k=c.top_k, temp_milli=c.temp_milli,
        sample_seed=c.sample_seed, prompt=proof.prompt, output=proof.output, fps=proof.fps,
    )


def run_detection(
    lm: runner.LoadedModel,
    case: str,
    prompt_ids: Sequence[Sequence[int]],
    n_tokens: int,
    k: int,
    batch: int,
    honest_cache: dict[int, tuple[list[int], list[pol.LogitFingerprint]]],
    log: Callable[[str], None] = lambda s: None,
) -> CaseResult:
    """Produce one proof per prompt with the case's cheating strategy; validate each."""
    t0 = time.perf_counter()
    res = CaseResult(case)
    producer: runner.LoadedModel | None = None
    if case == "different-model":
        producer = different_model(lm)
    elif case == "noise-1e-3":
        producer = variant(lm, add_noise(NOISE_REL))
    elif case == "bf16-producer":
        producer = variant(lm, lambda m: None, dtype=torch.bfloat16)
    elif case == "int8-weights":
        producer = variant(lm, int8_per_channel)
    elif case == "int4-weights":
        producer = variant(lm, int4_grouped)
    rng = np.random.default_rng(7)
    gen_prompts = [list(p) for p in prompt_ids]
    if case == "prompt-1-token":
        for p in gen_prompts:
            j = int(rng.integers(0, len(p)))
            p[j] = int((p[j] + 1 + rng.integers(0, lm.vocab_size - 1)) % lm.vocab_size)
    for start in range(0, len(prompt_ids), batch):
        chunk = range(start, min(start + batch, len(prompt_ids)))
        if producer is not None or case == "prompt-1-token":
            made = [(o, f) for o, f, _ in generate_batch(producer or lm, [gen_prompts[i] for i in chunk], n_tokens)]
        else:
            missing = [i for i in chunk if i not in honest_cache]
            if missing:
                for i, r in zip(missing, generate_batch(lm, [prompt_ids[i] for i in missing], n_tokens), strict=True):
                    honest_cache[i] = (r[0], r[1])
            made = [honest_cache[i] for i in chunk]
        for i, (output, fps) in zip(chunk, made, strict=True):
            openings = None
            if case == "output-1-token":
                j = int(rng.integers(0, n_tokens))
                output = list(output)
                fps = list(fps)
                output[j] = fps[j].ids[1]  # the runner-up: the most plausible edit
                fps[j] = dataclasses.replace(fps[j], tok=output[j])
            proof = commit_as(lm, prompt_ids[i], output, fps)
            if case == "forged-opening":
                # the miner answers with fingerprints it did not commit to: values that
                # would match a (hypothetical) different run, with the honest Merkle paths
                openings = [
                    dataclasses.replace(op, fp=dataclasses.replace(op.fp, lps=tuple(v + 1 for v in op.fp.lps)))
                    for op in pol.open_positions(proof, range(n_tokens))
                ]
            bproof = _bf16_view(proof)
            bops = None if openings is None else [dataclasses.replace(o, cmt=bproof.commitment.hash()) for o in openings]
            (checks, gbad), (bchecks, bgbad) = position_checks(lm, [(proof, openings), (bproof, bops)])
            tally(res, proof, checks, gbad, bchecks, bgbad, i, k)
        log(f"  {case}: {res.proofs}/{len(prompt_ids)} proofs, {res.rejected_proofs} rejected")
    res.seconds = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------
# honest drift (measurements (a)-(e) in spec/pol.md)
# ---------------------------------------------------------------------------------------
@dataclass
class Drift:
    """Max |delta log-prob| over the committed top-k ids (what is compared) and over the
    whole vocabulary, in nats, plus the largest quantized deviation in grid units."""

    name: str
    positions: int
    max_topk_nats: float
    max_vocab_nats: float
    max_units: int
    p999_topk_nats: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def drift(name: str, ref: Sequence[np.ndarray], other: Sequence[np.ndarray], k: int = pol.TOP_K) -> Drift:
    topk_d, vocab_d, units = [], [], 0
    for a, b in zip(ref, other, strict=True):
        ids = np.argsort(-a)[:k]
        topk_d.append(float(np.abs(a[ids] - b[ids]).max()))
        vocab_d.append(float(np.abs(a - b).max()))
        units = max(units, int(np.abs(pol.quantize_logprobs(a[ids]) - pol.quantize_logprobs(b[ids])).max()))
    return Drift(name, len(ref), max(topk_d), max(vocab_d), units, float(np.quantile(topk_d, 0.999)))


def measure_drift(lm: runner.LoadedModel, prompt_ids: Sequence[Sequence[int]], n_tokens: int, log: Callable[[str], None]) -> list[Drift]:
    """(a) runs and thread counts, (b) KV cache vs recompute, (c) padded batch,
    (d) CUDA fp32 when available, (e) bf16 / fp16 recompute against fp32."""
    gens = []
    for p in prompt_ids:
        gens.append(runner.generate(lm, p, n_tokens, stop_at_eos=False, keep_logprobs=True))
    positions = list(range(n_tokens))
    kv = [g.logprobs[i].numpy() for g in gens for i in positions]

    def recompute(model: runner.LoadedModel) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for g in gens:
            r = validate.recompute_logprobs(model, g.prompt, g.output, positions)
            out.extend(r[i] for i in positions)
        return out

    threads = torch.get_num_threads()
    full = recompute(lm)
    results = [drift("(b) KV-cache generation vs full-prefix recompute", kv, full)]
    results.append(drift("(a) same CPU, same threads, two runs", full, recompute(lm)))
    for t in sorted({1, 2, 4} - {threads}):
        torch.set_num_threads(t)
        results.append(drift(f"(a) threads {threads} vs {t}", full, recompute(lm)))
    torch.set_num_threads(threads)
    log("  drift (a)/(b) done")
    padded: list[np.ndarray] = []
    for s in range(0, len(gens), 8):
        grp = gens[s : s + 8]
        for r in validate.recompute_logprobs_padded(lm, [g.prompt for g in grp], [g.output for g in grp], [positions] * len(grp)):
            padded.extend(r[i] for i in positions)
    results.append(drift("(c) batch 1 vs left-padded batch of 8", full, padded))
    if torch.cuda.is_available():
        cuda = dataclasses.replace(lm, model=copy.deepcopy(lm.model).to("cuda"), device=torch.device("cuda"))
        results.append(drift("(d) CPU fp32 vs CUDA fp32", full, recompute(cuda)))
        del cuda
    for dt in (torch.bfloat16, torch.float16):
        low = dataclasses.replace(lm, model=copy.deepcopy(lm.model).to(dt), dtype=dt)
        results.append(drift(f"(e) fp32 vs {str(dt).split('.')[-1]} recompute", full, recompute(low)))
        del low
    log("  drift (c)/(e) done")
    return results


# ---------------------------------------------------------------------------------------
# cost figures
# ---------------------------------------------------------------------------------------
@torch.inference_mode()
def argmax_cpu_us(lm: runner.LoadedModel, prompt: Sequence[int], n_tokens: int, native: bool) -> float:
    """CPU microseconds per token of the greedy argmax alone, right after each decode step
    (where generation takes it, caches cold): ``torch.argmax`` (plain greedy decoding) or
    the compiled pass 1 (the runner's native path). The baseline any greedy decoder pays."""
    from transformers import DynamicCache

    cache = DynamicCache()
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=lm.device)
    total = 0.0
    scratch: bytearray | None = None
    for _ in range(n_tokens):
        out = lm.model(input_ids=ids, use_cache=True, **runner.cache_kwargs(lm.model, cache))
        logits = out.logits[0, -1]
        if native and scratch is None:
            from ..core import _native_pol  # built: the caller asked runner.native_row

            scratch = bytearray(_native_pol.scratch_size(logits.shape[0]))
        c = time.process_time()
        tok = _native_pol.argmax(logits.data_ptr(), logits.shape[0], scratch) if native else int(torch.argmax(logits))
        total += time.process_time() - c
        ids = torch.tensor([[tok]], dtype=torch.long, device=lm.device)
    return total / n_tokens * 1e6


def cost_figures(lm: runner.LoadedModel, prompt: Sequence[int], n_tokens: int, k: int) -> dict[str, Any]:
    """(a) commit overhead, (b) validation time per position vs generation, (c) bytes."""
    runner.generate(lm, prompt, 2)  # warm-up
    proof, gen, commit_s = runner.prove(lm, BENCH_MINER, prompt, n_tokens)
    n = len(gen.output)
    # The same commit again in process CPU time (the wall figures swing with other
    # processes on a shared machine; generation reports both clocks itself).
    c0 = time.process_time()
    pol.commit(BENCH_MINER, model_id=lm.model_id, tier=pol.Tier.FP32, vocab=lm.vocab_size, top_k=pol.TOP_K,
               temp_milli=0, sample_seed=pol.ZERO_HASH, prompt=gen.prompt, output=gen.output, fps=gen.fingerprints)
    commit_cpu_s = time.process_time() - c0
    seed = crypto.sha256(b"cost")
    timings = {}
    for kk in (1, k):
        ps = pol.select_positions(seed, n, kk)
        reps = []
        for _ in range(3):
            r = validate.validate(lm, proof.commitment, proof.prompt, proof.output, ps, pol.open_positions(proof, ps))
            assert r.check.ok, r.check
            reps.append(r.total_s)
        timings[kk] = min(reps)
    ps_last = [n - 1]
    last = min(
        validate.validate(lm, proof.commitment, proof.prompt, proof.output, ps_last, pol.open_positions(proof, ps_last)).total_s
        for _ in range(3)
    )
    openings = pol.open_positions(proof, pol.select_positions(seed, n, k))
    native = runner.native_row(torch.zeros(1, device=lm.device))
    argmax_us = {"torch": argmax_cpu_us(lm, prompt, n, False)}
    if native:
        argmax_us["native"] = argmax_cpu_us(lm, prompt, n, True)
    return {
        "tokens": n,
        "prompt_tokens": len(proof.prompt),
        "generation_s": gen.total_s,
        "fingerprint_s": gen.fingerprint_s,
        "commit_s": commit_s,
        "commit_overhead_fraction": (gen.fingerprint_s + commit_s) / gen.total_s,
        "generation_cpu_s": gen.total_cpu_s,
        "fingerprint_cpu_s": gen.fingerprint_cpu_s,
        "commit_cpu_s": commit_cpu_s,
        "commit_overhead_fraction_cpu": (gen.fingerprint_cpu_s + commit_cpu_s) / gen.total_cpu_s,
        "overhead_us_per_token_cpu": (gen.fingerprint_cpu_s + commit_cpu_s) / n * 1e6,
        "generation_ms_per_token_cpu": gen.total_cpu_s / n * 1e3,
        "fingerprint_path": "native" if native else "torch",
        # the greedy argmax pass (decoding work, in C on the native path) counted as PoL's too
        "argmax_cpu_s": gen.argmax_cpu_s,
        "commit_overhead_fraction_cpu_with_argmax": (gen.fingerprint_cpu_s + commit_cpu_s + gen.argmax_cpu_s) / gen.total_cpu_s,
        # the argmax alone per token, in a separate decode loop: torch.argmax (what plain greedy
        # generation pays) and, on the native path, the compiled pass 1 the runner uses instead
        "argmax_us_per_token_cpu": argmax_us,
        "validate_1_position_s": timings[1],
        f"validate_{k}_positions_s": timings[k],
        "validate_last_position_s": last,
        "validate_1_position_vs_generation": timings[1] / gen.total_s,
        f"validate_{k}_positions_vs_generation": timings[k] / gen.total_s,
        "commitment_bytes": len(encode(proof.commitment)),
        "commitment_bytes_per_token": len(encode(proof.commitment)) / n,
        "opening_bytes_mean": sum(len(encode(o)) for o in openings) / len(openings),
        f"challenge_{k}_openings_bytes": sum(len(encode(o)) for o in openings),
        "onchain_bytes_per_token": (len(encode(proof.commitment)) + sum(len(encode(o)) for o in openings)) / n,
        "miner_record_bytes_per_token": len(encode(proof)) / n,
    }
