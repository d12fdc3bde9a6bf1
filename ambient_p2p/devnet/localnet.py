"""The one localnet: N separate node processes on loopback (``ambient-p2p localnet``, the
multi-process tests, ``bench gossip`` and ``bench consensus``).

Node 0 is started with ``ambient-p2p run`` and is the bootstrap; nodes 1..N-1 are started
with ``ambient-p2p join <node 0's multiaddr>``. With ``validator=True`` every node also runs
the validator (``--validator``). Every process is a child of this object and
:meth:`Localnet.stop` terminates all of them (SIGTERM, then SIGKILL after a grace period),
so a test that uses it as a context manager never leaks a process.

The genesis is :func:`ambient_p2p.devnet.genesis.localnet_genesis` over the N deterministic
node identities (:func:`ambient_p2p.devnet.users.node_keypairs`); ``genesis_kw`` overrides
its parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Self

from ..core.codec import encode
from ..core.crypto import Keypair, write_keypair_file
from ..core.messages import Genesis
from ..net.node import NODE_FILE, control_request
from .genesis import LOCALNET_CHAIN_ID, localnet_genesis
from .users import node_keypairs

STOP_GRACE_S = 10.0
START_TIMEOUT_S = 60.0
#: Seconds between a node's own status lines on its stdout (``--status-interval``).
NODE_STATUS_INTERVAL_S = 2
#: Lines of a node's output kept in memory (the rest still reaches ``echo``).
MAX_KEPT_LINES = 100_000


class NodeProc:
    """One node process and its directory."""

    def __init__(self, index: int, data_dir: Path, proc: subprocess.Popen[str], echo: IO[str] | None) -> None:
        self.index = index
        self.data_dir = data_dir
        self.proc = proc
        self.lines: list[str] = []
        self._signaled = False
        self._echo = echo
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        if self.proc.stdout is None:
            return
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if len(self.lines) < MAX_KEPT_LINES:
                self.lines.append(line)
            if self._echo is not None:
                print(f"[node{self.index}] {line}", file=self._echo, flush=True)

    def info(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / NODE_FILE).read_text()))

    def control(self, req: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        return control_request(self.data_dir, req, timeout_s)

    def status(self, timeout_s: float = 20.0) -> dict[str, Any]:
        return self.control({"cmd": "status"}, timeout_s=timeout_s)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` once (a second SIGTERM during shutdown would kill the process
        before it finishes unwinding)."""
        if self.proc.poll() is None and not self._signaled:
            self._signaled = True
            with contextlib.suppress(ProcessLookupError):  # exited since poll()
                self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc.poll() is None:
            self.send(sig)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        return self.proc.returncode


