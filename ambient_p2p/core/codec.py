"""Canonical CBOR for every Ambient protocol message (normative text: spec/encoding.md).

Wire form of a message::

    [type_id: uint, version: uint, body: {field_name: value, ...}]

encoded with RFC 8949 section 4.2.1 *core deterministic encoding*: definite lengths only,
shortest-form integers and lengths, map keys sorted bytewise on their encoding, no tags, no
floats. Nested records are plain maps with the same rules. Absent optional fields are
omitted (never ``null``).

Decoding is strict and happens in three passes, each of which can only raise
:class:`DecodeError` (the *only* exception :func:`decode` raises):

1. **structure** (:func:`check_wellformed`): a walk over the raw bytes that rejects what
   cbor2 would silently accept: indefinite lengths, non-shortest heads, tags, floats (and
   NaN), undefined/simple values, reserved additional-info values, duplicate or unsorted
   map keys, nesting deeper than :data:`MAX_DEPTH`, truncation and trailing bytes. It
   reports the byte offset of the fault.
2. **parse**: cbor2 turns the (now known-good) bytes into Python values.
3. **schema**: the registry entry for ``type_id`` checks every field's type, range and
   size limit and builds the typed, frozen dataclass; it reports the field path.

Finally the object is re-encoded and compared with the input (belt and braces: whatever
the first passes missed, a non-canonical input cannot round-trip).

Defining a message type::

    @message(type_id=0x0001, version=1, max_size=4096)
    @dataclass(frozen=True)
    class Thing:
        slot: int = fld(UInt(64))
        hash: bytes = fld(Bytes(32, exact=True))
        note: str | None = fld(Opt(Text(64)), default=None)

Type-id ranges are allocated per concern in spec/encoding.md.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import cbor2

from .errors import ProtocolError

MAX_DEPTH = 16
#: Hard ceiling for any message, whatever its type says (gossip's own limit is 1 MiB).
MAX_MESSAGE_BYTES = 1 << 20
MAX_FIELD_NAME_BYTES = 23  # < 24: keeps key ordering identical in every CBOR sort rule
#: Reject reason of an unexpected exception inside the decoder (a decoder bug, never a
#: property of the input; spec/encoding.md "Reject reasons").
INTERNAL_REASON = "internal"


class DecodeError(ProtocolError, ValueError):
    """Input is not a valid encoding. ``reason`` is a stable machine-readable code (listed
    in spec/encoding.md and used by interop vectors); ``where`` is a byte offset
    (``@12``) or a field path (``$.body.accounts[3].lamports``)."""

    def __init__(self, reason: str, detail: str, where: str = "") -> None:
        self.where = where
        super().__init__(reason, detail, f" at {where}" if where else "")


class EncodeError(ValueError):
    """A value cannot be encoded under its schema (a programming error in the caller)."""


# ---------------------------------------------------------------------------------------
# Pass 1: structural well-formedness on raw bytes
# ---------------------------------------------------------------------------------------
_MT_UINT, _MT_NINT, _MT_BYTES, _MT_TEXT, _MT_ARRAY, _MT_MAP, _MT_TAG, _MT_SIMPLE = range(8)


def check_wellformed(data: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`DecodeError` unless ``data`` is exactly one deterministic-encoded
    CBOR data item made of uints, negative ints, byte/text strings, arrays, maps, false,
    true and null, nested at most ``max_depth`` deep."""
    if not data:
        raise DecodeError("truncated", "empty input", "@0")
    end = _walk(data, 0, 1, max_depth)
    if end != len(data):
        raise DecodeError("trailing-bytes", f"{len(data) - end} byte(s) after the message", f"@{end}")


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return (major type, argument, offset after head); enforce shortest form."""
    if pos >= len(data):
        raise DecodeError("truncated", "input ends inside a data item", f"@{pos}")
    ib = data[pos]
    mt, ai = ib >> 5, ib & 0x1F
    if ai < 24:
        return mt, ai, pos + 1
    if ai == 31:
        if mt in (_MT_BYTES, _MT_TEXT, _MT_ARRAY, _MT_MAP):
            raise DecodeError("indefinite-length", "indefinite-length item", f"@{pos}")
        if mt == _MT_SIMPLE:
            raise DecodeError("indefinite-length", "stray 'break' code", f"@{pos}")
        raise DecodeError("malformed", f"additional info 31 is invalid for major type {mt}", f"@{pos}")
    if ai > 27:
        raise DecodeError("malformed", f"reserved additional info {ai}", f"@{pos}")
    if mt == _MT_SIMPLE:
        # floats (25/26/27) and 1-byte simple values (24) are handled by the caller
        return mt, ai, pos
    n = 1 << (ai - 24)
    if pos + 1 + n > len(data):
        raise DecodeError("truncated", "input ends inside an item head", f"@{pos}")
    arg = int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
    minimum = 24 if n == 1 else 1 << (8 * (n >> 1))
    if arg < minimum:
        raise DecodeError("non-canonical", f"argument {arg} not in shortest form", f"@{pos}")
    return mt, arg, pos + 1 + n


def _walk(data: bytes, pos: int, depth: int, max_depth: int) -> int:
    mt, arg, nxt = _head(data, pos)
    if mt in (_MT_UINT, _MT_NINT):
        return nxt
    if mt in (_MT_BYTES, _MT_TEXT):
        end = nxt + arg
        if end > len(data):
            raise DecodeError("truncated", f"string of {arg} bytes runs past the end", f"@{pos}")
        if mt == _MT_TEXT:
            try:
                data[nxt:end].decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("invalid-utf8", "text string is not valid UTF-8", f"@{pos}") from None
        return end
    if mt in (_MT_ARRAY, _MT_MAP):
        if depth > max_depth:
            raise DecodeError("too-deep", f"nesting deeper than {max_depth}", f"@{pos}")
        if arg > len(data) - nxt:  # every element needs >= 1 byte: cheap bound on bogus counts
            raise DecodeError("truncated", f"{arg} element(s) cannot fit in the input", f"@{pos}")
        p = nxt
        if mt == _MT_ARRAY:
            for _ in range(arg):
                p = _walk(data, p, depth + 1, max_depth)
            return p
        prev_key: bytes | None = None
        for _ in range(arg):
            kstart = p
            p = _walk(data, p, depth + 1, max_depth)
            key = data[kstart:p]
            if prev_key is not None:
                if key == prev_key:
                    raise DecodeError("duplicate-key", "map key repeated", f"@{kstart}")
                if key < prev_key:
                    raise DecodeError("unsorted-keys", "map keys not in bytewise order", f"@{kstart}")
            prev_key = key
            p = _walk(data, p, depth + 1, max_depth)
        return p
    if mt == _MT_TAG:
        raise DecodeError("unknown-tag", f"tag {arg} is not allowed", f"@{pos}")
    # major type 7
    ai = data[pos] & 0x1F
    if ai in (20, 21, 22):  # false, true, null
        return pos + 1
    if ai in (25, 26, 27):
        size = {25: 2, 26: 4, 27: 8}[ai]
        raw = data[pos + 1 : pos + 1 + size]
        if len(raw) < size:
            raise DecodeError("truncated", "input ends inside a float", f"@{pos}")
        value = struct.unpack({2: ">e", 4: ">f", 8: ">d"}[size], raw)[0]
        if math.isnan(value):
            raise DecodeError("nan", "NaN is not allowed", f"@{pos}")
        raise DecodeError("float", "floating-point values are not allowed", f"@{pos}")
    if ai == 23:
        raise DecodeError("undefined", "'undefined' is not allowed", f"@{pos}")
    raise DecodeError("simple-value", f"simple value {ai if ai < 24 else 'extended'} is not allowed", f"@{pos}")


# ---------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------
class Spec(abc.ABC):
    """A field's type. ``check`` validates a decoded value (raising DecodeError with the
    path) and returns the Python value; ``to_wire`` returns what cbor2 should encode."""

    @abc.abstractmethod
    def check(self, v: Any, path: str) -> Any:
        """Validate a decoded value; return the Python value."""

    def to_wire(self, v: Any, path: str) -> Any:
        try:
            return self.check(v, path)
        except DecodeError as exc:
            raise EncodeError(str(exc)) from None

    def describe(self) -> str:
        return type(self).__name__


def _type_error(expected: str, v: Any, path: str) -> DecodeError:
    got = "float" if isinstance(v, float) else type(v).__name__
    return DecodeError("wrong-type", f"expected {expected}, got {got}", path)


@dataclass(frozen=True)
class UInt(Spec):
    bits: int = 64

    def check(self, v: Any, path: str) -> int:
        if type(v) is not int:
            raise _type_error(f"u{self.bits}", v, path)
        if not 0 <= v < (1 << self.bits):
            raise DecodeError("out-of-range", f"{v} does not fit u{self.bits}", path)
        return v

    def describe(self) -> str:
        return f"u{self.bits}"


@dataclass(frozen=True)
class Int(Spec):
    bits: int = 64

    def check(self, v: Any, path: str) -> int:
        if type(v) is not int:
            raise _type_error(f"i{self.bits}", v, path)
        lim = 1 << (self.bits - 1)
        if not -lim <= v < lim:
            raise DecodeError("out-of-range", f"{v} does not fit i{self.bits}", path)
        return v

    def describe(self) -> str:
        return f"i{self.bits}"


@dataclass(frozen=True)
class Bytes(Spec):
    max_len: int
    exact: bool = False

    def check(self, v: Any, path: str) -> bytes:
        if type(v) is not bytes:
            if isinstance(v, (bytearray, memoryview)):
                v = bytes(v)
            else:
                raise _type_error("bytes", v, path)
        if self.exact and len(v) != self.max_len:
            raise DecodeError("wrong-length", f"need exactly {self.max_len} bytes, got {len(v)}", path)
        if len(v) > self.max_len:
            raise DecodeError("too-large", f"{len(v)} bytes exceeds limit {self.max_len}", path)
        return bytes(v)

    def describe(self) -> str:
        return f"bytes[{'=' if self.exact else '<='}{self.max_len}]"


@dataclass(frozen=True)
class Text(Spec):
    max_len: int  # in UTF-8 bytes

    def check(self, v: Any, path: str) -> str:
        if type(v) is not str:
            raise _type_error("text", v, path)
        n = len(v.encode("utf-8", "surrogatepass"))
        if n > self.max_len:
            raise DecodeError("too-large", f"text of {n} bytes exceeds limit {self.max_len}", path)
        return v

    def describe(self) -> str:
        return f"text[<={self.max_len}]"


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, v: Any, path: str) -> bool:
        if type(v) is not bool:
            raise _type_error("bool", v, path)
        return v

    def describe(self) -> str:
        return "bool"


@dataclass(frozen=True)
class List(Spec):
    item: Spec
    max_items: int

    def check(self, v: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(v, (list, tuple)):
            raise _type_error("array", v, path)
        if len(v) > self.max_items:
            raise DecodeError("too-large", f"{len(v)} items exceeds limit {self.max_items}", path)
        if _all_uints(self.item, v):  # fast path, same result: UInt.check returns its input
            return tuple(v)
        return tuple(self.item.check(x, f"{path}[{i}]") for i, x in enumerate(v))

    def to_wire(self, v: Any, path: str) -> list[Any]:
        if not isinstance(v, (list, tuple)):
            raise EncodeError(f"{path}: expected a sequence")
        if len(v) > self.max_items:
            raise EncodeError(f"{path}: {len(v)} items exceeds limit {self.max_items}")
        if _all_uints(self.item, v):  # fast path, same result: UInt.to_wire returns its input
            return list(v)
        return [self.item.to_wire(x, f"{path}[{i}]") for i, x in enumerate(v)]

    def describe(self) -> str:
        return f"list[{self.item.describe()}; <={self.max_items}]"


def _all_uints(item: Spec, v: list[Any] | tuple[Any, ...]) -> bool:
    """True iff ``item`` is exactly :class:`UInt` and every element passes its check (then
    the per-element check, which returns the element, can be skipped; any failing element
    sends the caller to the per-element path, which raises the usual error)."""
    if type(item) is not UInt:
        return False
    lim = 1 << item.bits
    for x in v:  # noqa: SIM110 - hot path: an explicit loop beats all() over a generator
        if type(x) is not int or not 0 <= x < lim:
            return False
    return True


@dataclass(frozen=True)
class Opt(Spec):
    """Optional field: omitted from the map when ``None``. Only valid as a field spec."""

    inner: Spec

    def check(self, v: Any, path: str) -> Any:
        if v is None:
            raise DecodeError("wrong-type", "null is not allowed (omit the field instead)", path)
        return self.inner.check(v, path)

    def to_wire(self, v: Any, path: str) -> Any:
        return self.inner.to_wire(v, path)

    def describe(self) -> str:
        return f"optional {self.inner.describe()}"


@dataclass(frozen=True)
class Rec(Spec):
    """A nested record (a class decorated with :func:`record` or :func:`message`)."""

    cls: type

    def check(self, v: Any, path: str) -> Any:
        return _body_from_wire(self.cls, v, path)

    def to_wire(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, self.cls):
            raise EncodeError(f"{path}: expected {self.cls.__name__}, got {type(v).__name__}")
        return _body_to_wire(v, path)

    def describe(self) -> str:
        return self.cls.__name__


def fld(spec: Spec, **kwargs: Any) -> Any:
    """Declare a dataclass field with its wire ``spec``."""
    return dataclasses.field(metadata={"spec": spec}, **kwargs)


def _fields(cls: type) -> list[tuple[str, Spec]]:
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no wire spec (use fld(...))")
        if len(f.name.encode()) > MAX_FIELD_NAME_BYTES:
            raise TypeError(f"{cls.__name__}.{f.name}: field names are at most {MAX_FIELD_NAME_BYTES} bytes")
        out.append((f.name, spec))
    return out


def _body_to_wire(obj: Any, path: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, spec in type(obj).__wire_fields__:
        v = getattr(obj, name)
        if v is None and isinstance(spec, Opt):
            continue
        body[name] = spec.to_wire(v, f"{path}.{name}")
    return body


def _body_from_wire(cls: type, body: Any, path: str) -> Any:
    if not isinstance(body, dict):
        raise _type_error(f"map ({cls.__name__})", body, path)
    fields: tuple[tuple[str, Spec], ...] = getattr(cls, "__wire_fields__")  # noqa: B009
    known = {name for name, _ in fields}
    for k in body:
        if not isinstance(k, str):
            raise DecodeError("wrong-type", f"map key must be text, got {type(k).__name__}", path)
        if k not in known:
            raise DecodeError("unknown-field", f"{cls.__name__} has no field {k!r}", path)
    kwargs = {}
    for name, spec in fields:
        if name in body:
            kwargs[name] = spec.check(body[name], f"{path}.{name}")
        elif isinstance(spec, Opt):
            kwargs[name] = None
        else:
            raise DecodeError("missing-field", f"{cls.__name__} requires field {name!r}", path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # record-level invariants (__post_init__)
        raise DecodeError("invalid-value", str(exc), path) from None


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageType:
    type_id: int
    version: int
    cls: type
    max_size: int

    @property
    def name(self) -> str:
        return self.cls.__name__


_REGISTRY: dict[int, MessageType] = {}
T = TypeVar("T")


def record(cls: type[T]) -> type[T]:
    """Mark a dataclass as a nested record (a map inside messages; no envelope)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError("record() applies to dataclasses")
    cls.__wire_fields__ = tuple(_fields(cls))  # type: ignore[attr-defined]
    return cls


