"""The node's Solana JSON-RPC, PubSub and /metrics against a real validator process on
127.0.0.1, driven by the real clients (solana-py's AsyncClient and its WebSocket client,
@solana/web3.js v1 under node, the openai client for /v1's errors) and by raw HTTP for the
adversarial cases (spec/rpc.md). The Solana CLI is not installed here and is not tested. One single-node localnet for the
module; every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE
from ambient_p2p.devnet.localnet import Localnet

pytestmark = pytest.mark.integration

WAIT_S = 90.0
#: the bearer token --rpc-chat-keys maps to the (unfunded) test requester key
CHAT_TOKEN = "test-token-0123456789abcdef"
#: what earlier tests of the module leave for the last one (the transfer's signature and slot)
SEEN: dict[str, Any] = {}


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            if p >= 65534:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", p + 1))
                except OSError:
                    continue
            return p
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    from ambient_p2p.core.crypto import Keypair, write_keypair_file

    port = free_port_pair()
    root: Path = tmp_path_factory.mktemp("rpc")
    write_keypair_file(root / "poor.json", Keypair.deterministic("test/rpc-poor-requester"))
    (root / "chat-keys.json").write_text(json.dumps({CHAT_TOKEN: "poor.json"}))
    with Localnet(root / "net", 1, validator=True, rpc_base_port=port,
                  extra_args=["--rpc-chat-keys", str(root / "chat-keys.json")]) as n:
        wait_rpc_slot(f"http://127.0.0.1:{port}", n)
        yield n


def url_of(net: Localnet) -> str:
    return f"http://127.0.0.1:{net.rpc_port(0)}"


def post(url: str, body: bytes, path: str = "/") -> tuple[int, Any]:
    req = urllib.request.Request(url + path, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_rpc_slot(url: str, net: Localnet, min_slot: int = 3, timeout_s: float = WAIT_S) -> None:
    """Until the node's RPC answers getSlot (processed) at ``min_slot`` or more; bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if rpc(url, "getSlot", [{"commitment": "processed"}]).get("result", 0) >= min_slot:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the RPC never answered: {net.nodes[0].lines[-5:]}")


def rpc(url: str, method: str, params: Any = None, rid: Any = 1) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        body["params"] = params
    return post(url, json.dumps(body).encode())[1]


