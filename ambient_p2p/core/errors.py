"""One base for the protocol's rejections: :class:`ProtocolError` ``(reason, detail)``.

Decoders, verifiers and rule checks across the layers (codec, shreds, PoH, bank, erasure,
vote transactions, votes, replay, request/response, interop runners) reject with a stable
machine-readable ``reason`` (the codes their spec lists and the interop vectors pin) and a
human-readable ``detail``. One base lets a caller catch one type and lets peer scoring and
logs read one attribute. Each subclass keeps its own name and codes and may add context
(a byte offset, an entry or transaction index).

Classes that were ``ValueError`` subclasses before this base existed keep ``ValueError``
as a second base, so existing ``except ValueError`` sites behave as before.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A rejection with a stable ``reason`` code and a human ``detail``; ``context`` is
    appended to the message (e.g. ``" at @12"``)."""

    def __init__(self, reason: str, detail: str = "", context: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}{context}" if detail or context else reason)


__all__ = ["ProtocolError"]