def message(type_id: int, version: int, max_size: int) -> Callable[[type[T]], type[T]]:
    """Register a dataclass as a top-level message type."""

    def deco(cls: type[T]) -> type[T]:
        record(cls)
        if not 0 <= type_id < 1 << 16:
            raise TypeError("type_id must fit u16")
        if type_id in _REGISTRY:
            raise TypeError(f"type_id {type_id:#06x} already used by {_REGISTRY[type_id].name}")
        if not 1 <= max_size <= MAX_MESSAGE_BYTES:
            raise TypeError("max_size out of range")
        mt = MessageType(type_id, version, cls, max_size)
        _REGISTRY[type_id] = mt
        cls.__message_type__ = mt  # type: ignore[attr-defined]
        return cls

    return deco


def registry() -> dict[int, MessageType]:
    """All registered message types by type id (importing ambient_p2p.core.messages
    registers the protocol's types)."""
    return dict(_REGISTRY)


def message_type_of(obj_or_cls: Any) -> MessageType:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    mt = getattr(cls, "__message_type__", None)
    if not isinstance(mt, MessageType):
        raise EncodeError(f"{cls.__name__} is not a registered message type")
    return mt


# ---------------------------------------------------------------------------------------
# encode / decode
# ---------------------------------------------------------------------------------------
def encode(msg: Any) -> bytes:
    """Canonical encoding of a registered message."""
    mt = message_type_of(msg)
    data = cbor2.dumps([mt.type_id, mt.version, _body_to_wire(msg, "$.body")], canonical=True)
    if len(data) > mt.max_size:
        raise EncodeError(f"{mt.name} encodes to {len(data)} bytes, above its limit {mt.max_size}")
    return data