def test_solana_py_airdrop_v0_transfer_confirm_and_history(net: Localnet) -> None:
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed, Processed
    from solana.rpc.core import RPCException
    from solders.hash import Hash
    from solders.keypair import Keypair
    from solders.message import MessageV0
    from solders.system_program import TransferParams, transfer
    from solders.transaction import VersionedTransaction

    async def flow() -> None:
        c = AsyncClient(url_of(net), commitment=Confirmed)
        assert await c.is_connected()  # getHealth
        gh = (await c.get_genesis_hash()).value
        assert str(gh) == __import__("base58").b58encode(net.genesis.hash()).decode()  # type: ignore[union-attr]
        a, b = Keypair(), Keypair()
        assert (await c.get_balance(a.pubkey())).value == 0
        sig = (await c.request_airdrop(a.pubkey(), 2_000_000_000)).value
        await c.confirm_transaction(sig, Confirmed)
        assert (await c.get_balance(a.pubkey())).value == 2_000_000_000
        latest = (await c.get_latest_blockhash()).value
        msg = MessageV0.try_compile(a.pubkey(), [transfer(TransferParams(from_pubkey=a.pubkey(), to_pubkey=b.pubkey(),
                                                                         lamports=1_001_234))], [], latest.blockhash)
        fee = (await c.get_fee_for_message(msg)).value
        assert fee == LAMPORTS_PER_SIGNATURE
        tx = VersionedTransaction(msg, [a])
        s = (await c.send_transaction(tx)).value
        conf = await c.confirm_transaction(s, Confirmed, last_valid_block_height=latest.last_valid_block_height)
        st = conf.value[0]
        assert st is not None and st.err is None
        assert (await c.get_balance(b.pubkey())).value == 1_001_234
        assert (await c.get_balance(a.pubkey())).value == 2_000_000_000 - 1_001_234 - fee
        got = (await c.get_transaction(s, commitment=Confirmed, max_supported_transaction_version=0)).value
        assert got is not None
        meta = got.transaction.meta
        assert meta is not None and meta.fee == fee and meta.err is None
        assert list(meta.pre_balances)[:2] == [2_000_000_000, 0]
        assert list(meta.post_balances)[:2] == [2_000_000_000 - 1_001_234 - fee, 1_001_234]
        # a v0 transaction asked for without maxSupportedTransactionVersion: -32015, as agave
        with pytest.raises(RPCException) as e:
            await c.get_transaction(s, commitment=Confirmed)
        assert "maxSupportedTransactionVersion" in str(e.value)
        raw = rpc(url_of(net), "getTransaction", [str(s), {"encoding": "base64", "commitment": "confirmed",
                                                         "maxSupportedTransactionVersion": 0}])["result"]
        assert raw["version"] == 0 and raw["transaction"][1] == "base64"
        assert bytes(tx) == __import__("base64").b64decode(raw["transaction"][0])
        SEEN.update(signature=str(s), slot=got.slot, payer=str(a.pubkey()))
        stat = (await c.get_signature_statuses([s], search_transaction_history=True)).value[0]
        assert stat is not None and stat.slot == got.slot
        sigs = (await c.get_signatures_for_address(b.pubkey(), commitment=Confirmed)).value
        assert [str(x.signature) for x in sigs] == [str(s)]
        blk = (await c.get_block(got.slot, max_supported_transaction_version=0)).value
        assert any(str(t.transaction.signatures[0]) == str(s) for t in blk.transactions)  # type: ignore[union-attr]
        blocks = rpc(url_of(net), "getBlocks", [got.slot - 1, got.slot, {"commitment": "confirmed"}])["result"]
        assert blocks[-1] == got.slot and all(x < got.slot for x in blocks[:-1])
        acct = (await c.get_account_info(b.pubkey(), commitment=Processed)).value
        assert acct is not None and acct.lamports == 1_001_234 and bytes(acct.data) == b""
        # the same transaction again: preflight says AlreadyProcessed (-32002)
        with pytest.raises(RPCException) as e2:
            await c.send_transaction(tx)
        assert "AlreadyProcessed" in str(e2.value) or "simulation failed" in str(e2.value)
        # a transfer beyond the balance fails preflight with Solana's instruction error
        poor = Keypair()
        bh = (await c.get_latest_blockhash()).value.blockhash
        bad = VersionedTransaction(MessageV0.try_compile(a.pubkey(), [transfer(TransferParams(
            from_pubkey=a.pubkey(), to_pubkey=poor.pubkey(), lamports=10**15))], [], bh), [a])
        with pytest.raises(RPCException) as e3:
            await c.send_transaction(bad)
        assert "Transaction simulation failed" in str(e3.value)
        # simulateTransaction with an expired blockhash: BlockhashNotFound, unless replaced
        old = VersionedTransaction(MessageV0.try_compile(a.pubkey(), [transfer(TransferParams(
            from_pubkey=a.pubkey(), to_pubkey=poor.pubkey(), lamports=1_000_007))], [], Hash(bytes(32))), [a])
        sim = (await c.simulate_transaction(old, commitment=Processed)).value
        assert str(sim.err) == "BlockhashNotFound" or "BlockhashNotFound" in repr(sim.err), sim
        sim2 = rpc(url_of(net), "simulateTransaction", [__import__("base64").b64encode(bytes(old)).decode(), {
            "encoding": "base64", "replaceRecentBlockhash": True, "commitment": "processed"}])["result"]["value"]
        assert sim2["err"] is None and sim2["replacementBlockhash"]["lastValidBlockHeight"] > 0, sim2
        vote = (await c.get_vote_accounts()).value
        assert [str(v.node_pubkey) for v in vote.current] == [net.nodes[0].status()["address"]]
        await c.close()

    asyncio.run(flow())


