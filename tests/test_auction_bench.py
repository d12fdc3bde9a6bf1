"""Cost of the auction program relative to a system transfer, measured in the same run
(``-m slow``; ``-s`` prints the numbers): per-transaction execution as replay runs it
(signatures verified beforehand, ``verify_signatures=False``), ``Bank.child`` with and
without auction accounts, and the size of the largest ``close_auction`` transaction."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import pytest

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core.bank import Bank
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.interop.formats import auction as F
from ambient_p2p.ledger.producer import transfer_tx

N = 400
LEADER = Keypair.deterministic("bench/auction/leader")


def _run(txs: Sequence[bytes], parent: Bank) -> tuple[float, Bank]:
    b = parent.child(parent.slot + 1, LEADER.pubkey)
    t = time.perf_counter()
    results = b.process_transactions(list(txs), verify_signatures=False)
    dt = time.perf_counter() - t
    assert all(r.error is None for r in results), results[0].error
    b.freeze(hashlib.sha256(b.slot.to_bytes(8, "little")).digest())
    return dt / len(txs), b


def _child_us(bank: Bank, rounds: int = 200) -> float:
    t = time.perf_counter()
    for _ in range(rounds):
        bank.child(bank.slot + 1, LEADER.pubkey)
    return (time.perf_counter() - t) / rounds * 1e6


@pytest.mark.slow
def test_auction_instruction_cost_relative_to_a_transfer() -> None:
    users = [Keypair.deterministic("bench/auction/user", i) for i in range(N)]
    g = Bank.genesis(bytes(32), {u.pubkey: 10**12 for u in users}, LEADER.pubkey, bytes(32))
    t_transfer, _ = _run([transfer_tx(u, users[0].pubkey, 1, g.last_blockhash) for u in users[1:]], g)
    t_register, b1 = _run([T.register_miner_transaction(u, g.last_blockhash) for u in users[1:]], g)
    t_request, b2 = _run([T.request_transaction(u, F.request_params(), b1.last_blockhash) for u in users[1:]], b1)
    t_commit, b3 = _run([T.commit_bid_transaction(u, A.query_address(u.pubkey, 1), 5, hashlib.sha256(u.pubkey).digest(),
                                                  b2.last_blockhash) for u in users[1:]], b2)
    bare = Bank.restore(b3.slot, b3.parent_slot, b3.bank_hash or b"", LEADER.pubkey, b3.accounts, b3.blockhashes,
                        b3.status_cache)
    child, child_bare = _child_us(b3), _child_us(bare)
    c = F.Chain()
    c.register(*F.MINERS[: A.MAX_BIDS_PER_QUERY])
    q = c.request()
    c.commit_bids(q, [(m, 5) for m in F.MINERS[: A.MAX_BIDS_PER_QUERY]])
    close_bytes = len(c.close_tx(q))
    print(f"\nper transaction: transfer {t_transfer * 1e6:.0f} us; register_miner {t_register / t_transfer:.2f}x; "
          f"request {t_request / t_transfer:.2f}x; commit_bid {t_commit / t_transfer:.2f}x")
    print(f"Bank.child with {len(b3.auction_accounts)} auction accounts: {child:.0f} us, "
          f"{child / child_bare:.2f}x the same bank without them")
    print(f"close_auction with {A.MAX_BIDS_PER_QUERY} bids: {close_bytes} bytes (packet limit 1232)")
    assert close_bytes <= 1232
    assert t_commit / t_transfer < 20  # program-derived addresses dominate; a gross regression trips this
    assert child / child_bare < 3  # child copies references, never account data
