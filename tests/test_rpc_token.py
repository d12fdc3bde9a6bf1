"""The token doors in process (spec/rpc.md "Token accounts"): SPL Token and Token-2022
accounts written by the real programs in the bank's SVM, read back through
getTokenAccountBalance, getTokenSupply, getTokenAccountsByOwner/-Delegate,
getTokenLargestAccounts and jsonParsed getAccountInfo/getMultipleAccounts/getProgramAccounts
in agave's shapes; simulateTransaction of a failing transfer answers the program's error
and logs. The multi-process run with solana-py is tests/test_rpc_token_multiproc.py."""

from __future__ import annotations

import base64
import hashlib
import struct
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import svm
from ambient_p2p.core.bank import Bank
from ambient_p2p.core.crypto import Keypair, encode_address
from ambient_p2p.devnet import spl
from ambient_p2p.node.rpc import solana as rpcm
from ambient_p2p.node.rpc import token

GH = hashlib.sha256(b"tests/rpc-token/genesis").digest()
LEADER = Keypair.deterministic("tests/rpc-token/leader")
ALICE, BOB, MINT, MINT22, CLOSABLE = (Keypair.deterministic("tests/rpc-token/user", i) for i in range(5))
T22 = svm.SPL_TOKEN_2022_PROGRAM_ID
ADDR = encode_address


def _run(bank: Bank, slot: int, txs: list[bytes]) -> tuple[Bank, list[Any]]:
    child = bank.child(slot, LEADER.pubkey)
    res = list(child.process_transactions(txs))
    child.freeze(hashlib.sha256(f"tests/rpc-token/entry/{slot}".encode()).digest())
    return child, res


def _create_2022_mint(mint: bytes, decimals: int, close_authority: bytes | None) -> list[object]:
    """A Token-2022 mint, optionally with the MintCloseAuthority extension (its initialize
    instruction, tag 25, goes before InitializeMint2, tag 20)."""
    size = token.MINT_BYTES if close_authority is None else token.ACCOUNT_BYTES + 1 + token.TLV_HEADER_BYTES + 32
    ixs: list[object] = [spl._ix(svm.SYSTEM_PROGRAM_ID, [(ALICE.pubkey, True, True), (mint, True, True)],
                                 struct.pack("<IQQ", 0, _rent_exempt(size), size) + T22)]
    if close_authority is not None:
        ixs.append(spl._ix(T22, [(mint, False, True)], bytes([25, 1]) + close_authority))
    ixs.append(spl._ix(T22, [(mint, False, True)], bytes([20, decimals]) + ALICE.pubkey + b"\x00"))
    return ixs


def _rent_exempt(size: int) -> int:
    """getMinimumBalanceForRentExemption's answer, as a wallet funds a new account with it."""
    rpc = SimpleNamespace()
    return int(trio.run(rpcm.METHODS["getMinimumBalanceForRentExemption"], rpc, [size]))


def _create_ata(owner: bytes, mint: bytes, program: bytes) -> object:
    ata = _ata(owner, mint, program)
    return spl._ix(svm.SPL_ASSOCIATED_TOKEN_PROGRAM_ID,
                   [(ALICE.pubkey, True, True), (ata, False, True), (owner, False, False), (mint, False, False),
                    (svm.SYSTEM_PROGRAM_ID, False, False), (program, False, False)], b"\x01")


def _ata(owner: bytes, mint: bytes, program: bytes) -> bytes:
    from solders.pubkey import Pubkey
    from solders.token.associated import get_associated_token_address

    return bytes(get_associated_token_address(Pubkey(owner), Pubkey(mint), Pubkey(program)))


def _mint_to(program: bytes, mint: bytes, dst: bytes, amount: int) -> object:
    return spl._ix(program, [(mint, False, True), (dst, False, True), (ALICE.pubkey, True, False)],
                   struct.pack("<BQ", 7, amount))


def _approve(src: bytes, delegate: bytes, amount: int) -> object:
    return spl._ix(svm.SPL_TOKEN_PROGRAM_ID, [(src, False, True), (delegate, False, False), (ALICE.pubkey, True, False)],
                   struct.pack("<BQ", 4, amount))


