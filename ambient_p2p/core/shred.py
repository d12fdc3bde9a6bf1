"""Merkle shreds, byte-compatible with agave (normative text: spec/shred.md; sources
followed: agave ``ledger/src/shred.rs``, ``shred/merkle.rs``, ``shred/merkle_tree.rs``,
``shred/shred_data.rs``, ``shred/shred_code.rs``, ``shred/common.rs``).

Layout (all integers little-endian, as bincode writes them)::

    common header (83): signature 64 | variant 1 | slot u64 | index u32 | version u16
                        | fec_set_index u32
    data header (5):    parent_offset u16 | flags u8 | size u16      (data shreds)
    coding header (6):  num_data_shreds u16 | num_coding_shreds u16 | position u16
    then: data buffer / erasure shard | chained Merkle root (32)
          | Merkle proof (proof_size x 20) | [retransmitter signature (64) if resigned]

A data shred's payload is 1203 bytes, a coding shred's 1228 (a 1232-byte packet minus the
4-byte repair nonce). Bytes [64, proof offset) are the Merkle leaf of a shred; bytes
[64, end of data buffer) of a data shred and [89, end of shard) of a coding shred are the
erasure-coded shard (identical lengths). The leader signs the 32-byte Merkle root of each
FEC set (32 data + 32 coding shreds); every shred of the set carries that signature.

This module parses and validates shreds (:func:`parse_shred`), verifies them against a
leader key (:func:`verify_shred`), makes them from serialized entries
(:func:`make_shreds_from_data`), recovers a FEC set from any 32 of its 64 shreds
(:func:`recover`) and reassembles entry batches (:func:`deshred`). Pure functions; no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import erasure
from .constants import PACKET_DATA_BYTES
from .crypto import ZERO_SIGNATURE, Keypair, verify_raw
from .errors import ProtocolError

# --- sizes (bytes) ----------------------------------------------------------------------
SIZE_OF_SIGNATURE = 64
SIZE_OF_SHRED_VARIANT = 1
SIZE_OF_SHRED_SLOT = 8
SIZE_OF_SHRED_INDEX = 4
SIZE_OF_COMMON_SHRED_HEADER = 83
SIZE_OF_DATA_SHRED_HEADERS = 88
SIZE_OF_CODING_SHRED_HEADERS = 89
SIZE_OF_MERKLE_ROOT = 32
SIZE_OF_MERKLE_PROOF_ENTRY = 20
SIZE_OF_NONCE = 4
CODE_PAYLOAD_BYTES = PACKET_DATA_BYTES - SIZE_OF_NONCE  # 1228
DATA_PAYLOAD_BYTES = CODE_PAYLOAD_BYTES - SIZE_OF_CODING_SHRED_HEADERS + SIZE_OF_SIGNATURE  # 1203

# --- offsets ----------------------------------------------------------------------------
OFFSET_VARIANT = 64
OFFSET_SLOT = 65
OFFSET_INDEX = 73
OFFSET_VERSION = 77
OFFSET_FEC_SET_INDEX = 79
OFFSET_PARENT_OFFSET = 83
OFFSET_FLAGS = 85
OFFSET_SIZE = 86
OFFSET_NUM_DATA = 83
OFFSET_NUM_CODING = 85
OFFSET_POSITION = 87

# --- FEC sets and limits ----------------------------------------------------------------
DATA_SHREDS_PER_FEC_BLOCK = 32
CODING_SHREDS_PER_FEC_BLOCK = 32
SHREDS_PER_FEC_BLOCK = DATA_SHREDS_PER_FEC_BLOCK + CODING_SHREDS_PER_FEC_BLOCK
PROOF_ENTRIES_FOR_32_32_BATCH = 6
MAX_DATA_SHREDS_PER_SLOT = 32_768
MAX_CODE_SHREDS_PER_SLOT = 32_768
#: agave rejects coding shreds claiming more than 8 x 32 coding shreds per set.
MAX_NUM_CODING_SHREDS = 8 * DATA_SHREDS_PER_FEC_BLOCK
#: The nibble holding proof_size allows 15; no proof can exceed the shard room anyway.
MAX_PROOF_SIZE = 15

# --- variant byte -----------------------------------------------------------------------
VARIANT_LEGACY_CODE = 0b0101_1010
VARIANT_LEGACY_DATA = 0b1010_0101
VARIANT_MERKLE_CODE = 0x40
VARIANT_MERKLE_CODE_CHAINED = 0x60
VARIANT_MERKLE_CODE_CHAINED_RESIGNED = 0x70
VARIANT_MERKLE_DATA = 0x80
VARIANT_MERKLE_DATA_CHAINED = 0x90
VARIANT_MERKLE_DATA_CHAINED_RESIGNED = 0xB0

# --- data flags -------------------------------------------------------------------------
SHRED_TICK_REFERENCE_MASK = 0b0011_1111
DATA_COMPLETE_SHRED = 0b0100_0000
LAST_SHRED_IN_SLOT = 0b1100_0000  # includes DATA_COMPLETE_SHRED

MERKLE_HASH_PREFIX_LEAF = b"\x00SOLANA_MERKLE_SHREDS_LEAF"
MERKLE_HASH_PREFIX_NODE = b"\x01SOLANA_MERKLE_SHREDS_NODE"

_COMMON = struct.Struct("<64sBQIHI")
_DATA_HDR = struct.Struct("<HBH")
_CODE_HDR = struct.Struct("<HHH")


class ShredError(ProtocolError, ValueError):
    """A shred (or a set of them) is invalid. ``reason`` is a stable code listed in
    spec/shred.md and used by the interop must-reject vectors."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)