class Localnet:
    """N node processes on 127.0.0.1 sharing one genesis.

    ``validator``: run the validator on every node. ``extra_args``: added to every node's
    command line; ``node_args``: added to one node's (e.g. a fault-injection harness on one
    node). ``genesis_kw``: overrides for :func:`localnet_genesis` (``poh``,
    ``slots_per_epoch``, ...). ``keys``/``genesis_path`` reuse prepared identities or a
    prepared genesis file instead of the deterministic ones."""

    def __init__(
        self,
        root: Path,
        nodes: int,
        *,
        chain_id: str = LOCALNET_CHAIN_ID,
        validator: bool = False,
        echo: IO[str] | None = None,
        extra_args: list[str] | None = None,
        node_args: dict[int, list[str]] | None = None,
        genesis_kw: dict[str, Any] | None = None,
        keys: list[Keypair] | None = None,
        genesis_path: Path | None = None,
        dir_name: str = "node{i}",
        rpc_base_port: int | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("need at least one node")
        self.root = Path(root)
        self.n = nodes
        self.chain_id = chain_id
        self.validator = validator
        self.echo = echo
        self.extra_args = list(extra_args or [])
        self.node_args = dict(node_args or {})
        self.genesis_kw = dict(genesis_kw or {})
        self.nodes: list[NodeProc] = []
        self.keys = keys or node_keypairs(chain_id, nodes)
        if len(self.keys) != nodes:
            raise ValueError("one key per node")
        self._prepared = genesis_path is not None
        self.genesis_path = genesis_path or self.root / "genesis.cbor"
        self.genesis: Genesis | None = None
        self.dir_name = dir_name
        #: node i serves RPC on rpc_base_port + 2i (PubSub + 1); None: no RPC (--no-rpc)
        self.rpc_base_port = rpc_base_port

    # -- lifecycle -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def node_dir(self, i: int) -> Path:
        return self.root / self.dir_name.format(i=i)

    def node_argv(self, i: int, bootstrap: str | None) -> list[str]:
        """Node ``i``'s command line (``run`` for the bootstrap, else ``join BOOTSTRAP``)."""
        d = self.node_dir(i)
        argv = [sys.executable, "-m", "ambient_p2p", *(["join", bootstrap] if bootstrap else ["run"])]
        argv += ["--ledger", str(d), "--keypair", str(d / "identity.json"), "--genesis", str(self.genesis_path),
                 "--status-interval", str(NODE_STATUS_INTERVAL_S)]
        if self.validator:
            # the machine's cores shared among the nodes, at least one verify worker each (perf, issue 17)
            argv += ["--validator", "--verify-jobs", str(max(1, (os.cpu_count() or 1) // max(1, self.n)))]
        argv += ["--no-rpc"] if self.rpc_base_port is None else ["--rpc-port", str(self.rpc_port(i))]
        return argv + self.extra_args + self.node_args.get(i, [])

    def rpc_port(self, i: int) -> int:
        assert self.rpc_base_port is not None
        return self.rpc_base_port + 2 * i

    def spawn(self, i: int, bootstrap: str | None) -> NodeProc:
        d = self.node_dir(i)
        d.mkdir(parents=True, exist_ok=True)
        key = d / "identity.json"
        if not key.exists():
            write_keypair_file(key, self.keys[i])
        proc = subprocess.Popen(
            self.node_argv(i, bootstrap),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env(),
            start_new_session=True,  # Ctrl-C in a terminal reaches only the localnet parent
        )
        return NodeProc(i, d, proc, self.echo)

    def wait_ready(self, node: NodeProc, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the node answers ``status`` on its control socket."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not node.alive():
                raise RuntimeError(f"node{node.index} exited with {node.proc.returncode}: {node.lines[-5:]}")
            try:
                st = node.control({"cmd": "status"}, timeout_s=5.0)
                if st.get("ok"):
                    return st
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"node{node.index} not ready after {timeout_s}s: {node.lines[-5:]}")

    def bootstrap_addr(self) -> str:
        return str(self.nodes[0].info()["addrs"][0])

    def write_genesis(self) -> None:
        """Write the network's genesis, unless a prepared one was handed in."""
        if self._prepared:
            return
        self.genesis = localnet_genesis(self.chain_id, [k.pubkey for k in self.keys], **self.genesis_kw)
        self.genesis_path.write_bytes(encode(self.genesis))

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_genesis()
        boot = self.spawn(0, None)
        self.nodes.append(boot)
        self.wait_ready(boot)
        addr = self.bootstrap_addr()
        for i in range(1, self.n):
            self.nodes.append(self.spawn(i, addr))
        for node in self.nodes[1:]:
            self.wait_ready(node)
        return self

    def restart(self, i: int, bootstrap: str | None = None) -> NodeProc:
        self.nodes[i].stop()
        node = self.spawn(i, bootstrap if bootstrap is not None else (self.bootstrap_addr() if i else None))
        self.nodes[i] = node
        self.wait_ready(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.send(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ---------------------------------------------------------------------------
    def statuses(self) -> list[dict[str, Any]]:
        return [n.status() for n in self.nodes if n.alive()]

    def wait_for(self, pred: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(interval_s)
        return bool(pred())

    def __iter__(self) -> Iterator[NodeProc]:
        return iter(self.nodes)


class ValidatorLocalnet(Localnet):
    """A :class:`Localnet` whose nodes all run the validator (``validator=True``)."""

    def __init__(self, root: Path, nodes: int, **kw: Any) -> None:
        super().__init__(root, nodes, validator=True, **kw)
