"""The devnet helper package: one localnet, one home for local genesis presets and test
identities (no processes are started here; tests/test_net_multiproc.py runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.genesis import MAINNET_HASHES_PER_TICK
from ambient_p2p.devnet import users
from ambient_p2p.devnet.genesis import (
    LOCALNET_HASHES_PER_TICK,
    LOCALNET_SLOT_MS,
    LOCALNET_TICKS_PER_SLOT,
    ledger_genesis,
    localnet_genesis,
    localnet_poh,
)
from ambient_p2p.devnet.localnet import Localnet, ValidatorLocalnet


def test_per_node_arguments_reach_only_their_node(tmp_path: Path) -> None:
    """Review A7: the old subclass swapped ``extra_args`` in and out around ``spawn``; the
    command line is now composed per node, and composing it changes nothing."""
    net = ValidatorLocalnet(tmp_path, 3, extra_args=["--quiet"], node_args={1: ["--harness", "x"]})
    argv = [net.node_argv(i, None if i == 0 else "/ip4/127.0.0.1/tcp/1/p2p/X") for i in range(3)]
    assert argv[0][3] == "run" and argv[1][3:5] == ["join", "/ip4/127.0.0.1/tcp/1/p2p/X"]
    assert all("--validator" in a and "--quiet" in a for a in argv)
    assert argv[1][-2:] == ["--harness", "x"] and all("--harness" not in a for a in (argv[0], argv[2]))
    assert net.extra_args == ["--quiet"] and net.node_argv(2, None) == net.node_argv(2, None)
    assert "--validator" not in Localnet(tmp_path, 1).node_argv(0, None)


def test_localnet_writes_the_genesis_of_its_identities_and_users(tmp_path: Path) -> None:
    net = ValidatorLocalnet(tmp_path, 2, chain_id="c1", genesis_kw={"poh": localnet_poh(400)})
    net.write_genesis()
    g = net.genesis
    assert g is not None and g.chain_id == "c1" and net.genesis_path.exists()
    assert [n.identity for n in g.bootstrap_nodes] == [k.pubkey for k in users.node_keypairs("c1", 2)]
    funded = {a.pubkey for a in g.accounts}
    assert {u.pubkey for u in users.user_keypairs("c1")} <= funded
    assert g.poh.slot_duration_us == 400_000 and g.poh.ticks_per_slot == LOCALNET_TICKS_PER_SLOT


def test_test_identities_are_the_documented_labels() -> None:
    """spec/node.md names localnet/<chain>/user, spec/bank.md the ledger-local keys."""
    assert users.user_keypairs("x", 2) == [Keypair.deterministic("localnet/x/user", i) for i in range(2)]
    assert users.node_keypairs("x", 1) == [Keypair.deterministic("localnet/x/node", 0)]
    assert users.ledger_leader_keypair() == Keypair.deterministic("ledger-local-leader")
    assert users.ledger_user_keypairs(2)[1] == Keypair.deterministic("ledger-local-user", 1)
    assert users.user_keypairs("x", 2) != users.user_keypairs("y", 2)


def test_localnet_poh_defaults_and_rejects() -> None:
    p = localnet_poh()
    assert (p.hashes_per_tick, p.ticks_per_slot, p.slot_duration_us) == (
        LOCALNET_HASHES_PER_TICK, LOCALNET_TICKS_PER_SLOT, LOCALNET_SLOT_MS * 1000)
    assert LOCALNET_HASHES_PER_TICK < MAINNET_HASHES_PER_TICK
    assert localnet_poh(400, 64, 62_500).target_tick_duration_us == 6_250
    for bad in [(333, 7, 100), (0, 8, 100), (400, 8, 1)]:
        with pytest.raises(ValueError, match=r"must be >= 1|whole number of microseconds"):
            localnet_poh(*bad)


def test_genesis_presets_are_deterministic_where_they_must_be() -> None:
    assert ledger_genesis().hash() == ledger_genesis().hash()
    assert ledger_genesis().bootstrap_nodes[0].identity == users.ledger_leader_keypair().pubkey
    a = localnet_genesis("c", [bytes(32)], creation_time_s=5)
    assert a.hash() == localnet_genesis("c", [bytes(32)], creation_time_s=5).hash()
    assert localnet_genesis("c", [bytes(32)], creation_time_s=5, hashes_per_tick=50).poh.hashes_per_tick == 50


def test_genesis_command_names_the_identities_localnet_runs(tmp_path: Path) -> None:
    from ambient_p2p.cli import main
    from ambient_p2p.core import codec
    from ambient_p2p.core.messages import Genesis

    out = tmp_path / "g.cbor"
    assert main(["genesis", "--out", str(out), "--localnet-nodes", "3", "--chain-id", "c2", "--creation-time", "0"]) == 0
    g = codec.decode(out.read_bytes(), Genesis)
    assert [n.identity for n in g.bootstrap_nodes] == [k.pubkey for k in Localnet(tmp_path, 3, chain_id="c2").keys]


def test_producer_refuses_a_leader_genesis_does_not_name(tmp_path: Path) -> None:
    from ambient_p2p.ledger.producer import produce

    with pytest.raises(ValueError, match="first bootstrap node"):
        produce(tmp_path / "l", 1, genesis=ledger_genesis(), leader=users.node_keypairs("x", 1)[0],
                users=users.ledger_user_keypairs(2))
    assert not (tmp_path / "l").exists()
