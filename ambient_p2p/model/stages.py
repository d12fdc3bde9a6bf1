"""Pipeline stages: a contiguous range of a Llama model's decoder layers, runnable on its own
(sharded inference; normative text: spec/shard.md "Stages").

A stage holding layers ``A:B`` (half-open, ``0 <= A < B <= L``) owns exactly
``model.layers[A:B]``; the first stage (``A == 0``) also the token embeddings, the last stage
(``B == L``) also the final norm and the LM head. Inside the stage the layers are renumbered
from 0 so that its own KV cache (one :class:`transformers.DynamicCache` per session) has
``B - A`` entries. The causal mask and the rotary embeddings are recomputed per step from the
position offset, with the same transformers functions (``create_causal_mask``,
``LlamaRotaryEmbedding``) and the same tensor shapes as the whole model's forward pass, so the
chain ``stage(0:a) -> stage(a:b) -> ... -> stage(c:L)`` gives logits bitwise equal to the
unsharded model on the same machine (tests/test_shard_stages.py).

Inputs and outputs of one step (a *frame*): the first stage takes token ids ``[1, T]``, the
others the previous stage's boundary hidden state ``[1, T, H]`` in float32; every stage but
the last returns its boundary hidden state (the residual stream after layer ``B - 1``), the
last returns logits ``[1, T, V]`` and, for the stage-PoL leaf, its own pre-norm boundary.

Why not ``torch.distributed.pipelining``: it has no KV cache, assumes a fixed world of trusted
ranks, and its tracer fails on this model; Petals (the prior art for layer-range servers) is
unmaintained and pinned to an old transformers (issue 21).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from . import gguf_loader
from .runner import DEFAULT_MODEL, LoadedModel, pick_device, random_model


@dataclass(frozen=True)
class LayerRange:
    """Layers ``start:end`` (half-open) of a model with ``total`` decoder layers."""

    start: int
    end: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= self.total:
            raise ValueError(f"layer range {self.start}:{self.end} is not inside 0:{self.total}")

    @property
    def first(self) -> bool:
        return self.start == 0

    @property
    def last(self) -> bool:
        return self.end == self.total

    @property
    def size(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.start}:{self.end}"


def parse_range(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``; ValueError with a one-line reason otherwise (CLI input)."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"layer range {text!r} is not of the form A:B (e.g. 0:10)")
    a, b = int(parts[0]), int(parts[1])
    if a >= b:
        raise ValueError(f"layer range {text!r} is empty (A must be < B)")
    return a, b


class _StageModule(torch.nn.Module):
    """Container for a stage's parameters (names as in ``LlamaForCausalLM``)."""

    def __init__(self, cfg: Any, rng: LayerRange) -> None:
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

        super().__init__()
        self.embed_tokens = (
            torch.nn.Embedding(cfg.vocab_size, cfg.hidden_size, cfg.pad_token_id) if rng.first else None
        )
        self.layers = torch.nn.ModuleList([LlamaDecoderLayer(cfg, i) for i in range(rng.size)])
        self.norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps) if rng.last else None
        self.lm_head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) if rng.last else None


@dataclass
class StepOutput:
    """What one stage step returns: ``hidden`` is the boundary residual stream ``[1, T, H]``
    (every stage, the last one included: its PoL leaf); ``logits`` ``[1, T, V]`` only for the
    last stage."""

    hidden: torch.Tensor
    logits: torch.Tensor | None


