"""A localnet whose nodes each live in their own Linux network namespace (the fault suite,
tests/test_faults_netns.py; spec/network.md "Fault suite").

Topology: one namespace per node (``<prefix>n<i>``), each with a veth pair whose outer end
(``<prefix>h<i>``) is enslaved to a private bridge (``<prefix>br``) in the caller's
namespace and whose inner end is ``eth0`` with address ``10.77.0.<10+i>/24``. The bridge has
no address: the nodes reach one another and nothing else (no route leaves the bridge), and
the caller's own network is untouched. Node processes are started with ``ip netns exec``,
so the pid the harness holds is the node's own (``kill -9`` reaches the node itself); the
control socket is a path in the node directory and works across namespaces.

Faults:
* ``netem(i, ...)``: ``tc netem`` delay/jitter (jitter reorders)/loss on node ``i``'s egress;
* ``partition(groups)``: blackhole routes in every namespace towards every address outside
  its group (packets vanish silently, as in a real partition: no RST, no ICMP), and
  ``heal()`` removes them;
* killing, stopping and restarting processes is the caller's (:class:`NetnsLocalnet` is a
  :class:`~ambient_p2p.devnet.localnet.Localnet`).

Every name starts with the instance's prefix, unique per process, and :meth:`Fabric.close`
(also run by the context manager on failure) removes every namespace and link it made;
:func:`cleanup_prefix` removes leftovers of one prefix (a run killed before its cleanup).
Needs root (CAP_NET_ADMIN) and ``ip``/``tc`` (iproute2); :func:`namespaces_available` says
whether this machine can, and why not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from .localnet import ValidatorLocalnet

SUBNET_PREFIX = "10.77.0."
SUBNET_BITS = 24
#: Host part of node 0's address (node i has FIRST_HOST + i).
FIRST_HOST = 10
#: Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
MAX_IFNAME_BYTES = 15
IP_TIMEOUT_S = 20.0
#: TCP port of :meth:`Fabric.reachable`'s throwaway listener.
REACH_PORT = 9


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def _tc(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", netns, "tc", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def namespaces_available() -> str | None:
    """None when this process can create namespaces, veths and netem qdiscs; else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); run the fault suite as root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' (iproute2) is not installed"
    probe = f"ambp{os.getpid() % 100000}"
    try:
        r = _ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            return f"cannot create a network namespace: {r.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def netem_available(fabric: Fabric) -> str | None:
    """None when ``tc netem`` works in ``fabric``'s namespaces, else why not (a kernel
    without CONFIG_NET_SCH_NETEM answers 'Specified qdisc kind is unknown')."""
    r = _tc(fabric.ns(0), "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "1ms", check=False)
    if r.returncode != 0:
        return f"tc netem unavailable: {r.stderr.strip()}"
    _tc(fabric.ns(0), "qdisc", "del", "dev", "eth0", "root", check=False)
    return None


def node_address(i: int) -> str:
    return f"{SUBNET_PREFIX}{FIRST_HOST + i}"


def cleanup_prefix(prefix: str) -> list[str]:
    """Remove every namespace and link whose name starts with ``prefix``; returns them."""
    removed: list[str] = []
    r = _ip("-o", "link", "show", check=False)
    for line in r.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if name.startswith(prefix):
            _ip("link", "del", name, check=False)
            removed.append(name)
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


class Fabric:
    """The namespaces, veths and bridge of ``n`` nodes (see the module docstring)."""

    def __init__(self, n: int, prefix: str | None = None) -> None:
        self.n = n
        self.prefix = prefix or f"amb{os.getpid() % 100000:05d}"
        if len(f"{self.prefix}h{n - 1}") > MAX_IFNAME_BYTES:
            raise ValueError(f"prefix {self.prefix!r} too long for interface names")
        self.bridge = f"{self.prefix}br"
        self.partitioned: list[tuple[int, int]] = []
        self._netem: set[int] = set()
        self.up = False

    def ns(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def veth(self, i: int) -> str:
        return f"{self.prefix}h{i}"

    def names(self) -> list[str]:
        """Every namespace and link this fabric makes."""
        return [self.bridge, *(self.veth(i) for i in range(self.n)), *(self.ns(i) for i in range(self.n))]

    def create(self) -> Self:
        cleanup_prefix(self.prefix)  # leftovers of a run of this pid that died before cleanup
        self.up = True  # from here on close() has something to remove
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        for i in range(self.n):
            ns, host_end, inner = self.ns(i), self.veth(i), f"{self.prefix}p{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", inner, "name", "eth0", netns=ns)
            _ip("addr", "add", f"{node_address(i)}/{SUBNET_BITS}", "dev", "eth0", netns=ns)
            _ip("link", "set", "eth0", "up", netns=ns)
            _ip("link", "set", "lo", "up", netns=ns)
        return self

    def close(self) -> list[str]:
        """Remove everything this fabric made (idempotent); returns names that were left
        and had to be removed by prefix."""
        if not self.up:
            return []
        self.up = False
        for i in range(self.n):
            _ip("netns", "del", self.ns(i), check=False)  # takes its veth end (and the peer) along
        _ip("link", "del", self.bridge, check=False)
        return cleanup_prefix(self.prefix)

    def __enter__(self) -> Self:
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------------------
    def netem(self, i: int, *, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0) -> None:
        """Set node ``i``'s egress netem (replacing any earlier qdisc). Raises
        :class:`NetnsError` where the kernel has no netem (:func:`netem_available`)."""
        args = ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
        if loss_pct:
            args += ["loss", f"{loss_pct}%"]
        _tc(self.ns(i), "qdisc", "replace", "dev", "eth0", "root", "netem", *args)
        self._netem.add(i)

    def shape(self, i: int, *, rate_kbit: int, queue_ms: int) -> None:
        """Cap node ``i``'s egress at ``rate_kbit`` with a token bucket (tbf) whose queue
        holds ``queue_ms`` of traffic: bursts wait (latency) and overflow drops (loss); the
        impairment available where netem is not."""
        _tc(self.ns(i), "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", f"{rate_kbit}kbit",
            "burst", "32kbit", "latency", f"{queue_ms}ms")
        self._netem.add(i)

    def clear_netem(self, i: int) -> None:
        if i in self._netem:
            _tc(self.ns(i), "qdisc", "del", "dev", "eth0", "root", check=False)
            self._netem.discard(i)

    def qdisc(self, i: int) -> str:
        return _tc(self.ns(i), "qdisc", "show", "dev", "eth0").stdout

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every pair of nodes in different groups (both directions); nodes in no
        group are cut from everyone. Replaces an earlier partition."""
        self.heal()
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        for i in range(self.n):
            for j in range(self.n):
                if i != j and (i not in group_of or group_of.get(j) != group_of[i]):
                    _ip("route", "add", "blackhole", f"{node_address(j)}/32", netns=self.ns(i))
                    self.partitioned.append((i, j))

    def heal(self) -> None:
        for i, j in self.partitioned:
            _ip("route", "del", "blackhole", f"{node_address(j)}/32", netns=self.ns(i), check=False)
        self.partitioned = []

    def routes(self, i: int) -> str:
        return _ip("route", "show", netns=self.ns(i)).stdout

    def reachable(self, i: int, j: int, timeout_s: float = 3.0) -> bool:
        """True when a TCP connection from node ``i``'s namespace reaches a listener in node
        ``j``'s (a throwaway listener on port REACH_PORT; no node needs to run)."""
        listener = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(j), sys.executable, "-c",
             "import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
             f"s.bind(('{node_address(j)}',{REACH_PORT}));s.listen(1);print('up',flush=True);"
             f"s.settimeout({timeout_s + 2});s.accept()"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert listener.stdout is not None
            if listener.stdout.readline().strip() != "up":
                raise NetnsError(f"no listener in {self.ns(j)}")
            r = subprocess.run(
                ["ip", "netns", "exec", self.ns(i), sys.executable, "-c",
                 f"import socket;socket.create_connection(('{node_address(j)}',{REACH_PORT}),timeout={timeout_s})"],
                capture_output=True, text=True, timeout=timeout_s + IP_TIMEOUT_S)
            return r.returncode == 0
        finally:
            listener.kill()
            listener.wait(5)

    def existing(self) -> list[str]:
        """Names with this fabric's prefix that exist now (namespaces and links)."""
        out = [ln.split()[0] for ln in _ip("netns", "list", check=False).stdout.splitlines()
               if ln.split() and ln.split()[0].startswith(self.prefix)]
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
            parts = line.split(":", 2)
            if len(parts) >= 2 and (name := parts[1].strip().split("@", 1)[0]).startswith(self.prefix):
                out.append(name)
        return out


class NetnsLocalnet(ValidatorLocalnet):
    """A validator localnet whose node ``i`` runs inside ``fabric``'s namespace ``i`` and
    listens on :func:`node_address` ``(i)``. The fabric must be created first and outlive
    the localnet (``with Fabric(n) as f, NetnsLocalnet(root, f) as net``)."""

    def __init__(self, root: Path, fabric: Fabric, **kw: Any) -> None:
        super().__init__(root, fabric.n, **kw)
        self.fabric = fabric

    def node_argv(self, i: int, bootstrap: str | None) -> list[str]:
        argv = super().node_argv(i, bootstrap)
        return ["ip", "netns", "exec", self.fabric.ns(i), *argv, "--listen", f"/ip4/{node_address(i)}/tcp/0"]

    def addr_of(self, i: int) -> str:
        return str(self.nodes[i].info()["addrs"][0])

    def restart_via(self, i: int, via: int) -> None:
        """Restart node ``i`` (stopping it first if it runs) joining through node ``via``."""
        node = self.nodes[i]
        if node.alive():
            node.stop()
        with contextlib.suppress(Exception):
            node._reader.join(2)
        new = self.spawn(i, self.addr_of(via))
        self.nodes[i] = new
        self.wait_ready(new)
