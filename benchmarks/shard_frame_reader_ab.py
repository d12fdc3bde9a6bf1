"""A/B for net/reqresp.py FrameReader (spec/shard.md "Measurements"): stage-stream exchanges
of one 2,304-byte row through a tiny middle stage with SmolLM2's hidden size, both libp2p hosts
in this process on 127.0.0.1, alternating blocks of 25 between three readers on three session
streams: the former one-frame reader (a prefix byte per read, then the body), FrameReader, and
FrameReader with py-libp2p's PY_YAMUX_RELEASE_ON_READ=0 (yamux window updates batched to half
a window). Prints CPU (process_time, both ends) and wall time per exchange and the yamux
reads / window updates / frames written per exchange.

    .venv/bin/python benchmarks/shard_frame_reader_ab.py [FRAMES=400]
"""

import dataclasses
import sys
import time

import trio
from libp2p.stream_muxer.yamux import yamux as Y

from ambient_p2p.core import pol
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.model import runner, stages
from ambient_p2p.net import reqresp
from ambient_p2p.net.host import HostConfig, full_addrs, open_host, parse_peer_multiaddr
from ambient_p2p.net.messages import StageForwardRequest, StageOpenRequest
from ambient_p2p.net.reqresp import (
    STAGE_OPEN,
    STAGE_STREAM,
    ReqRespServer,
    SessionStream,
    _read_some,
    read_frame,
    request,
)
from ambient_p2p.node.stage_server import StageServer

NewReader = reqresp.FrameReader


class OldReader:
    def __init__(s, stream):
        s.stream = stream
        s.first = b""

    async def fill(s):
        s.first = await _read_some(s.stream, 1)
        return bool(s.first)

    async def read(s, max_len):
        f, s.first = s.first, b""
        return await read_frame(s.stream, max_len, first=f)


counts = {"read": 0, "wu": 0, "wf": 0}
orig_read, orig_wu, orig_wf = Y.YamuxStream.read, Y.YamuxStream.send_window_update, Y.Yamux._write_frame


async def c_read(self, n=-1):
    counts["read"] += 1
    return await orig_read(self, n)


async def c_wu(self, inc, skip_lock=False):
    counts["wu"] += 1
    return await orig_wu(self, inc, skip_lock)


async def c_wf(self, data):
    counts["wf"] += 1
    return await orig_wf(self, data)


Y.YamuxStream.read, Y.YamuxStream.send_window_update, Y.Yamux._write_frame = c_read, c_wu, c_wf

reqresp.PROTOCOLS[STAGE_STREAM.proto_id] = dataclasses.replace(STAGE_STREAM, rate_limit=(1e9, 1e9))
hidden, frames, block = 576, int(sys.argv[1]) if len(sys.argv) > 1 else 400, 25
cfg = dict(
    runner.TINY_CONFIG,
    num_hidden_layers=3,
    hidden_size=hidden,
    num_attention_heads=9,
    num_key_value_heads=3,
    intermediate_size=2 * hidden,
)
lm = runner.random_model(0, config=cfg)
srv = StageServer(stages.stage_of(lm, 1, 2), Keypair.deterministic("bench-stage", 0))
row = bytes(4 * hidden)


async def main() -> None:
    local = HostConfig(listen=("/ip4/127.0.0.1/tcp/0",))
    async with open_host(srv.kp, local) as sh, open_host(Keypair.deterministic("bench-driver", 1), local) as dh:
        from libp2p.peer.id import ID

        ReqRespServer(sh, srv.handlers())
        await dh.connect(parse_peer_multiaddr(full_addrs(sh)[0]))
        peer = ID.from_base58(sh.get_id().to_base58())
        modes = {
            "old": (OldReader, b"\x01" * 32),
            "new": (NewReader, b"\x02" * 32),
            "new+norelease": (NewReader, b"\x03" * 32),
        }
        ss = {}
        for _m, (_cls, q) in modes.items():
            await request(
                dh,
                peer,
                STAGE_OPEN,
                StageOpenRequest(
                    nonce=1,
                    query=q,
                    model_id=lm.model_id,
                    start=1,
                    end=2,
                    prompt_len=1,
                    max_positions=frames + 2,
                    temp_milli=0,
                    sample_seed=bytes(32),
                    prompt_hash=pol.tokens_hash([1]),
                ),
            )
        cpu = dict.fromkeys(modes, 0.0)
        wall = dict.fromkeys(modes, 0.0)
        cnt = {m: dict.fromkeys(counts, 0) for m in modes}
        pos = dict.fromkeys(modes, 0)
        nonce = 10
        for m, (cls, q) in modes.items():
            reqresp.FrameReader = cls
            ss[m] = SessionStream(dh, peer, STAGE_STREAM)
            nonce += 1
            await ss[m].call(
                StageForwardRequest(nonce=nonce, query=q, pos=0, rows=1, hidden=row), 30
            )  # opens the stream with cls on both ends
            pos[m] = 1
        while pos["old"] < frames:
            for m, (cls, q) in modes.items():
                import os

                if m.endswith("norelease"):
                    os.environ["PY_YAMUX_RELEASE_ON_READ"] = "0"
                else:
                    os.environ.pop("PY_YAMUX_RELEASE_ON_READ", None)
                reqresp.FrameReader = (
                    cls  # used by the client's reader only at stream open; both stream readers already made
                )
                c0 = dict(counts)
                t0, p0 = time.perf_counter(), time.process_time()
                for _ in range(min(block, frames - pos[m])):
                    nonce += 1
                    await ss[m].call(StageForwardRequest(nonce=nonce, query=q, pos=pos[m], rows=1, hidden=row), 30)
                    pos[m] += 1
                cpu[m] += time.process_time() - p0
                wall[m] += time.perf_counter() - t0
                for k in counts:
                    cnt[m][k] += counts[k] - c0[k]
        n = frames - 1
        for m in modes:
            print(
                m,
                f"cpu {cpu[m] / n * 1e3:.3f} ms/exchange  wall {wall[m] / n * 1e3:.3f} ms",
                {k: round(v / n, 2) for k, v in cnt[m].items()},
                "per exchange (both ends)",
            )
        print(
            "compute ms/frame",
            round(srv.stats.compute_s / (2 * frames) * 1000, 3),
            "new/old cpu",
            round(cpu["new"] / cpu["old"], 3),
            "norelease/new",
            round(cpu["new+norelease"] / cpu["new"], 3),
        )


trio.run(main)
