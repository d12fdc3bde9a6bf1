"""A localnet of validators: the networking localnet (net/localnet.py) with a consensus
genesis and ``--validator`` on every node (``ambient-p2p localnet``, the consensus
multi-process tests).

The genesis names the N deterministic localnet identities as bootstrap nodes with equal
LStake, funds them (vote transactions pay fees, as on Solana) and a few deterministic test
users (so transfers can be submitted), and starts
its slot clock at its creation time: slots that pass while the processes start are simply
skipped, as an absent leader's slots are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from ..core.codec import encode
from ..core.crypto import Keypair
from ..core.genesis import build_genesis
from ..core.messages import (
    EpochParams,
    Genesis,
    LStakeParams,
    PohParams,
)
from ..net.localnet import Localnet

#: Localnet defaults: 8 ticks x 100 ms = 800 ms slots (mainnet: 64 x 6.25 ms; 400 ms slots fork
#: often when 4 Python nodes share 2 busy cores, measured in spec/node.md), 100 hashes
#: per tick (cheap to verify on a small machine), 256-slot epochs, 4 slots per leader turn.
HASHES_PER_TICK = 100
TICKS_PER_SLOT = 8
TICK_DURATION_US = 100_000
SLOTS_PER_EPOCH = 256
LEADER_SLOTS = 4
TEST_USERS = 4
TEST_USER_LAMPORTS = 1_000_000_000_000
#: Each bootstrap identity's lamports: 200 million vote fees at 5,000 per vote.
IDENTITY_LAMPORTS = 1_000_000_000_000


def user_keypairs(chain_id: str, n: int = TEST_USERS) -> list[Keypair]:
    """Deterministic funded test users of a localnet chain (anyone can recompute them)."""
    return [Keypair.deterministic(f"localnet/{chain_id}/user", i) for i in range(n)]


def validator_genesis(
    chain_id: str,
    identities: list[bytes],
    *,
    hashes_per_tick: int = HASHES_PER_TICK,
    ticks_per_slot: int = TICKS_PER_SLOT,
    tick_duration_us: int = TICK_DURATION_US,
    slots_per_epoch: int = SLOTS_PER_EPOCH,
    leader_slots: int = LEADER_SLOTS,
    creation_time_s: int | None = None,
) -> Genesis:
    return build_genesis(
        bootstrap=identities,
        creation_time_s=int(time.time()) if creation_time_s is None else creation_time_s,
        chain_id=chain_id,
        bootstrap_lstake=1,
        accounts=[(u.pubkey, TEST_USER_LAMPORTS) for u in user_keypairs(chain_id)],
        node_lamports=IDENTITY_LAMPORTS,
        poh=PohParams(hashes_per_tick, ticks_per_slot, tick_duration_us),
        epoch=EpochParams(slots_per_epoch=slots_per_epoch, leader_slots=leader_slots),
        lstake=LStakeParams(short_window_epochs=1, medium_window_epochs=4, short_weight_bps=5000, medium_weight_bps=5000),
        model_name="SmolLM2-135M-Instruct",
    )


class ValidatorLocalnet(Localnet):
    """N validator processes. ``node_args`` adds arguments to one node's command line
    (e.g. the equivocation harness); ``genesis_kw`` overrides :func:`validator_genesis`."""

    def __init__(
        self,
        root: Path,
        nodes: int,
        *,
        chain_id: str = "localnet",
        echo: IO[str] | None = None,
        genesis_kw: dict[str, Any] | None = None,
        node_args: dict[int, list[str]] | None = None,
    ) -> None:
        super().__init__(root, nodes, chain_id=chain_id, echo=echo, extra_args=["--validator"])
        self.genesis_kw = genesis_kw or {}
        self.node_args = node_args or {}
        self.genesis: Genesis | None = None

    def spawn(self, i: int, bootstrap: str | None) -> Any:
        base = self.extra_args
        self.extra_args = base + self.node_args.get(i, [])
        try:
            return super().spawn(i, bootstrap)
        finally:
            self.extra_args = base

    def write_genesis(self) -> None:
        self.genesis = validator_genesis(self.chain_id, [k.pubkey for k in self.keys], **self.genesis_kw)
        self.genesis_path.write_bytes(encode(self.genesis))