@overload
def decode(data: bytes, expected: type[T]) -> T: ...
@overload
def decode(data: bytes, expected: None = None) -> Any: ...
def decode(data: bytes, expected: type[T] | None = None) -> T | Any:
    """Strictly decode one message. Raises :class:`DecodeError` and nothing else."""
    try:
        obj: T = _decode(data, expected)
        return obj
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract is "DecodeError only"
        # Reaching this is a bug in the decoder (an input the passes above should have
        # rejected with their own reason): it gets a reason of its own, which the fuzz tests
        # assert never appears, so such a bug fails them instead of hiding as "malformed".
        raise DecodeError(INTERNAL_REASON, f"{type(exc).__name__}: {exc}") from None


def _decode(data: bytes, expected: type[Any] | None) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("wrong-type", f"input must be bytes, got {type(data).__name__}")
    data = bytes(data)
    limit = MAX_MESSAGE_BYTES
    if expected is not None:
        limit = message_type_of(expected).max_size
    if len(data) > limit:
        raise DecodeError("too-large", f"{len(data)} bytes exceeds limit {limit}", "@0")
    check_wellformed(data)
    try:
        value = cbor2.loads(data)
    except cbor2.CBORDecodeError as exc:
        raise DecodeError("malformed", str(exc)) from None
    if not isinstance(value, list) or len(value) != 3:
        raise DecodeError("bad-envelope", "a message is [type_id, version, body]", "$")
    type_id, version, body = value
    if type(type_id) is not int or type(version) is not int:
        raise DecodeError("bad-envelope", "type_id and version must be unsigned integers", "$")
    mt = _REGISTRY.get(type_id)
    if mt is None:
        raise DecodeError("unknown-type", f"no message type {type_id:#06x}", "$[0]")
    if expected is not None and mt.cls is not expected:
        raise DecodeError("unexpected-type", f"expected {expected.__name__}, got {mt.name}", "$[0]")
    if version != mt.version:
        raise DecodeError("unsupported-version", f"{mt.name} v{version} (this node speaks v{mt.version})", "$[1]")
    if len(data) > mt.max_size:
        raise DecodeError("too-large", f"{mt.name} of {len(data)} bytes exceeds limit {mt.max_size}", "@0")
    obj = _body_from_wire(mt.cls, body, "$.body")
    if encode(obj) != data:
        raise DecodeError("non-canonical", "input is not the canonical encoding of its value", "$")
    return obj