# ---------------------------------------------------------------------------------------
# Variant
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShredVariant:
    is_data: bool
    proof_size: int
    chained: bool
    resigned: bool

    def to_byte(self) -> int:
        if self.resigned and not self.chained:
            raise ValueError("a resigned shred must be chained")
        if not 0 <= self.proof_size <= MAX_PROOF_SIZE:
            raise ValueError("proof_size must fit a nibble")
        if self.is_data:
            base = (
                VARIANT_MERKLE_DATA_CHAINED_RESIGNED
                if self.resigned
                else VARIANT_MERKLE_DATA_CHAINED if self.chained else VARIANT_MERKLE_DATA
            )
        else:
            base = (
                VARIANT_MERKLE_CODE_CHAINED_RESIGNED
                if self.resigned
                else VARIANT_MERKLE_CODE_CHAINED if self.chained else VARIANT_MERKLE_CODE
            )
        return base | self.proof_size

    @classmethod
    def from_byte(cls, b: int) -> ShredVariant:
        return _variant_from_byte(b)

    @classmethod
    def _from_byte(cls, b: int) -> ShredVariant:
        """Accepts what current agave accepts: chained Merkle variants only. Legacy and
        unchained Merkle shreds are no longer produced by any cluster (agave dropped them)."""
        if b in (VARIANT_LEGACY_CODE, VARIANT_LEGACY_DATA):
            raise ShredError("legacy-variant", f"legacy shred variant {b:#04x} is not supported")
        proof_size = b & 0x0F
        hi = b & 0xF0
        table = {
            VARIANT_MERKLE_CODE_CHAINED: (False, False),
            VARIANT_MERKLE_CODE_CHAINED_RESIGNED: (False, True),
            VARIANT_MERKLE_DATA_CHAINED: (True, False),
            VARIANT_MERKLE_DATA_CHAINED_RESIGNED: (True, True),
        }
        if hi in (VARIANT_MERKLE_CODE, VARIANT_MERKLE_DATA):
            raise ShredError("unchained-variant", f"unchained Merkle variant {b:#04x} is not supported")
        if hi not in table:
            raise ShredError("bad-variant", f"unknown shred variant {b:#04x}")
        is_data, resigned = table[hi]
        return cls(is_data, proof_size, True, resigned)

    @property
    def payload_size(self) -> int:
        return DATA_PAYLOAD_BYTES if self.is_data else CODE_PAYLOAD_BYTES

    @property
    def headers_size(self) -> int:
        return SIZE_OF_DATA_SHRED_HEADERS if self.is_data else SIZE_OF_CODING_SHRED_HEADERS

    def __post_init__(self) -> None:
        # Offsets are used for every shred parsed; compute them once per variant value.
        cap = (
            self.payload_size
            - self.headers_size
            - (SIZE_OF_MERKLE_ROOT if self.chained else 0)
            - self.proof_size * SIZE_OF_MERKLE_PROOF_ENTRY
            - (SIZE_OF_SIGNATURE if self.resigned else 0)
        )
        object.__setattr__(self, "_cap", cap)
        object.__setattr__(self, "_proof_offset",
                           self.headers_size + cap + (SIZE_OF_MERKLE_ROOT if self.chained else 0))
        object.__setattr__(self, "_rs_offset",
                           self._proof_offset + self.proof_size * SIZE_OF_MERKLE_PROOF_ENTRY)  # type: ignore[attr-defined]

    def capacity(self) -> int:
        """Data buffer size (data shreds) or erasure shard room after headers (coding)."""
        cap: int = self._cap  # type: ignore[attr-defined]
        if cap < 0:
            raise ShredError("bad-proof-size", f"proof size {self.proof_size} leaves no room")
        return cap

    @property
    def shard_start(self) -> int:
        return SIZE_OF_SIGNATURE if self.is_data else SIZE_OF_CODING_SHRED_HEADERS

    @property
    def shard_end(self) -> int:
        return self.headers_size + self.capacity()

    @property
    def chained_root_offset(self) -> int:
        return self.headers_size + self.capacity()

    @property
    def proof_offset(self) -> int:
        off: int = self._proof_offset  # type: ignore[attr-defined]
        return off

    @property
    def retransmitter_signature_offset(self) -> int:
        return self.proof_offset + self.proof_size * SIZE_OF_MERKLE_PROOF_ENTRY

    def data_capacity(self) -> int:
        return self.capacity()


@functools.lru_cache(maxsize=256)
def _variant_from_byte(b: int) -> ShredVariant:
    return ShredVariant._from_byte(b)


def data_capacity(proof_size: int, chained: bool, resigned: bool) -> int:
    """Ledger bytes one data shred carries (899 for a chained, resigned 32:32 set)."""
    return ShredVariant(True, proof_size, chained, resigned).capacity()


# ---------------------------------------------------------------------------------------
# Merkle tree (agave merkle_tree.rs: 20-byte truncated nodes)
# ---------------------------------------------------------------------------------------
def merkle_leaf(data: bytes) -> bytes:
    return hashlib.sha256(MERKLE_HASH_PREFIX_LEAF + data).digest()


def join_nodes(node: bytes, other: bytes) -> bytes:
    return hashlib.sha256(
        MERKLE_HASH_PREFIX_NODE + node[:SIZE_OF_MERKLE_PROOF_ENTRY] + other[:SIZE_OF_MERKLE_PROOF_ENTRY]
    ).digest()


def make_merkle_tree(leaves: Sequence[bytes]) -> list[bytes]:
    """All nodes level by level, leaves first, root last (agave ``make_merkle_tree``)."""
    nodes = list(leaves)
    size = len(nodes)
    while size > 1:
        offset = len(nodes) - size
        for i in range(offset, offset + size, 2):
            nodes.append(join_nodes(nodes[i], nodes[min(i + 1, offset + size - 1)]))
        size = (size + 1) >> 1
    return nodes


def make_merkle_proof(index: int, size: int, tree: Sequence[bytes]) -> list[bytes]:
    if not 0 <= index < size:
        raise ShredError("bad-proof", f"leaf {index} outside a tree of {size}")
    proof = []
    offset = 0
    while size > 1:
        proof.append(tree[offset + min(index ^ 1, size - 1)][:SIZE_OF_MERKLE_PROOF_ENTRY])
        offset += size
        size = (size + 1) >> 1
        index >>= 1
    return proof


def get_merkle_root(index: int, node: bytes, proof: Iterable[bytes]) -> bytes:
    for other in proof:
        node = join_nodes(node, other) if index % 2 == 0 else join_nodes(other, node)
        index >>= 1
    if index != 0:
        raise ShredError("bad-proof", "Merkle proof is too short for the shred's position")
    return node


