"""The auction program (core/auction.py, spec/auction.md): one test per row of the status
table, every must-reject case refused with its code and nothing changed but the fee, the
tables in the module and the spec agree, and the bank integration (atomic rollback, bank
hash only extended when auction accounts change, cheap child banks)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ambient_p2p.core import auction as A
from ambient_p2p.core import auction_tx as T
from ambient_p2p.core import crypto
from ambient_p2p.core.bank import LAMPORTS_PER_SIGNATURE, Bank, BlockError, parse_transaction
from ambient_p2p.interop import Case
from ambient_p2p.interop.formats import auction as F

REPO = Path(__file__).resolve().parent.parent
SPEC = (REPO / "spec" / "auction.md").read_text()
M0, M1, M2, M3 = F.MINERS[:4]
FEE = LAMPORTS_PER_SIGNATURE


def _chain_with_query(**over: Any) -> tuple[F.Chain, bytes]:
    c = F.Chain()
    c.register(M0, M1, M2)
    return c, c.request(F.request_params(**over))


# ---------------------------------------------------------------------------------------
# one test per table row
# ---------------------------------------------------------------------------------------
def test_register_miner_creates_the_miner_account() -> None:
    c = F.Chain()
    c.register(M0)
    acct = A.MinerAccount.unpack(c.bank.auction_data(A.miner_address(M0.pubkey)) or b"")
    assert acct == A.MinerAccount(M0.pubkey, c.bank.slot)
    assert c.bank.balance(M0.pubkey) == F.FUNDS - FEE  # registration costs only the fee


def test_request_opens_the_query_and_escrows_payment_plus_fee() -> None:
    c = F.Chain()
    p = F.request_params()
    q = c.request(p)
    qa = c.query(q)
    escrow = p.max_price_per_token * p.max_output_tokens + A.QUERY_FEE_LAMPORTS
    assert qa.status == A.QueryStatus.OPEN
    assert (qa.escrow_lamports, c.bank.balance(q)) == (escrow, escrow)
    assert c.bank.balance(F.REQUESTER.pubkey) == F.FUNDS - FEE - escrow
    s = c.bank.slot
    assert (qa.request_slot, qa.commit_end_slot, qa.reveal_end_slot, qa.deadline_slot) == (
        s, s + F.WINDOWS.commit_slots, s + F.WINDOWS.commit_slots + F.WINDOWS.reveal_slots, s + p.deadline_slots)
    assert qa.bond_lamports == A.bond_for(p.max_price_per_token * p.max_output_tokens)
    assert (qa.model_id, qa.prompt_hash, qa.temp_milli, qa.sample_seed) == (p.model_id, p.prompt_hash, p.temp_milli,
                                                                            p.sample_seed)


@given(slot_us=st.integers(1, 10_000_000))
def test_windows_are_times_converted_with_the_slot_duration(slot_us: int) -> None:
    """A window of W ms spans the fewest slots that last at least W ms, whatever the slot."""
    w = A.Windows.for_slot(slot_us)
    for ms, slots in ((A.COMMIT_WINDOW_MS, w.commit_slots), (A.REVEAL_WINDOW_MS, w.reveal_slots),
                      (A.MIN_SERVE_MS, w.min_serve_slots)):
        assert slots * slot_us >= ms * 1000 > (slots - 1) * slot_us
    assert w.min_deadline_slots == w.commit_slots + w.reveal_slots + w.min_serve_slots


@pytest.mark.parametrize(("slot_us", "commit", "least"), [(400_000, 16, 48), (800_000, 8, 24), (650_000, 10, 30)])
def test_a_request_gets_windows_of_its_chains_slot_length(slot_us: int, commit: int, least: int) -> None:
    """The same 6.4 s windows on chains of different slot lengths; a deadline one slot inside
    the windows + MIN_SERVE_MS is refused."""
    c = F.Chain(slot_duration_us=slot_us)
    short = c.send(T.request_transaction(F.REQUESTER, F.request_params(nonce=2, deadline_slots=least - 1),
                                         c.blockhash))
    assert short[0].error is not None and short[0].error.startswith("auction-bad-params")
    qa = c.query(c.request(F.request_params(deadline_slots=least)))
    assert (qa.commit_end_slot - qa.request_slot, qa.reveal_end_slot - qa.commit_end_slot) == (commit, commit)


def test_commit_bid_locks_the_bond_while_open() -> None:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 500)])
    bid = c.bid(q, M0.pubkey)
    bond = c.query(q).bond_lamports
    assert (bid.status, bid.index, bid.bond_lamports) == (A.BidStatus.COMMITTED, 0, bond)
    assert bid.commitment == A.bid_commitment(q, M0.pubkey, F.salt_for(M0), 500)
    assert c.bank.balance(A.bid_address(q, M0.pubkey)) == bond
    assert c.query(q).status == A.QueryStatus.OPEN and c.query(q).bid_count == 1


def test_reveal_bid_tracks_lowest_price_and_second_price() -> None:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 700), (M1, 600), (M2, 600)])
    c.reveal_bids(q, [(M0, 700)])
    assert (c.query(q).lowest_price, c.query(q).second_price, c.query(q).winner_index) == (700, 0, 0)
    c.reveal_bids(q, [(M2, 600)])
    assert (c.query(q).lowest_price, c.query(q).second_price, c.query(q).winner_index) == (600, 700, 2)
    c.reveal_bids(q, [(M1, 600)])  # a tie: the earlier commitment (index 1) leads, second price = 600
    qa = c.query(q)
    assert (qa.lowest_price, qa.second_price, qa.winner_index, qa.revealed_count) == (600, 600, 1, 3)
    assert qa.status == A.QueryStatus.OPEN
    assert c.bid(q, M1.pubkey).status == A.BidStatus.REVEALED and c.bid(q, M1.pubkey).price == 600


def test_close_awards_the_lowest_at_the_second_price_refunds_losers_forfeits_unrevealed() -> None:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 700), (M1, 600), (M2, 100)])
    c.reveal_bids(q, [(M0, 700), (M1, 600)])  # M2 never reveals
    bond = c.query(q).bond_lamports
    m0_before, incin_before = c.bank.balance(M0.pubkey), c.bank.balance(A.INCINERATOR_ID)
    c.close(q)
    qa = c.query(q)
    assert (qa.status, qa.winner, qa.clearing_price) == (A.QueryStatus.AWARDED, M1.pubkey, 700)
    assert [c.bid(q, m.pubkey).status for m in (M0, M1, M2)] == [A.BidStatus.REFUNDED, A.BidStatus.WON,
                                                                  A.BidStatus.FORFEITED]
    assert c.bank.balance(M0.pubkey) == m0_before + bond
    assert c.bank.balance(A.INCINERATOR_ID) == incin_before + bond
    assert c.bank.balance(A.bid_address(q, M1.pubkey)) == bond  # the winner's bond stays locked
    assert c.bank.balance(q) == qa.escrow_lamports  # the escrow stays for post_result / the Logit Pool


def test_close_with_one_revealed_bid_pays_the_requesters_maximum() -> None:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 300)])
    c.reveal_bids(q, [(M0, 300)])
    c.close(q)
    assert (c.query(q).status, c.query(q).clearing_price) == (A.QueryStatus.AWARDED, 1_000)


def test_close_without_revealed_bids_refunds_the_requester() -> None:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 300)])  # committed, never revealed: forfeits
    before = c.bank.balance(F.REQUESTER.pubkey)
    escrow = c.query(q).escrow_lamports
    c.close(q)
    qa = c.query(q)
    assert (qa.status, qa.escrow_lamports, c.bank.balance(q)) == (A.QueryStatus.REFUNDED, 0, 0)
    assert c.bank.balance(F.REQUESTER.pubkey) == before + escrow
    assert c.bid(q, M0.pubkey).status == A.BidStatus.FORFEITED


def test_close_at_the_deadline_refunds_everyone_who_revealed() -> None:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 300)])
    c.reveal_bids(q, [(M0, 300)])
    m0 = c.bank.balance(M0.pubkey)
    c.ok(c.close_tx(q), slot=c.query(q).deadline_slot)
    assert c.query(q).status == A.QueryStatus.REFUNDED
    assert c.bid(q, M0.pubkey).status == A.BidStatus.REFUNDED
    assert c.bank.balance(M0.pubkey) == m0 + c.query(q).bond_lamports


def _awarded() -> tuple[F.Chain, bytes]:
    c, q = _chain_with_query()
    c.commit_bids(q, [(M0, 700), (M1, 600)])
    c.reveal_bids(q, [(M0, 700), (M1, 600)])
    c.close(q)
    return c, q


def test_post_result_by_the_winner_before_the_deadline_holds_the_money() -> None:
    c, q = _awarded()
    balances = dict(c.bank.accounts)
    r = c.result(q, M1)
    c.ok(T.post_result_transaction(M1, q, r, c.blockhash), slot=c.query(q).deadline_slot - 1)
    qa = c.query(q)
    assert (qa.status, qa.output_hash, qa.num_tokens, qa.pol_root) == (A.QueryStatus.RESULT_POSTED, r.output_hash,
                                                                       r.num_tokens, r.pol_root)
    assert qa.result_slot == c.bank.slot
    # the rebuilt PoL commitment verifies for the winner and is bound to the query
    cmt = qa.pol_commitment()
    assert (cmt.prompt_hash, cmt.model_id, cmt.miner) == (qa.prompt_hash, qa.model_id, M1.pubkey)
    changed = {k for k in c.bank.accounts if c.bank.accounts[k] != balances.get(k)}
    assert changed <= {M1.pubkey, F.LEADER.pubkey}  # only the fee moved


def test_expire_refunds_the_requester_in_full_and_slashes_the_winner() -> None:
    c, q = _awarded()
    escrow, bond = c.query(q).escrow_lamports, c.query(q).bond_lamports
    req, incin = c.bank.balance(F.REQUESTER.pubkey), c.bank.balance(A.INCINERATOR_ID)
    c.ok(c.expire_tx(q), slot=c.query(q).deadline_slot)
    assert c.query(q).status == A.QueryStatus.EXPIRED
    assert c.bid(q, M1.pubkey).status == A.BidStatus.SLASHED
    assert c.bank.balance(F.REQUESTER.pubkey) == req + escrow
    assert c.bank.balance(A.INCINERATOR_ID) == incin + bond
    assert c.bank.balance(q) == 0 and c.bank.balance(A.bid_address(q, M1.pubkey)) == 0


# ---------------------------------------------------------------------------------------
# must-reject cases: the vectors' inputs, each refused with its code, only the fee charged
# ---------------------------------------------------------------------------------------
CASES = F.cases()
REJECTS = [c for c in CASES if c.output is None]


def _run_input(case: Case) -> tuple[Bank, dict[bytes, int], dict[bytes, bytes], Any]:
    v = json.loads(case.input)
    accounts = {crypto.decode_address(a): int(n) for a, n in v["accounts"]}
    auction_accounts = {crypto.decode_address(a): bytes.fromhex(d) for a, d in v["auction_accounts"]}
    raw = bytes.fromhex(v["tx"])
    tx = parse_transaction(raw)
    bank = F.bank_from_input(case.handler, v, int(v["slot"]), accounts, auction_accounts, tx.recent_blockhash)
    (res,) = bank.process_transactions([raw])
    return bank, accounts, auction_accounts, (tx, res)


@pytest.mark.parametrize("case", REJECTS, ids=lambda c: f"{c.handler}/{c.name}")
def test_must_reject_case_changes_nothing_but_the_fee(case: Case) -> None:
    bank, accounts, auction_accounts, (tx, res) = _run_input(case)
    assert res.error is not None and res.error.split(":")[0] == case.reason
    payer = tx.account_keys[0]
    expected = dict(accounts)
    expected[payer] -= res.fee
    assert res.fee == FEE * len(tx.signatures)
    assert bank.accounts == expected
    assert bank.auction_accounts == auction_accounts
    assert bank.modified == {payer} and not bank.auction_modified


ISSUE_REJECTS = {  # issue 12's acceptance list -> the vector that pins it
    "reveal_bid/wrong-signer": "auction-no-bid",
    "reveal_bid/unsigned": "auction-missing-signature",
    "reveal_bid/late": "auction-reveal-too-late",
    "reveal_bid/wrong-salt": "auction-bid-mismatch",
    "reveal_bid/twice": "auction-already-revealed",
    "post_result/not-winner": "auction-not-winner",
    "post_result/late": "auction-deadline-passed",
}


def test_issue_acceptance_rejects_are_pinned() -> None:
    by_name = {f"{c.handler}/{c.name}": c.reason for c in REJECTS}
    for name, code in ISSUE_REJECTS.items():
        assert by_name.get(name) == code, name


def test_every_error_code_has_a_vector_except_invariant_guards() -> None:
    seen = {c.reason for c in REJECTS}
    assert set(A.AUCTION_ERRORS) - seen == set()


def test_accept_cases_land() -> None:
    for case in (c for c in CASES if c.output is not None and c.handler != "bid-commitment"):
        _, _, _, (_, res) = _run_input(case)
        assert res.error is None, (case.name, res.error)


# ---------------------------------------------------------------------------------------
# the tables: module docstring == spec, transitions sets == table rows
# ---------------------------------------------------------------------------------------
def _spec_table(heading: str) -> list[list[str]]:
    section = SPEC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip().strip("`") for c in r.strip("|").split("|")] for r in rows[2:]]


def test_spec_error_table_equals_the_module() -> None:
    spec = {code: int(n) for code, n, *_ in _spec_table("Error codes")}
    assert spec == A.AUCTION_ERRORS
    doc = dict(re.findall(r"^\s+(auction-[a-z-]+)\s+(\d+)\s", A.__doc__ or "", re.M))
    assert {k: int(v) for k, v in doc.items()} == A.AUCTION_ERRORS


def test_spec_status_table_equals_the_transition_set() -> None:
    rows = set()
    for ins, _signer, frm, _cond, to in _spec_table("Query statuses"):
        if ins in {"register_miner", "(Logit Pool)"}:
            continue
        rows.add((A.Instr[ins.upper()], None if frm.startswith("(") else A.QueryStatus[frm], A.QueryStatus[to]))
    assert rows == set(A.QUERY_TRANSITIONS)


def test_spec_constants_equal_the_module() -> None:
    checked = 0
    for name, value, *_ in _spec_table("Constants"):
        if isinstance(getattr(A, name, None), int):
            assert int(value.replace(",", "").split()[0]) == getattr(A, name), name
            checked += 1
    assert checked == 8


def test_account_layout_sizes_match_the_spec() -> None:
    sizes = {m.group(1): int(m.group(2)) for m in re.finditer(r"`(\w+)` account, (\d+) bytes", SPEC)}
    assert sizes == {"query": A.QUERY_ACCOUNT_BYTES, "bid": A.BID_ACCOUNT_BYTES, "miner": A.MINER_ACCOUNT_BYTES}


# ---------------------------------------------------------------------------------------
# layouts, addresses and the bank integration
# ---------------------------------------------------------------------------------------
def test_program_id_is_the_base58_of_32_bytes() -> None:
    assert len(A.AUCTION_PROGRAM_ID) == 32
    assert crypto.encode_address(A.AUCTION_PROGRAM_ID) == "Auction111111111111111111111111111111111111"
    assert crypto.encode_address(A.INCINERATOR_ID) == "1nc1nerator11111111111111111111111111111111"


def test_account_layouts_roundtrip_and_are_little_endian() -> None:
    c, q = _awarded()
    for key, data in c.bank.auction_accounts.items():
        acct = A.decode_account(data)
        assert acct.pack() == data, key
    qdata = c.bank.auction_data(q) or b""
    qa = c.query(q)
    assert qdata[0] == A.Kind.QUERY and qdata[1] == A.QueryStatus.AWARDED
    assert int.from_bytes(qdata[32:40], "little") == qa.nonce  # nonce u64 LE at offset 32
    assert qdata[128:160] == qa.requester  # requester at offset 128
    with pytest.raises(ValueError, match="not a query"):
        A.QueryAccount.unpack(qdata[:-1])


def test_program_derived_addresses_are_off_curve_and_distinct() -> None:
    from solders.pubkey import Pubkey

    q = A.query_address(F.REQUESTER.pubkey, 1)
    keys = {q, A.query_address(F.REQUESTER.pubkey, 2), A.bid_address(q, M0.pubkey), A.miner_address(M0.pubkey)}
    assert len(keys) == 4
    assert not any(Pubkey(k).is_on_curve() for k in keys)  # nobody holds a key that signs for them


def test_instruction_error_rolls_back_earlier_instructions_of_the_transaction() -> None:
    from solders.hash import Hash
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair as SKeypair
    from solders.pubkey import Pubkey
    from solders.transaction import Transaction

    c = F.Chain()
    skp = SKeypair.from_seed(M0.seed)
    prog = Pubkey(A.AUCTION_PROGRAM_ID)
    ok = Instruction(prog, A.register_miner_data(), [AccountMeta(skp.pubkey(), True, True),
                                                     AccountMeta(Pubkey(A.miner_address(M0.pubkey)), False, True)])
    q = A.query_address(M0.pubkey, 1)
    bad = Instruction(prog, A.request_data(F.request_params(max_output_tokens=0)),
                      [AccountMeta(skp.pubkey(), True, True), AccountMeta(Pubkey(q), False, True)])
    raw = bytes(Transaction.new_signed_with_payer([ok, bad], skp.pubkey(), [skp], Hash(c.blockhash)))
    (res,) = c.send(raw)
    assert res.error is not None and res.error.startswith("auction-bad-params")
    assert c.bank.auction_accounts == {}
    assert c.bank.balance(M0.pubkey) == F.FUNDS - FEE


def test_bank_hash_gains_the_auction_component_only_when_auction_accounts_change() -> None:
    c = F.Chain()
    parent = c.bank
    raw = T.register_miner_transaction(M0, c.blockhash)
    last = hashlib.sha256(b"x").digest()

    def freeze(txs: list[bytes]) -> Bank:
        b = parent.child(parent.slot + 1, F.LEADER.pubkey)
        b.process_transactions(txs)
        b.freeze(last)
        return b

    b = freeze([raw])
    from ambient_p2p.core.svm import DEFAULT_META, account_hash

    # spec/bank.md: the delta hash covers pubkey || account hash (plain system accounts here)
    delta = hashlib.sha256(b"".join(k + account_hash(k, b.accounts[k], DEFAULT_META) for k in sorted(b.modified))).digest()
    base = hashlib.sha256(parent.bank_hash + delta + (1).to_bytes(8, "little") + last)  # type: ignore[operator]
    from ambient_p2p.core.bank import auction_delta_hash

    base.update(auction_delta_hash({A.miner_address(M0.pubkey): b.auction_accounts[A.miner_address(M0.pubkey)]}))
    assert b.bank_hash == base.digest()
    # a failing auction instruction writes no auction data: the bank hash keeps the old shape
    c.ok(raw)
    b2 = c.open()
    (res,) = b2.process_transactions([T.register_miner_transaction(M0, c.blockhash)])  # M0 is registered
    assert res.error is not None and res.error.startswith("auction-miner-exists") and not b2.auction_modified
    b2.freeze(last)
    delta2 = hashlib.sha256(b"".join(k + account_hash(k, b2.accounts[k], DEFAULT_META) for k in sorted(b2.modified))).digest()
    assert b2.bank_hash == hashlib.sha256(c.bank.bank_hash + delta2 + (1).to_bytes(8, "little")  # type: ignore[operator]
                                          + last).digest()


def test_child_bank_shares_auction_account_data_and_state_hash_covers_it() -> None:
    c, _ = _awarded()
    child = c.open()
    assert child.auction_accounts == c.bank.auction_accounts
    assert all(child.auction_accounts[k] is v for k, v in c.bank.auction_accounts.items())  # no deep copy
    b = c.bank
    restored = Bank.restore(b.slot, b.parent_slot, b.bank_hash or b"", b.leader, b.accounts, b.blockhashes,
                            b.status_cache, b.slot_hashes, b.last_votes, b.auction_accounts)
    assert restored.state_hash() == b.state_hash()
    without = Bank.restore(b.slot, b.parent_slot, b.bank_hash or b"", b.leader, b.accounts, b.blockhashes,
                           b.status_cache, b.slot_hashes, b.last_votes)
    assert without.state_hash() != b.state_hash()


def test_duplicate_transaction_is_a_block_error_that_changes_nothing() -> None:
    c, q = _chain_with_query()
    raw = T.commit_bid_transaction(M0, q, 500, F.salt_for(M0), c.blockhash)
    c.ok(raw)
    child = c.open()
    before = (dict(child.accounts), dict(child.auction_accounts))
    with pytest.raises(BlockError, match="already-processed"):
        child.process_transactions([raw])
    assert (child.accounts, child.auction_accounts) == before


def test_instruction_data_is_fixed_size_per_tag() -> None:
    assert len(A.request_data(F.request_params())) == 136
    assert len(A.commit_bid_data(bytes(32))) == 36
    assert len(A.reveal_bid_data(1, bytes(32))) == 44
    assert len(A.post_result_data(A.ResultParams(bytes(32), 1, 1, 8, 8, bytes(32), bytes(64)))) == 142
    for bad in (b"", b"\x01\x00\x00", (99).to_bytes(4, "little"), A.commit_bid_data(bytes(32)) + b"\x00"):
        with pytest.raises(A.AuctionError) as ei:
            A.instruction_tag(bad)
        assert ei.value.reason == "auction-bad-data"


def test_close_auction_fits_a_packet_with_the_most_bids() -> None:
    c = F.Chain()
    c.register(*F.MINERS[: A.MAX_BIDS_PER_QUERY])
    q = c.request()
    c.commit_bids(q, [(m, 10 + i) for i, m in enumerate(F.MINERS[: A.MAX_BIDS_PER_QUERY])])
    raw = c.close_tx(q)
    assert len(raw) <= 1232
    c.ok(raw, slot=c.query(q).reveal_end_slot)
    assert c.query(q).status == A.QueryStatus.REFUNDED
