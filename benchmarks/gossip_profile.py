"""Profile one gossip sender and one receiver (two processes, our GossipService exactly as a
node builds it) under cProfile, at the node's own shred-batch size (issue 17).

    .venv/bin/python benchmarks/gossip_profile.py [--count 4000] [--size 39424] [--out DIR]

Writes DIR/send.prof and DIR/recv.prof (read with ``python -m pstats``) and prints the
receiver-side rate (messages / (last delivery - first delivery)) and each side's CPU
ms/message. Not part of any test; a tool for finding per-message overhead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import trio

CHAIN = "profile"


async def _recv(count: int, prof_path: str) -> None:
    from ambient_p2p.core.crypto import Keypair
    from ambient_p2p.net.gossip import GossipService
    from ambient_p2p.net.host import HostConfig, apply_workarounds, full_addrs, open_host

    apply_workarounds()
    async with open_host(Keypair.generate(), HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))) as host:
        svc = GossipService(host, Keypair.generate(), CHAIN, kinds=("txs",))
        async with svc.run():
            print(json.dumps({"addr": full_addrs(host)[0]}), flush=True)
            prof = cProfile.Profile()
            got = 0
            first = last = 0.0
            c0 = time.process_time()
            d = await svc.receive("txs")
            first = last = time.perf_counter()
            got = 1
            prof.enable()
            with trio.move_on_after(120):
                while got < count:
                    d = await svc.receive("txs")
                    got += 1
                    last = time.perf_counter()
            prof.disable()
            del d
            prof.dump_stats(prof_path)
            cpu = time.process_time() - c0
            print(json.dumps({"got": got, "seconds": last - first, "msgs_per_s": (got - 1) / max(last - first, 1e-9),
                              "cpu_ms_per_msg": cpu / got * 1000}), flush=True)


async def _send(addr: str, count: int, size: int, prof_path: str) -> None:
    from ambient_p2p.core.crypto import Keypair
    from ambient_p2p.net.gossip import GossipService, topic_name
    from ambient_p2p.net.host import HostConfig, apply_workarounds, connect_now, open_host, parse_peer_multiaddr

    apply_workarounds()
    kp = Keypair.generate()
    async with open_host(kp, HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))) as host:
        svc = GossipService(host, kp, CHAIN, kinds=("txs",))
        async with svc.run():
            await connect_now(host, parse_peer_multiaddr(addr))
            t = topic_name(CHAIN, "txs")
            with trio.move_on_after(20):
                while not svc.pubsub.peer_topics.get(t):  # noqa: ASYNC110 - py-libp2p has no event for it
                    await trio.sleep(0.05)
            await trio.sleep(2.5)
            tag = os.urandom(8)
            prof = cProfile.Profile()
            c0 = time.process_time()
            t0 = time.perf_counter()
            prof.enable()
            for i in range(count):
                await svc.publish("txs", tag + i.to_bytes(8, "big") + bytes(size - 16))
                if i % 16 == 15:
                    await trio.lowlevel.checkpoint()
            prof.disable()
            prof.dump_stats(prof_path)
            print(json.dumps({"published": count, "seconds": time.perf_counter() - t0,
                              "cpu_ms_per_msg": (time.process_time() - c0) / count * 1000}), flush=True)
            await trio.sleep(3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", nargs="?", default="both")
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--size", type=int, default=39424)
    ap.add_argument("--out", default="/tmp/gossip-prof")
    a = ap.parse_args()
    if a.role == "recv":
        trio.run(_recv, int(a.rest[0]), a.rest[1])
        return
    if a.role == "send":
        trio.run(_send, a.rest[0], int(a.rest[1]), int(a.rest[2]), a.rest[3])
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, __file__]
    recv = subprocess.Popen([*me, "recv", str(a.count), str(out / "recv.prof")], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None
    addr = json.loads(recv.stdout.readline())["addr"]
    send = subprocess.Popen([*me, "send", addr, str(a.count), str(a.size), str(out / "send.prof")],
                            stdout=subprocess.PIPE, text=True)
    print("recv", recv.stdout.readline().strip())
    assert send.stdout is not None
    print("send", send.stdout.readline().strip())
    send.wait(30)
    recv.wait(30)
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
