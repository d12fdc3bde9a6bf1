"""Signed but unfunded transfers (issue 16, "correctly signed spam is relayed network-wide
and never scored"): the validator's ``txs`` check refuses a transaction whose fee payer
cannot pay its fee in the working bank (``unfunded``), the refusal counts against the
signed originator only (a forwarder's bank may differ), and a node never publishes what its
own check refuses (an RPC user cannot get an honest node charged by its peers)."""

from __future__ import annotations

from pathlib import Path

import trio

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.devnet.users import user_keypairs
from ambient_p2p.ledger.producer import transfer_tx
from ambient_p2p.net.gossip import BAN_REJECTS, blame, topic_name
from ambient_p2p.net.messages import seal_envelope
from ambient_p2p.node.validator import Validator
from tests.net_helpers import connect, run_trio, wait_until
from tests.test_faults_net import CHAIN, _gossip_node, _sealed
from tests.test_node import KEYS, _genesis


def _validator(tmp_path: Path) -> Validator:
    v = Validator(KEYS[0], _genesis(n=1), tmp_path)
    v.load()
    return v


def test_unfunded_transfers_are_refused_and_blamed_on_the_originator_only(tmp_path: Path) -> None:
    v = _validator(tmp_path)
    try:
        check = v.payload_checks()["txs"]
        funded = user_keypairs(v.genesis.chain_id)[0]
        empty = Keypair.deterministic("unfunded-spammer")
        assert check(seal_envelope(KEYS[1], "t", transfer_tx(funded, empty.pubkey, 5, bytes(32)), 0)) is None
        spam = transfer_tx(empty, funded.pubkey, 5, bytes(32))
        assert check(seal_envelope(KEYS[1], "t", spam, 0)) == "unfunded"
        # whether a payer can pay depends on the bank each node has reached: never the forwarder's fault
        assert blame("unfunded") == (False, True)
    finally:
        v.close()


def test_an_unfunded_spammer_is_banned_and_an_honest_node_never_publishes_its_own_refusals(tmp_path: Path) -> None:
    """A (raw peer) floods unfunded transfers signed by a key with no lamports; B runs the
    validator's check: A is charged per message and banned. B's own publish of the same
    kind of transaction (a user's submission) is refused locally, counted, and not sent:
    C, connected to B, receives nothing and charges B nothing."""
    from tests.net_helpers import raw_peer

    v = _validator(tmp_path)
    txs = topic_name(CHAIN, "txs")
    funded = user_keypairs(v.genesis.chain_id)[0]
    empty = Keypair.deterministic("unfunded-spammer")
    check = v.payload_checks()["txs"]

    async def body() -> None:
        async with trio.open_nursery() as n:
            hb, b = await _gossip_node(KEYS[1], n, payload_checks={"txs": check})
            hc, c = await _gossip_node(KEYS[2], n, payload_checks={"txs": check})
            await connect(hc, hb)
            async with raw_peer(KEYS[3], [txs]) as a:
                await connect(a.host, hb)
                aid, bid = a.host.get_id(), hb.get_id()
                assert await wait_until(lambda: aid in b.router.mesh.get(txs, ()) and bid in c.router.mesh.get(txs, ()),
                                        15)
                for i in range(BAN_REJECTS + 2):
                    spam = transfer_tx(empty, funded.pubkey, 1 + i, bytes(32))
                    await a.publish(txs, _sealed(KEYS[3], txs, spam, b.clock_ms()))
                assert await wait_until(lambda: b.stats.rejected["unfunded"] >= BAN_REJECTS, 20)
                assert await wait_until(lambda: b.is_banned(aid), 10), (b.reject_count(aid), b.stats.as_json())
                # B's own submission of an unfunded transfer stays local
                await b.publish("txs", transfer_tx(empty, funded.pubkey, 99, bytes(32)))
                assert b.stats.own_refused["unfunded"] == 1
                # and a funded one goes out and reaches C
                await b.publish("txs", transfer_tx(funded, empty.pubkey, 7, bytes(32)))
                assert await wait_until(lambda: c.stats.delivered["txs"] >= 1, 15), c.stats.as_json()
                assert c.stats.rejected["unfunded"] == 0 and c.reject_count(bid) == 0
            n.cancel_scope.cancel()

    try:
        run_trio(body, 90)
    finally:
        v.close()
