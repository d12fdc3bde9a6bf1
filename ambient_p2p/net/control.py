"""Validation of local control requests (spec/network.md "Local control").

The control socket (:mod:`ambient_p2p.net.node`) takes one JSON object per connection. Every
request passes :func:`parse_control_request` before any command sees it, whichever module
implements the command (the networking node, the validator in ``ambient_p2p.node``, or a
later extension), so a malformed request is answered ``{"ok": false, "error": ...}`` and
can never reach code that would raise on it (issue 16: ``slot_info`` with slot -1 or 2**70,
``has_shred`` with slot -1 and a 100,000-deep JSON array each killed the node).

Rules, in order (the first failure is the error):

1. at most :data:`CONTROL_MAX_REQUEST_BYTES` bytes, UTF-8 JSON, nesting at most
   :data:`CONTROL_MAX_DEPTH` (checked by a scan *before* parsing: the parser recurses);
   no ``NaN``/``Infinity``;
2. an object whose ``cmd`` is a string of at most :data:`CONTROL_MAX_CMD_CHARS` characters;
3. every integer anywhere in it fits a signed 64-bit integer, every string is at most
   ``CONTROL_MAX_REQUEST_BYTES`` (implied by 1);
4. a field with a name of :data:`CONTROL_FIELD_TYPES` (in any command) has that type and range
   (``slot`` is a u64 below 2**63, ``index`` a u32, ...);
5. a command of :data:`CONTROL_REQUIRED` has its required fields.
"""

from __future__ import annotations

import json
import math
from typing import Any

CONTROL_MAX_REQUEST_BYTES = 1 << 20
#: Deepest nesting of arrays/objects a request may have (the commands use 1-2).
CONTROL_MAX_DEPTH = 8
CONTROL_MAX_CMD_CHARS = 64
#: Largest integer accepted anywhere (a JSON number any peer decodes exactly as int64).
CONTROL_MAX_INT = (1 << 63) - 1
CONTROL_MIN_INT = -(1 << 63)
U32_MAX = (1 << 32) - 1

#: Field name -> (type, min, max), applied to that field in every command. Types: "int"
#: (not a bool), "num" (int or finite float), "str", "hex" (even-length hex string).
CONTROL_FIELD_TYPES: dict[str, tuple[str, float, float]] = {
    "slot": ("int", 0, CONTROL_MAX_INT),
    "from": ("int", 0, CONTROL_MAX_INT),
    "index": ("int", 0, U32_MAX),
    "count": ("int", 0, CONTROL_MAX_INT),
    "size": ("int", 0, CONTROL_MAX_REQUEST_BYTES),
    "per_batch": ("int", 1, 1024),
    "rate": ("num", 0, 1e9),
    "kind": ("str|int", 0, 255),  # a topic kind (publish) or a repair kind (repair)
    "peer": ("str", 0, 0),
    "payload_hex": ("hex", 0, 0),
    "tx_hex": ("hex", 0, 0),
}
#: Required fields of the commands that have any (commands not listed need none here; the
#: command itself still checks its own semantics).
CONTROL_REQUIRED: dict[str, tuple[str, ...]] = {
    "publish": ("kind", "payload_hex"),
    "repair": ("peer", "slot"),
    "has_shred": ("slot", "index"),
    "slot_info": ("slot",),
    "submit_tx": ("tx_hex",),
    "submit_txs": ("txs_hex",),  # node/tpu.py
    "tx_status": ("sigs_hex",),  # node/tpu.py
}


class ControlRequestError(ValueError):
    """A control request that is not well-formed; the message is the answer's ``error``."""


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """True if arrays/objects in the JSON text ``raw`` nest deeper than ``limit`` (brackets
    inside strings do not count). A linear scan, so it is safe on any input."""
    depth = 0
    in_str = False
    esc = False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:  # backslash
                esc = True
            elif b == 0x22:  # quote
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ControlRequestError(f"{name} is not a JSON number this socket accepts")


def _check_ints(value: Any, path: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not CONTROL_MIN_INT <= value <= CONTROL_MAX_INT:
            raise ControlRequestError(f"{path}: integer out of range (a signed 64-bit integer)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ControlRequestError(f"{path}: not a finite number")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_ints(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_ints(v, f"{path}.{k}")


def _check_field(name: str, value: Any) -> None:
    typ, lo, hi = CONTROL_FIELD_TYPES[name]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if typ == "str|int":
        typ = "str" if isinstance(value, str) else "int"
    if typ == "int":
        if not is_int:
            raise ControlRequestError(f"{name} must be an integer, not {type(value).__name__}")
        if not lo <= value <= hi:
            raise ControlRequestError(f"{name} must be in {lo:g}..{hi:g}, not {value}")
    elif typ == "num":
        if not (is_int or isinstance(value, float)) or not math.isfinite(value):
            raise ControlRequestError(f"{name} must be a finite number")
        if not lo <= value <= hi:
            raise ControlRequestError(f"{name} must be in {lo:g}..{hi:g}, not {value}")
    elif typ in ("str", "hex"):
        if not isinstance(value, str):
            raise ControlRequestError(f"{name} must be a string, not {type(value).__name__}")
        if typ == "hex":
            try:
                bytes.fromhex(value)
            except ValueError:
                raise ControlRequestError(f"{name} must be an even-length hex string") from None


def check_control_request(req: Any) -> dict[str, Any]:
    """Rules 2-5 over a parsed request; returns it, or raises ControlRequestError."""
    if not isinstance(req, dict):
        raise ControlRequestError(f"a request is a JSON object, not {type(req).__name__}")
    cmd = req.get("cmd")
    if not isinstance(cmd, str) or not 0 < len(cmd) <= CONTROL_MAX_CMD_CHARS:
        raise ControlRequestError(f"'cmd' must be a command name (a string of 1..{CONTROL_MAX_CMD_CHARS} chars)")
    _check_ints(req, "request")
    for name, value in req.items():
        if name in CONTROL_FIELD_TYPES:
            _check_field(name, value)
    missing = [f for f in CONTROL_REQUIRED.get(cmd, ()) if f not in req]
    if missing:
        raise ControlRequestError(f"{cmd} needs {', '.join(missing)}")
    return req


def parse_control_request(raw: bytes) -> dict[str, Any]:
    """Rule 1 then :func:`check_control_request` over the request line ``raw``."""
    if len(raw) > CONTROL_MAX_REQUEST_BYTES:
        raise ControlRequestError(f"request longer than {CONTROL_MAX_REQUEST_BYTES} bytes")
    if json_depth_exceeds(raw, CONTROL_MAX_DEPTH):
        raise ControlRequestError(f"request nests deeper than {CONTROL_MAX_DEPTH} levels")
    try:
        req = json.loads(raw.decode("utf-8") or "{}", parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ControlRequestError("request is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ControlRequestError(f"request is not JSON: {exc.msg} at {exc.pos}") from None
    return check_control_request(req)
