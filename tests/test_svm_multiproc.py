"""SPL Token on a 4-node validator localnet (spec/svm.md; issue 19 acceptance): separate
validator processes take turns as leader and carry token traffic submitted to different
nodes (create a mint, associated token accounts, mint_to, transfer, burn, and a transfer of
more tokens than held, whose fee is charged and whose logs are recorded), and a program
deployed with ``ambient-p2p program deploy`` (the upgradeable loader) is called by a later
transaction that succeeds on every node; every node roots
the same slots with the same bank hashes and serves the same token balances over its RPC.

Every process is started by ValidatorLocalnet (SIGTERM then SIGKILL on exit); every wait is
bounded."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import base58
import pytest

from ambient_p2p.core import svm
from ambient_p2p.core.crypto import Keypair, decode_address, encode_address, write_keypair_file
from ambient_p2p.devnet import loader, spl
from ambient_p2p.devnet.localnet import ValidatorLocalnet
from ambient_p2p.devnet.users import user_keypairs

WAIT_S = 240.0


def _free_port_run(n: int) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


def _rpc(net: ValidatorLocalnet, i: int, method: str, params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{net.rpc_port(i)}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


def _data(net: ValidatorLocalnet, i: int, key: bytes, commitment: str = "confirmed") -> bytes | None:
    try:
        v = _rpc(net, i, "getAccountInfo", [encode_address(key), {"encoding": "base64", "commitment": commitment}])
    except OSError:
        return None
    value = v.get("result", {}).get("value")
    return None if value is None else base64.b64decode(value["data"][0])


def _wait(pred: Any, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _chain(net: ValidatorLocalnet, i: int) -> dict[int, str]:
    out = net.nodes[i].control({"cmd": "chain"}, timeout_s=20.0)
    return {int(s): h for s, h in out["roots"] if s != 0}


def _finalized(net: ValidatorLocalnet, i: int) -> int:
    try:
        return int(net.nodes[i].control({"cmd": "status"}, timeout_s=10.0)["consensus"]["finalized"] or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return -1


@pytest.mark.slow
def test_four_nodes_carry_spl_token_traffic_to_identical_bank_hashes(tmp_path: Path) -> None:
    base = _free_port_run(8)
    with open(tmp_path / "nodes.log", "w") as log, \
            ValidatorLocalnet(tmp_path, 4, echo=log, rpc_base_port=base) as net:
        assert net.genesis is not None
        alice, bob = user_keypairs(net.genesis.chain_id, 2)
        mint = Keypair.deterministic("tests/svm-multiproc/mint")
        a_ata = spl.associated_token_address(alice.pubkey, mint.pubkey)
        b_ata = spl.associated_token_address(bob.pubkey, mint.pubkey)
        _wait(lambda: min(_finalized(net, i) for i in range(4)) >= 2, "the 4 nodes to finalize a slot")

        def blockhash() -> bytes:
            v = _rpc(net, 0, "getLatestBlockhash", [{"commitment": "confirmed"}])
            return decode_address(v["result"]["value"]["blockhash"])

        def submit_until(raws: list[bytes], landed: Any, what: str) -> None:
            """Submit to rotating nodes (gossip may drop one), the same bytes each time (a
            signature lands at most once), until ``landed()``."""
            deadline = time.monotonic() + WAIT_S
            k = 0
            while time.monotonic() < deadline:
                for raw in raws:
                    net.nodes[k % 4].control({"cmd": "submit_tx", "tx_hex": raw.hex()}, timeout_s=20.0)
                    k += 1
                t = time.monotonic()
                while time.monotonic() - t < 8.0:
                    if landed():
                        return
                    time.sleep(0.5)
            raise AssertionError(f"timed out waiting for {what}")

        bh = blockhash()
        submit_until([spl.tx(alice, spl.create_mint(alice.pubkey, mint.pubkey, alice.pubkey), bh, [mint])],
                     lambda: _data(net, 0, mint.pubkey) is not None, "the mint")
        bh = blockhash()
        submit_until([spl.tx(alice, [spl.create_ata(alice.pubkey, alice.pubkey, mint.pubkey),
                                     spl.create_ata(alice.pubkey, bob.pubkey, mint.pubkey),
                                     spl.mint_to(mint.pubkey, a_ata, alice.pubkey, 1_000_000)], bh)],
                     lambda: (d := _data(net, 0, a_ata)) is not None and spl.token_amount(d) == 1_000_000,
                     "the associated token accounts and mint_to")
        bh = blockhash()
        xfer = spl.tx(alice, [spl.transfer(a_ata, b_ata, alice.pubkey, 250_000)], bh)
        submit_until([xfer], lambda: (d := _data(net, 0, b_ata)) is not None and spl.token_amount(d) == 250_000,
                     "the transfer")
        bh = blockhash()
        burn = spl.tx(bob, [spl.burn(b_ata, mint.pubkey, bob.pubkey, 50_000)], bh)
        too_much = spl.tx(alice, [spl.transfer(a_ata, b_ata, alice.pubkey, 10**9)], bh)
        bad_sig = base58.b58encode(too_much[1:65]).decode()

        def failed_landed() -> bool:
            v = _rpc(net, 0, "getSignatureStatuses", [[bad_sig]])["result"]["value"][0]
            return v is not None
        submit_until([burn, too_much], lambda: failed_landed() and spl.token_amount(_data(net, 0, b_ata) or bytes(165))
                     == 200_000, "the burn and the failing transfer")
        tx = _rpc(net, 0, "getTransaction", [bad_sig, {"encoding": "json", "commitment": "confirmed"}])["result"]
        assert tx["meta"]["err"] is not None and tx["meta"]["fee"] == 5_000
        token = encode_address(svm.SPL_TOKEN_PROGRAM_ID)
        assert tx["meta"]["logMessages"][-1] == f"Program {token} failed: custom program error: 0x1"
        pre, post = tx["meta"]["preBalances"][0], tx["meta"]["postBalances"][0]
        assert pre - post == 5_000  # the fee, and nothing else, left the payer

        # a program deployed through the upgradeable loader by `ambient-p2p program deploy`
        # (the Memo program's ELF, from the genesis programs), then called by a later transaction
        elf = tmp_path / "memo.so"
        elf.write_bytes(svm.genesis_programs()[svm.SPL_MEMO_PROGRAM_ID][1].data)
        keyfile, progfile = tmp_path / "alice.json", tmp_path / "program.json"
        write_keypair_file(keyfile, alice)
        program = Keypair.deterministic("tests/svm-multiproc/program")
        write_keypair_file(progfile, program)
        r = subprocess.run([sys.executable, "-m", "ambient_p2p", "program", "deploy", str(elf), "--keypair", str(keyfile),
                            "--program-keypair", str(progfile), "--url", f"http://127.0.0.1:{net.rpc_port(1)}"],
                           capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().splitlines()[-1] == encode_address(program.pubkey)
        call = loader.invoke(alice, program.pubkey, b"called on every node", blockhash(), [(alice.pubkey, True, False)])
        call_sig = base58.b58encode(call[1:65]).decode()
        submit_until([call], lambda: _rpc(net, 0, "getSignatureStatuses", [[call_sig]])["result"]["value"][0]
                     is not None, "the call of the deployed program")

        # every node finalizes past the token traffic with the same bank hash for every root,
        # and serves the same token state at finalized commitment
        slot = int(_rpc(net, 0, "getSlot", [{"commitment": "confirmed"}])["result"])
        _wait(lambda: min(_finalized(net, i) for i in range(4)) > slot + 2, f"all 4 to finalize past slot {slot}")
        chains = [_chain(net, i) for i in range(4)]
        top = min(max(c) for c in chains)
        common = [{s: h for s, h in c.items() if s <= top} for c in chains]
        assert all(c == common[0] for c in common) and all(h is not None for h in common[0].values())
        assert max(common[0]) > slot
        for i in range(4):
            st = _rpc(net, i, "getSignatureStatuses", [[call_sig]])["result"]["value"][0]
            assert st is not None and st["err"] is None, (i, st)
            d_a, d_b, d_m = (_data(net, i, k, "finalized") for k in (a_ata, b_ata, mint.pubkey))
            assert d_a is not None and d_b is not None and d_m is not None, i
            assert (spl.token_amount(d_a), spl.token_amount(d_b), spl.mint_supply(d_m)) == (750_000, 200_000, 950_000)
