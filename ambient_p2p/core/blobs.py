"""Blob rules (pure; normative text: spec/blobs.md): the size limit, the token-blob
encoding whose sha256 is the auction's ``prompt_hash`` / ``output_hash``, how long a blob
must be served, and when a peer's answer is refused. The disk store and the network
service are ``node/blobs.py``; the wire messages ``net/messages.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .crypto import sha256
from .errors import ProtocolError
from .pol import DOMAIN_TOKENS

#: Largest blob: the token blob of the auction's largest prompt (16,384 token ids of 4
#: bytes plus the 26-byte header = 65,562 bytes; spec/auction.md ``prompt_tokens``) with
#: room to spare; every answer (<= 4,096 tokens, 16,410 bytes) fits four times over.
MAX_BLOB_BYTES = 65 * 1024
#: Token blob header: DOMAIN_TOKENS || count u32 BE, then one u32 BE per token id.
TOKEN_BLOB_HEADER_BYTES = len(DOMAIN_TOKENS) + 4
#: Most token ids one blob holds (16,633).
MAX_BLOB_TOKENS = (MAX_BLOB_BYTES - TOKEN_BLOB_HEADER_BYTES) // 4
#: Slots a blob is still served after the query it belongs to is final: one hour at 400 ms
#: slots. The Logit Pool's verifiers re-run the prompt and read the answer within
#: settlement windows of tens of slots (the prior art's are 32 slots), and a requester
#: that was offline for a while can still collect its answer.
BLOB_RETENTION_SLOTS = 9000
U64_LIMIT = 1 << 64


class BlobError(ProtocolError):
    """A refused blob or blob operation. Reasons: ``too-large`` (over
    :data:`MAX_BLOB_BYTES`), ``store-full`` (a store's byte or count bound), ``bad-hash``
    (not 32 bytes), ``bad-slot`` (not a u64), ``bad-token-blob`` (not the token-blob
    encoding), ``bad-request`` (a malformed control request)."""


def token_blob(tokens: Sequence[int]) -> bytes:
    """The blob of a token-id sequence: ``DOMAIN_TOKENS || len u32 BE || id u32 BE...``, so
    ``sha256(token_blob(t)) == core.pol.tokens_hash(t)``."""
    if len(tokens) > MAX_BLOB_TOKENS:
        raise BlobError("too-large", f"{len(tokens)} tokens > {MAX_BLOB_TOKENS} per blob")
    try:
        body = b"".join(int(t).to_bytes(4, "big") for t in tokens)
    except OverflowError:
        raise BlobError("bad-token-blob", "a token id is not a u32") from None
    return DOMAIN_TOKENS + len(tokens).to_bytes(4, "big") + body


def blob_tokens(data: bytes) -> list[int]:
    """The token ids of a token blob; :class:`BlobError` ``bad-token-blob`` if it is not the
    encoding, ``too-large`` if it holds more than :data:`MAX_BLOB_TOKENS` ids."""
    if len(data) < TOKEN_BLOB_HEADER_BYTES or not data.startswith(DOMAIN_TOKENS):
        raise BlobError("bad-token-blob", "no token-blob header")
    n = int.from_bytes(data[len(DOMAIN_TOKENS) : TOKEN_BLOB_HEADER_BYTES], "big")
    body = data[TOKEN_BLOB_HEADER_BYTES:]
    if len(body) != 4 * n:
        raise BlobError("bad-token-blob", f"header says {n} tokens, body holds {len(body)} bytes")
    if n > MAX_BLOB_TOKENS:  # spec/blobs.md: a token blob holds at most MAX_BLOB_TOKENS ids
        raise BlobError("too-large", f"{n} tokens > {MAX_BLOB_TOKENS} per blob")
    return [int.from_bytes(body[i : i + 4], "big") for i in range(0, len(body), 4)]


def serve_until_slot(deadline_slot: int, final_slot: int | None = None) -> int:
    """The slot until which a query's prompt and answer must be served: the later of its
    deadline and the slot it became final (expired, refunded, settled), plus
    :data:`BLOB_RETENTION_SLOTS`."""
    return min(U64_LIMIT - 1, max(deadline_slot, final_slot or 0) + BLOB_RETENTION_SLOTS)


def answer_rejection(requested: bytes, named: bytes, data: bytes | None) -> str | None:
    """Why a peer's answer (``named``, ``data``) to a request for ``requested`` is not the
    blob, or None if it is: ``not-found`` (no data), ``wrong-hash`` (it names another
    blob), ``hash-mismatch`` (its bytes do not hash to the request)."""
    if data is None:
        return "not-found"
    if named != requested:
        return "wrong-hash"
    if sha256(data) != requested:
        return "hash-mismatch"
    return None


def check_hash(h: bytes) -> bytes:
    """``h`` as bytes if it can name a blob (32 bytes), else :class:`BlobError` ``bad-hash``."""
    if not isinstance(h, bytes | bytearray) or len(h) != 32:
        raise BlobError("bad-hash", "a blob is named by a 32-byte sha256")
    return bytes(h)


def check_slot(slot: int) -> int:
    """``slot`` if it is a u64, else :class:`BlobError` ``bad-slot``."""
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < U64_LIMIT:
        raise BlobError("bad-slot", f"keep_until_slot must be a u64, not {slot!r}")
    return slot
