"""The localnet's demo queries (``ambient-p2p localnet``): a background thread that runs
``ambient-p2p query`` (a child process each, one at a time) through the non-mining nodes as
the funded test users, once a miner is ready, and reports one line per answered query.
Nothing here is on a production path: it is the README's main command showing the loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.crypto import write_keypair_file
from ..net.node import control_request
from .users import user_keypairs

DEMO_PROMPTS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 7 times 8?",
    "Write a haiku about the sea.",
    "Why is the sky blue? One sentence.",
    "Name a planet in the solar system.",
    "What do bees make?",
    "Translate 'good morning' into Spanish.",
)
DEMO_MAX_TOKENS = 24
DEMO_PAY_PER_TOKEN = 100
DEMO_WITHIN_S = 60
#: The demo waits this long for a miner to load its model and register.
MINER_READY_TIMEOUT_S = 300.0
QUERY_TIMEOUT_S = 300.0


class DemoQueries:
    def __init__(self, root: Path, chain_id: str, entry_dirs: list[Path], count: int,
                 report: Callable[[str], None], miner_dirs: list[Path] | None = None) -> None:
        self.root = root
        self.entry_dirs = entry_dirs
        self.count = count
        self.report = report
        self.miner_dirs = miner_dirs or []
        self.keys: list[Path] = []
        for i, u in enumerate(user_keypairs(chain_id)):
            path = root / "users" / f"user{i}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                write_keypair_file(path, u)
            self.keys.append(path)
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.answered = 0
        self.failed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        self._thread.join(timeout=10.0)

    def _miner_ready(self) -> bool:
        for d in self.miner_dirs:
            try:
                st = control_request(d, {"cmd": "status"}, timeout_s=5.0)
            except (OSError, ValueError):
                continue
            if st.get("roles", {}).get("miner", {}).get("state") == "mining":
                return True
        return not self.miner_dirs

    def _run(self) -> None:
        deadline = time.monotonic() + MINER_READY_TIMEOUT_S
        while not self._miner_ready():
            if self._stop.wait(1.0) or time.monotonic() > deadline:
                return
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for n in range(self.count):
            if self._stop.is_set():
                return
            prompt = DEMO_PROMPTS[n % len(DEMO_PROMPTS)]
            node, key = self.entry_dirs[n % len(self.entry_dirs)], self.keys[n % len(self.keys)]
            argv = [sys.executable, "-m", "ambient_p2p", "query", prompt, "--max-tokens", str(DEMO_MAX_TOKENS),
                    "--pay", str(DEMO_PAY_PER_TOKEN), "--within", str(DEMO_WITHIN_S), "--node", str(node),
                    "--keypair", str(key), "--json"]
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            try:
                out, err = self._proc.communicate(timeout=QUERY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                out, err = self._proc.communicate()
            if self._stop.is_set():
                return
            self.report(self._line(n, prompt, self._proc.returncode, out, err))

    def _line(self, n: int, prompt: str, rc: int | None, out: str, err: str) -> str:
        rec: dict[str, Any] | None = None
        try:
            rec = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        except ValueError:
            rec = None
        if rc != 0 or rec is None or rec.get("answer") is None:
            self.failed += 1
            why = (err.strip().splitlines() or ["?"])[-1] if rec is None else f"query {rec['status']}"
            return f"demo query {n + 1}/{self.count} {prompt!r}: not answered ({why})"
        self.answered += 1
        answer = " ".join(str(rec["answer"]).split())
        return (f"demo query {n + 1}/{self.count} {prompt!r} -> {answer!r} [miner {rec['miner'][:8]}, "
                f"{rec['clearing_price_per_token']} lamports/token x {rec['num_tokens']} tokens, slots "
                f"{rec['request_slot']}->{rec['result_slot']}, {rec['seconds']} s]")
