"""The RPC doors' pieces without processes (spec/rpc.md): the rate limiter, the
transaction index (eviction keeps its maps bounded), the OpenAI request rules, and the
join options (one error line, exit 2, nothing written; a port in use is one error line)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ambient_p2p.cli import main
from ambient_p2p.core import auction as A
from ambient_p2p.core import logit_pool as L
from ambient_p2p.core.bank import Bank
from ambient_p2p.core.crypto import Keypair
from ambient_p2p.core.svm import RENT_EXEMPT_MINIMUM_NO_DATA
from ambient_p2p.interop.formats.auction import PoolChain
from ambient_p2p.node.roles import query_json
from ambient_p2p.node.rpc.openai_api import ChatError, apply_stop, parse_request, render_messages, settlement_amounts
from ambient_p2p.node.rpc.server import MAX_TRACKED_CLIENTS, RateLimiter
from ambient_p2p.node.rpc.txindex import TxIndex

MODEL = "SmolLM2-135M-Instruct"


def test_rate_limiter_refills_at_its_rate_and_bounds_its_memory() -> None:
    t = [0.0]
    rl = RateLimiter(10.0, now=lambda: t[0])  # burst 20
    assert sum(rl.allow("a") for _ in range(30)) == 20
    assert rl.limited == 10
    assert rl.allow("b")  # another client has its own bucket
    t[0] += 0.5
    assert sum(rl.allow("a") for _ in range(10)) == 5
    for i in range(MAX_TRACKED_CLIENTS + 50):
        rl.allow(f"c{i}")
    assert len(rl.buckets) == MAX_TRACKED_CLIENTS


def _transfer_bank(parent: Bank, slot: int, payer: Keypair, n: int) -> Bank:
    from solders.hash import Hash
    from solders.keypair import Keypair as SK
    from solders.message import Message
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    b = parent.child(slot, bytes(32))
    sk = SK.from_seed(payer.seed)
    raws = []
    for i in range(n):
        ix = transfer(TransferParams(from_pubkey=sk.pubkey(), to_pubkey=Pubkey(bytes([slot % 256, i + 1]) + bytes(30)),
                                     lamports=RENT_EXEMPT_MINIMUM_NO_DATA + i))
        bh = Hash(parent.last_blockhash)
        raws.append(bytes(Transaction([sk], Message.new_with_blockhash([ix], sk.pubkey(), bh), bh)))
    b.process_transactions(raws)
    b.freeze(bytes([slot % 256]) * 32)
    return b


def test_index_records_results_balances_and_evicts_oldest() -> None:
    payer = Keypair.deterministic("test/rpc-index")
    g = Bank.genesis(bytes(32), {payer.pubkey: 10**12}, bytes(32), b"\x01" * 32)
    idx = TxIndex(max_blocks=3, max_banks=2)
    banks = [g]
    for slot in range(1, 6):
        banks.append(_transfer_bank(banks[-1], slot, payer, 2))
        rec = idx.add(banks[-1], banks[-2].last_blockhash, 1000 + slot)
        assert rec.block_height == slot and len(rec.txs) == 2
        t = rec.txs[1]
        # the second transfer's lamports (new accounts get the rent-exempt minimum, spec/svm.md "Rent")
        assert t.result.error is None and t.post_balances[1] - t.pre_balances[1] == RENT_EXEMPT_MINIMUM_NO_DATA + 1
        assert t.pre_balances[0] - t.post_balances[0] == RENT_EXEMPT_MINIMUM_NO_DATA + 1 + t.result.fee
    assert sorted(idx.blocks) == [3, 4, 5] and list(idx.banks) == [4, 5]
    assert idx.evicted_below == 3
    # nothing of the evicted blocks is left in the signature and address maps
    assert all(s >= 3 for locs in idx.by_sig.values() for s, _ in locs)
    assert all(s >= 3 for locs in idx.by_addr.values() for s, _ in locs)
    assert len(idx.by_sig) == 6
    newest = idx.address_locations(payer.pubkey)
    assert [loc.block.slot for loc in newest] == [5, 5, 4, 4, 3, 3]
    again = idx.add(banks[5], banks[4].last_blockhash, 0)  # once per slot
    assert again.block_time_s == 1005


def _body(**kw: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    (_body(max_tokens=0), 400, "max_tokens"),
    (_body(max_tokens=5000), 400, "max_tokens"),
    (_body(max_completion_tokens="3"), 400, "max_tokens"),
    (_body(temperature=2.5), 400, "temperature"),
    (_body(temperature=True), 400, "temperature"),
    (_body(seed=1.5), 400, "seed"),
    (_body(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (_body(stop=[""]), 400, "stop"),
    (_body(n=2), 400, "n"),
    (_body(stream="yes"), 400, "stream"),
])
def test_chat_requests_are_refused_in_openais_shape(body: dict[str, object], status: int, param: str) -> None:
    with pytest.raises(ChatError) as e:
        parse_request(body, MODEL)
    assert e.value.status == status and e.value.param == param
    err = e.value.body()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


def test_chat_request_defaults_and_aliases() -> None:
    r = parse_request(_body(max_completion_tokens=7, max_tokens=99, stop="\n", seed=3, stream=True,
                            stream_options={"include_usage": True},
                            messages=[{"role": "developer", "content": [{"type": "text", "text": "a"},
                                                                        {"type": "text", "text": "b"}]},
                                      {"role": "user", "content": "q"}]), MODEL)
    assert (r.max_tokens, r.stop, r.seed, r.stream, r.include_usage) == (7, ["\n"], 3, True, True)
    assert r.messages[0] == {"role": "system", "content": "ab"}
    d = parse_request(_body(temperature=None, max_tokens=None), MODEL)
    assert (d.temperature, d.stream, d.stop) == (1.0, False, [])


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=4), max_size=4))
def test_stop_cuts_at_the_first_stop_sequence(text: str, stops: list[str]) -> None:
    out, stopped = apply_stop(text, stops)
    assert text.startswith(out)
    assert stopped == any(s in text for s in stops)
    if stopped:
        assert any(text[len(out):].startswith(s) for s in stops)
        assert not any(s in out for s in stops) or all(text.find(s) >= len(out) for s in stops if s in text)


def test_render_messages_uses_the_models_chat_template() -> None:
    from ambient_p2p.model import gguf_loader as g

    files = g.read_gguf_tokenizer(g.default_model_path())
    out = render_messages(files.chat_template, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert out == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--rpc-port", "8899"], "--rpc-port needs --validator"),
    (["run", "--validator", "--genesis", "G", "--rpc-port", "0"], "--rpc-port must be 1..65534"),
    (["run", "--validator", "--genesis", "G", "--rpc-port", "65535"], "--rpc-port must be 1..65534"),
    (["run", "--validator", "--genesis", "G", "--rpc-bind", "localhost"], "--rpc-bind must be an IP address"),
    (["run", "--validator", "--genesis", "G", "--rpc-rate-limit", "0"], "--rpc-rate-limit must be a positive"),
    (["run", "--validator", "--genesis", "G", "--rpc-rate-limit", "nan"], "--rpc-rate-limit must be a positive"),
    (["run", "--validator", "--genesis", "G", "--rpc-chat-pay", "0"], "--rpc-chat-pay must be a positive"),
    (["run", "--validator", "--genesis", "G", "--no-rpc", "--rpc-port", "9000"], "contradicts --no-rpc"),
])
def test_rpc_options_are_one_error_line(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--ledger", str(tmp_path / "node")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read --rpc-chat-keys"),
    ("{oops", "is not JSON"),
    ("[]", "must be a JSON object"),
    ('{"short": "k.json"}', "16+ printable characters"),
    ('{"a-long-enough-token-1": 5}', "16+ printable characters"),
    ('{"a-long-enough-token-1": "missing.json"}', "--rpc-chat-keys"),
])
def test_chat_keys_file_errors_are_one_line(content: str | None, message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.json"
    if content is not None:
        keys.write_text(content)
    assert main(["run", "--validator", "--genesis", "G", "--rpc-chat-keys", str(keys),
                 "--ledger", str(tmp_path / "node")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "node").exists()


def test_chat_payer_follows_the_bearer_token() -> None:
    from ambient_p2p.node.rpc.openai_api import ChatOptions

    node, alice = Keypair.deterministic("t/node"), Keypair.deterministic("t/alice")
    assert ChatOptions(node).payer("Bearer anything") == node  # no token file: the node's key
    opts = ChatOptions(node, keys={"alice-token-0123456789": alice})
    assert opts.payer("Bearer alice-token-0123456789") == alice
    assert opts.payer("bearer  alice-token-0123456789") == alice
    for bad in (None, "", "Bearer nope", "Basic alice-token-0123456789", "alice-token-0123456789"):
        with pytest.raises(ChatError) as e:
            opts.payer(bad)
        assert e.value.status == 401 and e.value.code == "invalid_api_key"


def test_rpc_port_in_use_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.core.codec import encode
    from ambient_p2p.devnet.genesis import localnet_genesis

    kp = Keypair.deterministic("test/rpc-port")
    (tmp_path / "g.cbor").write_bytes(encode(localnet_genesis("localnet", [kp.pubkey])))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = main(["run", "--validator", "--genesis", str(tmp_path / "g.cbor"), "--ledger", str(tmp_path / "n"),
                   "--rpc-port", str(port), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot listen for RPC on 127.0.0.1:") and "in use" in err[0], err
    assert not (tmp_path / "n").exists()  # refused before the node directory is made


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from(["accept", "reject", "none"]), min_size=3, max_size=3),
       st.lists(st.sampled_from(["accept", "reject", "none"]), min_size=3, max_size=3))
@example(["accept", "reject", "none"], ["none", "none", "none"])  # a tie settles verified
@example(["accept", "accept", "none"], ["none", "none", "none"])
@example(["reject", "reject", "accept"], ["none", "none", "none"])
@example(["none", "none", "none"], ["none", "none", "none"])
@example(["accept", "none", "none"], ["reject", "reject", "none"])
def test_settled_chat_amounts_match_the_banks_settlement(first: list[str], second: list[str]) -> None:
    """The ``ambient`` amounts of a settled chat (openai_api.settlement_amounts) are what the
    auction program's ``settle`` moved on a real bank, for every mix of verdicts in both
    rounds: the requester's and the winner's balance changes, to the lamport."""
    c = PoolChain(n_validators=7)
    posted = query_json(c.query(c.qid))
    q = c.query(c.qid)
    bond = c.bid(c.qid, q.winner).bond_lamports
    before = c.bank.balance(q.requester), c.bank.balance(q.winner)
    c.advance(L.DRAW_DELAY_SLOTS + 1)
    for rnd, plan in enumerate((first, second)):
        d = c.draw()
        assert d is not None
        for v, what in zip(d.validators[3 * rnd:], plan, strict=False):
            if what != "none":
                assert c.verdict(c.kp(v), what == "accept", None if what == "accept" else c.evidence(v)) is None
        if c.settle() is None and c.query(c.qid).status != A.QueryStatus.RESULT_POSTED:
            break
        while c.bank.slot < d.verify_end_slot:
            c.advance(1)
        assert c.settle() is None
        if c.query(c.qid).status != A.QueryStatus.RESULT_POSTED:
            break
    final = c.query(c.qid)
    pool = L.PoolAccount.unpack(c.bank.auction_accounts[L.pool_address(c.qid)])
    if final.status == A.QueryStatus.FINALIZED_VERIFIED:  # the bond comes back after the challenge window
        c.advance_to(L.release_slot(pool, None))
        assert c.send(c.close_dispute_tx())[0].error is None
    names = {L.NO_VERDICT: None, L.ACCEPT: "accept", L.REJECT: "reject"}
    got = settlement_amounts(posted, bond, [names[x] for x in pool.verdicts], pool.quorum)
    assert c.bank.balance(q.requester) - before[0] == got["refunded_lamports"]
    assert c.bank.balance(q.winner) - before[1] == got["paid_lamports"] + got["bond_returned_lamports"]
    assert got["paid_lamports"] + got["refunded_lamports"] + got["validator_fees_lamports"] + \
        got["bond_returned_lamports"] == q.escrow_lamports + bond
    verified = final.status == A.QueryStatus.FINALIZED_VERIFIED
    assert (got["paid_lamports"] > 0) == verified and (got["bond_slashed_lamports"] == bond) == \
        (not verified and pool.count(L.REJECT) > 0)


def _program_rpc(bank: Bank) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(bank_for=lambda cfg: bank,
                           ctx=lambda b, v: {"context": {"slot": b.slot}, "value": v})


def test_get_program_accounts_filters_slices_and_refuses_bad_filters() -> None:
    """getProgramAccounts over the bank's accounts (node/rpc/accounts.py): owner, dataSize and
    memcmp (base58 and base64) all must match; dataSlice cuts the data, not ``space``;
    withContext wraps; agave's limits (4 filters, 128 memcmp bytes) answer -32602."""
    import base64

    import base58
    import trio

    from ambient_p2p.core.bank import SYSTEM_PROGRAM_ID
    from ambient_p2p.core.crypto import encode_address
    from ambient_p2p.node.rpc.solana import RpcError, get_program_accounts

    alice, bob, carol = (Keypair.deterministic(f"test/gpa-{n}").pubkey for n in ("a", "b", "c"))
    g = Bank.genesis(bytes(32), {alice: 10**9, bob: 5}, bytes(32), b"\x01" * 32)

    def query(requester: bytes, fill: int) -> bytes:
        raw = bytearray([fill]) * A.QUERY_ACCOUNT_BYTES
        raw[0] = A.Kind.QUERY
        raw[128:160] = requester  # the requester field's offset in the fixed layout (spec/auction.md)
        return bytes(raw)

    q1, q2, m = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
    g.auction_accounts.update({q1: query(alice, 7), q2: query(carol, 9), m: bytes([A.Kind.MINER]) + bytes(47)})
    g.accounts[q1] = 1_000
    rpc = _program_rpc(g)
    auction = encode_address(A.AUCTION_PROGRAM_ID)

    def call(*params: object) -> object:
        return trio.run(get_program_accounts, rpc, list(params))

    everything = call(auction, {"encoding": "base64"})
    assert [x["pubkey"] for x in everything] == [encode_address(k) for k in (q1, q2, m)]  # type: ignore[index]
    assert everything[0]["account"]["lamports"] == 1_000 and everything[1]["account"]["lamports"] == 0  # type: ignore[index]
    assert base64.b64decode(everything[0]["account"]["data"][0]) == query(alice, 7)  # type: ignore[index]
    queries = call(auction, {"encoding": "base64", "filters": [{"dataSize": A.QUERY_ACCOUNT_BYTES}]})
    assert [x["pubkey"] for x in queries] == [encode_address(q1), encode_address(q2)]  # type: ignore[index]
    mine = call(auction, {"encoding": "base64", "filters": [
        {"dataSize": A.QUERY_ACCOUNT_BYTES}, {"memcmp": {"offset": 128, "bytes": base58.b58encode(carol).decode()}}]})
    assert [x["pubkey"] for x in mine] == [encode_address(q2)]  # type: ignore[index]
    b64 = call(auction, {"filters": [{"memcmp": {"offset": 1, "bytes": base64.b64encode(b"\x07\x07").decode(),
                                                 "encoding": "base64"}}], "encoding": "base64"})
    assert [x["pubkey"] for x in b64] == [encode_address(q1)]  # type: ignore[index]
    # memcmp past the end of the data never matches (agave compares only within the data)
    assert call(auction, {"filters": [{"memcmp": {"offset": 10_000, "bytes": "1"}}]}) == []
    sliced = call(auction, {"encoding": "base64", "dataSlice": {"offset": 128, "length": 32}, "withContext": True})
    v = sliced["value"]  # type: ignore[index]
    assert sliced["context"]["slot"] == 0 and base64.b64decode(v[1]["account"]["data"][0]) == carol  # type: ignore[index]
    assert v[1]["account"]["space"] == A.QUERY_ACCOUNT_BYTES
    system = call(encode_address(SYSTEM_PROGRAM_ID), {"filters": [{"dataSize": 0}]})
    assert {x["pubkey"] for x in system} == {encode_address(alice), encode_address(bob)}  # type: ignore[index]
    assert call(encode_address(b"\x44" * 32)) == []  # a program that owns nothing
    bad: list[list[object]] = [
        [],
        ["not-a-key"],
        [auction, {"filters": [{"dataSize": 1}] * 5}],
        [auction, {"filters": [{"memcmp": {"offset": 0, "bytes": base58.b58encode(bytes(129)).decode()}}]}],
        [auction, {"filters": [{"memcmp": {"offset": -1, "bytes": "1"}}]}],
        [auction, {"filters": [{"memcmp": {"offset": 0, "bytes": "0OIl"}}]}],  # not base58
        [auction, {"filters": [{"dataSize": "3"}]}],
        [auction, {"filters": [{"owner": "x"}]}],
        [auction, {"filters": {"dataSize": 3}}],
        [auction, {"encoding": "jsonx"}],
        [auction, {"dataSlice": {"offset": 0}}],
        [auction, {"withContext": "yes"}],
    ]
    for params in bad:
        with pytest.raises(RpcError) as e:
            call(*params)
        assert e.value.code == -32602, params


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=60))
def test_timings_histogram_is_cumulative_and_counts_every_observation(xs: list[float]) -> None:
    """node/timings.py: each observation lands in the first bucket whose bound holds it
    (Prometheus' ``le``), buckets are cumulative, +Inf is the count, sum is the sum; a job
    that raises is timed too."""
    from ambient_p2p.node.timings import BUCKETS_S, Timings

    t = Timings()
    for x in xs:
        t.observe("op", x)
    if not xs:
        assert t.snapshot() == {}
        return
    h = t.snapshot()["op"]
    bounds = [le for le, _n in h["buckets"]]
    assert bounds == [repr(b) for b in BUCKETS_S] + ["+Inf"]
    for le, n in h["buckets"]:
        assert n == sum(1 for x in xs if le == "+Inf" or x <= float(le))
    assert h["count"] == len(xs) and h["sum_s"] == pytest.approx(sum(xs))

    def boom() -> None:
        raise ValueError("job failed")

    with pytest.raises(ValueError, match="job failed"):
        t.timed("fails", boom)()
    assert t.snapshot()["fails"]["count"] == 1