class StageModel:
    """Layers ``rng`` of a model, ready to run steps against per-session KV caches."""

    def __init__(self, module: _StageModule, cfg: Any, rng: LayerRange, *, model_id: bytes, name: str,
                 device: torch.device, dtype: torch.dtype) -> None:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.module = module
        self.cfg = cfg  # the stage's config: num_hidden_layers == rng.size
        self.rng = rng
        self.model_id = model_id
        self.name = name
        self.device = device
        self.dtype = dtype
        with torch.device("cpu"):
            self.rotary_emb = LlamaRotaryEmbedding(config=cfg)
        self.rotary_emb.to(device)

    @property
    def hidden_size(self) -> int:
        return int(self.cfg.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.cfg.vocab_size)

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.cfg)

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one sequence position costs this stage (keys + values, all layers)."""
        head_dim = int(getattr(self.cfg, "head_dim", self.cfg.hidden_size // self.cfg.num_attention_heads))
        elt = torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.rng.size * int(self.cfg.num_key_value_heads) * head_dim * elt

    @torch.inference_mode()
    def step(self, inp: torch.Tensor, pos_offset: int, cache: Any) -> StepOutput:
        """One frame: token ids ``[1, T]`` (first stage) or hidden ``[1, T, H]`` at sequence
        positions ``pos_offset .. pos_offset + T - 1``; the cache must hold exactly
        ``pos_offset`` positions (ValueError otherwise)."""
        from transformers.masking_utils import create_causal_mask

        seen = int(cache.get_seq_length())
        if seen != pos_offset:
            raise ValueError(f"position offset {pos_offset} but the stage cache holds {seen} positions")
        m = self.module
        if self.rng.first:
            if inp.dtype != torch.long or inp.dim() != 2 or inp.shape[0] != 1:
                raise ValueError("the first stage takes token ids of shape [1, T]")
            assert m.embed_tokens is not None
            hidden = m.embed_tokens(inp.to(self.device))
        else:
            if inp.dim() != 3 or inp.shape[0] != 1 or inp.shape[2] != self.hidden_size:
                raise ValueError(f"stage {self.rng} takes hidden states of shape [1, T, {self.hidden_size}]")
            hidden = inp.to(device=self.device, dtype=self.dtype)
        t = hidden.shape[1]
        position_ids = (torch.arange(t, device=self.device) + pos_offset).unsqueeze(0)
        mask = create_causal_mask(config=self.cfg, inputs_embeds=hidden, attention_mask=None, cache=cache,
                                  position_ids=position_ids)
        pos_emb = self.rotary_emb(hidden, position_ids=position_ids)
        for layer in m.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=pos_emb, position_ids=position_ids,
                           cache=cache, use_cache=True)
        if not self.rng.last:
            return StepOutput(hidden, None)
        assert m.norm is not None and m.lm_head is not None
        logits = m.lm_head(m.norm(hidden))
        return StepOutput(hidden, logits)


def _stage_config(full_cfg: dict[str, Any], rng: LayerRange) -> Any:
    from transformers import LlamaConfig

    cfg = LlamaConfig(**{**full_cfg, "num_hidden_layers": rng.size})
    cfg._attn_implementation = "eager"  # as runner._build_llama: the same kernels as the whole model
    return cfg


def _stage_state(full: dict[str, torch.Tensor], rng: LayerRange, tie: bool) -> dict[str, torch.Tensor]:
    """The stage's parameters from a whole-model state dict, layers renumbered from 0."""
    sd: dict[str, torch.Tensor] = {}
    for name, t in full.items():
        if name.startswith("model.layers."):
            idx_s, rest = name[len("model.layers."):].split(".", 1)
            idx = int(idx_s)
            if rng.start <= idx < rng.end:
                sd[f"layers.{idx - rng.start}.{rest}"] = t
        elif name == "model.embed_tokens.weight":
            if rng.first:
                sd["embed_tokens.weight"] = t
            if rng.last and tie:
                sd["lm_head.weight"] = t
        elif name == "model.norm.weight" and rng.last:
            sd["norm.weight"] = t
        elif name == "lm_head.weight" and rng.last:
            sd["lm_head.weight"] = t
    return sd


