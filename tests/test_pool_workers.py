"""Process-pool workers die with the node that started them (ledger/parallel.py
``exit_with_parent``): a node killed with SIGKILL must not leave its signature-verify or
PoH-verify workers running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

#: Starts the pool, prints the worker pids, then waits to be killed.
CHILD = {
    "tpu": """
import json, sys, time
from ambient_p2p.node.tpu import SigVerifier
v = SigVerifier(jobs=2); v.start()
pool = v._pool
while len(pool._processes) < 2: time.sleep(0.05)
print(json.dumps(sorted(pool._processes)), flush=True)
time.sleep(600)
""",
    "poh": """
import json, sys, time
from ambient_p2p.ledger.parallel import PohVerifier
v = PohVerifier(jobs=2).__enter__()
pool = v._pool
pool.submit(int, 0).result()
while len(pool._processes) < 2: time.sleep(0.05)
print(json.dumps(sorted(pool._processes)), flush=True)
time.sleep(600)
""",
}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("pool", sorted(CHILD))
def test_pool_workers_exit_when_their_node_is_killed(pool: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD[pool]], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        workers = json.loads(proc.stdout.readline())
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), f"orphaned workers still running: {workers}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for w in workers:  # only the workers this test's child started
            if _alive(w):
                os.kill(w, signal.SIGKILL)