def test_rent_errors_keep_agaves_shape() -> None:
    """The SVM's InsufficientFundsForRent (spec/svm.md "Rent") is agave's transaction-level
    error with its account index, and its Display text; the bank's fee-payer rent check
    (block-level) is the same error naming the payer."""
    from ambient_p2p.node.rpc import solana as rpcm

    err = rpcm.instruction_error("svm-error: InsufficientFundsForRent { account_index: 1 }")
    assert err == {"InsufficientFundsForRent": {"account_index": 1}}
    assert rpcm.error_message(err, []) == "Transaction results in an account (1) with insufficient funds for rent"
    assert rpcm.TX_ERRORS["insufficient-funds-for-rent"] == {"InsufficientFundsForRent": {"account_index": 0}}


def test_token_balances_are_recorded_only_where_the_rpc_is_served(tmp_path: Path) -> None:
    """Bank.token_balances (the RPC's pre/postTokenBalances, spec/svm.md "Performance") is off
    in a node without the RPC door and on in one with it: RpcExtension asks the validator, whose
    restored root bank carries it to every child (ledger/producer.py ``open_bank``)."""
    from ambient_p2p.ledger.producer import open_bank
    from ambient_p2p.node.rpc.server import RpcConfig, RpcExtension
    from ambient_p2p.node.validator import Validator
    from tests.inproc import KEYS, node_genesis

    for served in (False, True):
        v = Validator(KEYS[0], node_genesis(n=1), tmp_path / str(served))
        try:
            if served:
                RpcExtension(v, RpcConfig(port=0), [])
            v.load()
            (root,) = [r.bank for r in v.banks.values()]
            assert root.token_balances is served and v.token_balances is served
            assert open_bank(v.genesis, root, root.slot + 1, KEYS[0].pubkey).token_balances is served
        finally:
            v.close()