def _build(full_cfg: dict[str, Any], sd_full: dict[str, torch.Tensor], rng: LayerRange, *, model_id: bytes,
           name: str, device: torch.device, dtype: torch.dtype) -> StageModel:
    cfg = _stage_config(full_cfg, rng)
    with torch.device("meta"):
        module = _StageModule(cfg, rng)
    module.load_state_dict(_stage_state(sd_full, rng, bool(full_cfg.get("tie_word_embeddings"))), strict=True,
                           assign=True)
    module = module.to(device=device, dtype=dtype).eval()
    return StageModel(module, cfg, rng, model_id=model_id, name=name, device=device, dtype=dtype)


def stage_of(lm: LoadedModel, start: int, end: int) -> StageModel:
    """A stage view of an already loaded whole model (shares its weights: tests, validators,
    the benchmark's in-process reference)."""
    full_cfg = lm.model.config.to_dict()
    rng = LayerRange(start, end, int(full_cfg["num_hidden_layers"]))
    sd = dict(lm.model.state_dict())
    cfg = _stage_config(full_cfg, rng)
    with torch.device("meta"):
        module = _StageModule(cfg, rng)
    module.load_state_dict(_stage_state(sd, rng, bool(full_cfg.get("tie_word_embeddings"))), strict=True,
                           assign=True)
    module.eval()
    return StageModel(module, cfg, rng, model_id=lm.model_id, name=lm.name, device=lm.device, dtype=lm.dtype)


@dataclass(frozen=True)
class ModelMeta:
    """What a route driver (node/miner.py with ``--route``) needs of a model without its
    weights: the id PoL commitments name, the layer count a route must cover, the stop
    token, and the dtype that picks the PoL tier (float32, as ``runner.load_model``'s
    default, so the route proof is the same bytes as the unsharded miner's)."""

    model_id: bytes
    name: str
    total_layers: int
    vocab_size: int
    eos_token_id: int | None
    dtype: torch.dtype = torch.float32


def model_meta(spec: str = DEFAULT_MODEL) -> ModelMeta:
    """``default`` | ``random:SEED`` | a GGUF path -> its :class:`ModelMeta`, reading the
    GGUF header only (no tensor is dequantized; ``model_layers`` / ``load_stage`` read the
    same header); the fields equal ``runner.load_model(spec)``'s."""
    if spec.startswith("random:"):
        import json

        from ..core import pol
        from .runner import TINY_CONFIG

        seed = int(spec.split(":", 1)[1])
        cfg_json = json.dumps(dict(TINY_CONFIG), sort_keys=True, separators=(",", ":")).encode()
        return ModelMeta(model_id=pol.random_model_id(cfg_json, seed), name=f"random-llama-seed{seed}",
                         total_layers=int(TINY_CONFIG["num_hidden_layers"]), vocab_size=int(TINY_CONFIG["vocab_size"]),
                         eos_token_id=None)
    path = gguf_loader.default_model_path() if spec == DEFAULT_MODEL else Path(spec)
    files = gguf_loader.read_gguf(path, keep=lambda _n: False)
    return ModelMeta(model_id=gguf_loader.file_sha256(path), name=path.name,
                     total_layers=int(files.config["num_hidden_layers"]), vocab_size=int(files.config["vocab_size"]),
                     eos_token_id=files.eos_token_id)


def model_layers(spec: str = DEFAULT_MODEL) -> int:
    """Decoder layers of a model spec, without dequantizing any tensor."""
    if spec.startswith("random:"):
        from .runner import TINY_CONFIG

        return int(TINY_CONFIG["num_hidden_layers"])
    path = gguf_loader.default_model_path() if spec == DEFAULT_MODEL else Path(spec)
    files = gguf_loader.read_gguf(path, keep=lambda _n: False)
    return int(files.config["num_hidden_layers"])