#: Memo for :meth:`Shred.merkle_root` over many shreds (e.g. one blockstore insert).
#: Going up a proof, the step at level k hashes the 40 bytes ``pair`` (the node's first 20
#: bytes and proof entry k, ordered by bit k of the index); everything after it (the next
#: node, the remaining proof entries, the remaining left/right turns and the final "proof
#: too short" check) is a pure function of ``(index >> (k + 1), pair, proof[k + 1:])``. So
#: that triple, packed as ``(index >> (k + 1), pair + rest)``, maps to the root once one
#: shred has computed it. Sibling shreds of a FEC set build the same key where their paths
#: meet, so 64 honest shreds cost 64 leaf and 63 node hashes (instead of 64 + 384), and the
#: result is bit-for-bit what :func:`get_merkle_root` returns. The caller owns the dict.
MerkleMemo = dict[tuple[int, bytes], bytes]

# sha256 states with the leaf / node prefixes already absorbed: copy() + update(rest) is
# sha256(prefix + rest), without building the concatenation or a fresh hash object.
_LEAF_HASH = hashlib.sha256(MERKLE_HASH_PREFIX_LEAF)
_NODE_HASH = hashlib.sha256(MERKLE_HASH_PREFIX_NODE)


def _merkle_root_of(payload: bytes, proof_offset: int, proof_size: int, index: int,
                    memo: MerkleMemo | None) -> bytes:
    """``get_merkle_root(index, merkle_leaf(payload[64:proof_offset]), proof)`` with the
    proof read straight from ``payload``: one C call when the native module is built (it
    shares identical sub-computations with the previous call by itself, so ``memo`` is not
    needed), else :func:`_merkle_root_of_py`. Same root, same ``bad-proof`` refusal."""
    if MERKLE_ROOT_BACKEND == "openssl":
        root = _c_merkle_root(payload, proof_offset, proof_size, index)
        if root is None:
            raise ShredError("bad-proof", "Merkle proof is too short for the shred's position")
        return root
    return _merkle_root_of_py(payload, proof_offset, proof_size, index, memo)


def _merkle_root_of_py(payload: bytes, proof_offset: int, proof_size: int, index: int,
                       memo: MerkleMemo | None) -> bytes:
    """The pure-Python :func:`_merkle_root_of`, optionally through ``memo``."""
    h = _LEAF_HASH.copy()  # sha256(MERKLE_HASH_PREFIX_LEAF + leaf bytes), prefix pre-hashed
    h.update(payload[SIZE_OF_SIGNATURE:proof_offset])
    node = h.digest()
    off = proof_offset
    end = proof_offset + proof_size * SIZE_OF_MERKLE_PROOF_ENTRY
    if memo is None:
        while off < end:
            nxt = off + SIZE_OF_MERKLE_PROOF_ENTRY
            if index & 1:
                pair = payload[off:nxt] + node[:SIZE_OF_MERKLE_PROOF_ENTRY]
            else:
                pair = node[:SIZE_OF_MERKLE_PROOF_ENTRY] + payload[off:nxt]
            h = _NODE_HASH.copy()
            h.update(pair)
            node = h.digest()
            index >>= 1
            off = nxt
        if index != 0:
            raise ShredError("bad-proof", "Merkle proof is too short for the shred's position")
        return node
    pending: list[tuple[int, bytes]] = []
    while off < end:
        nxt = off + SIZE_OF_MERKLE_PROOF_ENTRY
        if index & 1:
            pair = payload[off:nxt] + node[:SIZE_OF_MERKLE_PROOF_ENTRY]
        else:
            pair = node[:SIZE_OF_MERKLE_PROOF_ENTRY] + payload[off:nxt]
        index >>= 1
        rkey = (index, pair + payload[nxt:end])
        hit = memo.get(rkey)
        if hit is not None:
            node = hit
            break
        pending.append(rkey)
        h = _NODE_HASH.copy()
        h.update(pair)
        node = h.digest()
        off = nxt
    else:
        if index != 0:
            raise ShredError("bad-proof", "Merkle proof is too short for the shred's position")
    for rkey in pending:
        memo[rkey] = node
    return node


try:  # optional compiled Merkle root and parse (scripts/setup.sh builds them against OpenSSL's libcrypto)
    from . import _native_shred
    from ._native_shred import merkle_root as _c_merkle_root

    #: Which implementation :func:`_merkle_root_of` runs: ``"openssl"`` (one C call per
    #: shred, _native_shred.c) or ``"python"`` (hashlib with a per-insert memo).
    MERKLE_ROOT_BACKEND = "openssl"
except ImportError:  # not built: the Python path gives the same roots, slower
    _native_shred = None  # type: ignore[assignment]
    MERKLE_ROOT_BACKEND = "python"


def proof_size_for(num_shreds: int) -> int:
    """ceil(log2(num_shreds)): entries in a proof for a tree of that many leaves."""
    return (num_shreds - 1).bit_length() if num_shreds > 1 else 0


