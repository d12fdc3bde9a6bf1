"""Re-exports for old importers: the localnet, its genesis and its test users live in
:mod:`ambient_p2p.devnet` (one home). Import from there; this module goes once nothing
imports it (tests/test_node.py, tests/test_consensus_multiproc.py, node/validator.py's
equivocation path at the time of writing)."""

from __future__ import annotations

from ..devnet.genesis import localnet_genesis as validator_genesis
from ..devnet.localnet import ValidatorLocalnet
from ..devnet.users import user_keypairs

__all__ = ["ValidatorLocalnet", "user_keypairs", "validator_genesis"]
