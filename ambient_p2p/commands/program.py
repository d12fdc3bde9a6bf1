"""``ambient-p2p program deploy FILE --keypair K``: deploy an SBF program (an ELF ``.so`` built
elsewhere) through a node's JSON-RPC with the upgradeable BPF loader (spec/svm.md "Loaders and
feature set"), as ``solana program deploy`` does: create and initialize a buffer, write the ELF
in chunks, create the program account and ``DeployWithMaxDataLen``. The keypair pays and
becomes the upgrade authority; the program address is ``--program-keypair``'s (a new random
one, written next to FILE as ``FILE-keypair.json``, when not given). Prints the program
address. The program can be called from the slot after the one that deployed it.

Example (the Memo program's ELF, from the genesis programs, deployed again at a new address):

    ambient-p2p program deploy memo.so --keypair ~/.config/ambient/id.json --url http://127.0.0.1:8899
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import UserError

DEFAULT_URL = "http://127.0.0.1:8899"
#: How long each stage may take to land (a stage is a few slots on a healthy chain)
STAGE_TIMEOUT_S = 90.0
#: Largest ELF accepted (the snapshot message ceiling, spec/svm.md "Not yet")
MAX_ELF_BYTES = 512 * 1024


def register(sub: Any) -> None:
    p = sub.add_parser("program", help="deploy SBF programs (the upgradeable BPF loader) through a node",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="program_cmd", required=True)
    d = psub.add_parser("deploy", help="deploy an ELF .so through a node's JSON-RPC")
    d.add_argument("file", help="the program's ELF (.so)")
    d.add_argument("--keypair", required=True, metavar="FILE", help="payer and upgrade authority (Solana keypair file)")
    d.add_argument("--program-keypair", default=None, metavar="FILE",
                   help="the program's address keypair (default: a new one, written to FILE-keypair.json)")
    d.add_argument("--url", default=DEFAULT_URL, help=f"the node's JSON-RPC (default {DEFAULT_URL})")
    d.set_defaults(func=cmd_deploy)


def _rpc(url: str, method: str, params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise UserError(f"the node at {url} did not answer {method}: {exc}") from None
    if "error" in out:
        raise UserError(f"{method}: {out['error'].get('message', out['error'])}")
    return out["result"]


def cmd_deploy(args: argparse.Namespace) -> int:
    from ..core.crypto import (
        CryptoError,
        Keypair,
        decode_address,
        encode_address,
        read_keypair_file,
        write_keypair_file,
    )
    from ..devnet import loader

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    elf = path.read_bytes()
    if not elf.startswith(b"\x7fELF"):
        raise UserError(f"{path} is not an ELF file")
    if len(elf) > MAX_ELF_BYTES:
        raise UserError(f"{path} is {len(elf)} bytes; at most {MAX_ELF_BYTES} are supported")
    try:
        payer = read_keypair_file(args.keypair)
        program = read_keypair_file(args.program_keypair) if args.program_keypair else None
    except (OSError, ValueError, CryptoError) as exc:
        raise UserError(f"cannot read a keypair: {exc}") from None
    def blockhash() -> bytes:  # finalized: every bank the node may check the transaction against knows it
        return decode_address(_rpc(args.url, "getLatestBlockhash", [{"commitment": "finalized"}])["value"]["blockhash"])

    if program is None:
        program = Keypair.generate()
        out = path.with_name(path.stem + "-keypair.json")
        write_keypair_file(out, program)
        print(f"program keypair written to {out}")
    buffer = Keypair.generate()
    stages = len(loader.deploy_transactions(payer, program, buffer, elf, bytes(32)))
    for n in range(1, stages + 1):
        stage = loader.deploy_transactions(payer, program, buffer, elf, blockhash())[n - 1]  # a fresh blockhash each
        sigs = []
        for raw in stage:
            sigs.append(_rpc(args.url, "sendTransaction", [base64.b64encode(raw).decode(),
                                                           {"encoding": "base64", "preflightCommitment": "confirmed"}]))
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while True:
            statuses = _rpc(args.url, "getSignatureStatuses", [sigs])["value"]
            failed = [s["err"] for s in statuses if s is not None and s.get("err") is not None]
            if failed:
                raise UserError(f"deploy stage {n} of {stages} failed: {failed[0]}")
            if all(s is not None and s.get("confirmationStatus") in ("confirmed", "finalized") for s in statuses):
                break
            if time.monotonic() > deadline:
                raise UserError(f"deploy stage {n} of {stages} did not confirm within {STAGE_TIMEOUT_S:g} s")
            time.sleep(0.4)
        print(f"stage {n}/{stages}: {len(stage)} transaction(s) confirmed")
    print(encode_address(program.pubkey))
    return 0
