"""The benchmark package behind ``ambient-p2p bench NAME``: every figure is printed next
to a reference measured in the same run (performance is stated as ratios, never as bare
numbers from another day).

| name | module | figure | in-run reference |
|---|---|---|---|
| ``pol`` | :mod:`.pol` (+ :mod:`.polbench`, :mod:`.toploc_compare`) | PoL overhead, validation cost, drift, detection | one full generation; TOPLOC |
| ``poh`` | :mod:`.ledger` | PoH hashes/s, parallel verify speedup | ``openssl speed sha256``, a hashlib loop, bare hash loops in the same pool |
| ``erasure`` | :mod:`.ledger` | RS(32,32) encode/recover MB/s | ISA-L through pyeclib |
| ``blockstore`` | :mod:`.ledger` | validated shred inserts/s | raw rocksdict WriteBatch puts |
| ``gossip`` | :mod:`.gossip` | gossip msgs/s, latency, loss, CPU on a localnet | raw loopback TCP socket; js-libp2p |
| ``consensus`` | :mod:`.consensus` | confirmation latency, finalized slots per clock slot, forks, loop stall on a validator localnet | the slot clock |
| ``rpc`` | :mod:`.rpc` | JSON-RPC getBalance req/s, p50/p99 latency on a validator node | a bare hypercorn/starlette hello-world |
| ``query`` | :mod:`.query` | a query's request-to-result latency: auction windows, model time, chain time | the model's own generation of the same tokens |
| ``svm`` | :mod:`.svm` | SPL Token transfers/s executed by the bank | bare ``LiteSVM.send_transaction`` on the same transactions |
| ``difficulty`` | :mod:`.difficulty` | a cheating miner's escape probability before and after the dynamic difficulty adjusts (exact) | a Monte Carlo estimate with the chain's own position draw |

Recorded results (with the command that produced them) live in ``benchmarks/results/``.
Modules import their heavy dependencies inside their handlers so ``--help`` stays fast.
"""

from __future__ import annotations

from . import consensus, difficulty, gossip, ledger, pol, query, rpc, svm

#: Modules whose ``add_parser(sub)`` adds their subcommands to ``ambient-p2p bench``.
BENCH_MODULES = (pol, ledger, gossip, consensus, query, rpc, difficulty, svm)