# ---------------------------------------------------------------------------------------
# Parsed shred
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shred:
    """A parsed, sanitized Merkle shred. ``payload`` is exactly the variant's payload size.
    Data-only fields are None for coding shreds and vice versa."""

    payload: bytes
    variant: ShredVariant
    signature: bytes
    slot: int
    index: int
    version: int
    fec_set_index: int
    parent_offset: int | None = None
    flags: int | None = None
    size: int | None = None
    num_data_shreds: int | None = None
    num_coding_shreds: int | None = None
    position: int | None = None

    @property
    def is_data(self) -> bool:
        return self.variant.is_data

    @property
    def erasure_shard_index(self) -> int:
        if self.is_data:
            return self.index - self.fec_set_index
        return self.num_data_shreds + self.position  # type: ignore[operator]

    @property
    def erasure_shard(self) -> bytes:
        return self.payload[self.variant.shard_start : self.variant.shard_end]

    @property
    def merkle_node(self) -> bytes:
        return merkle_leaf(self.payload[SIZE_OF_SIGNATURE : self.variant.proof_offset])

    @property
    def merkle_proof(self) -> list[bytes]:
        off = self.variant.proof_offset
        return [
            self.payload[off + i * SIZE_OF_MERKLE_PROOF_ENTRY : off + (i + 1) * SIZE_OF_MERKLE_PROOF_ENTRY]
            for i in range(self.variant.proof_size)
        ]

    def merkle_root(self, memo: MerkleMemo | None = None) -> bytes:
        """The FEC set's Merkle root as this shred proves it: its leaf hashed up its proof
        (``get_merkle_root(erasure_shard_index, merkle_node, merkle_proof)``). ``memo``
        (see :data:`MerkleMemo`) shares inner-node hashes between shreds; same result."""
        var = self.variant
        index = (self.index - self.fec_set_index if var.is_data  # erasure_shard_index, inlined
                 else self.num_data_shreds + self.position)  # type: ignore[operator]
        if MERKLE_ROOT_BACKEND == "openssl":  # _merkle_root_of, inlined (once per shred inserted)
            root = _c_merkle_root(self.payload, var._proof_offset, var.proof_size, index)  # type: ignore[attr-defined]
            if root is None:
                raise ShredError("bad-proof", "Merkle proof is too short for the shred's position")
            return root
        return _merkle_root_of_py(self.payload, var._proof_offset, var.proof_size,  # type: ignore[attr-defined]
                                  index, memo)

    @property
    def chained_merkle_root(self) -> bytes:
        off = self.variant.chained_root_offset
        return self.payload[off : off + SIZE_OF_MERKLE_ROOT]

    @property
    def retransmitter_signature(self) -> bytes | None:
        if not self.variant.resigned:
            return None
        off = self.variant.retransmitter_signature_offset
        return self.payload[off : off + SIZE_OF_SIGNATURE]

    def with_retransmitter_signature(self, signature: bytes) -> Shred:
        """The same shred with its retransmitter signature field set (resigned shreds only;
        the field lies outside the Merkle leaf, so the root and leader signature hold)."""
        if not self.variant.resigned:
            raise ShredError("not-resigned", "this shred has no retransmitter signature field")
        if len(signature) != SIZE_OF_SIGNATURE:
            raise ValueError("a signature is 64 bytes")
        off = self.variant.retransmitter_signature_offset
        # field for field what dataclasses.replace(self, payload=...) builds, without
        # re-running the frozen dataclass __init__ (every relayed shred the blockstore
        # stores comes through here to have this field zeroed)
        out = object.__new__(Shred)
        out.__dict__.update(self.__dict__)
        out.__dict__["payload"] = self.payload[:off] + signature + self.payload[off + SIZE_OF_SIGNATURE :]
        return out

    @property
    def data(self) -> bytes:
        if not self.is_data:
            raise ShredError("not-data-shred", "coding shreds carry no ledger data")
        return self.payload[SIZE_OF_DATA_SHRED_HEADERS : self.size]

    @property
    def parent_slot(self) -> int:
        if self.parent_offset is None:
            raise ShredError("not-data-shred", "only data shreds name the parent")
        return self.slot - self.parent_offset

    @property
    def data_complete(self) -> bool:
        return bool(self.flags is not None and self.flags & DATA_COMPLETE_SHRED)

    @property
    def last_in_slot(self) -> bool:
        return self.flags is not None and (self.flags & LAST_SHRED_IN_SLOT) == LAST_SHRED_IN_SLOT

    @property
    def reference_tick(self) -> int:
        return (self.flags or 0) & SHRED_TICK_REFERENCE_MASK

    @property
    def first_coding_index(self) -> int:
        if self.is_data:
            raise ShredError("not-coding-shred", "data shreds have no coding index")
        return self.index - self.position  # type: ignore[operator]

    def describe(self) -> dict[str, object]:
        """JSON-able summary (interop vectors, ``ledger show``)."""
        out: dict[str, object] = {
            "type": "data" if self.is_data else "code",
            "variant": self.variant.to_byte(),
            "proof_size": self.variant.proof_size,
            "chained": self.variant.chained,
            "resigned": self.variant.resigned,
            "slot": self.slot,
            "index": self.index,
            "version": self.version,
            "fec_set_index": self.fec_set_index,
            "merkle_root": "0x" + self.merkle_root().hex(),
            "chained_merkle_root": "0x" + self.chained_merkle_root.hex(),
        }
        if self.is_data:
            out.update(
                parent_offset=self.parent_offset,
                flags=self.flags,
                size=self.size,
                data_complete=self.data_complete,
                last_in_slot=self.last_in_slot,
                reference_tick=self.reference_tick,
                data_sha256="0x" + hashlib.sha256(self.data).hexdigest(),
            )
        else:
            out.update(
                num_data_shreds=self.num_data_shreds,
                num_coding_shreds=self.num_coding_shreds,
                position=self.position,
            )
        return out


def shred_variant_of(packet: bytes) -> ShredVariant:
    if len(packet) <= OFFSET_VARIANT:
        raise ShredError("wrong-size", f"{len(packet)} bytes cannot hold a shred header")
    return ShredVariant.from_byte(packet[OFFSET_VARIANT])


