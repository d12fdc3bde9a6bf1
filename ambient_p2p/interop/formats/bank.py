"""Bank vectors: one slot executed on a parent bank, down to the bank hash (spec/bank.md).

``slot/<case>``: input.json {parent: {slot, bank_hash, accounts: [[address, lamports]],
blockhashes: [hex] (oldest first), slot_hashes: [[slot, hex]], last_votes: [[address,
slot]]}, slot, leader (address), txs: [hex wire transaction], last_blockhash: hex}: the
child bank of ``parent`` at ``slot`` led by ``leader`` processes ``txs`` in order and is
frozen with ``last_blockhash`` (the slot's last entry hash). Output {results: [{signature,
fee, error}], landed_votes, accounts (every account after the slot), accounts_delta_hash,
votes_hash (null when no vote landed), bank_hash}. A block-invalidating transaction makes
the input a must-reject, with its reason (``blockhash-not-found``, ``already-processed``,
``insufficient-funds-for-fee``, ``bad-signature``, ...).

``svm-slot/<case>``: one slot of SVM transactions (SPL Token: a mint, associated token
accounts, mint_to, transfers, a failing transfer, burn) on a parent of full accounts, down to
the bank hash. input.json {parent: {slot, bank_hash, accounts: [{pubkey, lamports, owner, data
(hex), executable, rent_epoch}] (besides the genesis programs of spec/svm.md, which every bank
holds), blockhashes, slot_hashes}, slot, leader, txs, last_blockhash} -> {results: [{signature,
fee, error, compute_units, logs}], written: [every account written in the slot, full, sorted by
pubkey; a deleted one with 0 lamports], tokens: {mints: [{pubkey, supply, decimals}], accounts:
[{pubkey, mint, owner, amount}]} (the written SPL Token accounts decoded), signature_count,
accounts_delta_hash, bank_hash}: everything needed to recompute the delta hash and the bank
hash from the written accounts without an SVM.

``genesis/<case>``: input.json {genesis_hash: hex, accounts: [[address, lamports]]} ->
{bank_hash} of slot 0's bank.

``account-hash/<case>``: input.json {accounts: [{pubkey, lamports, owner (addresses), data
(hex), executable, rent_epoch}]} -> {account_hashes: [hex], accounts_hash: hex} (spec/bank.md
"Account hash": each account's hash, and the sorted (pubkey || account hash) digest that the
accounts delta hash is of the accounts written in a slot).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...core import crypto, svm
from ...core.bank import Bank, BlockError, TxResult, accounts_delta_hash, accounts_hash, votes_hash
from ...core.consensus import Vote
from ...core.messages import sign_message
from ...core.vote_program import vote_transaction
from ...devnet import spl
from ...ledger.producer import transfer_tx
from .. import Case, Rejected, case_from_run

FORMAT = "bank"


def _addr(a: bytes) -> str:
    return crypto.encode_address(a)


def _accounts(v: Any) -> dict[bytes, int]:
    return {crypto.decode_address(a): int(n) for a, n in v}


def _full_accounts(v: Any) -> list[tuple[bytes, int, svm.AccountMeta]]:
    """``[{pubkey, lamports, owner, data, executable, rent_epoch}]`` -> (pubkey, lamports, meta);
    Rejected unless lamports and rent_epoch are u64 and the pubkeys distinct."""
    accts = [(crypto.decode_address(a["pubkey"]), int(a["lamports"]),
              svm.AccountMeta(crypto.decode_address(a["owner"]), bytes.fromhex(a["data"]),
                              bool(a["executable"]), int(a["rent_epoch"]))) for a in v]
    if any(not 0 <= n < 1 << 64 or not 0 <= m.rent_epoch < 1 << 64 for _k, n, m in accts) or \
            len({k for k, _n, _m in accts}) != len(accts):
        raise Rejected("malformed", "lamports and rent_epoch are u64; pubkeys are distinct")
    return accts


def _account_json(pubkey: bytes, lamports: int, meta: svm.AccountMeta) -> dict[str, Any]:
    return {"pubkey": _addr(pubkey), "lamports": lamports, "owner": _addr(meta.owner), "data": meta.data.hex(),
            "executable": meta.executable, "rent_epoch": meta.rent_epoch}


def _tokens(written: list[tuple[bytes, int, svm.AccountMeta]]) -> dict[str, Any]:
    """The written SPL Token mints and token accounts, decoded (spl-token ``Mint``: supply u64
    LE at 36, decimals at 44; ``Account``: mint at 0, owner at 32, amount u64 LE at 64)."""
    mints, accounts = [], []
    for k, n, m in written:
        if m.owner != svm.SPL_TOKEN_PROGRAM_ID or n == 0:
            continue
        if len(m.data) == spl.MINT_ACCOUNT_BYTES:
            mints.append({"pubkey": _addr(k), "supply": spl.mint_supply(m.data), "decimals": m.data[44]})
        elif len(m.data) == spl.TOKEN_ACCOUNT_BYTES:
            accounts.append({"pubkey": _addr(k), "mint": _addr(m.data[:32]), "owner": _addr(m.data[32:64]),
                             "amount": spl.token_amount(m.data)})
    return {"mints": mints, "accounts": accounts}


def _run_slot(parent: Bank, v: Any) -> tuple[Bank, list[TxResult], bytes]:
    """The case's slot (``slot``, ``leader``, ``txs``, ``last_blockhash``) on ``parent``:
    the child bank, its transaction results and its bank hash (both handlers' block rule)."""
    try:
        slot, leader = int(v["slot"]), crypto.decode_address(v["leader"])
        txs = [bytes.fromhex(t) for t in v["txs"]]
        last_blockhash = bytes.fromhex(v["last_blockhash"])
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    if slot <= parent.slot:
        raise Rejected("malformed", "slot must be above the parent's")
    bank = parent.child(slot, leader)
    try:
        results = bank.process_transactions(txs)
    except BlockError as exc:
        raise Rejected(exc.reason, str(exc)) from None
    return bank, results, bank.freeze(last_blockhash)


def _svm_slot(v: Any) -> Any:
    try:
        p = v["parent"]
        accts = _full_accounts(p["accounts"])
        programs = svm.genesis_programs()
        if any(k in programs for k, _n, _m in accts):
            raise Rejected("malformed", "an account sits at a genesis program's address")
        lamports = {k: n for k, n, _m in accts} | {k: n for k, (n, _m) in programs.items()}
        metas = {k: m for k, _n, m in accts} | {k: m for k, (_n, m) in programs.items()}
        parent = Bank.restore(int(p["slot"]), 0, bytes.fromhex(p["bank_hash"]), bytes(32), lamports,
                              [bytes.fromhex(h) for h in p["blockhashes"]], {},
                              {int(s): bytes.fromhex(h) for s, h in p["slot_hashes"]}, {}, account_meta=metas)
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    bank, results, bank_hash = _run_slot(parent, v)
    meta = bank.account_meta
    written = [(k, bank.balance(k), meta.get(k, svm.DEFAULT_META)) for k in sorted(bank.modified)]
    return {
        "results": [{"signature": r.signature.hex(), "fee": r.fee, "error": r.error, "compute_units": r.compute_units,
                     "logs": list(r.logs)} for r in results],
        "written": [_account_json(k, n, m) for k, n, m in written],
        "tokens": _tokens(written),
        "signature_count": bank.signature_count,
        "accounts_delta_hash": accounts_delta_hash(bank, bank.modified).hex(),
        "bank_hash": bank_hash.hex(),
    }


def run(handler: str, data: bytes) -> Any:
    try:
        v = json.loads(data)
        if handler == "svm-slot":
            return _svm_slot(v)
        if handler == "genesis":
            b = Bank.genesis(bytes.fromhex(v["genesis_hash"]), _accounts(v["accounts"]), bytes(32), bytes(32))
            return {"bank_hash": b.bank_hash.hex() if b.bank_hash else None}
        if handler == "account-hash":
            accts = _full_accounts(v["accounts"])
            return {"account_hashes": [svm.account_hash(k, n, m).hex() for k, n, m in accts],
                    "accounts_hash": accounts_hash({k: n for k, n, _m in accts}, {k: m for k, _n, m in accts}).hex()}
        if handler != "slot":
            raise Rejected("unknown-handler", handler)
        p = v["parent"]
        parent = Bank.restore(int(p["slot"]), 0, bytes.fromhex(p["bank_hash"]), bytes(32), _accounts(p["accounts"]),
                              [bytes.fromhex(h) for h in p["blockhashes"]], {},
                              {int(s): bytes.fromhex(h) for s, h in p["slot_hashes"]},
                              {crypto.decode_address(a): int(s) for a, s in p["last_votes"]})
    except (ValueError, KeyError, TypeError, AttributeError, crypto.CryptoError) as exc:
        raise Rejected("malformed", str(exc)) from None
    bank, results, bank_hash = _run_slot(parent, v)
    delta = accounts_delta_hash(bank, bank.modified)  # a deleted account counts with 0 lamports
    return {
        "results": [{"signature": r.signature.hex(), "fee": r.fee, "error": r.error} for r in results],
        "landed_votes": [[_addr(a), s] for a, s in bank.landed_votes],
        "accounts": [[_addr(a), n] for a, n in sorted(bank.accounts.items())],
        "accounts_delta_hash": delta.hex(),
        "votes_hash": votes_hash(bank.landed_votes).hex() if bank.landed_votes else None,
        "bank_hash": bank_hash.hex(),
    }


def cases() -> list[Case]:
    users = [crypto.Keypair.deterministic("vectors/bank/user", i) for i in range(3)]
    leader = crypto.Keypair.deterministic("vectors/bank/leader", 0)
    gh = hashlib.sha256(b"vectors/bank/genesis").digest()
    funded = {u.pubkey: 10_000_000 for u in users[:2]}
    out: list[Case] = []

    def js(obj: Any) -> bytes:
        return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()

    out.append(case_from_run(run, "genesis", "two-accounts", js({
        "genesis_hash": gh.hex(), "accounts": [[_addr(k), n] for k, n in sorted(funded.items())]}),
        "slot 0's bank hash from the genesis hash and accounts", "input.json"))

    # a parent at slot 4 whose ancestors 0..3 are known; users[0] last voted on slot 1
    parent_hash = hashlib.sha256(b"vectors/bank/parent").digest()
    ancestors = {s: hashlib.sha256(f"vectors/bank/slot/{s}".encode()).digest() for s in range(4)}
    recent = hashlib.sha256(b"vectors/bank/blockhash").digest()
    parent = {"slot": 4, "bank_hash": parent_hash.hex(),
              "accounts": [[_addr(k), n] for k, n in sorted(funded.items())],
              "blockhashes": [gh.hex(), recent.hex()],
              "slot_hashes": [[s, h.hex()] for s, h in sorted(ancestors.items())],
              "last_votes": [[_addr(users[0].pubkey), 1]]}
    last = hashlib.sha256(b"vectors/bank/last-entry").digest()

    def vote(kp: crypto.Keypair, slot: int, bank_hash: bytes) -> bytes:
        v: Vote = sign_message(Vote(kp.pubkey, slot, bank_hash, None, 1_000 + slot, bytes(64)), kp, "vote")
        return vote_transaction(kp, v, recent)

    def slot_case(name: str, desc: str, txs: list[bytes]) -> None:
        inp = {"parent": parent, "slot": 6, "leader": _addr(leader.pubkey), "txs": [t.hex() for t in txs],
               "last_blockhash": last.hex()}
        out.append(case_from_run(run, "slot", name, js(inp), desc, "input.json"))

    def acct(pk: bytes, lamports: int, owner: bytes, data: bytes, executable: bool = False,
             rent_epoch: int = 0) -> dict[str, Any]:
        return {"pubkey": _addr(pk), "lamports": lamports, "owner": _addr(owner), "data": data.hex(),
                "executable": executable, "rent_epoch": rent_epoch}

    token_account = (users[1].pubkey + users[0].pubkey + (750_000).to_bytes(8, "little") + bytes(4) + bytes(32)
                     + b"\x01" + bytes(4) + bytes(8) + bytes(8) + bytes(4) + bytes(32))  # spl-token Account, 165 B
    for name, desc, accts in (
        ("system", "a system account without data", [acct(users[0].pubkey, 10_000_000, svm.SYSTEM_PROGRAM_ID, b"")]),
        ("zero-lamports", "an account with 0 lamports hashes to 32 zero bytes (agave: it does not exist)",
         [acct(users[0].pubkey, 0, svm.SPL_TOKEN_PROGRAM_ID, b"\x01\x02")]),
        ("token-account", "an SPL Token account: 165 bytes owned by the Token program",
         [acct(users[2].pubkey, 2_039_280, svm.SPL_TOKEN_PROGRAM_ID, token_account)]),
        ("program", "an executable account with a rent epoch", [acct(svm.SPL_MEMO_PROGRAM_ID, 1, crypto.decode_address(
            "BPFLoader2111111111111111111111111111111111"), b"\x7fELF", True, 2**64 - 1)]),
        ("sorted", "three accounts given out of order: the accounts hash sorts by pubkey",
         [acct(users[2].pubkey, 5, svm.SYSTEM_PROGRAM_ID, b""), acct(users[0].pubkey, 7, svm.SYSTEM_PROGRAM_ID, b""),
          acct(users[1].pubkey, 2_039_280, svm.SPL_TOKEN_PROGRAM_ID, token_account)]),
    ):
        out.append(case_from_run(run, "account-hash", name, js({"accounts": accts}), desc, "input.json"))
    out.append(case_from_run(run, "account-hash", "lamports-overflow", js({"accounts": [
        acct(users[0].pubkey, 2**64, svm.SYSTEM_PROGRAM_ID, b"")]}), "lamports beyond u64: must reject", "input.json"))

    # above the rent-exempt minimum of an account without data (890,880: spec/svm.md "Rent")
    t1 = transfer_tx(users[0], users[2].pubkey, 1_000_000, recent)
    slot_case("empty", "no transactions: nothing changes, the delta hash is 32 zero bytes", [])
    slot_case("transfer", "one transfer: fee 5000 (half burned, half to the leader) and 1,000,000 lamports moved "
              "to a new account", [t1])
    slot_case("transfer-below-rent", "a transfer creating an account below the rent-exempt minimum (890,880): "
              "InsufficientFundsForRent, the fee stays, nothing moves",
              [transfer_tx(users[0], users[2].pubkey, svm.RENT_EXEMPT_MINIMUM_NO_DATA - 1, recent)])
    slot_case("sender-below-rent", "a transfer leaving its rent-exempt sender with 0 < lamports < 890,880: "
              "InsufficientFundsForRent, the fee stays",
              [transfer_tx(users[1], users[0].pubkey, 10_000_000 - 5_000 - 1, recent)])
    slot_case("sender-emptied", "a transfer of the sender's whole balance after the fee: allowed, the account "
              "is gone (0 lamports)", [transfer_tx(users[1], users[0].pubkey, 10_000_000 - 5_000, recent)])
    slot_case("failed-transfer", "a transfer of more than the balance: the fee stays, the error is recorded",
              [transfer_tx(users[1], users[2].pubkey, 10**12, recent)])
    slot_case("votes", "two votes land (parent 4 and ancestor 3), one fails (not newer than the voter's last)",
              [vote(users[0], 4, parent_hash), vote(users[1], 3, ancestors[3]), vote(users[0], 0, ancestors[0])])
    slot_case("vote-and-transfer", "a vote and a transfer in one slot: both hashes move", [vote(users[1], 4, parent_hash), t1])
    slot_case("duplicate", "the same transaction twice: already-processed, the block is invalid: must reject", [t1, t1])
    slot_case("unknown-blockhash", "a transaction on an unknown blockhash: must reject",
              [transfer_tx(users[0], users[2].pubkey, 1, bytes(32))])
    slot_case("unfunded-payer", "a fee payer without lamports: must reject",
              [transfer_tx(users[2], users[0].pubkey, 1, recent)])
    # a payer that pays the fees of the first two transfers and would be left rent-paying by the third
    low = 2 * (1_000_000 + 5_000) + svm.RENT_EXEMPT_MINIMUM_NO_DATA + 4_999
    parent["accounts"] = [[_addr(k), n] for k, n in sorted((funded | {users[2].pubkey: low}).items())]
    slot_case("fee-below-rent", "a fee that would leave a rent-exempt payer below the rent-exempt minimum "
              "(agave validate_fee_payer): must reject",
              [transfer_tx(users[2], users[0].pubkey, 1_000_000 + i, recent) for i in range(3)])
    out.extend(_svm_slot_cases(js, recent, ancestors, parent_hash, gh, leader))
    return out


def _svm_slot_cases(js: Any, recent: bytes, ancestors: dict[int, bytes], parent_hash: bytes, gh: bytes,
                    leader: crypto.Keypair) -> list[Case]:
    """SPL Token slots (spec/bank.md "Vectors"): ``token-flow`` creates a mint (6 decimals)
    and two associated token accounts, mints, transfers, burns, and fails a transfer beyond a
    balance (fee charged, logs recorded); ``token-transfers`` runs on the state it left (every
    account full in the parent): two transfers and a failing one."""
    alice, bob = (crypto.Keypair.deterministic("vectors/bank/svm-user", i) for i in range(2))
    mint = crypto.Keypair.deterministic("vectors/bank/svm-mint", 0)
    ata_a, ata_b = (spl.associated_token_address(o.pubkey, mint.pubkey) for o in (alice, bob))
    sol = 10 * 10**9
    system: list[dict[str, Any]] = [{"pubkey": _addr(u.pubkey), "lamports": sol, "owner": _addr(svm.SYSTEM_PROGRAM_ID), "data": "",
               "executable": False, "rent_epoch": 0} for u in sorted((alice, bob), key=lambda u: u.pubkey)]
    parent = {"slot": 4, "bank_hash": parent_hash.hex(), "accounts": system,
              "blockhashes": [gh.hex(), recent.hex()],
              "slot_hashes": [[s, h.hex()] for s, h in sorted(ancestors.items())]}
    last = hashlib.sha256(b"vectors/bank/svm-last-entry").digest()
    flow = [
        spl.tx(alice, spl.create_mint(alice.pubkey, mint.pubkey, alice.pubkey), recent, [mint]),
        spl.tx(alice, [spl.create_ata(alice.pubkey, alice.pubkey, mint.pubkey),
                       spl.create_ata(alice.pubkey, bob.pubkey, mint.pubkey)], recent),
        spl.tx(alice, [spl.mint_to(mint.pubkey, ata_a, alice.pubkey, 1_000_000)], recent),
        spl.tx(alice, [spl.transfer(ata_a, ata_b, alice.pubkey, 250_000)], recent),
        spl.tx(bob, [spl.transfer(ata_b, ata_a, bob.pubkey, 250_001)], recent),  # beyond bob's balance: fails
        spl.tx(bob, [spl.burn(ata_b, mint.pubkey, bob.pubkey, 50_000)], recent),
    ]
    out: list[Case] = []
    inp = {"parent": parent, "slot": 6, "leader": _addr(leader.pubkey), "txs": [t.hex() for t in flow],
           "last_blockhash": last.hex()}
    out.append(case_from_run(run, "svm-slot", "token-flow", js(inp),
                             "SPL Token in one slot: create a mint and two ATAs, mint_to, transfer, a failing transfer "
                             "(insufficient funds: fee charged, logs recorded), burn", "input.json"))
    # the next slot on the state token-flow left: every account full in the parent
    after = run("svm-slot", js(inp))
    state: dict[str, dict[str, Any]] = {a["pubkey"]: a for a in system}
    state.update({a["pubkey"]: a for a in after["written"]})
    blockhash = hashlib.sha256(b"vectors/bank/svm-slot-6").digest()
    parent2 = {"slot": 6, "bank_hash": after["bank_hash"],
               "accounts": [a for _k, a in sorted(state.items(), key=lambda kv: crypto.decode_address(kv[0]))
                            if a["lamports"] > 0],
               "blockhashes": [gh.hex(), recent.hex(), last.hex()],
               "slot_hashes": [[s, h.hex()] for s, h in sorted(ancestors.items())] + [[4, parent_hash.hex()]]}
    transfers = [
        spl.tx(alice, [spl.transfer(ata_a, ata_b, alice.pubkey, 123_456)], last),
        spl.tx(bob, [spl.transfer(ata_b, ata_a, bob.pubkey, 1)], last),
        spl.tx(alice, [spl.transfer(ata_a, ata_b, alice.pubkey, 10**12)], recent),  # beyond the balance: fails
    ]
    inp2 = {"parent": parent2, "slot": 7, "leader": _addr(leader.pubkey), "txs": [t.hex() for t in transfers],
            "last_blockhash": blockhash.hex()}
    out.append(case_from_run(run, "svm-slot", "token-transfers", js(inp2),
                             "SPL Token transfers on a parent holding the mint and token accounts (full accounts): "
                             "two transfers and one beyond the balance", "input.json"))
    return out