@pytest.fixture(scope="module")
def chain() -> dict[str, Any]:
    """Slot 1: an SPL Token mint (6 decimals) with ALICE's and BOB's ATAs, 1,234,500 minted to
    ALICE's; a Token-2022 mint (2 decimals) with ALICE's ATA (ImmutableOwner, as the ATA
    program makes it) holding 42; a Token-2022 mint with a close authority. Slot 2: ALICE
    sends BOB 200,000 and approves BOB for 5."""
    g = Bank.genesis(GH, {ALICE.pubkey: 10**12, BOB.pubkey: 10**12}, LEADER.pubkey, GH,
                     programs=svm.genesis_programs())
    g.token_balances = True  # as a node's banks (ledger/producer.py open_bank); children inherit it
    a_ata = spl.associated_token_address(ALICE.pubkey, MINT.pubkey)
    b_ata = spl.associated_token_address(BOB.pubkey, MINT.pubkey)
    a22 = _ata(ALICE.pubkey, MINT22.pubkey, T22)
    bh = g.last_blockhash
    b1, res = _run(g, 1, [
        spl.tx(ALICE, spl.create_mint(ALICE.pubkey, MINT.pubkey, ALICE.pubkey), bh, [MINT]),
        spl.tx(ALICE, [spl.create_ata(ALICE.pubkey, ALICE.pubkey, MINT.pubkey),
                       spl.create_ata(ALICE.pubkey, BOB.pubkey, MINT.pubkey)], bh),
        spl.tx(ALICE, [spl.mint_to(MINT.pubkey, a_ata, ALICE.pubkey, 1_234_500)], bh),
        spl.tx(ALICE, _create_2022_mint(MINT22.pubkey, 2, None), bh, [MINT22]),
        spl.tx(ALICE, [_create_ata(ALICE.pubkey, MINT22.pubkey, T22),
                       _mint_to(T22, MINT22.pubkey, a22, 42)], bh),
        spl.tx(ALICE, _create_2022_mint(CLOSABLE.pubkey, 0, BOB.pubkey), bh, [CLOSABLE]),
    ])
    assert [r.error for r in res] == [None] * 6
    b2, res = _run(b1, 2, [spl.tx(ALICE, [spl.transfer(a_ata, b_ata, ALICE.pubkey, 200_000),
                                          _approve(a_ata, BOB.pubkey, 5)], b1.last_blockhash)])
    assert res[0].error is None
    leader = SimpleNamespace(leader=lambda slot: LEADER.pubkey)
    rpc = SimpleNamespace(bank_for=lambda cfg, default="finalized": b2, v=SimpleNamespace(book=leader),
                          ctx=lambda b, v: {"context": {"slot": b.slot}, "value": v}, height=lambda b: b.slot)
    return {"bank": b2, "b1": b1, "rpc": rpc, "a_ata": a_ata, "b_ata": b_ata, "a22": a22}


def call(chain: dict[str, Any], method: str, *params: object) -> Any:
    return trio.run(rpcm.METHODS[method], chain["rpc"], list(params))


def test_balances_supply_and_largest_accounts_in_agaves_shape(chain: dict[str, Any]) -> None:
    bal = call(chain, "getTokenAccountBalance", ADDR(chain["a_ata"]))
    assert bal == {"context": {"slot": 2}, "value": {"uiAmount": 1.0345, "decimals": 6, "amount": "1034500",
                                                      "uiAmountString": "1.0345"}}
    assert call(chain, "getTokenAccountBalance", ADDR(chain["b_ata"]))["value"]["uiAmountString"] == "0.2"
    assert call(chain, "getTokenAccountBalance", ADDR(chain["a22"]))["value"] == {
        "uiAmount": 0.42, "decimals": 2, "amount": "42", "uiAmountString": "0.42"}
    assert call(chain, "getTokenSupply", ADDR(MINT.pubkey))["value"]["amount"] == "1234500"
    assert call(chain, "getTokenSupply", ADDR(MINT22.pubkey))["value"]["uiAmountString"] == "0.42"
    largest = call(chain, "getTokenLargestAccounts", ADDR(MINT.pubkey))["value"]
    assert [(x["address"], x["amount"]) for x in largest] == [(ADDR(chain["a_ata"]), "1034500"),
                                                             (ADDR(chain["b_ata"]), "200000")]


