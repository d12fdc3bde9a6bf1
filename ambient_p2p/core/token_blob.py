"""Prompt and answer blobs: a token-id sequence as the exact bytes whose sha256 is its
``pol.tokens_hash`` (spec/auction.md "Prompt and answer blobs"). So the blob of a query's
prompt is found by the query's on-chain ``prompt_hash`` and the answer by ``output_hash``,
and a peer checks a blob against the hash without a tokenizer. Pure.

Layout: ``DOMAIN_TOKENS || count u32 BE || id u32 BE ...`` (the preimage of
``tokens_hash``, spec/pol.md).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .pol import DOMAIN_TOKENS, MAX_OUTPUT_TOKENS, MAX_PROMPT_TOKENS

#: The longest token sequence a blob may carry (a prompt or an answer).
MAX_BLOB_TOKENS = max(MAX_PROMPT_TOKENS, MAX_OUTPUT_TOKENS)


class TokenBlobError(ValueError):
    pass


def token_blob(tokens: Sequence[int]) -> bytes:
    if not 0 < len(tokens) <= MAX_BLOB_TOKENS:
        raise TokenBlobError(f"a token blob holds 1..{MAX_BLOB_TOKENS} tokens, not {len(tokens)}")
    return DOMAIN_TOKENS + struct.pack(f">I{len(tokens)}I", len(tokens), *tokens)


def parse_token_blob(data: bytes) -> list[int]:
    """The token ids of a blob; raises :class:`TokenBlobError` on anything malformed."""
    if not data.startswith(DOMAIN_TOKENS):
        raise TokenBlobError("not a token blob (domain)")
    body = data[len(DOMAIN_TOKENS):]
    if len(body) < 4:
        raise TokenBlobError("token blob without a count")
    (n,) = struct.unpack_from(">I", body)
    if not 0 < n <= MAX_BLOB_TOKENS or len(body) != 4 + 4 * n:
        raise TokenBlobError(f"token blob length {len(body)} does not match its count {n}")
    return list(struct.unpack_from(f">{n}I", body, 4))
