"""Canonical CBOR codec: round-trips for every message type, and strict rejection of every
malformation class (spec/encoding.md)."""

from __future__ import annotations

import struct

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient_p2p.core import codec
from ambient_p2p.core.messages import Genesis, NodeInfo
from ambient_p2p.interop.formats.codec import _reject_cases, sample_genesis, sample_node_info
from ambient_p2p.registry import load_all_types

from .strategies import for_message, reject_reason

TYPES = load_all_types()  # every layer's types (ambient_p2p/registry.py)


def test_registry_has_foundation_types() -> None:
    names = {mt.name for mt in TYPES.values()}
    assert {"Genesis", "NodeInfo"} <= names
    assert all(0 <= tid < 1 << 16 for tid in TYPES)


@pytest.mark.parametrize("mt", list(TYPES.values()), ids=lambda mt: mt.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_roundtrip_every_type(mt: codec.MessageType, data: st.DataObject) -> None:
    msg = data.draw(for_message(mt.cls))
    enc = codec.encode(msg)
    assert codec.decode(enc) == msg
    assert codec.decode(enc, mt.cls) == msg
    assert codec.encode(codec.decode(enc)) == enc
    # canonical: cbor2's own canonical encoding of the decoded structure is identical
    assert cbor2.dumps(cbor2.loads(enc), canonical=True) == enc


@pytest.mark.parametrize(("name", "reason", "desc", "data"), _reject_cases(), ids=[c[0] for c in _reject_cases()])
def test_reject_classes(name: str, reason: str, desc: str, data: bytes) -> None:
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(data)
    assert ei.value.reason == reason, f"{desc}: {ei.value}"
    assert str(ei.value)  # carries a human-readable message


def test_at_least_twenty_distinct_reject_classes() -> None:
    assert len({c[1] for c in _reject_cases()}) >= 20


def test_error_says_where() -> None:
    good = codec.encode(sample_node_info())
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(good + b"\x00")
    assert ei.value.where == f"@{len(good)}"
    tid, ver, body = cbor2.loads(good)
    body["wallclock_ms"] = -5
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(cbor2.dumps([tid, ver, body], canonical=True))
    assert ei.value.where == "$.body.wallclock_ms"
    g = cbor2.loads(codec.encode(sample_genesis(2)))
    g[2]["accounts"][1]["lamports"] = "many"
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(cbor2.dumps(g, canonical=True))
    assert ei.value.where == "$.body.accounts[1].lamports"


def test_expected_type_enforced() -> None:
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(codec.encode(sample_node_info()), Genesis)
    assert ei.value.reason == "unexpected-type"


def test_per_type_size_limit_checked_before_parsing() -> None:
    # 5 MB of junk addressed to a 4 KB type is refused on length alone
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(b"\x83" + b"\x00" * 5_000_000, NodeInfo)
    assert ei.value.reason == "too-large"


def test_encode_refuses_oversized_message() -> None:
    with pytest.raises(codec.EncodeError):
        codec.encode(sample_node_info().__class__(**{**sample_node_info().__dict__, "addrs": ("a" * 300,)}))


# -- mutation classes applied to arbitrary valid messages --------------------------------
def _valid_messages() -> st.SearchStrategy[bytes]:
    return st.sampled_from(list(TYPES.values())).flatmap(lambda mt: for_message(mt.cls)).map(codec.encode)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(enc=_valid_messages(), extra=st.binary(min_size=1, max_size=8))
def test_any_trailing_bytes_rejected(enc: bytes, extra: bytes) -> None:
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(enc + extra)
    assert ei.value.reason == "trailing-bytes"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(enc=_valid_messages(), data=st.data())
def test_any_truncation_rejected(enc: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(enc[:cut])
    assert ei.value.reason == "truncated"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(enc=_valid_messages(), data=st.data())
def test_widened_integer_heads_rejected(enc: bytes, data: st.DataObject) -> None:
    """Re-encode the envelope's type id with a wider head: same value, non-canonical."""
    tid = cbor2.loads(enc)[0]
    width = data.draw(st.sampled_from([w for w in (1, 2, 4, 8) if tid < 1 << (8 * w)]))
    shortest = cbor2.dumps(tid)
    widened = bytes([{1: 0x18, 2: 0x19, 4: 0x1A, 8: 0x1B}[width]]) + tid.to_bytes(width, "big")
    if widened == shortest:
        return  # that width *is* the shortest form for this value
    mutated = enc[:1] + widened + enc[1 + len(shortest) :]
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(mutated)
    assert ei.value.reason == "non-canonical"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(enc=_valid_messages(), data=st.data())
def test_bit_flips_never_crash_and_never_decode_non_canonically(enc: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(enc) - 1))
    bit = data.draw(st.integers(0, 7))
    mutated = enc[:i] + bytes([enc[i] ^ (1 << bit)]) + enc[i + 1 :]
    reason = reject_reason(mutated)
    if reason is not None:
        assert reason != codec.INTERNAL_REASON
        return
    obj = codec.decode(mutated)
    # a flip that still decodes must be a different, canonical message
    assert codec.encode(obj) == mutated


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    assert reject_reason(data) != codec.INTERNAL_REASON


@settings(max_examples=500, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8)
    | st.floats(allow_nan=True),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4) | st.integers(), kids, max_size=4),
    max_leaves=20,
))
def test_arbitrary_cbor_structures_only_raise_decode_error(value: object) -> None:
    try:
        data = cbor2.dumps(value)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return
    for candidate in (data, cbor2.dumps([2, 1, value]), cbor2.dumps([1, 1, value])):
        assert reject_reason(candidate) != codec.INTERNAL_REASON


def test_unexpected_exceptions_get_the_internal_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """The catch-all keeps the "DecodeError only" contract but marks a decoder bug with its
    own reason, so the fuzz tests above (which assert it never appears) can fail."""

    def broken(_data: bytes, max_depth: int = codec.MAX_DEPTH) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(codec, "check_wellformed", broken)
    with pytest.raises(codec.DecodeError) as ei:
        codec.decode(codec.encode(sample_node_info()))
    assert ei.value.reason == codec.INTERNAL_REASON
    assert "KeyError" in ei.value.detail


def test_floats_of_every_width_rejected() -> None:
    for raw in (b"\xf9\x3c\x00", b"\xfa" + struct.pack(">f", 1.0), b"\xfb" + struct.pack(">d", 1.0)):
        with pytest.raises(codec.DecodeError) as ei:
            codec.check_wellformed(raw)
        assert ei.value.reason == "float"


def test_depth_limit_is_exact() -> None:
    ok: object = 0
    for _ in range(codec.MAX_DEPTH):
        ok = [ok]
    codec.check_wellformed(cbor2.dumps(ok))
    with pytest.raises(codec.DecodeError) as ei:
        codec.check_wellformed(cbor2.dumps([ok]))
    assert ei.value.reason == "too-deep"


def test_huge_declared_lengths_do_not_allocate() -> None:
    # an array claiming 2^64-1 elements, and a byte string claiming 2^32 bytes
    for raw in (b"\x9b" + b"\xff" * 8, b"\x5a\xff\xff\xff\xff\x00"):
        with pytest.raises(codec.DecodeError) as ei:
            codec.decode(raw)
        assert ei.value.reason == "truncated"


def test_genesis_hash_is_stable() -> None:
    g = sample_genesis(2)
    assert g.hash() == codec.decode(codec.encode(g), Genesis).hash()
    assert g.hash() != sample_genesis(3).hash()