def test_signature_slot_and_account_subscriptions_over_the_websocket(net: Localnet) -> None:
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solana.rpc.websocket_api import SolanaWsClient
    from solders.keypair import Keypair
    from solders.rpc.config import RpcTransactionLogsFilterMentions

    async def flow() -> None:
        ws_url = f"ws://127.0.0.1:{net.rpc_port(0) + 1}"  # PubSub on the next port, as Solana's
        c = AsyncClient(url_of(net))
        a = Keypair()
        async with SolanaWsClient(ws_url) as ws:
            await ws.slot_subscribe()
            note = await asyncio.wait_for(ws.recv(), 20)
            assert type(note).__name__ == "SlotNotification" and note.result.slot >= 1  # type: ignore[union-attr]
        async with SolanaWsClient(ws_url) as ws:
            await ws.account_subscribe(pubkey=a.pubkey(), commitment=Confirmed)
            await ws.logs_subscribe(filter_=RpcTransactionLogsFilterMentions(a.pubkey()), commitment=Confirmed)
            sig = (await c.request_airdrop(a.pubkey(), 10**6)).value
            await ws.signature_subscribe(signature=sig, commitment=Confirmed)
            kinds: dict[str, Any] = {}
            while len(kinds) < 3:
                n = await asyncio.wait_for(ws.recv(), 60)
                kinds[type(n).__name__] = n
            assert kinds["SignatureNotification"].result.value.err is None
            assert kinds["AccountNotification"].result.value.lamports == 10**6
            assert kinds["LogsNotification"].result.value.signature == sig
        # already confirmed: a new subscription fires at once
        async with SolanaWsClient(ws_url) as ws:
            await ws.signature_subscribe(signature=sig, commitment=Confirmed)
            n = await asyncio.wait_for(ws.recv(), 10)
            assert type(n).__name__ == "SignatureNotification"
        await c.close()

    asyncio.run(flow())


def test_malformed_oversized_and_unknown_requests_get_their_errors_and_the_node_goes_on(net: Localnet) -> None:
    url = url_of(net)
    before = rpc(url, "getSlot", [{"commitment": "processed"}])["result"]
    cases: list[tuple[bytes, int, Any, Any]] = [
        (b"{not json", 200, -32700, None),
        (b"[]", 200, -32600, None),
        (b'"str"', 200, -32600, None),
        (b'{"jsonrpc":"1.0","id":3,"method":"getSlot"}', 200, -32600, 3),
        (b'{"jsonrpc":"2.0","id":"x","method":"noSuchMethod"}', 200, -32601, "x"),
        (b'{"jsonrpc":"2.0","id":4.5,"method":"getBalance","params":[17]}', 200, -32602, 4.5),
        (b'{"jsonrpc":"2.0","id":5,"method":"getBalance","params":{"a":1}}', 200, -32602, 5),
        (b'{"jsonrpc":"2.0","id":6,"method":"getBalance","params":["notbase58!"]}', 200, -32602, 6),
        (b'{"jsonrpc":"2.0","id":7,"method":"getBalance"}', 200, -32602, 7),
        (b'{"jsonrpc":"2.0","id":8,"method":"getSlot","params":[{"commitment":"sometimes"}]}', 200, -32602, 8),
        (b'{"jsonrpc":"2.0","id":9,"method":"sendTransaction","params":["AAAA",{"encoding":"base64"}]}', 200,
         -32602, 9),
        (b'{"jsonrpc":"2.0","id":10,"method":"getTransaction","params":["' + b"1" * 88 + b'",'
         b'{"commitment":"processed"}]}', 200, -32602, 10),
        (b'{"jsonrpc":"2.0","id":11,"method":"getBlock","params":[99999999]}', 200, -32004, 11),
        (b'{"jsonrpc":"2.0","id":12,"method":"getSlot","params":[{"minContextSlot":99999999}]}', 200, -32016, 12),
        (b'{"jsonrpc":"2.0","id":13,"method":"getSignatureStatuses","params":[[' + b'"x",' * 256 + b'"x"]]}', 200,
         -32602, 13),
        (b'{"jsonrpc":"2.0","id":1,"method":"getSlot","params":["' + b"a" * 60_000 + b'"]}', 413, -32600, None),
    ]
    for body, status, code, rid in cases:
        st, out = post(url, body)
        assert st == status, (body[:80], st, out)
        assert out["jsonrpc"] == "2.0" and out["error"]["code"] == code and out["id"] == rid, (body[:80], out)
        assert type(out["id"]) is type(rid)
    # explicit nulls, [] and missing params are accepted
    for params in (None, [], [None], [{"commitment": None}]):
        assert isinstance(rpc(url, "getSlot", params)["result"], int)
    # a batch, with a notification (no id) answered by nothing
    st, out = post(url, json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "getHealth"},
                                    {"jsonrpc": "2.0", "method": "getSlot"},
                                    {"jsonrpc": "2.0", "method": "nope"},
                                    {"jsonrpc": "2.0", "id": "b", "method": "nope"}]).encode())
    assert st == 200 and [o["id"] for o in out] == [1, "b"] and out[0]["result"] == "ok"
    assert out[1]["error"]["code"] == -32601
    assert post(url, b'{"jsonrpc":"2.0","method":"getSlot"}') == (204, None)  # a lone notification
    # the node kept producing and voting through all of it
    deadline = time.monotonic() + WAIT_S
    while rpc(url, "getSlot", [{"commitment": "confirmed"}])["result"] <= before and time.monotonic() < deadline:
        time.sleep(0.3)
    assert rpc(url, "getSlot", [{"commitment": "confirmed"}])["result"] > before