def parse_shred(packet: bytes) -> Shred:
    """Parse and sanitize one shred from a packet (agave ``Shred::new_from_serialized_shred``
    and ``sanitize``). A packet longer than the payload (e.g. with the repair nonce) is
    truncated to it, as agave does; anything above 1232 bytes or below the payload size is
    rejected. Raises :class:`ShredError`.

    The checks are those of :func:`_sanitize_data` / :func:`_sanitize_code`, in the same
    order with the same reasons, run on the unpacked header fields before the
    :class:`Shred` is built (this is the hot path of every blockstore insert)."""
    if type(packet) is not bytes:
        packet = bytes(packet)
    if _c_parse is not None:
        # the same Shred in one C call when every check passes; None: decide below
        done: Shred | None = _c_parse(packet, _VARIANTS, Shred)
        if done is not None:
            return done
    n = len(packet)
    if n > PACKET_DATA_BYTES:
        raise ShredError("oversized", f"{n} bytes exceeds the {PACKET_DATA_BYTES}-byte packet")
    if n <= OFFSET_VARIANT:
        raise ShredError("wrong-size", f"{n} bytes cannot hold a shred header")
    variant = _VARIANTS.get(packet[OFFSET_VARIANT])
    if variant is None:
        variant = _VARIANTS[packet[OFFSET_VARIANT]] = _variant_from_byte(packet[OFFSET_VARIANT])
    is_data = variant.is_data
    size_ = DATA_PAYLOAD_BYTES if is_data else CODE_PAYLOAD_BYTES
    if n < size_:
        raise ShredError("wrong-size", f"{n} bytes, a {'data' if is_data else 'coding'} "
                         f"shred is {size_}")
    payload = packet[:size_] if n != size_ else packet
    cap: int = variant._cap  # type: ignore[attr-defined]
    if cap < 0:
        variant.capacity()  # raises bad-proof-size
    shred = object.__new__(Shred)
    if is_data:
        sig, _v, slot, index, version, fec_set_index, parent_offset, flags, size = _DATA_HEADERS.unpack_from(payload, 0)
        if index >= MAX_DATA_SHREDS_PER_SLOT:
            raise ShredError("bad-index", f"data shred index {index} >= {MAX_DATA_SHREDS_PER_SLOT}")
        if flags & LAST_SHRED_IN_SLOT and not flags & DATA_COMPLETE_SHRED:
            raise ShredError("bad-flags", f"flags {flags:#04x}: LAST_IN_SLOT without DATA_COMPLETE")
        if not SIZE_OF_DATA_SHRED_HEADERS <= size <= SIZE_OF_DATA_SHRED_HEADERS + cap:
            raise ShredError("bad-data-size", f"size {size} outside [{SIZE_OF_DATA_SHRED_HEADERS}, "
                             f"{SIZE_OF_DATA_SHRED_HEADERS + cap}]")
        if parent_offset > slot or (parent_offset == 0 and slot != 0):
            raise ShredError("bad-parent", f"parent offset {parent_offset} invalid for slot {slot}")
        if index < fec_set_index:
            raise ShredError("bad-index", f"index {index} below its FEC set index {fec_set_index}")
        if index - fec_set_index >= 1 << variant.proof_size:
            raise ShredError("bad-proof", f"position {index - fec_set_index} cannot be reached by a "
                             f"{variant.proof_size}-entry proof")
        # Field for field what Shred(...) sets (a frozen dataclass's __init__ is several
        # times slower than filling its __dict__).
        shred.__dict__.update(payload=payload, variant=variant, signature=sig, slot=slot, index=index,
                              version=version, fec_set_index=fec_set_index, parent_offset=parent_offset,
                              flags=flags, size=size, num_data_shreds=None, num_coding_shreds=None,
                              position=None)
    else:
        sig, _v, slot, index, version, fec_set_index, nd, nc, pos = _CODE_HEADERS.unpack_from(payload, 0)
        if index >= max(MAX_DATA_SHREDS_PER_SLOT, MAX_CODE_SHREDS_PER_SLOT):
            raise ShredError("bad-index", f"coding shred index {index} too large")
        if nc > MAX_NUM_CODING_SHREDS:
            raise ShredError("bad-coding-header", f"num_coding_shreds {nc} > {MAX_NUM_CODING_SHREDS}")
        if nd == 0 or nc == 0:
            raise ShredError("bad-coding-header", "a FEC set needs data and coding shreds")
        if pos >= nc:
            raise ShredError("bad-coding-header", f"position {pos} >= num_coding_shreds {nc}")
        if index < pos:
            raise ShredError("bad-index", f"index {index} below position {pos}")
        if fec_set_index + nd - 1 >= MAX_DATA_SHREDS_PER_SLOT:
            raise ShredError("bad-index", "FEC set overshoots the per-slot data shred limit")
        if index - pos + nc - 1 >= MAX_CODE_SHREDS_PER_SLOT:
            raise ShredError("bad-index", "FEC set overshoots the per-slot coding shred limit")
        total = nd + nc
        if total > erasure.MAX_TOTAL_SHARDS:
            raise ShredError("bad-coding-header", f"{total} shards exceed {erasure.MAX_TOTAL_SHARDS}")
        if variant.proof_size != proof_size_for(total):
            raise ShredError("bad-proof-size", f"proof size {variant.proof_size} does not fit a {total}-shred set")
        shred.__dict__.update(payload=payload, variant=variant, signature=sig, slot=slot, index=index,
                              version=version, fec_set_index=fec_set_index, parent_offset=None,
                              flags=None, size=None, num_data_shreds=nd, num_coding_shreds=nc,
                              position=pos)
    return shred


_VARIANTS: dict[int, ShredVariant] = {}


def _native_parse() -> Callable[[bytes, dict[int, ShredVariant], type[Shred]], Shred | None] | None:
    """_native_shred.parse when it is built and the constants it hard-codes are this
    module's (a stale build after a constant changed falls back to Python)."""
    mod: Any = _native_shred
    if mod is None:
        return None
    ours = {**globals(), "MAX_TOTAL_SHARDS": erasure.MAX_TOTAL_SHARDS}
    if any(ours.get(name) != value for name, value in mod.CONSTANTS.items()):
        return None
    parse: Callable[[bytes, dict[int, ShredVariant], type[Shred]], Shred | None] = mod.parse
    return parse


#: parse_shred's accept path in C (None: not built), see :func:`_native_parse`.
_c_parse = _native_parse()

#: One blockstore insert's common case in one C call (``_native_shred.scan``: every packet's
#: parse and sanitize checks, Merkle root, storage key and stored payload, and a per-slot,
#: per-FEC-set summary; None for a batch the per-shred path must decide). None when the
#: module is not built or its constants are stale: ledger/blockstore.py then runs the
#: per-shred path for every batch (the same outcome, tests/test_blockstore_fastpath.py).
scan_batch: Callable[[Sequence[bytes]], Any] | None = (
    _native_shred.scan if _c_parse is not None and hasattr(_native_shred, "scan") else None)
#: ``uint_array(v, bits, max_items)``: the CBOR array of a tuple of unsigned ints, or None
#: when v is not one codec's ``List(UInt(bits), max_items)`` accepts (``_native_shred``; for
#: the blockstore's index records, ledger/meta.py). None when the module is not built.
cbor_uint_array: Callable[[tuple[int, ...], int, int], bytes | None] | None = getattr(
    _native_shred, "uint_array", None)
