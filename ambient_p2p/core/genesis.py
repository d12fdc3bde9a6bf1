"""Genesis construction with the protocol's default parameters (spec/genesis.md).

Pure: callers supply the time, identities and model digest; nothing here reads a clock,
a file or the network.
"""

from __future__ import annotations

from collections.abc import Sequence

from .messages import (
    BootstrapNode,
    EpochParams,
    Genesis,
    GenesisAccount,
    LStakeParams,
    ModelSpec,
    PohParams,
)

# Mainnet-like reference values (Solana mainnet: 62,500 hashes/tick, 64 ticks/slot, 400 ms
# slots, 432,000 slots/epoch, 4 consecutive leader slots).
MAINNET_HASHES_PER_TICK = 62_500
MAINNET_TICKS_PER_SLOT = 64
MAINNET_SLOTS_PER_EPOCH = 432_000

# Defaults for genesis files this tool writes. A Python node cannot hash at mainnet rate
# (~10 M sha256/s sustained), so the defaults keep 400 ms slots with fewer hashes per tick.
DEFAULT_CHAIN_ID = "ambient-localnet"
DEFAULT_HASHES_PER_TICK = 2_000
DEFAULT_TICKS_PER_SLOT = 32
DEFAULT_TARGET_TICK_DURATION_US = 12_500  # 32 ticks x 12.5 ms = 400 ms slots
DEFAULT_SLOT_DURATION_US = DEFAULT_TICKS_PER_SLOT * DEFAULT_TARGET_TICK_DURATION_US
DEFAULT_SLOTS_PER_EPOCH = 64
DEFAULT_LEADER_SLOTS = 4
DEFAULT_SHORT_WINDOW_EPOCHS = 4
DEFAULT_MEDIUM_WINDOW_EPOCHS = 64
DEFAULT_SHORT_WEIGHT_BPS = 5_000
DEFAULT_MEDIUM_WEIGHT_BPS = 5_000
DEFAULT_BOOTSTRAP_LSTAKE = 1_000_000
DEFAULT_FAUCET_LAMPORTS = 500_000_000 * 1_000_000_000  # 500 M tokens of 10^9 lamports
DEFAULT_NODE_LAMPORTS = 1_000 * 1_000_000_000
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_poh() -> PohParams:
    return PohParams(DEFAULT_HASHES_PER_TICK, DEFAULT_TICKS_PER_SLOT, DEFAULT_TARGET_TICK_DURATION_US)


def default_epoch() -> EpochParams:
    return EpochParams(DEFAULT_SLOTS_PER_EPOCH, DEFAULT_LEADER_SLOTS)


def default_lstake() -> LStakeParams:
    return LStakeParams(
        DEFAULT_SHORT_WINDOW_EPOCHS,
        DEFAULT_MEDIUM_WINDOW_EPOCHS,
        DEFAULT_SHORT_WEIGHT_BPS,
        DEFAULT_MEDIUM_WEIGHT_BPS,
    )


def build_genesis(
    *,
    bootstrap: Sequence[bytes],
    creation_time_s: int,
    chain_id: str = DEFAULT_CHAIN_ID,
    bootstrap_lstake: int = DEFAULT_BOOTSTRAP_LSTAKE,
    accounts: Sequence[tuple[bytes, int]] = (),
    node_lamports: int = DEFAULT_NODE_LAMPORTS,
    poh: PohParams | None = None,
    epoch: EpochParams | None = None,
    lstake: LStakeParams | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    model_digest: bytes | None = None,
) -> Genesis:
    """A genesis where each bootstrap identity gets ``bootstrap_lstake`` LStake and
    ``node_lamports`` (to pay fees), plus the extra ``accounts``. Accounts are sorted by
    pubkey so the same inputs always give the same genesis hash; zero balances are left
    out. Every genesis builder of the tool (the ``genesis`` command and the
    presets in ``ambient_p2p/devnet/genesis.py``) goes through here."""
    balances: dict[bytes, int] = {}
    for ident in bootstrap:
        balances[ident] = balances.get(ident, 0) + node_lamports
    for pk, lamports in accounts:
        balances[pk] = balances.get(pk, 0) + lamports
    return Genesis(
        chain_id=chain_id,
        creation_time_s=creation_time_s,
        poh=poh or default_poh(),
        epoch=epoch or default_epoch(),
        lstake=lstake or default_lstake(),
        model=ModelSpec(model_name, model_digest),
        accounts=tuple(GenesisAccount(pk, v) for pk, v in sorted(balances.items()) if v > 0),
        bootstrap_nodes=tuple(BootstrapNode(i, bootstrap_lstake) for i in bootstrap),
    )
