"""`inspect`: print any record a node writes or sends as JSON.

Every canonical-CBOR message of every layer decodes (``ambient_p2p/registry.py`` loads the
whole wire registry, spec/encoding.md "Type-id registry"): genesis, node records, the tower
file, blockstore records and bank snapshots, gossip envelopes and payloads, request/response
messages, proofs of logits. A raw shred packet (what the blockstore stores and the shreds
topic carries, agave's layout, spec/shred.md) is shown with its parsed header. With
``--shreds`` the shred packets inside messages (fields of ``bytes[<=1232]``) are parsed too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core import codec
from ..core.constants import PACKET_DATA_BYTES
from ..core.shred import ShredError, parse_shred
from ..errors import UserError

FORMATS = ("auto", "message", "shred")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    i = sub.add_parser(
        "inspect",
        help="print any protocol file (genesis, tower, blockstore record, snapshot, network message, shred) as JSON",
        description=(
            "Strictly decode FILE and print its JSON view: a canonical-CBOR message of any registered "
            "type (spec/encoding.md), or a raw shred packet (spec/shred.md)."
        ),
    )
    i.add_argument("file", type=Path)
    i.add_argument(
        "--as",
        dest="fmt",
        choices=FORMATS,
        default="auto",
        help="what FILE holds (default auto: a message, else a raw shred)",
    )
    i.add_argument("--shreds", action="store_true", help="also parse the shred packets inside a message")
    i.set_defaults(func=_inspect)


def shred_json(packet: bytes) -> dict[str, Any]:
    """A raw shred packet's JSON view, or the reason it does not parse."""
    try:
        return {"shred": parse_shred(packet).describe()}
    except ShredError as exc:
        return {"shred_error": exc.reason, "detail": exc.detail}


def inspect_bytes(data: bytes, fmt: str = "auto", expand_shreds: bool = False) -> Any:
    """The JSON view of ``data``; raises :class:`codec.DecodeError` or :class:`ShredError`."""
    from ..registry import load_all_types

    load_all_types()  # every layer's types, not only core's
    if fmt == "shred":
        return {"type": "Shred", **_shred_or_raise(data)}
    try:
        obj = codec.decode(data)
    except codec.DecodeError as exc:
        if fmt == "message" or not _may_be_shred(data):
            raise
        try:
            return {"type": "Shred", **_shred_or_raise(data)}
        except ShredError as shred_exc:
            detail = f"{exc.detail}; not a shred packet either ({shred_exc})"
            raise codec.DecodeError(exc.reason, detail, exc.where) from None
    view = codec.to_json(obj)
    if expand_shreds:
        _expand(type(obj), view["body"])
    return view


def _may_be_shred(data: bytes) -> bool:
    return 64 < len(data) <= PACKET_DATA_BYTES


def _shred_or_raise(data: bytes) -> dict[str, Any]:
    return {"shred": parse_shred(data).describe()}


def _is_packet(spec: codec.Spec) -> bool:
    return isinstance(spec, codec.Bytes) and not spec.exact and spec.max_len == PACKET_DATA_BYTES


def _expand(cls: type, body: dict[str, Any]) -> None:
    """Replace the hex of every shred-packet field of ``body`` (a record of ``cls``) with the
    packet's parsed view, recursing into nested records."""
    for name, spec in codec.iter_specs(cls):
        if name not in body:
            continue
        inner = spec.inner if isinstance(spec, codec.Opt) else spec
        if _is_packet(inner):
            body[name] = {"hex": body[name], **shred_json(bytes.fromhex(body[name][2:]))}
        elif isinstance(inner, codec.List) and _is_packet(inner.item):
            body[name] = [{"hex": h, **shred_json(bytes.fromhex(h[2:]))} for h in body[name]]
        elif isinstance(inner, codec.Rec):
            _expand(inner.cls, body[name])
        elif isinstance(inner, codec.List) and isinstance(inner.item, codec.Rec):
            for item in body[name]:
                _expand(inner.item.cls, item)


def _inspect(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        view = inspect_bytes(data, args.fmt, args.shreds)
    except (codec.DecodeError, ShredError) as exc:
        raise UserError(f"{args.file}: {exc}") from None
    print(json.dumps(view, indent=2))
    return 0