_DATA_HEADERS = struct.Struct("<64sBQIHIHBH")  # common header + data header
_CODE_HEADERS = struct.Struct("<64sBQIHIHHH")  # common header + coding header


def _sanitize_data(s: Shred) -> None:
    assert s.flags is not None and s.size is not None and s.parent_offset is not None
    if s.index >= MAX_DATA_SHREDS_PER_SLOT:
        raise ShredError("bad-index", f"data shred index {s.index} >= {MAX_DATA_SHREDS_PER_SLOT}")
    if s.flags & LAST_SHRED_IN_SLOT and not s.flags & DATA_COMPLETE_SHRED:
        raise ShredError("bad-flags", f"flags {s.flags:#04x}: LAST_IN_SLOT without DATA_COMPLETE")
    cap = s.variant.capacity()
    if not SIZE_OF_DATA_SHRED_HEADERS <= s.size <= SIZE_OF_DATA_SHRED_HEADERS + cap:
        raise ShredError("bad-data-size", f"size {s.size} outside [{SIZE_OF_DATA_SHRED_HEADERS}, "
                         f"{SIZE_OF_DATA_SHRED_HEADERS + cap}]")
    if s.parent_offset > s.slot or (s.parent_offset == 0 and s.slot != 0):
        raise ShredError("bad-parent", f"parent offset {s.parent_offset} invalid for slot {s.slot}")
    if s.index < s.fec_set_index:
        raise ShredError("bad-index", f"index {s.index} below its FEC set index {s.fec_set_index}")
    if s.index - s.fec_set_index >= 1 << s.variant.proof_size:
        raise ShredError("bad-proof", f"position {s.index - s.fec_set_index} cannot be reached by a "
                         f"{s.variant.proof_size}-entry proof")


def _sanitize_code(s: Shred) -> None:
    assert s.num_data_shreds is not None and s.num_coding_shreds is not None and s.position is not None
    if s.index >= max(MAX_DATA_SHREDS_PER_SLOT, MAX_CODE_SHREDS_PER_SLOT):
        raise ShredError("bad-index", f"coding shred index {s.index} too large")
    if s.num_coding_shreds > MAX_NUM_CODING_SHREDS:
        raise ShredError("bad-coding-header", f"num_coding_shreds {s.num_coding_shreds} > {MAX_NUM_CODING_SHREDS}")
    if s.num_data_shreds == 0 or s.num_coding_shreds == 0:
        raise ShredError("bad-coding-header", "a FEC set needs data and coding shreds")
    if s.position >= s.num_coding_shreds:
        raise ShredError("bad-coding-header", f"position {s.position} >= num_coding_shreds {s.num_coding_shreds}")
    if s.index < s.position:
        raise ShredError("bad-index", f"index {s.index} below position {s.position}")
    if s.fec_set_index + s.num_data_shreds - 1 >= MAX_DATA_SHREDS_PER_SLOT:
        raise ShredError("bad-index", "FEC set overshoots the per-slot data shred limit")
    if s.first_coding_index + s.num_coding_shreds - 1 >= MAX_CODE_SHREDS_PER_SLOT:
        raise ShredError("bad-index", "FEC set overshoots the per-slot coding shred limit")
    total = s.num_data_shreds + s.num_coding_shreds
    if total > erasure.MAX_TOTAL_SHARDS:
        raise ShredError("bad-coding-header", f"{total} shards exceed {erasure.MAX_TOTAL_SHARDS}")
    if s.variant.proof_size != proof_size_for(total):
        raise ShredError("bad-proof-size", f"proof size {s.variant.proof_size} does not fit a {total}-shred set")


def bad_signature(root: bytes) -> ShredError:
    """The refusal of a shred whose leader signature does not verify over ``root``."""
    return ShredError("bad-signature", f"leader signature does not verify over Merkle root {root.hex()[:16]}..."
                      f" (forged signature or corrupted shred/proof)")


def root_signature_ok(leader: bytes, root: bytes, signature: bytes) -> bool:
    """The leader's ed25519 signature over a FEC set's Merkle root (what
    :func:`verify_shred` checks once the root is known)."""
    return verify_raw(leader, root, signature)


def verify_shred(shred: Shred, leader: bytes, verified: set[tuple[bytes, bytes, bytes]] | None = None,
                 memo: MerkleMemo | None = None) -> bytes:
    """Recompute the shred's Merkle root and check the leader's signature over it.
    Returns the root. A corrupted payload or proof changes the root, so it surfaces as
    ``bad-signature`` too.

    All 64 shreds of a FEC set carry one signature over one root, so a caller may pass a
    ``verified`` set of (leader, root, signature) triples already checked: the Merkle root
    is always recomputed, the ed25519 check runs once per set (agave's sigverify caches
    Merkle-root signatures the same way). ``memo`` is passed to :meth:`Shred.merkle_root`."""
    root = shred.merkle_root(memo)
    if verified is not None:
        triple = (bytes(leader), root, shred.signature)
        if triple in verified:
            return root
    # one ed25519 check, cached only when it passed (a failed one used to run twice)
    if not verify_raw(leader, root, shred.signature):
        raise bad_signature(root)
    if verified is not None:
        verified.add(triple)
    return root


# ---------------------------------------------------------------------------------------
# Making shreds (agave merkle.rs: make_shreds_from_data / finish_erasure_batch)
# ---------------------------------------------------------------------------------------
def _set(buf: bytearray, off: int, data: bytes) -> None:
    buf[off : off + len(data)] = data


@dataclass(frozen=True)
class ShredBatch:
    """The shreds made from one serialized entry batch; ``merkle_root`` is the last FEC
    set's root (the next batch chains to it)."""

    data: tuple[Shred, ...]
    code: tuple[Shred, ...]
    merkle_root: bytes