def load_stage(spec: str, start: int, end: int, *, dtype: torch.dtype = torch.float32,
               device: str | None = None) -> StageModel:
    """Load layers ``start:end`` of ``default`` | ``random:SEED`` | a GGUF path, dequantizing
    only the tensors the stage holds. ValueError on a range outside the model."""
    if spec.startswith("random:"):
        # random test models are tiny; their weights are drawn in name order over the whole
        # model, so a stage is cut from the whole one to get the same bits
        return stage_of(random_model(int(spec.split(":", 1)[1]), dtype=dtype, device=device), start, end)
    path = gguf_loader.default_model_path() if spec == DEFAULT_MODEL else Path(spec)
    meta = gguf_loader.read_gguf(path, keep=lambda _n: False)
    total = int(meta.config["num_hidden_layers"])
    rng = LayerRange(start, end, total)
    tie = bool(meta.config["tie_word_embeddings"])

    def keep(n: str) -> bool:
        if n.startswith("model.layers."):
            return rng.start <= int(n.split(".")[2]) < rng.end
        if n == "model.embed_tokens.weight":
            return rng.first or (rng.last and tie)
        return rng.last  # model.norm.weight, lm_head.weight

    files = gguf_loader.read_gguf(path, keep=keep)
    sd = {k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in files.tensors.items()}
    stage = _build(files.config, sd, rng, model_id=gguf_loader.file_sha256(path), name=path.name,
                   device=pick_device(device), dtype=dtype)
    return stage


def perturb_weights(stage: StageModel, rel: float, *, seed: int = 0) -> None:
    """Multiply every weight of ``stage`` by ``1 + rel * N(0, 1)`` (seeded, CPU generator):
    the cheating stage of the blame tests and the detection table (spec/shard.md)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in sorted(stage.module.named_parameters()):
            noise = torch.randn(p.shape, generator=gen).to(device=p.device, dtype=p.dtype)
            p.mul_(1 + rel * noise)


@torch.inference_mode()
def recompute_boundaries(stages: list[StageModel], prompt: list[int], output: list[int],
                         positions: list[int]) -> list[list[torch.Tensor]]:
    """The validator's side of stage PoL: one full-prefix pass (no KV reuse) through the
    chain over ``prompt + output[:max(positions)]``; returns, per stage, the boundary row
    (float32, after the stage's last layer) that predicts each output position."""
    if not positions:
        return [[] for _ in stages]
    seq = list(prompt) + list(output[: max(positions)])
    h: torch.Tensor = torch.tensor([seq], dtype=torch.long)
    out: list[list[torch.Tensor]] = []
    for st in stages:
        res = st.step(h, 0, st.new_cache())
        h = res.hidden
        out.append([h[0, len(prompt) + x - 1].to(torch.float32).cpu() for x in positions])
    return out


def blame_route(lm: LoadedModel, cmts: list[Any], prompt: list[int], output: list[int],
                final_fps: dict[int, Any], openings: dict[int, list[Any]]) -> Any:
    """A validator's stage check (spec/shard.md "Blame"): structural route check, then at
    every opened position (``openings[x]``: one StageOpening per stage, ``final_fps[x]``: the
    driver's final-logits fingerprint there) the blame rule over boundaries recomputed by one
    full-prefix pass of the validator's own (unsharded) weights. Returns the first
    non-ok :class:`ambient_p2p.core.shard.Blame`, else the ok one of the last position."""
    from ..core import shard as sh
    from ..core.codec import encode

    total = int(lm.model.config.num_hidden_layers)
    head = sh.check_route(cmts, expected_model_id=lm.model_id, total_layers=total)
    if not head.ok:
        return head
    positions = sorted(openings)
    views = [stage_of(lm, c.start, c.end) for c in cmts]
    rows = recompute_boundaries(views, prompt, output, positions)
    res = head
    for i, x in enumerate(positions):
        res = sh.blame_position(
            cmts, openings[x], [r[i].numpy() for r in rows], position=x,
            first_input_digest=sh.tokens_frame_digest(sh.frame_tokens(prompt, output, x)),
            final_output_digest=sh.frame_digest(encode(final_fps[x])))
        if not res.ok:
            return res
    return res


__all__ = [
    "LayerRange",
    "StageModel",
    "StepOutput",
    "blame_route",
    "load_stage",
    "model_layers",
    "parse_range",
    "perturb_weights",
    "recompute_boundaries",
    "stage_of",
]