def test_token_accounts_by_owner_filter_by_mint_and_program(chain: dict[str, Any]) -> None:
    by_prog = call(chain, "getTokenAccountsByOwner", ADDR(ALICE.pubkey),
                   {"programId": ADDR(svm.SPL_TOKEN_PROGRAM_ID)}, {"encoding": "base64"})["value"]
    assert [x["pubkey"] for x in by_prog] == [ADDR(chain["a_ata"])]
    raw = base64.b64decode(by_prog[0]["account"]["data"][0])
    assert by_prog[0]["account"]["owner"] == ADDR(svm.SPL_TOKEN_PROGRAM_ID) and len(raw) == 165
    assert raw[32:64] == ALICE.pubkey and spl.token_amount(raw) == 1_034_500
    by_22 = call(chain, "getTokenAccountsByOwner", ADDR(ALICE.pubkey), {"programId": ADDR(T22)},
                 {"encoding": "jsonParsed"})["value"]
    assert [x["pubkey"] for x in by_22] == [ADDR(chain["a22"])]
    data = by_22[0]["account"]["data"]
    assert data["program"] == "spl-token-2022" and data["space"] == 170
    assert data["parsed"] == {"type": "account", "info": {
        "mint": ADDR(MINT22.pubkey), "owner": ADDR(ALICE.pubkey),
        "tokenAmount": {"uiAmount": 0.42, "decimals": 2, "amount": "42", "uiAmountString": "0.42"},
        "state": "initialized", "isNative": False, "extensions": [{"extension": "immutableOwner"}]}}
    by_mint = call(chain, "getTokenAccountsByOwner", ADDR(BOB.pubkey), {"mint": ADDR(MINT.pubkey)},
                   {"encoding": "jsonParsed"})["value"]
    assert [x["pubkey"] for x in by_mint] == [ADDR(chain["b_ata"])]
    assert by_mint[0]["account"]["data"]["parsed"]["info"]["tokenAmount"]["amount"] == "200000"
    assert call(chain, "getTokenAccountsByOwner", ADDR(BOB.pubkey), {"mint": ADDR(MINT22.pubkey)})["value"] == []
    sliced = call(chain, "getTokenAccountsByOwner", ADDR(ALICE.pubkey), {"mint": ADDR(MINT.pubkey)},
                  {"encoding": "base64", "dataSlice": {"offset": 64, "length": 8}})["value"]
    assert base64.b64decode(sliced[0]["account"]["data"][0]) == struct.pack("<Q", 1_034_500)
    delegated = call(chain, "getTokenAccountsByDelegate", ADDR(BOB.pubkey), {"programId": ADDR(svm.SPL_TOKEN_PROGRAM_ID)},
                     {"encoding": "jsonParsed"})["value"]
    assert [x["pubkey"] for x in delegated] == [ADDR(chain["a_ata"])]
    info = delegated[0]["account"]["data"]["parsed"]["info"]
    assert info["delegate"] == ADDR(BOB.pubkey) and info["delegatedAmount"]["amount"] == "5"