def test_a_thousand_concurrent_connections_are_answered(net: Localnet) -> None:
    """1,000 connections open at once, each sends getSlot: every one is answered (or
    rate-limited with 429), the node stays up, and its RSS grows by a bounded amount."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    url = url_of(net)
    port = net.rpc_port(0)

    def rss() -> float:
        with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("process_resident_memory_bytes"):
                    return float(line.split()[1])
        raise AssertionError("no RSS metric")

    rss0 = rss()
    body = b'{"jsonrpc":"2.0","id":1,"method":"getSlot"}'
    req = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def one() -> int:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(req)
        await w.drain()
        data = await asyncio.wait_for(r.read(), 120)
        w.close()
        return int(data.split(b" ", 2)[1])

    async def many() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(1000))))

    t0 = time.monotonic()
    codes = asyncio.run(many())
    took = time.monotonic() - t0
    assert all(c in (200, 429) for c in codes), sorted(set(codes))
    assert codes.count(200) >= 1000 - 1  # the default rate limit (2000/s, burst 4000) lets them all through
    grew_mb = (rss() - rss0) / 2**20
    print(f"1000 concurrent connections: {took:.1f} s, node RSS +{grew_mb:.1f} MiB")
    assert grew_mb < 100
    assert rpc(url, "getHealth")["result"] == "ok"


def _scrape(url: str) -> dict[str, float]:
    """/metrics parsed with prometheus-client's own parser: sample name{labels} -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(smp.labels.items()))
            out[f"{smp.name}{{{labels}}}" if labels else smp.name] = smp.value
    return out


def test_metrics_expose_the_node(net: Localnet) -> None:
    """The issue's metric list is exported, and the timings move: between two scrapes a few
    slots apart the timing histograms count more observations, with buckets
    cumulative and ending at the count (the leader's build and the RPC's history writes run
    every slot)."""
    url = url_of(net)
    first = _scrape(url)
    for name in ('ambient_slot{level="processed"}', 'ambient_slot{level="finalized"}', "ambient_peers",
                 'ambient_gossip_messages_total{direction="out",topic="shreds"}', "ambient_votes_out_total",
                 'ambient_rpc_requests_total{outcome="requests"}', "process_resident_memory_bytes",
                 'ambient_repair_requests_total', 'ambient_op_seconds_count{op="build"}',
                 'ambient_op_seconds_count{op="disk"}', 'ambient_op_seconds_sum{op="build"}',
                 'ambient_op_seconds_bucket{le="+Inf",op="build"}', 'ambient_chain_queries{status="answered"}',
                 'ambient_pool_verdicts_total{kind="openings_served"}', 'ambient_op_seconds_count{op="rpc_history_write"}'):
        assert name in first, (name, sorted(first)[:80])
    for op in ("build", "disk"):
        buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in first.items()
                         if k.startswith("ambient_op_seconds_bucket") and f'op="{op}"' in k)
        counts = [v for _le, v in buckets]
        assert counts == sorted(counts) and counts[-1] == first[f'ambient_op_seconds_count{{op="{op}"}}'], op
    slot0 = first['ambient_slot{level="processed"}']
    deadline = time.monotonic() + WAIT_S
    while True:
        later = _scrape(url)
        if later['ambient_slot{level="processed"}'] >= slot0 + 3:
            break
        assert time.monotonic() < deadline, "the chain did not move"
        time.sleep(0.5)
    for op in ("build", "rpc_history_write"):  # per slot (disk: per root batch and snapshot, rarer)
        key = f'ambient_op_seconds_count{{op="{op}"}}'
        assert later[key] > first[key], (op, first[key], later[key])
        assert later[f'ambient_op_seconds_sum{{op="{op}"}}'] > 0
    print({k: v for k, v in later.items() if k.startswith("ambient_op_seconds_count")})