def make_shreds_from_data(
    keypair: Keypair,
    chained_merkle_root: bytes,
    data: bytes,
    slot: int,
    parent_slot: int,
    shred_version: int,
    reference_tick: int,
    is_last_in_slot: bool,
    next_shred_index: int,
    next_code_index: int,
) -> ShredBatch:
    """Cut ``data`` (a serialized ``Vec<Entry>``) into 32:32 chained Merkle FEC sets,
    padding the last set with empty data shreds, exactly as agave's shredder does. The
    last data shred gets DATA_COMPLETE (or LAST_IN_SLOT); the last batch of a slot is
    *resigned* (room for a retransmitter signature, left zero by the leader)."""
    if len(chained_merkle_root) != SIZE_OF_MERKLE_ROOT:
        raise ValueError("chained Merkle root must be 32 bytes")
    if not 0 <= slot - parent_slot <= 0xFFFF or (slot != 0 and slot == parent_slot):
        raise ShredError("bad-parent", f"parent {parent_slot} invalid for slot {slot}")
    resigned = is_last_in_slot
    dvar = ShredVariant(True, PROOF_ENTRIES_FOR_32_32_BATCH, True, resigned)
    cvar = ShredVariant(False, PROOF_ENTRIES_FOR_32_32_BATCH, True, resigned)
    per_shred = dvar.capacity()
    per_set = per_shred * DATA_SHREDS_PER_FEC_BLOCK
    nsets = max(1, -(-len(data) // per_set))
    flags_base = min(reference_tick, SHRED_TICK_REFERENCE_MASK)
    all_data: list[Shred] = []
    all_code: list[Shred] = []
    root = chained_merkle_root
    index = next_shred_index
    code_index = next_code_index
    for k in range(nsets):
        chunk = data[k * per_set : (k + 1) * per_set]
        fec = index
        bufs: list[bytearray] = []
        sizes: list[int] = []
        for i in range(DATA_SHREDS_PER_FEC_BLOCK):
            piece = chunk[i * per_shred : (i + 1) * per_shred]
            buf = bytearray(DATA_PAYLOAD_BYTES)
            size = SIZE_OF_DATA_SHRED_HEADERS + len(piece)
            flags = flags_base
            if k == nsets - 1 and i == DATA_SHREDS_PER_FEC_BLOCK - 1:
                flags |= LAST_SHRED_IN_SLOT if is_last_in_slot else DATA_COMPLETE_SHRED
            _set(buf, OFFSET_VARIANT, _COMMON.pack(ZERO_SIGNATURE, dvar.to_byte(), slot, index + i, shred_version, fec)[64:])
            _set(buf, SIZE_OF_COMMON_SHRED_HEADER, _DATA_HDR.pack(slot - parent_slot, flags, size))
            _set(buf, SIZE_OF_DATA_SHRED_HEADERS, piece)
            bufs.append(buf)
            sizes.append(size)
        shards = [bytes(b[dvar.shard_start : dvar.shard_end]) for b in bufs]
        parity = erasure.encode(shards, CODING_SHREDS_PER_FEC_BLOCK)
        cbufs: list[bytearray] = []
        for p, shard in enumerate(parity):
            buf = bytearray(CODE_PAYLOAD_BYTES)
            _set(buf, OFFSET_VARIANT,
                 _COMMON.pack(ZERO_SIGNATURE, cvar.to_byte(), slot, code_index + p, shred_version, fec)[64:])
            _set(buf, SIZE_OF_COMMON_SHRED_HEADER,
                 _CODE_HDR.pack(DATA_SHREDS_PER_FEC_BLOCK, CODING_SHREDS_PER_FEC_BLOCK, p))
            _set(buf, cvar.shard_start, shard)
            cbufs.append(buf)
        every = bufs + cbufs
        for buf, var in zip(every, [dvar] * len(bufs) + [cvar] * len(cbufs), strict=True):
            _set(buf, var.chained_root_offset, root)
        leaves = [merkle_leaf(bytes(b[SIZE_OF_SIGNATURE : v.proof_offset]))
                  for b, v in zip(every, [dvar] * len(bufs) + [cvar] * len(cbufs), strict=True)]
        tree = make_merkle_tree(leaves)
        root = tree[-1]
        signature = keypair.sign_raw(root)
        for pos, (buf, var) in enumerate(zip(every, [dvar] * len(bufs) + [cvar] * len(cbufs), strict=True)):
            _set(buf, 0, signature)
            _set(buf, var.proof_offset, b"".join(make_merkle_proof(pos, len(every), tree)))
        all_data.extend(parse_shred(bytes(b)) for b in bufs)
        all_code.extend(parse_shred(bytes(b)) for b in cbufs)
        index += DATA_SHREDS_PER_FEC_BLOCK
        code_index += CODING_SHREDS_PER_FEC_BLOCK
    return ShredBatch(tuple(all_data), tuple(all_code), root)


class SlotShredder:
    """A leader's shredder for one slot: feeds successive entry batches through
    :func:`make_shreds_from_data`, carrying the next data/coding indexes and the chained
    Merkle root from batch to batch (agave's broadcast stage keeps the same state). The
    first batch chains to ``chained_merkle_root`` (the parent slot's last FEC set root)."""

    def __init__(self, keypair: Keypair, slot: int, parent_slot: int, shred_version: int,
                 chained_merkle_root: bytes) -> None:
        self.keypair = keypair
        self.slot = slot
        self.parent_slot = parent_slot
        self.shred_version = shred_version
        self.merkle_root = chained_merkle_root
        self.next_shred_index = 0
        self.next_code_index = 0
        self.finished = False

    def add(self, serialized_entries: bytes, *, reference_tick: int, is_last_in_slot: bool) -> ShredBatch:
        """Shred one serialized ``Vec<Entry>``; ``is_last_in_slot`` closes the slot."""
        if self.finished:
            raise ValueError(f"slot {self.slot} already has its LAST_IN_SLOT shred")
        batch = make_shreds_from_data(self.keypair, self.merkle_root, serialized_entries, self.slot,
                                      self.parent_slot, self.shred_version, reference_tick, is_last_in_slot,
                                      self.next_shred_index, self.next_code_index)
        self.merkle_root = batch.merkle_root
        self.next_shred_index += len(batch.data)
        self.next_code_index += len(batch.code)
        self.finished = is_last_in_slot
        return batch


# ---------------------------------------------------------------------------------------
# Recovery (agave merkle.rs: recover)
# ---------------------------------------------------------------------------------------
def check_same_fec_set(shreds: Sequence[Shred]) -> None:
    """All shreds agree on slot, version, FEC set, signature and (for coding shreds) the
    erasure configuration; raises ``fec-set-mismatch`` otherwise."""
    first = shreds[0]
    for s in shreds:
        if (s.slot, s.version, s.fec_set_index) != (first.slot, first.version, first.fec_set_index):
            raise ShredError("fec-set-mismatch", "shreds belong to different FEC sets")
        if s.signature != first.signature:
            raise ShredError("fec-set-mismatch", "shreds of one FEC set carry different signatures")
        if (s.variant.proof_size, s.variant.chained, s.variant.resigned) != (
            first.variant.proof_size, first.variant.chained, first.variant.resigned):
            raise ShredError("fec-set-mismatch", "shreds of one FEC set have different variants")
    codes = [s for s in shreds if not s.is_data]
    for c in codes:
        if (c.num_data_shreds, c.num_coding_shreds, c.first_coding_index) != (
            codes[0].num_data_shreds, codes[0].num_coding_shreds, codes[0].first_coding_index):
            raise ShredError("fec-set-mismatch", "coding shreds disagree on the erasure configuration")


def recover(shreds: Sequence[Shred]) -> list[Shred]:
    """Rebuild the missing shreds of one FEC set from any ``num_data_shreds`` of them (at
    least one must be a coding shred: only those carry the set's shape). Returns only the
    recovered shreds, data first then coding, in index order. The rebuilt Merkle tree must
    reproduce the signed root, so recovered shreds need no further signature check."""
    if not shreds:
        raise ShredError("too-few-shreds", "nothing to recover from")
    check_same_fec_set(shreds)
    codes = sorted((s for s in shreds if not s.is_data), key=lambda s: s.index)
    if not codes:
        raise ShredError("too-few-parity-shreds", "recovery needs at least one coding shred")
    last = codes[-1]
    nd, nc = last.num_data_shreds, last.num_coding_shreds
    assert nd is not None and nc is not None
    total = nd + nc
    root = last.merkle_root()
    first_code = last.first_coding_index
    by_pos: dict[int, Shred] = {}
    for s in shreds:
        i = s.erasure_shard_index
        if not 0 <= i < total:
            raise ShredError("bad-index", f"shred {s.index} falls outside the {nd}:{nc} FEC set")
        if i in by_pos and by_pos[i].payload != s.payload:
            raise ShredError("duplicate-shred", f"two different shreds at erasure position {i}")
        by_pos[i] = s
    if len(by_pos) == total:
        return []
    if len(by_pos) < nd:
        raise ShredError("too-few-shreds", f"{len(by_pos)} of {total} shreds present, need {nd}")
    shards = erasure.reconstruct([by_pos[i].erasure_shard if i in by_pos else None for i in range(total)], nd)
    cvar = last.variant
    dvar = ShredVariant(True, cvar.proof_size, cvar.chained, cvar.resigned)
    chained_root = last.chained_merkle_root
    retransmitter = last.retransmitter_signature
    payloads: dict[int, bytearray] = {}
    for i in range(total):
        if i in by_pos:
            continue
        if i < nd:
            buf = bytearray(DATA_PAYLOAD_BYTES)
            _set(buf, 0, last.signature)
            _set(buf, dvar.shard_start, shards[i])
            var = dvar
        else:
            buf = bytearray(CODE_PAYLOAD_BYTES)
            _set(buf, 0, _COMMON.pack(last.signature, cvar.to_byte(), last.slot, first_code + i - nd,
                                      last.version, last.fec_set_index))
            _set(buf, SIZE_OF_COMMON_SHRED_HEADER, _CODE_HDR.pack(nd, nc, i - nd))
            _set(buf, cvar.shard_start, shards[i])
            var = cvar
        if var.chained:
            _set(buf, var.chained_root_offset, chained_root)
        if retransmitter is not None:
            _set(buf, var.retransmitter_signature_offset, retransmitter)
        payloads[i] = buf
    # Recovered data headers came out of the erasure shard: they must match the set.
    leaves = []
    for i in range(total):
        if i in by_pos:
            leaves.append(by_pos[i].merkle_node)
            continue
        buf = payloads[i]
        if i < nd:
            _sig, vb, slot, index, version, fec = _COMMON.unpack_from(buf, 0)
            if (vb, slot, index, version, fec) != (dvar.to_byte(), last.slot, last.fec_set_index + i,
                                                   last.version, last.fec_set_index):
                raise ShredError("bad-recovered-shred", f"recovered data shred {i} has inconsistent headers")
        leaves.append(merkle_leaf(bytes(buf[SIZE_OF_SIGNATURE : (dvar if i < nd else cvar).proof_offset])))
    tree = make_merkle_tree(leaves)
    if tree[-1] != root:
        raise ShredError("merkle-root-mismatch", "recovered shreds do not reproduce the signed Merkle root")
    out = []
    for i in sorted(payloads):
        buf = payloads[i]
        var = dvar if i < nd else cvar
        _set(buf, var.proof_offset, b"".join(make_merkle_proof(i, total, tree)))
        try:
            out.append(parse_shred(bytes(buf)))
        except ShredError as exc:
            raise ShredError("bad-recovered-shred", f"recovered shred {i}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------
# Reassembly
# ---------------------------------------------------------------------------------------
def deshred(data_shreds: Sequence[Shred]) -> list[tuple[int, int, bytes]]:
    """Split a slot's consecutive data shreds (sorted by index, starting at 0) into
    completed data sets: ``(first index, last index, concatenated data)``, each ending at a
    DATA_COMPLETE shred. Each set's bytes are one serialized ``Vec<Entry>``. Raises if the
    run has a gap or does not end on DATA_COMPLETE."""
    out = []
    start = 0
    buf: list[bytes] = []
    for expect, s in enumerate(data_shreds):
        if not s.is_data:
            raise ShredError("not-data-shred", f"shred {s.index} is a coding shred")
        if s.index != expect:
            raise ShredError("missing-shreds", f"data shred {expect} missing (next present is {s.index})")
        buf.append(s.data)
        if s.data_complete:
            out.append((start, s.index, b"".join(buf)))
            buf = []
            start = s.index + 1
    if buf:
        raise ShredError("incomplete-data", f"data shreds {start}..{len(data_shreds) - 1} do not end a data set")
    return out