def test_json_parsed_accounts_mints_extensions_and_fallback(chain: dict[str, Any]) -> None:
    got = call(chain, "getMultipleAccounts", [ADDR(MINT.pubkey), ADDR(CLOSABLE.pubkey), ADDR(ALICE.pubkey),
                                              ADDR(svm.SPL_TOKEN_PROGRAM_ID), ADDR(b"\x09" * 32)],
               {"encoding": "jsonParsed"})["value"]
    assert got[0]["data"] == {"program": "spl-token", "space": 82, "parsed": {"type": "mint", "info": {
        "mintAuthority": ADDR(ALICE.pubkey), "supply": "1234500", "decimals": 6, "isInitialized": True,
        "freezeAuthority": None}}}
    assert got[1]["data"]["parsed"]["info"]["extensions"] == [
        {"extension": "mintCloseAuthority", "state": {"closeAuthority": ADDR(BOB.pubkey)}}]
    assert got[1]["data"]["program"] == "spl-token-2022" and got[1]["space"] == 202
    # owners no parser knows fall back to base64, as agave's
    assert got[2]["data"] == ["", "base64"] and isinstance(got[3]["data"], list) and got[4] is None
    one = call(chain, "getAccountInfo", ADDR(chain["a_ata"]), {"encoding": "jsonParsed"})["value"]
    assert one["data"]["parsed"]["info"]["tokenAmount"]["uiAmountString"] == "1.0345"
    gpa = call(chain, "getProgramAccounts", ADDR(svm.SPL_TOKEN_PROGRAM_ID), {"encoding": "jsonParsed"})
    kinds = {x["pubkey"]: x["account"]["data"]["parsed"]["type"] for x in gpa}
    assert kinds == {ADDR(MINT.pubkey): "mint", ADDR(chain["a_ata"]): "account", ADDR(chain["b_ata"]): "account"}


def test_token_methods_refuse_what_agave_refuses(chain: dict[str, Any]) -> None:
    cases: list[tuple[str, list[object], str]] = [
        ("getTokenAccountBalance", [ADDR(b"\x09" * 32)], "Invalid param: could not find account"),
        ("getTokenAccountBalance", [ADDR(ALICE.pubkey)], "Invalid param: not a Token account"),
        ("getTokenAccountBalance", [ADDR(MINT.pubkey)], "Invalid param: not a Token account"),
        ("getTokenSupply", [ADDR(chain["a_ata"])], "Invalid param: mint could not be unpacked"),
        ("getTokenSupply", [ADDR(ALICE.pubkey)], "Invalid param: not a Token mint"),
        ("getTokenAccountsByOwner", [ADDR(ALICE.pubkey), {"programId": ADDR(ALICE.pubkey)}],
         "Invalid param: unrecognized Token program id"),
        ("getTokenAccountsByOwner", [ADDR(ALICE.pubkey), {"mint": ADDR(b"\x09" * 32)}],
         "Invalid param: could not find mint"),
        ("getTokenAccountsByOwner", [ADDR(ALICE.pubkey), {"mint": ADDR(chain["a_ata"])}],
         "Invalid param: Token mint could not be unpacked"),
        ("getTokenAccountsByOwner", [ADDR(ALICE.pubkey), {"mint": "x", "programId": "y"}], "Invalid params"),
        ("getTokenAccountsByOwner", [ADDR(ALICE.pubkey)], "Invalid params"),
        ("getTokenAccountsByOwner", [ADDR(ALICE.pubkey), {"mint": ADDR(MINT.pubkey)}, {"encoding": "x"}],
         "Invalid params"),
    ]
    for method, params, message in cases:
        with pytest.raises(rpcm.RpcError) as e:
            call(chain, method, *params)
        assert e.value.code == -32602 and e.value.message.startswith(message), (method, params, e.value.message)


