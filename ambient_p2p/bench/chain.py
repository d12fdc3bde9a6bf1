"""``ambient-p2p bench chain``: transfers through a validator localnet (N processes on
127.0.0.1) through the TPU path (spec/tpu.md), as a table over offered loads, next to the
one-core ed25519 verify ceiling measured in the same run (issue 17 item 7).

Procedure: measure the ceiling (solders parse+verify of signed transfers on one core, and
bare pynacl verify); start the localnet (``--poh-clock service``, its default) and wait
until node 0 finalized a slot. For each offered load ``L`` (``--loads``): sign
``L x --seconds`` system transfers between the localnet's funded test users in segments of a
third of a blockhash's lifetime (``MAX_PROCESSING_AGE`` slots: 60 s at 400 ms), the first
before the window, each later one half a segment before it is due on a blockhash fetched then
(a single blockhash for a 60 s window expired under its last ~2% at 400 ms slots), then for
``--seconds`` hand them, every
``SEND_INTERVAL_S``, in ``submit_txs`` control requests round-robin to the nodes (each
node's TPU admits them and forwards them to the current and next leaders), one sender
thread per node so that a slow node does not hold the others back. Every
``--sample-every``-th transaction is a latency probe: node 0 is asked (``tx_status``)
every ``PROBE_INTERVAL_S`` which probes its confirmed / finalized banks processed, so
confirmation latency is submit -> first seen confirmed (finalization likewise), quantised
by the probe interval. After the window and ``DRAIN_SLOTS`` slots, every sent signature is
looked up on node 0's finalized bank: finalized tx/s = finalized / window.

Load-generator check: the offered rate it achieved (sent / window), the seconds its send
loop was behind schedule, and its own CPU seconds; the generator is the limit only if it
fell behind while the nodes' mempools were not full. CPU per node: utime+stime of each node
process over the window (/proc), as a share of one core; ``cpu_split_per_node`` splits it
into the event loop (main thread), worker threads and the node's child processes (verify
pool, PoH worker: not in ``cpu_per_node``). The machine's load average is recorded with each
row (a shared machine: the other processes' load is part of the figure). Mempool depth: sampled from each
node's ``tpu.mempool`` status every ``SAMPLE_INTERVAL_S``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..core.bank import MAX_PROCESSING_AGE
from ..devnet.genesis import LOCALNET_SLOT_MS
from ..errors import UserError

#: How long the localnet may take to finalize its first slot.
WARMUP_TIMEOUT_S = 240.0
#: Slots waited after a window so that its last transactions can finalize: a root needs 32
#: confirmations and a transaction may wait up to a leader rotation (16 slots on 4 nodes)
#: to land, so 80 (32 s at 400 ms slots; 40 was 16 s, shorter than the 12.9 s finality p50
#: plus a rotation, and left ~2% of a 400 ms window's transfers unfinalized when counted)
DRAIN_SLOTS = 80
#: The generator hands a chunk to a node this often.
SEND_INTERVAL_S = 0.05
#: Latency probes are looked up this often.
PROBE_INTERVAL_S = 0.2
#: Mempool depth samples.
SAMPLE_INTERVAL_S = 2.0
#: Transactions per submit_txs control request (the control frame is at most 1 MiB).
MAX_TXS_PER_SUBMIT = 512
#: Signatures per tx_status request (node/tpu.py MAX_STATUS_SIGNATURES).
STATUS_CHUNK = 1024


def add_parser(sub: Any) -> None:
    what = ("transfers through a validator localnet via the TPU path: offered load -> finalized tx/s, "
            "confirmation p50/p95/p99, mempool depth, CPU per node, next to the one-core ed25519 verify ceiling")
    p = sub.add_parser("chain", help=what, description=what + " (spec/tpu.md).")
    p.add_argument("--nodes", type=int, default=4, help="validator processes (default 4)")
    p.add_argument("--slot-ms", type=int, default=LOCALNET_SLOT_MS,
                   help=f"slot duration in ms (default {LOCALNET_SLOT_MS}, the localnet's; its ticks and hashes per tick)")
    p.add_argument("--loads", default="100,300,1000", help="offered loads in tx/s, comma separated (default 100,300,1000)")
    p.add_argument("--seconds", type=float, default=60.0, help="window per load in seconds (default 60)")
    p.add_argument("--sample-every", type=int, default=20, help="every Nth transaction is a latency probe (default 20)")
    p.add_argument("--dir", default=None, help="keep node data and nodes.log here (default: a temporary directory, removed)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(func=cmd_chain)


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def verify_ceiling(n: int = 2000) -> dict[str, float]:
    """One-core ed25519 verify rates in this process: solders parse+verify of signed
    transfers (what the node runs) and bare pynacl ``crypto_sign_open`` (the C reference)."""
    import nacl.bindings

    from ..core.bank import verify_transaction_signatures
    from ..core.crypto import Keypair

    txs = presign([Keypair.deterministic("bench-chain-ceiling", i) for i in range(4)], n, b"\x07" * 32)
    t = time.perf_counter()
    bad = verify_transaction_signatures(txs)
    solders_s = time.perf_counter() - t
    assert not any(bad)
    sm = txs[0][1:65] + txs[0][65:]
    pk = txs[0][65 + 4:65 + 36]  # message header (3) + key count (1), then the fee payer
    t = time.perf_counter()
    for _ in range(n):
        nacl.bindings.crypto_sign_open(sm, pk)
    nacl_s = time.perf_counter() - t
    return {"solders_tx_per_s": round(n / solders_s), "pynacl_verify_per_s": round(n / nacl_s)}


def presign(users: list[Any], n: int, blockhash: bytes, start: int = 0) -> list[bytes]:
    """``n`` distinct system transfers (payer ``users[i % len]`` to the next user, lamports
    ``1 + (start + i) // len(users)``), signed with pynacl over a template message whose
    trailing u64 is the amount (a system transfer's instruction data ends the message)."""
    import nacl.signing

    from ..ledger.producer import transfer_tx

    k = len(users)
    keys = [nacl.signing.SigningKey(u.seed) for u in users]
    templates = [transfer_tx(users[j], users[(j + 1) % k].pubkey, 1, blockhash)[65:-8] for j in range(k)]
    out = []
    for i in range(start, start + n):
        j = i % k
        msg = templates[j] + (1 + i // k).to_bytes(8, "little")
        out.append(b"\x01" + keys[j].sign(msg).signature + msg)
    return out


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_split(pid: int) -> dict[str, float]:
    """A node's CPU seconds by where they ran: ``loop`` its main thread (trio: networking,
    gossip, policy), ``threads`` its worker threads (insert, replay, build), ``children``
    its child processes (signature-verify pool, PoH worker; Linux /proc, children found by
    parent pid)."""
    loop = _cpu_s_path(Path(f"/proc/{pid}/task/{pid}/stat"))
    threads = _cpu_s(pid) - loop  # the process's figure keeps the time of threads that exited
    children = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"loop": loop, "threads": threads, "children": children}


def _cpu_s_path(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _blockhash(net: Any) -> bytes:
    c = net.nodes[0].status()["consensus"]
    info = net.nodes[0].control({"cmd": "slot_info", "slot": c["processed"]})
    if not info.get("last_blockhash"):
        raise RuntimeError("node 0 has no blockhash for its processed slot")
    return bytes.fromhex(info["last_blockhash"])


def _statuses(net: Any, sigs: list[bytes]) -> list[str | None]:
    out: list[str | None] = []
    for i in range(0, len(sigs), STATUS_CHUNK):
        r = net.nodes[0].control({"cmd": "tx_status", "sigs_hex": [s.hex() for s in sigs[i:i + STATUS_CHUNK]]},
                                 timeout_s=30.0)
        out += r["status"]
    return out


def run_load(net: Any, users: list[Any], load: float, seconds: float, sample_every: int, slot_ms: int,
             offset: int) -> dict[str, Any]:
    """One row of the table (module docstring)."""
    n_total = int(load * seconds)
    probes: dict[int, float] = {}  # index -> submit time
    confirmed: dict[int, float] = {}
    finalized: dict[int, float] = {}
    lock = threading.Lock()
    queues: list[list[list[bytes]]] = [[] for _ in net.nodes]
    cond = threading.Condition(lock)
    # a blockhash lives MAX_PROCESSING_AGE slots (60 s at 400 ms): the window is signed in
    # segments of a third of that, each with a blockhash fetched shortly before it is sent,
    # so no transfer is refused as expired however long the window
    seg_n = max(1, min(n_total, int(load * MAX_PROCESSING_AGE * slot_ms / 1000 / 3)))
    txs: list[bytes] = [b""] * n_total
    sigs: list[bytes] = [b""] * n_total
    signed = [0]  # transfers signed so far (a prefix), under ``cond``
    sign_time = [0.0]

    def sign_segment(a: int) -> None:
        t_sign = time.perf_counter()
        b = min(n_total, a + seg_n)
        seg = presign(users, b - a, _blockhash(net), start=offset + a)
        sign_time[0] += time.perf_counter() - t_sign
        with cond:
            txs[a:b] = seg
            sigs[a:b] = [t[1:65] for t in seg]
            signed[0] = b
            cond.notify_all()

    stop = threading.Event()
    send_errors: dict[str, int] = {}
    submit_replies: dict[str, int] = {"admitted": 0, "queued": 0}
    submit_rtt: list[float] = []

    def sender(i: int) -> None:
        node = net.nodes[i]
        while True:
            with cond:
                while not queues[i] and not stop.is_set():
                    cond.wait(0.2)
                if not queues[i]:
                    return
                chunk: list[bytes] = []  # everything queued for this node, one request
                while queues[i] and len(chunk) + len(queues[i][0]) <= MAX_TXS_PER_SUBMIT:
                    chunk += queues[i].pop(0)
                if not chunk:
                    chunk = queues[i].pop(0)
            t_req = time.monotonic()
            try:
                r = node.control({"cmd": "submit_txs", "txs_hex": [t.hex() for t in chunk]}, timeout_s=30.0)
                with lock:
                    for k in submit_replies:
                        submit_replies[k] += int(r.get(k) or 0)
                    submit_rtt.append(time.monotonic() - t_req)
            except Exception as exc:  # noqa: BLE001 - a failed send is counted, the run goes on
                with lock:
                    send_errors[type(exc).__name__] = send_errors.get(type(exc).__name__, 0) + 1

    sign_segment(0)

    def signer() -> None:  # each later segment, signed half a segment before it is due
        for a in range(seg_n, n_total, seg_n):
            due_s = a / load - seg_n / load / 2
            while not stop.is_set() and time.monotonic() - t0 < due_s:
                time.sleep(0.05)
            if stop.is_set():
                return
            sign_segment(a)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(net.n)]
    for t in threads:
        t.start()
    pids = [n.proc.pid for n in net.nodes]
    cpu0 = [_cpu_s(p) for p in pids]
    split0 = [_cpu_split(p) for p in pids]
    gen_cpu0 = time.process_time()
    depth: list[list[int]] = [[] for _ in net.nodes]
    t0 = time.monotonic()
    sign_thread = threading.Thread(target=signer, daemon=True)
    sign_thread.start()
    sent = 0
    behind_s = 0.0
    backlog = 0  # most transactions queued in the sender threads at once
    rr = 0
    next_probe = t0
    next_sample = t0
    while True:
        now = time.monotonic()
        el = now - t0
        with cond:
            due = min(n_total, int(el * load), signed[0])  # never past what is signed
        if due > sent:
            behind_s = max(behind_s, (due - sent) / load - SEND_INTERVAL_S)
            step = max(1, min(MAX_TXS_PER_SUBMIT, -(-(due - sent) // net.n)))  # spread over the nodes
            for a in range(sent, due, step):
                b = min(due, a + step)
                with cond:
                    queues[rr % net.n].append(txs[a:b])
                    cond.notify_all()
                rr += 1
                for i in range(a + (-a) % sample_every, b, sample_every):
                    probes[i] = now
            sent = due
        with lock:
            backlog = max(backlog, sum(len(c) for q in queues for c in q))
        if now >= next_probe:
            pend = [i for i in probes if i not in finalized]
            if pend:
                st = _statuses(net, [sigs[i] for i in pend])
                t_seen = time.monotonic()
                for i, s in zip(pend, st, strict=True):
                    if s in ("confirmed", "finalized") and i not in confirmed:
                        confirmed[i] = t_seen
                    if s == "finalized":
                        finalized[i] = t_seen
            next_probe = now + PROBE_INTERVAL_S
        if now >= next_sample:
            for i, node in enumerate(net.nodes):
                with contextlib.suppress(Exception):  # a busy node misses a sample
                    depth[i].append(int(node.status()["tpu"]["mempool"]))
            next_sample = now + SAMPLE_INTERVAL_S
        if sent >= n_total and el >= seconds:
            break
        time.sleep(SEND_INTERVAL_S)
    window_s = time.monotonic() - t0
    stop.set()
    sign_thread.join(timeout=60.0)
    sign_s = sign_time[0]
    with cond:
        cond.notify_all()
    for t in threads:
        t.join(timeout=60.0)
    gen_cpu = time.process_time() - gen_cpu0
    cpu1 = [_cpu_s(p) for p in pids]
    split1 = [_cpu_split(p) for p in pids]
    # drain: probes keep being looked up, then every signature once
    drain_until = time.monotonic() + DRAIN_SLOTS * slot_ms / 1000
    while time.monotonic() < drain_until:
        pend = [i for i in probes if i not in finalized]
        if not pend:
            break
        st = _statuses(net, [sigs[i] for i in pend])
        t_seen = time.monotonic()
        for i, s in zip(pend, st, strict=True):
            if s in ("confirmed", "finalized") and i not in confirmed:
                confirmed[i] = t_seen
            if s == "finalized":
                finalized[i] = t_seen
        time.sleep(PROBE_INTERVAL_S)
    final = _statuses(net, sigs)
    n_final = sum(1 for s in final if s == "finalized")
    conf_lat = [confirmed[i] - probes[i] for i in confirmed]
    fin_lat = [finalized[i] - probes[i] for i in finalized]
    stats = [n.status() for n in net.nodes]
    return {
        "offered_tx_per_s": load,
        "window_s": round(window_s, 1),
        "generator": {"sent": sent, "achieved_tx_per_s": round(sent / window_s, 1), "max_behind_s": round(behind_s, 2),
                      "max_backlog_txs": backlog,
                      "cpu_s": round(gen_cpu, 1), "presign_s": round(sign_s, 1),
                      "send_errors": send_errors, **submit_replies,
                      "submit_rtt_s": {"n": len(submit_rtt), "p50": _pct(submit_rtt, 0.5), "p99": _pct(submit_rtt, 0.99)}},
        "finalized": n_final,
        "finalized_tx_per_s": round(n_final / window_s, 1),
        "landed_not_finalized": sum(1 for s in final if s in ("confirmed", "processed")),
        "confirm_s": {"n": len(conf_lat), "of_probes": len(probes), "p50": _pct(conf_lat, 0.5),
                      "p95": _pct(conf_lat, 0.95), "p99": _pct(conf_lat, 0.99)},
        "finalize_s": {"n": len(fin_lat), "p50": _pct(fin_lat, 0.5), "p95": _pct(fin_lat, 0.95),
                       "p99": _pct(fin_lat, 0.99)},
        "mempool_depth": {"max": [max(d) if d else None for d in depth],
                          "mean": [round(sum(d) / len(d)) if d else None for d in depth]},
        "cpu_per_node": [round((b - a) / window_s, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "cpu_split_per_node": [{k: round((b[k] - a[k]) / window_s, 2) for k in a} for a, b in
                               zip(split0, split1, strict=True)],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "mempool_dropped": [s.get("tpu", {}).get("mempool_dropped") for s in stats],
        "tpu": [{k: s.get("tpu", {}).get(k) for k in ("send_failed", "gossip_fallback", "forward_queue_full",
                                                       "batches_in", "batches_out")} for s in stats],
        "dead": [s["consensus"].get("dead") for s in stats],
        "duplicates": [s["consensus"].get("duplicates") for s in stats],
        "finalized_slot": stats[0]["consensus"].get("finalized"),
    }


def run_chain_bench(nodes: int, slot_ms: int, loads: list[float], seconds: float, sample_every: int, root: Path,
                    log: Any) -> dict[str, Any]:
    from ..devnet.genesis import localnet_poh
    from ..devnet.localnet import Localnet
    from ..devnet.users import user_keypairs

    ceiling = verify_ceiling()
    net = Localnet(root, nodes, validator=True, echo=log, genesis_kw={"poh": localnet_poh(slot_ms)})
    rows = []
    with net:
        users = user_keypairs(net.chain_id)
        t = time.monotonic()
        while net.nodes[0].status()["consensus"]["finalized_slots"] == 0:
            if time.monotonic() - t > WARMUP_TIMEOUT_S:
                raise RuntimeError(f"node 0 finalized nothing within {WARMUP_TIMEOUT_S:.0f} s")
            time.sleep(1.0)
        offset = 0
        for load in loads:
            rows.append(run_load(net, users, load, seconds, sample_every, slot_ms, offset))
            offset += int(load * seconds)
    return {"nodes": nodes, "slot_ms": slot_ms, "seconds": seconds, "sample_every": sample_every,
            "verify_ceiling_one_core": ceiling, "loads": rows, "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def report_lines(out: dict[str, Any]) -> list[str]:
    c = out["verify_ceiling_one_core"]
    lines = [f"bench chain: {out['nodes']} nodes, {out['slot_ms']} ms slots, {out['seconds']:.0f} s per load, "
             f"{out['cpus']} cpus; one-core ed25519 ceiling: solders {c['solders_tx_per_s']} tx/s, "
             f"pynacl {c['pynacl_verify_per_s']} verifies/s",
             "offered  sent/s  behind_s  finalized/s  ratio_to_ceiling  confirm_p50/p95/p99_s  "
             "finalize_p50_s  mempool_max  cpu_per_node  loop/threads/children  load_avg_1m"]
    for r in out["loads"]:
        cs = r["confirm_s"]
        lines.append(
            f"{r['offered_tx_per_s']:>7.0f}  {r['generator']['achieved_tx_per_s']:>6.1f}  "
            f"{r['generator']['max_behind_s']:>8.2f}  {r['finalized_tx_per_s']:>11.1f}  "
            f"{r['finalized_tx_per_s'] / c['solders_tx_per_s']:>16.4f}  "
            f"{cs['p50']}/{cs['p95']}/{cs['p99']}  {r['finalize_s']['p50']}  {r['mempool_depth']['max']}  "
            f"{r['cpu_per_node']}  "
            f"{['/'.join(str(c[k]) for k in ('loop', 'threads', 'children')) for c in r.get('cpu_split_per_node', [])]}  "
            f"{(r.get('load_average') or [None])[0]}")
    return lines


def cmd_chain(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 16:
        raise UserError("--nodes must be between 1 and 16")
    if not 40 <= args.slot_ms <= 60_000:
        raise UserError("--slot-ms must be between 40 and 60000")
    try:
        loads = [float(x) for x in str(args.loads).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--loads must be numbers separated by commas, got {args.loads!r}") from None
    if not loads or not all(1 <= x <= 100_000 for x in loads):
        raise UserError("--loads must be 1..100000 tx/s each")
    if not 1 <= args.seconds <= 3600 or not 1 <= args.sample_every <= 100_000:
        raise UserError("--seconds must be 1..3600 and --sample-every 1..100000")
    keep = args.dir is not None
    root = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="ambient-bench-chain-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with open(root / "nodes.log", "a", encoding="utf-8") as log:
            try:
                out = run_chain_bench(args.nodes, args.slot_ms, loads, args.seconds, args.sample_every, root, log)
            except (RuntimeError, TimeoutError) as exc:
                raise UserError(f"bench chain: {exc}") from None
            except OSError as exc:  # a node's control socket is gone: it exited (nodes.log says why)
                where = root / "nodes.log" if keep else "nodes.log (run with --dir to keep it)"
                raise UserError(f"bench chain: a node stopped answering ({exc.strerror or exc}); see {where}") from None
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    for line in report_lines(out):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(out, sort_keys=True))
    return 0
