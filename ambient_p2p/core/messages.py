"""Foundation message types: genesis and signed node records (spec/encoding.md,
spec/genesis.md). Later concerns register theirs in their own modules, in the type-id
range spec/encoding.md allocates to them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from . import crypto
from .codec import Bytes, List, Opt, Rec, Text, UInt, encode, fld, message, record

CHAIN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
BPS = 10_000  # basis points: weights are integers out of 10,000

MAX_GENESIS_ACCOUNTS = 4096
MAX_BOOTSTRAP_NODES = 256
MAX_MULTIADDRS = 8


@record
@dataclass(frozen=True)
class PohParams:
    """Proof-of-History pacing. Slot duration = ticks_per_slot * target_tick_duration_us."""

    hashes_per_tick: int = fld(UInt(64))
    ticks_per_slot: int = fld(UInt(64))
    target_tick_duration_us: int = fld(UInt(64))

    def __post_init__(self) -> None:
        if self.hashes_per_tick < 1 or self.ticks_per_slot < 1 or self.target_tick_duration_us < 1:
            raise ValueError("PoH parameters must all be >= 1")

    @property
    def slot_duration_us(self) -> int:
        return self.ticks_per_slot * self.target_tick_duration_us


@record
@dataclass(frozen=True)
class EpochParams:
    slots_per_epoch: int = fld(UInt(64))
    leader_slots: int = fld(UInt(32))  # consecutive slots per leader turn (Solana: 4)

    def __post_init__(self) -> None:
        if self.leader_slots < 1 or self.slots_per_epoch < self.leader_slots:
            raise ValueError("need 1 <= leader_slots <= slots_per_epoch")
        if self.slots_per_epoch % self.leader_slots:
            raise ValueError("slots_per_epoch must be a multiple of leader_slots")


@record
@dataclass(frozen=True)
class LStakeParams:
    """LStake = short_weight * short-window work + medium_weight * medium-window work."""

    short_window_epochs: int = fld(UInt(32))
    medium_window_epochs: int = fld(UInt(32))
    short_weight_bps: int = fld(UInt(32))
    medium_weight_bps: int = fld(UInt(32))

    def __post_init__(self) -> None:
        if not 1 <= self.short_window_epochs <= self.medium_window_epochs:
            raise ValueError("need 1 <= short_window_epochs <= medium_window_epochs")
        if self.short_weight_bps + self.medium_weight_bps != BPS:
            raise ValueError(f"short_weight_bps + medium_weight_bps must equal {BPS}")


@record
@dataclass(frozen=True)
class ModelSpec:
    """The network's one model. ``digest`` is sha256 of the weights file when known."""

    name: str = fld(Text(128))
    digest: bytes | None = fld(Opt(Bytes(32, exact=True)), default=None)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model name must not be empty")


@record
@dataclass(frozen=True)
class GenesisAccount:
    pubkey: bytes = fld(Bytes(32, exact=True))
    lamports: int = fld(UInt(64))


@record
@dataclass(frozen=True)
class BootstrapNode:
    identity: bytes = fld(Bytes(32, exact=True))
    lstake: int = fld(UInt(64))

    def __post_init__(self) -> None:
        if self.lstake < 1:
            raise ValueError("bootstrap LStake must be >= 1")


@message(type_id=0x0001, version=1, max_size=1 << 20)
@dataclass(frozen=True)
class Genesis:
    """The genesis config. Its hash (sha256 of the canonical encoding) names the chain."""

    chain_id: str = fld(Text(32))
    creation_time_s: int = fld(UInt(64))
    poh: PohParams = fld(Rec(PohParams))
    epoch: EpochParams = fld(Rec(EpochParams))
    lstake: LStakeParams = fld(Rec(LStakeParams))
    model: ModelSpec = fld(Rec(ModelSpec))
    accounts: tuple[GenesisAccount, ...] = fld(List(Rec(GenesisAccount), MAX_GENESIS_ACCOUNTS))
    bootstrap_nodes: tuple[BootstrapNode, ...] = fld(List(Rec(BootstrapNode), MAX_BOOTSTRAP_NODES))

    def __post_init__(self) -> None:
        if not CHAIN_ID_RE.match(self.chain_id):
            raise ValueError(f"chain_id {self.chain_id!r} must match {CHAIN_ID_RE.pattern}")
        if not self.bootstrap_nodes:
            raise ValueError("genesis needs at least one bootstrap node")
        if len({a.pubkey for a in self.accounts}) != len(self.accounts):
            raise ValueError("genesis accounts repeat a pubkey")
        if len({n.identity for n in self.bootstrap_nodes}) != len(self.bootstrap_nodes):
            raise ValueError("bootstrap nodes repeat an identity")
        if sum(a.lamports for a in self.accounts) >= 1 << 64:
            raise ValueError("total genesis lamports overflow u64")

    def hash(self) -> bytes:
        return crypto.sha256(encode(self))


@message(type_id=0x0002, version=1, max_size=4096)
@dataclass(frozen=True)
class NodeInfo:
    """A node's signed contact record (gossiped, served by bootstrap nodes).

    ``signature`` is by ``identity`` for purpose ``node-info`` over the canonical encoding
    of this record with ``signature`` set to 64 zero bytes (see :func:`signable_bytes`).
    """

    identity: bytes = fld(Bytes(32, exact=True))
    genesis_hash: bytes = fld(Bytes(32, exact=True))
    addrs: tuple[str, ...] = fld(List(Text(256), MAX_MULTIADDRS))
    wallclock_ms: int = fld(UInt(64))
    software: str = fld(Text(64))
    signature: bytes = fld(Bytes(64, exact=True))


def signable_bytes(msg: Any) -> bytes:
    """The bytes a self-signed message's ``signature`` covers: its canonical encoding
    with the signature zeroed (so the signer and verifier agree byte for byte)."""
    return encode(dataclasses.replace(msg, signature=crypto.ZERO_SIGNATURE))


def sign_message(msg: Any, kp: crypto.Keypair, purpose: str) -> Any:
    return dataclasses.replace(msg, signature=kp.sign(purpose, signable_bytes(msg)))


def verify_message(msg: Any, signer: bytes, purpose: str) -> bool:
    return crypto.verify(signer, purpose, signable_bytes(msg), msg.signature)