def test_simulating_a_failing_transfer_answers_the_error_and_the_program_logs(chain: dict[str, Any]) -> None:
    b = chain["bank"]
    over = spl.tx(BOB, [spl.transfer(chain["b_ata"], chain["a_ata"], BOB.pubkey, 10**9)], b.last_blockhash)
    v = call(chain, "simulateTransaction", base64.b64encode(over).decode(), {"encoding": "base64"})["value"]
    token_id = ADDR(svm.SPL_TOKEN_PROGRAM_ID)
    assert v["err"] == {"InstructionError": [0, {"Custom": 1}]}  # spl-token InsufficientFunds
    assert v["logs"][0] == f"Program {token_id} invoke [1]" and "Program log: Error: insufficient funds" in v["logs"]
    assert v["logs"][-1] == f"Program {token_id} failed: custom program error: 0x1" and v["unitsConsumed"] > 0
    ok = spl.tx(BOB, [spl.transfer(chain["b_ata"], chain["a_ata"], BOB.pubkey, 7)], b.last_blockhash)
    v = call(chain, "simulateTransaction", base64.b64encode(ok).decode(),
             {"encoding": "base64", "accounts": {"addresses": [ADDR(chain["b_ata"])], "encoding": "jsonParsed"}})["value"]
    assert v["err"] is None and v["logs"][-1] == f"Program {token_id} success"
    assert v["accounts"][0]["data"]["parsed"]["info"]["tokenAmount"]["amount"] == "199993"
    # the bank read is untouched by the simulation
    assert spl.token_amount(b.account(chain["b_ata"])[1].data) == 200_000
    with pytest.raises(rpcm.RpcError) as e:
        call(chain, "sendTransaction", base64.b64encode(over).decode(), {"encoding": "base64"})
    assert e.value.code == -32002
    assert e.value.message == "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    assert e.value.data["logs"][-1].endswith("failed: custom program error: 0x1")


def test_svm_error_texts_become_agaves_transaction_errors() -> None:
    cases = {
        "svm-error: InstructionError((2, Tagged(InstructionErrorCustom(17)))): why": {"InstructionError": [2, {"Custom": 17}]},
        "svm-error: InstructionError((0, Fieldless(InvalidAccountData)))": {"InstructionError": [0, "InvalidAccountData"]},
        "svm-error: InstructionError((1, Tagged(InstructionErrorBorshIO(\"x\"))))": {"InstructionError": [1, "BorshIO"]},
        "svm-error: Fieldless.InvalidProgramForExecution": "InvalidProgramForExecution",
        "insufficient lamports": {"InstructionError": [0, {"Custom": 1}]},
        "svm-panic: boom": {"InstructionError": [0, "GenericError"]},
    }
    for text, want in cases.items():
        assert rpcm.instruction_error(text) == want, text


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 30))
def test_ui_amounts_are_exact_decimal_strings(amount: int, decimals: int) -> None:
    ui = token.ui_token_amount(amount, decimals)
    assert Decimal(ui["uiAmountString"]) == Decimal(amount).scaleb(-decimals)
    s = ui["uiAmountString"]
    assert not s.startswith(".") and ("." not in s or not s.endswith(("0", ".")))
    assert ui["amount"] == str(amount) and ui["decimals"] == decimals
    if decimals <= 19:
        assert ui["uiAmount"] == amount / float(10**decimals)
    else:
        assert ui["uiAmount"] is None  # agave: 10^decimals overflows


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([None, 0, 6]))
def test_any_data_parses_or_falls_back_without_raising(data: bytes, decimals: int | None) -> None:
    parsed = token.parse_token(data, decimals)
    assert parsed is None or parsed["type"] in ("account", "mint", "multisig")
    if token.token_account_mint(data) is None and parsed is not None:
        assert parsed["type"] != "account"


def test_token_2022_state_wrapping_is_checked() -> None:
    """Token-2022's base + zero padding + account-type byte + TLV (StateWithExtensions)."""
    mint = bytearray(token.MINT_BYTES)
    mint[44], mint[45] = 3, 1  # decimals, is_initialized
    assert token.parse_token(bytes(mint), None)["info"]["decimals"] == 3  # type: ignore[index]
    tlv = struct.pack("<HH", 3, 32) + b"\x07" * 32 + struct.pack("<HH", 9, 0)
    ext = bytes(mint) + bytes(token.ACCOUNT_BYTES - token.MINT_BYTES) + b"\x01" + tlv
    assert token.parse_token(ext, None)["info"]["extensions"] == [  # type: ignore[index]
        {"extension": "mintCloseAuthority", "state": {"closeAuthority": ADDR(b"\x07" * 32)}},
        {"extension": "nonTransferable"}]
    assert token.parse_token(ext[:token.ACCOUNT_BYTES] + b"\x02" + tlv, None) is None  # wrong type byte
    dirty = bytearray(ext)
    dirty[100] = 1  # padding not zero
    assert token.parse_token(bytes(dirty), None) is None
    # an unknown extension type or a truncated entry lists no extensions (agave unwrap_or_default)
    assert "extensions" not in token.parse_token(ext + struct.pack("<HH", 999, 0), None)["info"]  # type: ignore[index]
    assert "extensions" not in token.parse_token(  # type: ignore[index]
        ext[:token.ACCOUNT_BYTES + 1] + struct.pack("<HH", 3, 40) + b"\x07" * 32, None)["info"]
    # a stateful extension of the wrong length is unparseable, the rest still listed
    bad = ext[:token.ACCOUNT_BYTES + 1] + struct.pack("<HH", 3, 1) + b"\x07"
    assert token.parse_token(bad, None)["info"]["extensions"] == [{"extension": "unparseableExtension"}]  # type: ignore[index]