def test_openai_client_models_and_errors(net: Localnet) -> None:
    """/v1 with the official openai client: the chain's model listed; an unknown model 404,
    a bad value 400, bad JSON 400; a bearer token --rpc-chat-keys does not know 401; the key
    the token maps to unfunded: 402 insufficient_quota; funded (a faucet airdrop) but no
    miner on this chain: the auction closes without a bid, the escrow is refunded and the
    answer is 503 no_miner. All in OpenAI's error shape."""
    import openai

    from ambient_p2p.core.crypto import Keypair

    stranger = openai.OpenAI(base_url=url_of(net) + "/v1", api_key="not-a-known-token", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as e0:
        stranger.chat.completions.create(model=net.genesis.model.name,  # type: ignore[union-attr]
                                         messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert e0.value.code == "invalid_api_key"
    c = openai.OpenAI(base_url=url_of(net) + "/v1", api_key=CHAT_TOKEN, max_retries=0, timeout=180)
    models = c.models.list().data
    assert [m.id for m in models] == [net.genesis.model.name]  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e2:
        c.chat.completions.create(model=models[0].id, messages=[{"role": "user", "content": "hi"}], max_tokens=0)
    assert e2.value.param == "max_tokens"
    st, out = post(url_of(net), b"{oops", "/v1/chat/completions")
    assert st == 400 and out["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as e3:
        c.chat.completions.create(model=models[0].id, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert e3.value.status_code == 402 and e3.value.code == "insufficient_quota", e3.value
    poor = Keypair.deterministic("test/rpc-poor-requester").address
    url = url_of(net)
    rpc(url, "requestAirdrop", [poor, 10**8])
    deadline = time.monotonic() + WAIT_S
    while rpc(url, "getBalance", [poor, {"commitment": "processed"}])["result"]["value"] < 10**8:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    with pytest.raises(openai.APIStatusError) as e4:
        c.chat.completions.create(model=models[0].id, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert e4.value.status_code == 503 and e4.value.code == "no_miner", e4.value
    # the refund came back: the requester paid only its transaction fees
    assert rpc(url, "getBalance", [poor, {"commitment": "processed"}])["result"]["value"] > 10**8 - 4 * 5000


def test_solana_py_get_program_accounts_with_filters(net: Localnet) -> None:
    """getProgramAccounts through solana-py: a requester this test funds posts an auction
    request (sendTransaction), then the auction program's query accounts of that requester
    (dataSize + memcmp on the requester field, base64) are exactly its query, equal to
    getAccountInfo's view; the system program's accounts hold a fresh airdrop's recipient;
    too many filters is -32602."""
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solana.rpc.core import RPCException
    from solana.rpc.models import MemcmpOpts
    from solders.keypair import Keypair as SKeypair
    from solders.pubkey import Pubkey
    from solders.signature import Signature

    from ambient_p2p.core import auction as au
    from ambient_p2p.core.auction_tx import request_transaction
    from ambient_p2p.core.bank import SYSTEM_PROGRAM_ID
    from ambient_p2p.core.crypto import Keypair

    requester = Keypair.deterministic("test/rpc-gpa-requester")
    slot_us = net.genesis.poh.slot_duration_us
    params = au.RequestParams(nonce=7, model_id=b"\x01" * 32, prompt_hash=b"\x02" * 32, prompt_tokens=4,
                              max_output_tokens=8, max_price_per_token=1, temp_milli=0, sample_seed=b"\x03" * 32,
                              deadline_slots=au.Windows.for_slot(slot_us).min_deadline_slots)
    query = au.query_address(requester.pubkey, params.nonce)

    async def flow() -> None:
        async with AsyncClient(url_of(net), commitment=Confirmed) as c:
            sig = (await c.request_airdrop(Pubkey(requester.pubkey), 10**8)).value
            await c.confirm_transaction(sig, Confirmed)
            bh = (await c.get_latest_blockhash()).value.blockhash
            raw = request_transaction(requester, params, bytes(bh))
            sent = (await c.send_raw_transaction(raw)).value
            assert sent == Signature.from_bytes(raw[1:65])
            conf = (await c.confirm_transaction(sent, Confirmed)).value[0]
            assert conf is not None and conf.err is None, conf
            auction = Pubkey(au.AUCTION_PROGRAM_ID)
            got = (await c.get_program_accounts(auction, encoding="base64", filters=[
                au.QUERY_ACCOUNT_BYTES, MemcmpOpts(offset=128, bytes=str(Pubkey(requester.pubkey)))])).value
            assert [a.pubkey for a in got] == [Pubkey(query)]
            q = au.QueryAccount.unpack(bytes(got[0].account.data))
            assert q.requester == requester.pubkey and q.nonce == params.nonce and got[0].account.owner == auction
            one = (await c.get_account_info(got[0].pubkey, encoding="base64")).value
            assert one is not None and bytes(one.data) == bytes(got[0].account.data)
            everything = (await c.get_program_accounts(auction, encoding="base64")).value
            assert Pubkey(query) in {a.pubkey for a in everything}
            fresh = SKeypair()
            sig = (await c.request_airdrop(fresh.pubkey(), 977_000)).value
            await c.confirm_transaction(sig, Confirmed)
            system = (await c.get_program_accounts(Pubkey(SYSTEM_PROGRAM_ID), encoding="base64",
                                                   filters=[0])).value
            mine = [a for a in system if a.pubkey == fresh.pubkey()]
            assert len(mine) == 1 and mine[0].account.lamports == 977_000
            with pytest.raises(RPCException) as e:
                await c.get_program_accounts(auction, encoding="base64", filters=[1, 2, 3, 4, 5])
            assert "Too many filters" in str(e.value)

    asyncio.run(flow())


WEB3JS = Path(__file__).resolve().parent / "rpc_web3js"


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node/npm are not installed: the @solana/web3.js client cannot run")
def test_solana_web3js_confirms_over_the_websocket_and_sends_and_confirms(net: Localnet) -> None:
    """@solana/web3.js v1 (tests/rpc_web3js, installed from its package-lock with npm ci on
    first use): requestAirdrop + Connection.confirmTransaction (signatureSubscribe on the
    PubSub port web3.js derives, RPC port + 1), sendAndConfirmTransaction, balances."""
    if not (WEB3JS / "node_modules" / "@solana" / "web3.js").exists():
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB3JS,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(["node", "main.mjs", url_of(net)], cwd=WEB3JS, capture_output=True, text=True, timeout=180)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and "error" not in out, out
    assert out["airdropErr"] is None and out["balanceA"] == 2 * 10**9
    assert out["balanceB"] == 1_004_321 and out["fee"] == LAMPORTS_PER_SIGNATURE
    assert out["balanceA2"] == 2 * 10**9 - 1_004_321 - LAMPORTS_PER_SIGNATURE


def test_fuzzed_requests_get_a_jsonrpc_answer_and_the_node_goes_on(net: Localnet) -> None:
    """Hypothesis-made request objects (any method name, from the served ones too, with
    random params and ids): every answer is a JSON-RPC 2.0 response carrying either a result
    or an error with a known code, and echoes the id; the node still answers afterwards."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from ambient_p2p.node.rpc.solana import METHODS

    url = url_of(net)
    known = {-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32007, -32015,
             -32016}
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                        st.text(max_size=50), st.sampled_from(["A2dfV7QCAoWs99QZiTsn6SeMgMwDyYazquogj2urrg4e",
                                                              "processed", "base64", "1" * 88]))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.sampled_from(
                                                               ["commitment", "encoding", "minContextSlot", "limit",
                                                                "searchTransactionHistory", "skipPreflight",
                                                                "maxSupportedTransactionVersion", "x"]), inner,
                                                               max_size=3)), max_leaves=8)
    methods = st.one_of(st.sampled_from(sorted(set(METHODS) - {"requestAirdrop", "sendTransaction"})),
                        st.text(max_size=20))
    ids = st.one_of(st.integers(-2**31, 2**31), st.text(max_size=10))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(methods, st.one_of(st.none(), st.lists(values, max_size=3), values), ids)
    def check(method: str, params: Any, rid: Any) -> None:
        body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        status, out = post(url, json.dumps(body).encode())
        assert status == 200 and out["jsonrpc"] == "2.0" and out["id"] == rid, out
        assert ("result" in out) != ("error" in out), out
        if "error" in out:
            assert out["error"]["code"] in known, out

    check()
    assert rpc(url, "getHealth")["result"] == "ok"


def test_history_reaches_finalized(net: Localnet) -> None:
    """Last in the module, so the transfer of the first test has had time to finalize:
    its status turns ``finalized`` with ``confirmations`` null, the default (finalized)
    getTransaction and getBlock return it, and getSignaturesForAddress lists it finalized."""
    if not SEEN:
        pytest.skip("needs the transfer of test_solana_py_airdrop_v0_transfer_confirm_and_history")
    url = url_of(net)
    deadline = time.monotonic() + WAIT_S
    while rpc(url, "getSlot")["result"] < SEEN["slot"]:  # getSlot's default commitment: finalized
        assert time.monotonic() < deadline, rpc(url, "getSlot")
        time.sleep(0.5)
    st = rpc(url, "getSignatureStatuses", [[SEEN["signature"]], {"searchTransactionHistory": True}])["result"]
    v = st["value"][0]
    assert v["confirmationStatus"] == "finalized" and v["confirmations"] is None and v["slot"] == SEEN["slot"]
    tx = rpc(url, "getTransaction", [SEEN["signature"], {"maxSupportedTransactionVersion": 0}])["result"]
    assert tx["slot"] == SEEN["slot"] and tx["meta"]["err"] is None and tx["version"] == 0
    blk = rpc(url, "getBlock", [SEEN["slot"], {"maxSupportedTransactionVersion": 0,
                                               "transactionDetails": "signatures"}])["result"]
    assert SEEN["signature"] in blk["signatures"]
    sigs = rpc(url, "getSignaturesForAddress", [SEEN["payer"]])["result"]
    assert any(x["signature"] == SEEN["signature"] and x["confirmationStatus"] == "finalized" for x in sigs)
    assert rpc(url, "getBlocks", [SEEN["slot"], SEEN["slot"]])["result"] == [SEEN["slot"]]


def test_ambient_methods_answer_for_unknown_queries_and_refuse_bad_params(net: Localnet) -> None:
    """ambient_getDraw / ambient_getVerdicts (spec/rpc.md "Ambient methods") answer null for an
    address that holds no query, -32602 for a malformed one; ambient_getLStake carries the
    work-account columns (core/work.py) for every identity of the table, context-wrapped."""
    url = url_of(net)
    me = net.nodes[0].status()["address"]
    for method in ("ambient_getDraw", "ambient_getVerdicts"):
        r = rpc(url, method, [me, {"commitment": "processed"}])
        assert r["result"]["value"] is None and r["result"]["context"]["slot"] >= 1, r
        assert rpc(url, method, ["not-base58!"])["error"]["code"] == -32602
        assert rpc(url, method, [])["error"]["code"] == -32602
        assert rpc(url, method, [me, {"commitment": "nope"}])["error"]["code"] == -32602
    v = rpc(url, "ambient_getLStake", [{"commitment": "processed"}])["result"]["value"]
    row = v["table"][me]
    assert row["weight"] > 0 and row["leader_slots"] >= 0
    for col in ("tokens_served", "positions_validated", "slashes", "total_tokens_served",
                "total_positions_validated", "total_slashes", "total_rewards_lamports"):
        assert row[col] == 0, (col, row)  # nobody was paid for inference on this chain
    assert v["bank_epoch"] >= 0


def test_status_reads_the_rpc_and_falls_back_to_the_control_socket(net: Localnet) -> None:
    """`ambient-p2p status` reads ambient_getNodeStatus from the URL in the node's rpc.json;
    when that URL does not answer it asks the control socket; a bad --rpc is one error line."""
    import subprocess
    import sys

    node = net.nodes[0]

    def status(*extra: str) -> tuple[int, str, str]:
        r = subprocess.run([sys.executable, "-m", "ambient_p2p", "status", "--ledger", str(node.data_dir), *extra],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    doc = json.loads((node.data_dir / "rpc.json").read_text())
    assert doc["url"] == url_of(net) and doc["ws"] == f"ws://127.0.0.1:{net.rpc_port(0) + 1}"
    rc, out, err = status()
    st = json.loads(out)
    assert rc == 0 and st["via"] == f"rpc {url_of(net)}" and st["consensus"]["processed"] >= 1, err
    assert st["address"] == node.status()["address"]
    saved = (node.data_dir / "rpc.json").read_text()
    dead = free_port_pair()
    try:
        (node.data_dir / "rpc.json").write_text(json.dumps({"url": f"http://127.0.0.1:{dead}"}))
        rc, out, err = status()
        assert rc == 0 and json.loads(out)["via"] == "control socket", err
    finally:
        (node.data_dir / "rpc.json").write_text(saved)
    rc, out, err = status("--rpc", f"http://127.0.0.1:{dead}")
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("error:"), err
    rc, out, err = status("--rpc", "ftp://x")
    assert rc == 2 and err.startswith("error: --rpc must be"), err
