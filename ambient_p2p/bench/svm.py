"""``ambient-p2p bench svm``: SPL Token transfers executed per second by the bank on one core
(``Bank.process_transactions`` on pre-verified transactions, as replay runs them after the
sigverify stage: parse, blockhash and status-cache checks, fee, account load into LiteSVM,
execution, store), as a ratio to bare ``LiteSVM.send_transaction`` on the same transactions
(already parsed, same LiteSVM settings) in the same run (spec/svm.md; target >= 0.5). The
ratio is taken without the RPC's token-balance recording (agave's bank collects token
balances only for its transaction-status service); the figure with it is printed too."""

from __future__ import annotations

import argparse
import hashlib
import time
from typing import Any

from ..errors import UserError


def add_parser(sub: Any) -> None:
    b = sub.add_parser("svm", help="SPL Token transfers/s through the bank vs bare LiteSVM.send_transaction")
    b.add_argument("--txs", type=int, default=4_000, help="token transfers to time (default 4,000)")
    b.add_argument("--owners", type=int, default=64, help="token owners the transfers rotate over (default 64)")
    b.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best counts (default 3)")
    b.set_defaults(func=cmd_svm)


def cmd_svm(args: argparse.Namespace) -> int:
    from solders.account import Account
    from solders.pubkey import Pubkey
    from solders.transaction import VersionedTransaction

    from ..core import svm
    from ..core.bank import Bank
    from ..core.crypto import Keypair
    from ..devnet import spl

    if args.txs < 1 or args.owners < 2 or args.repeat < 1:
        raise UserError("--txs must be >= 1, --owners >= 2 and --repeat >= 1")
    gh = hashlib.sha256(b"bench/svm/genesis").digest()
    leader = Keypair.deterministic("bench/svm/leader")
    owners = [Keypair.deterministic("bench/svm/owner", i) for i in range(args.owners)]
    mint = Keypair.deterministic("bench/svm/mint")
    bank = Bank.genesis(gh, {o.pubkey: 10**12 for o in owners}, leader.pubkey, gh, programs=svm.genesis_programs())
    atas = [spl.associated_token_address(o.pubkey, mint.pubkey) for o in owners]
    b1 = bank.child(1, leader.pubkey)
    bh = bank.last_blockhash
    setup = [spl.tx(owners[0], spl.create_mint(owners[0].pubkey, mint.pubkey, owners[0].pubkey), bh, [mint])]
    setup += [spl.tx(owners[0], [spl.create_ata(owners[0].pubkey, o.pubkey, mint.pubkey),
                                 spl.mint_to(mint.pubkey, a, owners[0].pubkey, 10**12)], bh)
              for o, a in zip(owners, atas)]
    errors = [r.error for r in b1.process_transactions(setup) if r.error is not None]
    if errors:
        raise RuntimeError(f"setup failed: {errors[0]}")
    b1.freeze(hashlib.sha256(b"bench/svm/slot1").digest())
    bh = b1.last_blockhash
    n = args.owners
    raws = [spl.tx(owners[k % n], [spl.transfer(atas[k % n], atas[(k + 1) % n], owners[k % n].pubkey, 1 + k // n)], bh)
            for k in range(args.txs)]

    def bank_run(token_balances: bool) -> tuple[float, float, float]:
        b = b1.child(2, leader.pubkey)
        b.token_balances = token_balances
        c0, t0 = time.process_time(), time.perf_counter()
        res = b.process_transactions(raws, verify_signatures=False)
        t1, c1 = time.perf_counter(), time.process_time()
        b.freeze(hashlib.sha256(b"bench/svm/slot2").digest())
        t2 = time.perf_counter()
        if any(r.error is not None for r in res):
            raise RuntimeError(f"a transfer failed in the bank: {next(r.error for r in res if r.error)}")
        return t1 - t0, t2 - t1, c1 - c0

    parsed = [VersionedTransaction.from_bytes(r) for r in raws]

    def bare_run() -> tuple[float, float]:
        lite = svm.SvmExecutor().svm  # the executor's settings: no sigverify, blockhash check or history
        for k in (*b1.accounts, *b1.account_meta):
            acc = b1.account(k)
            if acc is not None:
                lam, m = acc
                lite.set_account(Pubkey(k), Account(lam, m.data, Pubkey(m.owner), m.executable, m.rent_epoch))
        c0, t0 = time.process_time(), time.perf_counter()
        for tx in parsed:
            lite.send_transaction(tx)
        t1, c1 = time.perf_counter(), time.process_time()
        return t1 - t0, c1 - c0

    inf = float("inf")
    bank_best = freeze_best = bare_best = rpc_best = bank_cpu = bare_cpu = inf
    for _ in range(args.repeat):
        exe, frz, cpu = bank_run(False)
        bank_best, freeze_best, bank_cpu = min(bank_best, exe), min(freeze_best, frz), min(bank_cpu, cpu)
        exe, cpu = bare_run()
        bare_best, bare_cpu = min(bare_best, exe), min(bare_cpu, cpu)
        rpc_best = min(rpc_best, bank_run(True)[0])
    bank_tps, bare_tps, rpc_tps = args.txs / bank_best, args.txs / bare_best, args.txs / rpc_best
    print(f"SPL Token transfers: {args.txs} over {n} owners, best of {args.repeat}, one core")
    print(f"  bank (process_transactions, pre-verified): {bank_tps:10,.0f} tx/s")
    print(f"  bare LiteSVM.send_transaction (pre-parsed): {bare_tps:10,.0f} tx/s")
    print(f"  ratio bank / bare: {bank_tps / bare_tps:.2f} (target >= 0.5)")
    # process CPU time of the same runs: what this process ran, less sensitive to other tenants
    # of a shared machine than the wall clock (the bank's Python suffers more from them than LiteSVM)
    print(f"  in process CPU time: bank {bank_cpu / args.txs * 1e6:.2f} us, bare {bare_cpu / args.txs * 1e6:.2f} us "
          f"a transfer, ratio {bare_cpu / bank_cpu if bank_cpu else 0.0:.2f}")
    print(f"  with token balances recorded for the RPC (Bank.token_balances, as a node serving the RPC sets it): "
          f"{rpc_tps:,.0f} tx/s, ratio {rpc_tps / bare_tps:.2f}")
    print(f"  freeze of the slot (bank hash over {len(raws) and 2 * n + 1} written accounts): {freeze_best * 1e3:.1f} ms")
    return 0
