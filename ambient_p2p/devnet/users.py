"""Deterministic test identities of local chains: the one home for every publicly
derivable key the tool uses (``Keypair.deterministic``, spec/crypto.md). Anyone who knows
a label can recompute the secret: never use these keys for anything of value.

| keys | label | used by |
|---|---|---|
| localnet node identities | ``localnet/<chain>/node``, i | ``ambient-p2p localnet``, ``genesis --localnet-nodes`` |
| localnet test users | ``localnet/<chain>/user``, i | funded in the localnet genesis; transfers in benches and tests |
| single-leader ledger | ``ledger-local-leader``, ``ledger-local-user``, i | ``ledger produce`` (spec/bank.md; the poh vectors' transactions) |
| vector identities | ``vectors/node``, i, ``vectors/faucet`` | interop codec vectors |
"""

from __future__ import annotations

from ..core.crypto import Keypair

#: Funded test users in a localnet genesis.
TEST_USERS = 4
#: The single-leader ledger's labels (``ledger produce``); pinned by spec/bank.md and by the
#: transactions inside interop/poh vectors, so they keep their historical form.
LEDGER_LEADER_LABEL = "ledger-local-leader"
LEDGER_USER_LABEL = "ledger-local-user"


def labelled_keypairs(label: str, n: int) -> list[Keypair]:
    """``n`` deterministic keys ``Keypair.deterministic(label, i)``, i = 0..n-1."""
    return [Keypair.deterministic(label, i) for i in range(n)]


def node_keypairs(chain_id: str, n: int) -> list[Keypair]:
    """Identities of a localnet's bootstrap nodes."""
    return labelled_keypairs(f"localnet/{chain_id}/node", n)


def user_keypairs(chain_id: str, n: int = TEST_USERS) -> list[Keypair]:
    """Funded test users of a localnet chain (the localnet genesis funds the first
    :data:`TEST_USERS`)."""
    return labelled_keypairs(f"localnet/{chain_id}/user", n)


def ledger_leader_keypair() -> Keypair:
    """The single leader of ``ledger produce``."""
    return Keypair.deterministic(LEDGER_LEADER_LABEL)


def ledger_user_keypairs(n: int) -> list[Keypair]:
    """The users whose transfers ``ledger produce`` writes."""
    return labelled_keypairs(LEDGER_USER_LABEL, n)


def vector_keypairs(n: int) -> list[Keypair]:
    """Node identities of the interop vectors' sample genesis."""
    return labelled_keypairs("vectors/node", n)


def vector_faucet() -> Keypair:
    return Keypair.deterministic("vectors/faucet")