# ---------------------------------------------------------------------------------------
# JSON view (for interop vectors, `show` commands and logs)
# ---------------------------------------------------------------------------------------
def to_json(obj: Any) -> Any:
    """A JSON-able, lossless view: records as {field: value}, bytes as "0x..." hex."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for name, _spec in type(obj).__wire_fields__:  # type: ignore[attr-defined]
            v = getattr(obj, name)
            if v is not None:
                out[name] = to_json(v)
        mt = getattr(type(obj), "__message_type__", None)
        if mt is not None:
            return {"type": mt.name, "type_id": mt.type_id, "version": mt.version, "body": out}
        return out
    if isinstance(obj, bytes):
        return "0x" + obj.hex()
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    return obj


def iter_specs(cls: type) -> Iterator[tuple[str, Spec]]:
    """The (field name, spec) pairs of a record or message class."""
    return iter(cls.__wire_fields__)  # type: ignore[attr-defined]


__all__ = [
    "MAX_DEPTH",
    "Bool",
    "Bytes",
    "DecodeError",
    "EncodeError",
    "Int",
    "List",
    "MessageType",
    "Opt",
    "Rec",
    "Spec",
    "Text",
    "UInt",
    "check_wellformed",
    "decode",
    "encode",
    "fld",
    "iter_specs",
    "message",
    "message_type_of",
    "record",
    "registry",
    "to_json",
]


def load_protocol_types() -> dict[int, MessageType]:
    """Import every core module so that all protocol message types are registered (core
    modules are pure and light: no torch, no I/O at import). Returns the registry."""
    import importlib
    import pkgutil

    from .. import core

    for info in pkgutil.iter_modules(core.__path__):
        importlib.import_module(f"{core.__name__}.{info.name}")
    return registry()
