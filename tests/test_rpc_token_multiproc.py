"""Issue 19's wallet flows through a real validator process on 127.0.0.1, driven by
solana-py's AsyncClient with transactions built by its own ``spl.token.instructions`` (as a
wallet builds them): create a mint (funded with getMinimumBalanceForRentExemption's
answer), create both associated token accounts, mint, transfer, then read the balances with
getTokenAccountBalance, getTokenAccountsByOwner (mint and programId filters; base64 and
jsonParsed), getTokenSupply and jsonParsed getAccountInfo; simulate a transfer of more than
the account holds and get spl-token's error and logs; send it with skipPreflight and find
the fee charged and the logs in getTransaction. spec/rpc.md "Token accounts". Slow: it
starts its own node (the in-process checks are tests/test_rpc_token.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ambient_p2p.core import svm
from ambient_p2p.devnet.localnet import Localnet

from .test_rpc_multiproc import free_port_pair, rpc, wait_rpc_slot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_S = 90.0
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
WEB3JS = Path(__file__).resolve().parent / "rpc_web3js"
#: what the solana-py flow leaves for the web3.js reader: owner, mint, ATAs, a failing transfer


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port_pair()
    root: Path = tmp_path_factory.mktemp("rpc-token")
    with Localnet(root / "net", 1, validator=True, rpc_base_port=port) as n:
        u = f"http://127.0.0.1:{port}"
        wait_rpc_slot(u, n, timeout_s=WAIT_S)
        yield u


@pytest.fixture(scope="module")
def wallet(url: str) -> dict[str, Any]:
    """The solana-py wallet flow, run once with all its assertions; the state it leaves (owner,
    mint, both ATAs, the failing transfer) for the web3.js reader, which no longer skips when
    the flow did not run first: a failed flow fails both tests."""
    return _wallet_flow(url)


def test_wallet_flow_mint_ata_mint_to_transfer_balances_and_a_failing_transfer(wallet: dict[str, Any]) -> None:
    assert set(wallet) == {"owner", "mint", "a_ata", "b_ata", "failing"}


def _wallet_flow(url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solana.rpc.core import RPCException
    from solana.rpc.models import TokenAccountOpts, TxOpts
    from solders.keypair import Keypair
    from solders.message import Message
    from solders.pubkey import Pubkey
    from solders.system_program import CreateAccountParams, create_account
    from solders.transaction import VersionedTransaction
    from spl.token import instructions as ti
    from spl.token import models as tm
    from spl.token.constants import TOKEN_PROGRAM_ID

    async def flow() -> None:
        async with AsyncClient(url, commitment=Confirmed) as c:
            alice, bob, mint = Keypair(), Keypair(), Keypair()
            await c.confirm_transaction((await c.request_airdrop(alice.pubkey(), 10**9)).value, Confirmed)
            await c.confirm_transaction((await c.request_airdrop(bob.pubkey(), 10**8)).value, Confirmed)

            async def send(payer: Keypair, ixs: list[Any], *signers: Keypair, preflight: bool = True) -> Any:
                bh = (await c.get_latest_blockhash()).value.blockhash
                tx = VersionedTransaction(Message.new_with_blockhash(ixs, payer.pubkey(), bh), [payer, *signers])
                sig = (await c.send_transaction(tx, opts=TxOpts(skip_preflight=not preflight, preflight_commitment=Confirmed))).value
                st = (await c.confirm_transaction(sig, Confirmed)).value[0]
                assert st is not None
                return sig, st

            # a mint, funded as wallets fund it
            lamports = (await c.get_minimum_balance_for_rent_exemption(82)).value
            # agave's Rent::minimum_balance of the SVM's Rent sysvar, at least the lamport to exist
            assert lamports == max(svm.rent_sysvar().minimum_balance(82), 1)
            _, st = await send(alice, [
                create_account(CreateAccountParams(from_pubkey=alice.pubkey(), to_pubkey=mint.pubkey(),
                                                   lamports=lamports, space=82, owner=TOKEN_PROGRAM_ID)),
                ti.initialize_mint(tm.InitializeMintParams(decimals=6, program_id=TOKEN_PROGRAM_ID,
                                                           mint=mint.pubkey(), mint_authority=alice.pubkey()))],
                mint)
            assert st.err is None
            a_ata = ti.get_associated_token_address(alice.pubkey(), mint.pubkey())
            b_ata = ti.get_associated_token_address(bob.pubkey(), mint.pubkey())
            _, st = await send(alice, [ti.create_associated_token_account(alice.pubkey(), alice.pubkey(), mint.pubkey()),
                                       ti.create_associated_token_account(alice.pubkey(), bob.pubkey(), mint.pubkey())])
            assert st.err is None
            _, st = await send(alice, [ti.mint_to_checked(tm.MintToCheckedParams(
                program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(), dest=a_ata, mint_authority=alice.pubkey(),
                amount=5_000_000, decimals=6))])
            assert st.err is None
            xfer_sig, st = await send(alice, [ti.transfer_checked(tm.TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID, source=a_ata, mint=mint.pubkey(), dest=b_ata, owner=alice.pubkey(),
                amount=1_250_000, decimals=6))])
            assert st.err is None

            # the transfer's pre/postTokenBalances (agave's UiTransactionTokenBalance), typed by solana-py
            meta = (await c.get_transaction(xfer_sig, commitment=Confirmed)).value.transaction.meta
            assert meta is not None and meta.pre_token_balances is not None and meta.post_token_balances is not None
            msg_keys = (await c.get_transaction(xfer_sig, commitment=Confirmed)).value.transaction.transaction.message.account_keys
            pre = {msg_keys[b.account_index]: (b.ui_token_amount.amount, b.owner, b.mint, b.program_id)
                   for b in meta.pre_token_balances}
            post = {msg_keys[b.account_index]: b.ui_token_amount.amount for b in meta.post_token_balances}
            assert pre == {a_ata: ("5000000", alice.pubkey(), mint.pubkey(), TOKEN_PROGRAM_ID),
                           b_ata: ("0", bob.pubkey(), mint.pubkey(), TOKEN_PROGRAM_ID)}
            assert post == {a_ata: "3750000", b_ata: "1250000"}
            assert all(b.ui_token_amount.decimals == 6 for b in meta.post_token_balances)

            # balances through the token methods
            a_bal = (await c.get_token_account_balance(a_ata)).value
            assert (a_bal.amount, a_bal.decimals, a_bal.ui_amount_string) == ("3750000", 6, "3.75")
            assert (await c.get_token_account_balance(b_ata)).value.ui_amount == 1.25
            supply = (await c.get_token_supply(mint.pubkey())).value
            assert supply.amount == "5000000" and supply.ui_amount_string == "5"
            mine = (await c.get_token_accounts_by_owner(bob.pubkey(), TokenAccountOpts(mint=mint.pubkey()))).value
            assert [a.pubkey for a in mine] == [b_ata] and mine[0].account.owner == Pubkey.from_string(TOKEN)
            raw = bytes(mine[0].account.data)
            assert raw[:32] == bytes(mint.pubkey()) and raw[32:64] == bytes(bob.pubkey())
            parsed = (await c.get_token_accounts_by_owner_json_parsed(
                alice.pubkey(), TokenAccountOpts(program_id=TOKEN_PROGRAM_ID))).value
            assert [a.pubkey for a in parsed] == [a_ata]
            info = parsed[0].account.data.parsed["info"]
            assert info["tokenAmount"] == {"amount": "3750000", "decimals": 6, "uiAmount": 3.75,
                                           "uiAmountString": "3.75"}
            assert info["owner"] == str(alice.pubkey()) and info["mint"] == str(mint.pubkey())
            assert parsed[0].account.data.program == "spl-token"
            m = (await c.get_account_info_json_parsed(mint.pubkey())).value
            assert m is not None and m.data.parsed == {"type": "mint", "info": {  # type: ignore[union-attr]
                "mintAuthority": str(alice.pubkey()), "supply": "5000000", "decimals": 6, "isInitialized": True,
                "freezeAuthority": None}}
            assert m.lamports == lamports  # funded with exactly the rent-exempt answer, and it exists

            # a transfer of more than Bob holds: simulation answers spl-token's error and logs
            over_ix = ti.transfer_checked(tm.TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID, source=b_ata, mint=mint.pubkey(), dest=a_ata, owner=bob.pubkey(),
                amount=2_000_000, decimals=6))
            bh = (await c.get_latest_blockhash()).value.blockhash
            over = VersionedTransaction(Message.new_with_blockhash([over_ix], bob.pubkey(), bh), [bob])
            sim = (await c.simulate_transaction(over)).value
            assert sim.err is not None and sim.logs is not None and sim.logs[-1].endswith("custom program error: 0x1")
            raw_sim = rpc(url, "simulateTransaction", [base64.b64encode(bytes(over)).decode(),
                                                       {"encoding": "base64", "commitment": "confirmed"}])
            v = raw_sim["result"]["value"]
            assert v["err"] == {"InstructionError": [0, {"Custom": 1}]}
            assert "Program log: Error: insufficient funds" in v["logs"]
            assert v["logs"][-1] == f"Program {TOKEN} failed: custom program error: 0x1" and v["unitsConsumed"] > 0
            with pytest.raises(RPCException) as e:
                await c.send_transaction(over)
            assert "custom program error: 0x1" in str(e.value)
            # sent anyway: it lands failed, the fee charged, the logs recorded, the tokens unmoved
            bob_before = (await c.get_balance(bob.pubkey())).value
            # (another amount than the simulated one, which test_web3js... simulates again)
            sent_ix = ti.transfer_checked(tm.TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID, source=b_ata, mint=mint.pubkey(), dest=a_ata, owner=bob.pubkey(),
                amount=3_000_000, decimals=6))
            sig, st = await send(bob, [sent_ix], preflight=False)
            assert st.err is not None
            got = rpc(url, "getTransaction", [str(sig), {"commitment": "confirmed", "encoding": "json"}])["result"]
            assert got["meta"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
            assert got["meta"]["fee"] == 5000 and got["meta"]["logMessages"][-1].endswith("custom program error: 0x1")
            assert (await c.get_balance(bob.pubkey())).value == bob_before - 5000
            assert (await c.get_token_account_balance(b_ata)).value.amount == "1250000"
            seen.update(owner=str(alice.pubkey()), mint=str(mint.pubkey()), a_ata=str(a_ata), b_ata=str(b_ata),
                        failing=base64.b64encode(bytes(over)).decode())

    asyncio.run(flow())
    return seen


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="node/npm are not installed: the @solana/web3.js client cannot run")
def test_web3js_reads_the_token_state_and_simulates_the_failing_transfer(url: str, wallet: dict[str, Any]) -> None:
    """@solana/web3.js v1 (tests/rpc_web3js/token.mjs) over the state the solana-py flow left:
    its schemas accept every token answer, and the values agree with the chain's."""
    if not (WEB3JS / "node_modules" / "@solana" / "web3.js").exists():
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB3JS,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(["node", "token.mjs", url, wallet["owner"], wallet["mint"], wallet["failing"]], cwd=WEB3JS,
                       capture_output=True, text=True, timeout=180)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and "error" not in out, out
    assert [a["pubkey"] for a in out["byMint"]] == [wallet["a_ata"]] and out["byProgram"] == [wallet["a_ata"]]
    assert out["byMint"][0]["program"] == "spl-token" and out["byMint"][0]["info"]["owner"] == wallet["owner"]
    assert out["rawLengths"] == [165]
    assert out["balance"] == {"amount": "3750000", "decimals": 6, "uiAmount": 3.75, "uiAmountString": "3.75"}
    assert out["supply"]["amount"] == "5000000"
    assert out["largest"] == [{"address": wallet["a_ata"], "amount": "3750000"},
                              {"address": wallet["b_ata"], "amount": "1250000"}]
    assert out["mint"]["parsed"]["info"]["supply"] == "5000000" and out["mint"]["program"] == "spl-token"
    assert out["simErr"] == {"InstructionError": [0, {"Custom": 1}]}
    assert out["simLogs"][-1] == f"Program {TOKEN} failed: custom program error: 0x1" and out["simUnits"] > 0
