"""Hypothesis strategies derived from the codec's schemas, so every registered message
type gets round-trip and mutation coverage without hand-written generators."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from ambient_p2p.core import codec
from ambient_p2p.core.messages import BPS, CHAIN_ID_RE, EpochParams, LStakeParams
from ambient_p2p.core.pol import MAX_OUTPUT_TOKENS
from ambient_p2p.core.shard import MAX_MODEL_LAYERS, StageCommitment
from ambient_p2p.net.messages import MAX_STAGE_FRAME_ROWS, StageForwardRequest

_B32 = st.binary(min_size=32, max_size=32)


@st.composite
def _stage_commitment(draw: st.DrawFn) -> StageCommitment:
    total = draw(st.integers(1, MAX_MODEL_LAYERS))
    end = draw(st.integers(1, total))
    start = draw(st.integers(0, end - 1))
    return StageCommitment(draw(_B32), draw(_B32), start, end, total, draw(st.integers(0, 255)), draw(_B32),
                           draw(st.integers(1, MAX_OUTPUT_TOKENS)), draw(_B32), draw(_B32),
                           draw(st.binary(min_size=64, max_size=64)))


@st.composite
def _stage_forward_request(draw: st.DrawFn) -> StageForwardRequest:
    nonce, query, pos = draw(st.integers(0, (1 << 32) - 1)), draw(_B32), draw(st.integers(0, (1 << 32) - 1))
    if draw(st.booleans()):  # a first-stage frame: one token per row
        tokens = tuple(draw(st.lists(st.integers(0, (1 << 32) - 1), min_size=1, max_size=4)))
        return StageForwardRequest(nonce, query, pos, len(tokens), tokens=tokens)
    rows = draw(st.integers(1, MAX_STAGE_FRAME_ROWS))
    return StageForwardRequest(nonce, query, pos, rows, hidden=draw(st.binary(min_size=1, max_size=64)))


# Records whose invariants span several fields get their own strategies.
OVERRIDES: dict[type, st.SearchStrategy[Any]] = {
    StageCommitment: _stage_commitment(),
    StageForwardRequest: _stage_forward_request(),
    LStakeParams: st.builds(
        lambda s, m, w: LStakeParams(s, s + m, w, BPS - w),
        st.integers(1, 1 << 16),
        st.integers(0, 1 << 16),
        st.integers(0, BPS),
    ),
    EpochParams: st.builds(
        lambda leader, mult: EpochParams(leader * mult, leader),
        st.integers(1, 64),
        st.integers(1, 1 << 20),
    ),
}
FIELD_OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "chain_id": st.from_regex(CHAIN_ID_RE, fullmatch=True),
}


def for_spec(spec: codec.Spec, small: bool = True) -> st.SearchStrategy[Any]:
    if isinstance(spec, codec.UInt):
        return st.integers(0, (1 << spec.bits) - 1)
    if isinstance(spec, codec.Int):
        lim = 1 << (spec.bits - 1)
        return st.integers(-lim, lim - 1)
    if isinstance(spec, codec.Bytes):
        if spec.exact:
            return st.binary(min_size=spec.max_len, max_size=spec.max_len)
        return st.binary(max_size=min(spec.max_len, 64 if small else spec.max_len))
    if isinstance(spec, codec.Text):
        return st.text(max_size=min(spec.max_len // 4, 24)).filter(lambda t: len(t.encode()) <= spec.max_len)
    if isinstance(spec, codec.Bool):
        return st.booleans()
    if isinstance(spec, codec.List):
        return st.lists(for_spec(spec.item), max_size=min(spec.max_items, 4)).map(tuple)
    if isinstance(spec, codec.Opt):
        return st.none() | for_spec(spec.inner)
    if isinstance(spec, codec.Rec):
        return for_record(spec.cls)
    raise TypeError(f"no strategy for {spec!r}")


def for_record(cls: type) -> st.SearchStrategy[Any]:
    if cls in OVERRIDES:
        return OVERRIDES[cls]
    fields = {
        name: FIELD_OVERRIDES.get(name, for_spec(spec)) for name, spec in codec.iter_specs(cls)
    }

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        kwargs = {name: draw(s) for name, s in fields.items()}
        try:
            return cls(**kwargs)
        except ValueError:
            # record-level invariant (unique keys, non-empty lists...): retry with other draws
            from hypothesis import assume

            assume(False)

    return build()


def for_message(cls: type) -> st.SearchStrategy[Any]:
    return for_record(cls).filter(lambda m: _fits(m))


def _fits(msg: Any) -> bool:
    try:
        codec.encode(msg)
    except codec.EncodeError:
        return False
    return True


def reject_reason(data: bytes, expected: type | None = None) -> str | None:
    """The decoder's reject reason for ``data`` (None if it decodes). Any exception other
    than DecodeError propagates and fails the calling test; fuzz tests assert the reason is
    never ``codec.INTERNAL_REASON`` (a decoder bug caught by its catch-all)."""
    try:
        codec.decode(data, expected)
    except codec.DecodeError as exc:
        return exc.reason
    return None


def replace(obj: Any, **kw: Any) -> Any:
    return dataclasses.replace(obj, **kw)
