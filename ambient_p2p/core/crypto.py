"""Keys, signatures and hashes (normative text: spec/crypto.md).

Identities are ed25519 keys, exactly as in Solana: a node's address is the base58 of its
32-byte public key, and key files use the Solana CLI keypair format (a JSON array of the
64 bytes secret-seed || public-key), so `solana-keygen pubkey` reads our files and we read
theirs.

Every Ambient signature is *domain separated*: the signed bytes are

    b"ambient/" + purpose + b"/v1" + b"\\x00" + message

where ``purpose`` is one of :data:`SIGNING_PURPOSES` (lower-case ASCII, digits and '-', so
it can never contain '/' or NUL).  A signature made for one purpose therefore never verifies
for another, and no Ambient-signed message can be confused with a Solana transaction
message or a shred Merkle root (see spec/crypto.md for why).

Verification is strict: libsodium (via PyNaCl) rejects non-canonical S (S >= L, the
classic malleation), small-order public keys and non-canonical point encodings.

This module is sans-IO except for :func:`read_keypair_file` / :func:`write_keypair_file`,
which are thin helpers for the CLI shell; the core never calls them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import base58
import nacl.exceptions
import nacl.signing

PUBKEY_BYTES = 32
SEED_BYTES = 32
KEYPAIR_BYTES = 64
SIGNATURE_BYTES = 64
#: The placeholder signature of a self-signed message while it is being signed (spec/encoding.md).
ZERO_SIGNATURE = bytes(SIGNATURE_BYTES)
HASH_BYTES = 32

DOMAIN_PREFIX = b"ambient/"
DOMAIN_VERSION = b"/v1"
DOMAIN_TERMINATOR = b"\x00"

#: Every purpose a signature may be made for. Adding one is a protocol change: update
#: spec/crypto.md (the table there lists each purpose and what its message is).
SIGNING_PURPOSES: frozenset[str] = frozenset(
    {
        "genesis",  # genesis attestation by a bootstrap identity
        "vote",  # Tower BFT votes
        "gossip",  # gossip envelopes that are not Solana-format objects
        "repair",  # repair requests/responses
        "pol-commitment",  # proof-of-logits commitments by miners
        "pol-verdict",  # validator verdicts on PoL openings
        "stage-commitment",  # sharded inference: a stage's commitment over its boundaries (spec/shard.md)
        "auction-bid",  # query-auction bids
        "auction-query",  # user query orders
        "node-info",  # signed contact info / peer records
        "snapshot",  # a node's attestation of a rooted snapshot it serves (spec/join.md)
        "test",  # reserved for test vectors; never accepted by the node
    }
)

_PURPOSE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class CryptoError(ValueError):
    """A key, signature or key file is malformed (a user or peer error, not a bug)."""


def sha256(*parts: bytes) -> bytes:
    """sha256 over the concatenation of ``parts`` (Solana's ``hashv``)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def signing_domain(purpose: str) -> bytes:
    """The prefix signed before every message of ``purpose``."""
    if purpose not in SIGNING_PURPOSES or not _PURPOSE_RE.match(purpose):
        raise CryptoError(f"unknown signing purpose {purpose!r}")
    return DOMAIN_PREFIX + purpose.encode("ascii") + DOMAIN_VERSION + DOMAIN_TERMINATOR


def signing_message(purpose: str, message: bytes) -> bytes:
    """The exact bytes handed to ed25519 for ``message`` signed for ``purpose``."""
    return signing_domain(purpose) + bytes(message)


def encode_address(pubkey: bytes) -> str:
    """base58 text of a 32-byte public key (what Solana prints as a pubkey)."""
    if len(pubkey) != PUBKEY_BYTES:
        raise CryptoError(f"public key must be {PUBKEY_BYTES} bytes, got {len(pubkey)}")
    return base58.b58encode(bytes(pubkey)).decode("ascii")


def decode_address(text: str) -> bytes:
    """Inverse of :func:`encode_address`; raises :class:`CryptoError` on bad input."""
    try:
        raw = base58.b58decode(text.strip())
    except ValueError as exc:
        raise CryptoError(f"{text!r} is not base58: {exc}") from None
    if len(raw) != PUBKEY_BYTES:
        raise CryptoError(f"{text!r} decodes to {len(raw)} bytes, an address is {PUBKEY_BYTES}")
    return raw


def verify(pubkey: bytes, purpose: str, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid, canonical signature by ``pubkey`` over
    ``message`` for ``purpose``. Never raises for malformed peer input."""
    if len(pubkey) != PUBKEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    if purpose not in SIGNING_PURPOSES:
        return False
    return verify_raw(pubkey, signing_message(purpose, message), signature)


def verify_raw(pubkey: bytes, signed: bytes, signature: bytes) -> bool:
    """Plain ed25519 verification with no domain (only for Solana-format objects such as
    transactions and shred Merkle roots, which carry their own structure)."""
    if len(pubkey) != PUBKEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(bytes(pubkey)).verify(bytes(signed), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    except nacl.exceptions.CryptoError:
        return False
    return True


@dataclass(frozen=True)
class Keypair:
    """An ed25519 keypair. ``seed`` is the 32-byte secret; the public key derives from it."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise CryptoError(f"secret seed must be {SEED_BYTES} bytes, got {len(self.seed)}")

    # -- construction -----------------------------------------------------------------
    @classmethod
    def generate(cls) -> Keypair:
        """A fresh key from the OS CSPRNG."""
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        return cls(bytes(seed))

    @classmethod
    def deterministic(cls, label: str, index: int = 0) -> Keypair:
        """Reproducible key for tests and localnets. NEVER for real funds: anyone who
        knows the label can recompute the secret."""
        if index < 0:
            raise CryptoError("index must be >= 0")
        seed = sha256(b"ambient/test-key/v1\x00", label.encode("utf-8"), b"\x00", index.to_bytes(8, "big"))
        return cls(seed)

    @classmethod
    def from_bytes(cls, keypair64: bytes) -> Keypair:
        """From Solana's 64-byte form (seed || pubkey); the pubkey half must match."""
        if len(keypair64) != KEYPAIR_BYTES:
            raise CryptoError(f"a keypair is {KEYPAIR_BYTES} bytes, got {len(keypair64)}")
        kp = cls(bytes(keypair64[:SEED_BYTES]))
        if kp.pubkey != bytes(keypair64[SEED_BYTES:]):
            raise CryptoError("keypair's public half does not match its secret half")
        return kp

    @classmethod
    def from_solana_json(cls, text: str | bytes) -> Keypair:
        """Parse a Solana CLI keypair file's contents (JSON array of 64 ints 0..255)."""
        try:
            arr = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CryptoError(f"keypair file is not JSON: {exc}") from None
        if not isinstance(arr, list) or len(arr) != KEYPAIR_BYTES:
            raise CryptoError(f"keypair file must be a JSON array of {KEYPAIR_BYTES} numbers")
        if not all(type(x) is int and 0 <= x <= 255 for x in arr):
            raise CryptoError("keypair file entries must be integers 0..255")
        return cls.from_bytes(bytes(arr))

    # -- views ------------------------------------------------------------------------
    # cached: deriving the key pair from the seed is a scalar multiplication, and hot paths
    # (leader, voting, gossip) read ``pubkey`` per message (issue 17: 1-2% of a loaded node)
    @functools.cached_property
    def _signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @functools.cached_property
    def pubkey(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def address(self) -> str:
        return encode_address(self.pubkey)

    def to_bytes(self) -> bytes:
        return self.seed + self.pubkey

    def to_solana_json(self) -> str:
        return json.dumps(list(self.to_bytes()), separators=(",", ":"))

    # -- signing ----------------------------------------------------------------------
    def sign(self, purpose: str, message: bytes) -> bytes:
        """Domain-separated signature (64 bytes) over ``message`` for ``purpose``."""
        return self.sign_raw(signing_message(purpose, message))

    def sign_raw(self, signed: bytes) -> bytes:
        """Undomained signature: only for Solana-format objects (see :func:`verify_raw`)."""
        return self._signing_key.sign(bytes(signed)).signature

    def __repr__(self) -> str:  # never print the secret
        return f"Keypair({self.address})"


# -- file helpers for the shells (not used by the core) ---------------------------------
def read_keypair_file(path: str | os.PathLike[str]) -> Keypair:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise CryptoError(f"cannot read keypair file {p}: {exc.strerror}") from None
    try:
        return Keypair.from_solana_json(text)
    except CryptoError as exc:
        raise CryptoError(f"{p}: {exc}") from None


def write_keypair_file(path: str | os.PathLike[str], kp: Keypair, *, overwrite: bool = False) -> None:
    """Write ``kp`` in Solana format with mode 0600, atomically (temp file + rename)."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise CryptoError(f"{p} already exists (refusing to overwrite a key; use --force)")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, kp.to_solana_json().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