def test_the_clock_sysvar_tells_the_slots_time_on_the_genesis_schedule() -> None:
    """core/bank.py ``unix_timestamp`` (spec/bank.md "Clock"): a bank opened as every
    producer and replayer opens it (ledger/producer.py ``open_bank``) gives LiteSVM's Clock
    ``genesis creation time + slot x slot duration`` (whole seconds), the RPC's blockTime of
    the slot, instead of 0; children inherit the origin."""
    from ambient_p2p.core.genesis import build_genesis
    from ambient_p2p.ledger.producer import genesis_bank, open_bank
    from ambient_p2p.node.validator import slot_duration_ms

    created = 1_800_000_000
    gen = build_genesis(bootstrap=[LEADER.pubkey], creation_time_s=created, accounts=[(ALICE.pubkey, 10**12)])
    g = genesis_bank(gen)
    slot = 101  # in epoch 0: no epoch-boundary work
    b = open_bank(gen, g, slot, LEADER.pubkey)
    want = created + slot * gen.poh.slot_duration_us // 1_000_000
    assert want > created and b.sysvars().unix_timestamp == want
    assert want == (created * 1000 + slot * slot_duration_ms(gen)) // 1000  # node/rpc/server.py's blockTime
    res = b.process_transactions([spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, BOB.pubkey, svm.RENT_EXEMPT_MINIMUM_NO_DATA)],
                                         g.last_blockhash)])
    assert res[0].error is None
    assert svm.shared_executor().svm.get_clock().unix_timestamp == want
    b.freeze(hashlib.sha256(b"tests/rpc-token/clock").digest())
    assert b.child(slot + 1, LEADER.pubkey).sysvars().unix_timestamp == \
        created + (slot + 1) * gen.poh.slot_duration_us // 1_000_000


def test_the_rent_exempt_minimum_is_agaves_formula_on_the_svms_rent_sysvar(monkeypatch: pytest.MonkeyPatch) -> None:
    from solders.rent import Rent

    def answer(n: object) -> Any:
        return trio.run(rpcm.METHODS["getMinimumBalanceForRentExemption"], SimpleNamespace(), [n])

    # the one source: the Rent sysvar a live executor holds, agave's mainnet Rent (LiteSVM's
    # default): 3,480 lamports per byte-year x 2 years = 6,960 x (128 + data_len)
    live = svm.shared_executor().svm.get_rent()
    assert live == Rent.default() == svm.rent_sysvar()
    for n in (0, 82, 165, 170, rpcm.MAX_PERMITTED_DATA_LENGTH_BYTES):
        assert answer(n) == live.minimum_balance(n) == svm.rent_exempt_minimum(n)
    assert [answer(n) for n in (0, 82, 165)] == [890_880, 1_461_600, 2_039_280]
    # it follows the sysvar: a chain with free rent would answer 0
    monkeypatch.setattr(svm, "rent_sysvar", Rent.free)
    assert answer(82) == 0
    monkeypatch.undo()
    assert answer(rpcm.MAX_PERMITTED_DATA_LENGTH_BYTES) == 6_960 * (128 + 10 * 1024 * 1024)
    for bad in (rpcm.MAX_PERMITTED_DATA_LENGTH_BYTES + 1, 2**64 - 1, -1, "82", None, True):
        with pytest.raises(rpcm.RpcError) as e:
            answer(bad)
        assert e.value.code == rpcm.INVALID_PARAMS


