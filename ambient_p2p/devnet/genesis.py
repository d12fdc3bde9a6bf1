"""Local genesis presets: the one home for every genesis the tool builds for testing, all
on top of :func:`ambient_p2p.core.genesis.build_genesis` (the ``genesis`` command builds
user-specified ones through the same function).

| preset | chain | PoH per slot | slot | used by |
|---|---|---|---|---|
| :func:`localnet_genesis` | ``localnet`` | 32 ticks x 2,000 hashes | 400 ms | ``ambient-p2p localnet``, multi-process tests, ``bench gossip`` / ``consensus`` |
| :func:`ledger_genesis` | ``ambient-ledger-local`` | 64 ticks x 200 hashes | 400 ms | ``ledger produce`` (single leader, creation time 0) |
| :func:`vectors_genesis` | ``ambient-vectors`` | protocol defaults (32 x 2,000) | 400 ms | interop codec vectors (fixed bytes) |

Mainnet (Solana) for comparison: 64 ticks x 62,500 hashes, 400 ms slots
(``core.genesis.MAINNET_*``). Spec: spec/node.md, "Localnet parameters".
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from ..core.genesis import build_genesis
from ..core.messages import BootstrapNode, EpochParams, Genesis, LStakeParams, PohParams
from .users import (
    TEST_USERS,
    ledger_leader_keypair,
    ledger_user_keypairs,
    user_keypairs,
    vector_faucet,
    vector_keypairs,
)

# -- localnet ----------------------------------------------------------------------------
LOCALNET_CHAIN_ID = "localnet"
#: 32 ticks x 12.5 ms = 400 ms slots, mainnet's slot time (mainnet: 64 x 6.25 ms). With PoH
#: hashed by one OpenSSL call per batch (core/_native_poh.c, ~21 M sha256/s on one core) the
#: 2,000 hashes per tick cost the leader under 1% of a core; spec/node.md "Localnet
#: parameters" has the measurements behind the switch from 800 ms.
LOCALNET_TICKS_PER_SLOT = 32
LOCALNET_SLOT_MS = 400
#: 2,000 hashes per tick (mainnet 62,500): 160,000 hashes/s, 1.6% of mainnet's rate, so
#: PoH proves ordering and only a little elapsed time (spec/node.md).
LOCALNET_HASHES_PER_TICK = 2000
LOCALNET_SLOTS_PER_EPOCH = 256
LOCALNET_LEADER_SLOTS = 4
TEST_USER_LAMPORTS = 1_000_000_000_000
#: Each bootstrap identity's lamports: 200 million vote fees at 5,000 per vote.
IDENTITY_LAMPORTS = 1_000_000_000_000
LOCALNET_MODEL_NAME = "SmolLM2-135M-Instruct"


def localnet_poh(
    slot_ms: int = LOCALNET_SLOT_MS,
    ticks_per_slot: int = LOCALNET_TICKS_PER_SLOT,
    hashes_per_tick: int = LOCALNET_HASHES_PER_TICK,
) -> PohParams:
    """PoH parameters for a slot of ``slot_ms`` in ``ticks_per_slot`` ticks; raises
    ValueError when the tick duration would not be a whole number of microseconds."""
    if slot_ms < 1 or ticks_per_slot < 1 or hashes_per_tick < 2:
        raise ValueError("slot_ms and ticks_per_slot must be >= 1, hashes_per_tick >= 2")
    tick_us, rest = divmod(slot_ms * 1000, ticks_per_slot)
    if rest:
        raise ValueError(f"{slot_ms} ms is not a whole number of microseconds per tick at {ticks_per_slot} ticks per slot")
    return PohParams(hashes_per_tick, ticks_per_slot, tick_us)


def localnet_genesis(
    chain_id: str,
    identities: Sequence[bytes],
    *,
    poh: PohParams | None = None,
    hashes_per_tick: int | None = None,
    ticks_per_slot: int | None = None,
    tick_duration_us: int | None = None,
    slots_per_epoch: int = LOCALNET_SLOTS_PER_EPOCH,
    leader_slots: int = LOCALNET_LEADER_SLOTS,
    creation_time_s: int | None = None,
    users: int = TEST_USERS,
    bootstrap_lstakes: Sequence[int] | None = None,
) -> Genesis:
    """A localnet genesis: the ``identities`` as bootstrap nodes with equal LStake (or
    ``bootstrap_lstakes``, one per identity; 0: funded but no bootstrap node, as a validator
    that joined later, with no LStake until its work counts: never drawn or a leader while
    genesis LStake governs, epochs 0 and 1; a test's fixed draw), funded
    (vote transactions pay fees, as on Solana), plus ``users`` funded test users
    (:func:`~ambient_p2p.devnet.users.user_keypairs`). Its slot clock starts at its creation
    time (default: now), so slots that pass while processes start are skipped, as an absent
    leader's are. ``poh`` or the three PoH fields override :func:`localnet_poh`'s defaults."""
    base = poh or localnet_poh()
    poh = PohParams(
        hashes_per_tick if hashes_per_tick is not None else base.hashes_per_tick,
        ticks_per_slot if ticks_per_slot is not None else base.ticks_per_slot,
        tick_duration_us if tick_duration_us is not None else base.target_tick_duration_us,
    )
    if bootstrap_lstakes is not None and len(bootstrap_lstakes) != len(identities):
        raise ValueError(f"{len(bootstrap_lstakes)} bootstrap LStakes for {len(identities)} identities")
    lstakes = list(bootstrap_lstakes) if bootstrap_lstakes is not None else [1] * len(identities)
    joined = [i for i, s in zip(identities, lstakes, strict=True) if s == 0]
    g = build_genesis(
        bootstrap=[i for i, s in zip(identities, lstakes, strict=True) if s > 0],
        creation_time_s=int(time.time()) if creation_time_s is None else creation_time_s,
        chain_id=chain_id,
        bootstrap_lstake=1,
        accounts=[(u.pubkey, TEST_USER_LAMPORTS) for u in user_keypairs(chain_id, users)]
        + [(i, IDENTITY_LAMPORTS) for i in joined],
        node_lamports=IDENTITY_LAMPORTS,
        poh=poh,
        epoch=EpochParams(slots_per_epoch=slots_per_epoch, leader_slots=leader_slots),
        lstake=LStakeParams(short_window_epochs=1, medium_window_epochs=4, short_weight_bps=5000,
                            medium_weight_bps=5000),
        model_name=LOCALNET_MODEL_NAME,
    )
    if bootstrap_lstakes is None:
        return g
    return dataclasses.replace(g, bootstrap_nodes=tuple(
        BootstrapNode(n.identity, s) for n, s in zip(g.bootstrap_nodes, [s for s in lstakes if s > 0], strict=True)))


# -- single-leader ledger (ledger produce) -----------------------------------------------
LEDGER_CHAIN_ID = "ambient-ledger-local"
LEDGER_USER_LAMPORTS = 1_000_000_000_000
LEDGER_LEADER_LAMPORTS = 1_000_000_000
#: Small so that 50 slots produce and verify in seconds on one core.
LEDGER_HASHES_PER_TICK = 200
LEDGER_TICKS_PER_SLOT = 64
LEDGER_TICK_DURATION_US = 6_250
#: Epoch length of the single-leader ledger: long, so that a produced ledger stays in epoch 0
#: unless a test asks for short epochs (the epoch-boundary rewards, spec/rewards.md).
LEDGER_SLOTS_PER_EPOCH = 8192
LEDGER_USERS = 16


def ledger_genesis(
    *,
    num_users: int = LEDGER_USERS,
    hashes_per_tick: int = LEDGER_HASHES_PER_TICK,
    ticks_per_slot: int = LEDGER_TICKS_PER_SLOT,
    slots_per_epoch: int = LEDGER_SLOTS_PER_EPOCH,
) -> Genesis:
    """The single-leader ledger's genesis: :func:`~.users.ledger_leader_keypair` leads every
    slot; ``num_users`` :func:`~.users.ledger_user_keypairs` are funded; creation time 0."""
    return build_genesis(
        bootstrap=[ledger_leader_keypair().pubkey],
        creation_time_s=0,
        chain_id=LEDGER_CHAIN_ID,
        bootstrap_lstake=1,
        accounts=[(u.pubkey, LEDGER_USER_LAMPORTS) for u in ledger_user_keypairs(num_users)],
        node_lamports=LEDGER_LEADER_LAMPORTS,
        poh=PohParams(hashes_per_tick, ticks_per_slot, LEDGER_TICK_DURATION_US),
        epoch=EpochParams(slots_per_epoch=slots_per_epoch, leader_slots=4),
        lstake=LStakeParams(1, 30, 5000, 5000),
        model_name="none",
    )


# -- interop vectors ---------------------------------------------------------------------
VECTORS_CREATION_TIME_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def vectors_genesis(n_nodes: int = 2, digest: bool = False) -> Genesis:
    """The interop vectors' sample genesis (protocol defaults; its bytes are pinned by
    interop/codec vectors)."""
    return build_genesis(
        bootstrap=[kp.pubkey for kp in vector_keypairs(n_nodes)],
        creation_time_s=VECTORS_CREATION_TIME_S,
        chain_id="ambient-vectors",
        accounts=[(vector_faucet().pubkey, 10**18)],
        model_digest=bytes(range(32)) if digest else None,
    )
