"""Thin wrapper kept for the commands recorded in spec/node.md: the consensus localnet
benchmark is ``ambient-p2p bench consensus`` (ambient_p2p/bench/consensus.py).

    python benchmarks/consensus_localnet.py --seconds 60 --tps 4 [--slot-ms 800]

As the old script did, it runs 800 ms slots unless ``--slot-ms`` is given (``bench
consensus`` itself defaults to 400 ms).
"""

from __future__ import annotations

import sys

from ambient_p2p.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--slot-ms" or a.startswith("--slot-ms=") for a in argv):
        argv = ["--slot-ms", "800", *argv]
    raise SystemExit(main(["bench", "consensus", *argv]))