def test_transaction_meta_has_agaves_pre_and_post_token_balances(chain: dict[str, Any]) -> None:
    from ambient_p2p.core.bank import parse_transaction
    from ambient_p2p.node.rpc.txindex import BlockRecord, from_stored, to_stored

    def entry(key: bytes, program: bytes, amount: str, decimals: int, owner: bytes, mint: bytes) -> dict[str, Any]:
        return {"accountIndex": keys.index(key), "mint": ADDR(mint),
                "uiTokenAmount": token.ui_token_amount(int(amount), decimals), "owner": ADDR(owner),
                "programId": ADDR(program)}

    def dec(mint: bytes) -> int | None:  # the RPC's lookup: the mint in its newest bank
        m = chain["bank"].account_meta.get(mint)
        return None if m is None else token.decimals_of_mint_data(m.data)

    rec = chain["bank"].tx_log[0]  # slot 2: ALICE sends BOB 200,000 and approves BOB
    keys = list(parse_transaction(rec.raw, verify_signatures=False).account_keys)
    meta = rpcm._meta(rec, dec)
    tk = svm.SPL_TOKEN_PROGRAM_ID
    by_index = sorted  # agave lists them in account-index order
    assert meta["preTokenBalances"] == by_index([entry(chain["a_ata"], tk, "1234500", 6, ALICE.pubkey, MINT.pubkey),
                                                 entry(chain["b_ata"], tk, "0", 6, BOB.pubkey, MINT.pubkey)],
                                                key=lambda b: b["accountIndex"])
    assert meta["postTokenBalances"] == by_index([entry(chain["a_ata"], tk, "1034500", 6, ALICE.pubkey, MINT.pubkey),
                                                  entry(chain["b_ata"], tk, "200000", 6, BOB.pubkey, MINT.pubkey)],
                                                 key=lambda b: b["accountIndex"])
    pre_a = [b for b in meta["preTokenBalances"] if b["accountIndex"] == keys.index(chain["a_ata"])]
    assert pre_a[0]["uiTokenAmount"]["uiAmountString"] == "1.2345"
    log1 = chain["b1"].tx_log
    # the mint's creation: a mint is no token account; the ATAs' creation: none before, both after
    assert rpcm._meta(log1[0], dec)["preTokenBalances"] == rpcm._meta(log1[0], dec)["postTokenBalances"] == []
    assert rpcm._meta(log1[1], dec)["preTokenBalances"] == []
    assert [b["uiTokenAmount"]["amount"] for b in rpcm._meta(log1[1], dec)["postTokenBalances"]] == ["0", "0"]
    # Token-2022: its program id, its mint's decimals
    keys = list(parse_transaction(log1[4].raw, verify_signatures=False).account_keys)
    assert rpcm._meta(log1[4], dec)["postTokenBalances"] == [entry(chain["a22"], T22, "42", 2, ALICE.pubkey, MINT22.pubkey)]
    # a transaction naming no token program records none; history read back from disk: null
    b3, res = _run(chain["bank"], 3, [spl.tx(ALICE, [spl.system_transfer(ALICE.pubkey, BOB.pubkey, 7)],
                                             chain["bank"].last_blockhash)])
    assert res[0].error is None
    assert rpcm._meta(b3.tx_log[0], dec)["preTokenBalances"] == rpcm._meta(b3.tx_log[0], dec)["postTokenBalances"] == []
    blk = BlockRecord(2, 1, bytes(32), bytes(32), 2, 0, (rec,))
    back = rpcm._meta(from_stored(to_stored(blk)).txs[0], dec)
    assert back["preTokenBalances"] is None and back["postTokenBalances"] is None
    # an unknown mint (closed since): no entry, as agave
    assert rpcm._meta(rec, lambda mint: None)["postTokenBalances"] == []
