"""The benchmark package behind ``ambient-p2p bench NAME``: every figure is printed next
to a reference measured in the same run (performance is stated as ratios, never as bare
numbers from another day).

| name | module | figure | in-run reference |
|---|---|---|---|
| ``pol`` | :mod:`.pol` (+ :mod:`.polbench`, :mod:`.toploc_compare`) | PoL overhead, validation cost, drift, detection | one full generation; TOPLOC |
| ``poh`` | :mod:`.ledger` | PoH hashes/s, parallel verify speedup | ``openssl speed sha256``, a hashlib loop, bare hash loops in the same pool |
| ``erasure`` | :mod:`.ledger` | RS(32,32) encode/recover MB/s (ours, numpy fallback) | raw ISA-L `ec_encode_data` via ctypes, same matrix and bytes |
| ``blockstore`` | :mod:`.ledger` | validated shred inserts/s | raw rocksdict WriteBatch puts |
| ``gossip`` | :mod:`.gossip` | gossip msgs/s, latency, loss, CPU on a localnet | raw loopback TCP socket; js-libp2p |
| ``consensus`` | :mod:`.consensus` | confirmation latency, finalized slots per clock slot, forks, loop stall on a validator localnet | the slot clock |
| ``rpc`` | :mod:`.rpc` | JSON-RPC getBalance req/s, p50/p99 latency on a validator node | a bare hypercorn/starlette hello-world |
| ``query`` | :mod:`.query` | a query's request-to-result latency: auction windows, model time, chain time | the model's own generation of the same tokens |
| ``chain`` | :mod:`.chain` | offered load -> finalized transfers/s, confirmation p50/p95/p99, mempool depth, CPU per node on a validator localnet via the TPU path | one-core ed25519 verify (solders, pynacl) |
| ``join`` | :mod:`.join` | a newcomer's join of a long history from a snapshot (processes, libp2p) | replaying that history from genesis |
| ``shard`` | :mod:`.shard` | tokens/s through 1/2/3-stage routes of stage processes, network cost per token, stage-PoL detection table | the whole model generating the same tokens in the same run |
| ``svm`` | :mod:`.svm` | SPL Token transfers/s executed by the bank | bare ``LiteSVM.send_transaction`` on the same transactions |
| ``difficulty`` | :mod:`.difficulty` | a cheating miner's escape probability before and after the dynamic difficulty adjusts (exact) | a Monte Carlo estimate with the chain's own position draw |

Recorded results (with the command that produced them) live in ``benchmarks/results/``.
Modules import their heavy dependencies inside their handlers so ``--help`` stays fast.
"""

from __future__ import annotations

from . import chain, consensus, difficulty, gossip, join, ledger, pol, query, rpc, svm
from . import shard as shard_bench

#: Modules whose ``add_parser(sub)`` adds their subcommands to ``ambient-p2p bench``.
BENCH_MODULES = (pol, ledger, gossip, consensus, query, rpc, difficulty, chain, join, shard_bench, svm)
