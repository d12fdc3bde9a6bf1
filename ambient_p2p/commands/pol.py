"""`ambient-p2p pol`: generate with a proof of logits, and verify one (spec/pol.md).

``prove`` runs the model, fingerprints every token, signs the commitment and writes the
miner's whole record (:class:`ambient_p2p.core.pol.PolProof`) to a CBOR file. ``verify``
plays validator against that file: it draws positions from a challenge seed, asks the
record for openings, re-runs one forward pass and prints the signed verdict with timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..core import crypto, pol
from ..errors import UserError

DEV_MINER_LABEL = "pol-dev-miner"
DEV_VALIDATOR_LABEL = "pol-dev-validator"


def default_threads() -> int:
    """Half the logical CPUs (at least 1): decode is memory-bound, and oversubscribing
    hyper-threads or a shared machine makes it several times slower (spec/pol.md)."""
    return max(1, (os.cpu_count() or 2) // 2)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default' (embedded SmolLM2-135M-Instruct), 'random:SEED', or a GGUF path")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="compute dtype (float32 = fp32 tier)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: half the logical CPUs)")


def load_from_args(args: argparse.Namespace) -> Any:
    """Import torch lazily and load the model the arguments name."""
    import torch

    from ..model import gguf_loader, runner

    threads = args.threads if args.threads is not None else default_threads()
    if threads < 1:
        raise UserError("--threads must be >= 1")
    torch.set_num_threads(threads)
    if args.model not in ("default",) and not args.model.startswith("random:") and not Path(args.model).is_file():
        raise UserError(f"model file {args.model} does not exist (use 'default' or a GGUF path)")
    if args.model.startswith("random:") and not args.model.split(":", 1)[1].isdigit():
        raise UserError("random model spec is random:SEED with a non-negative integer seed")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but torch sees no CUDA device")
    try:
        return runner.load_model(args.model, dtype=getattr(torch, args.dtype), device=args.device)
    except gguf_loader.GgufError as exc:
        raise UserError(str(exc)) from None


def load_keypair(path: str | None, label: str) -> crypto.Keypair:
    if path is None:
        print(f"warning: no --keypair given; using the deterministic dev key '{label}' (anyone can recompute it)", file=sys.stderr)
        return crypto.Keypair.deterministic(label, 0)
    try:
        return crypto.read_keypair_file(path)
    except crypto.CryptoError as exc:
        raise UserError(str(exc)) from None


def cmd_prove(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.codec import encode
    from ..model import runner

    if not 1 <= args.max_tokens <= pol.MAX_OUTPUT_TOKENS:
        raise UserError(f"--max-tokens must be 1..{pol.MAX_OUTPUT_TOKENS}")
    if not 0 <= args.temperature <= pol.MAX_TEMPERATURE_MILLI / pol.TEMPERATURE_SCALE:
        raise UserError("--temperature must be in 0..10")
    temp_milli = round(args.temperature * pol.TEMPERATURE_SCALE)
    seed = crypto.sha256(b"ambient/pol-cli-seed/v1\x00", str(args.seed).encode()) if temp_milli else pol.ZERO_HASH
    kp = load_keypair(args.keypair, DEV_MINER_LABEL)
    t0 = time.perf_counter()
    lm = load_from_args(args)
    load_s = time.perf_counter() - t0
    prompt = lm.encode_prompt(args.prompt, chat=not args.raw)
    if len(prompt) > pol.MAX_PROMPT_TOKENS:
        raise UserError(f"prompt is {len(prompt)} tokens; the limit is {pol.MAX_PROMPT_TOKENS}")
    tier = pol.Tier.FP32 if args.dtype == "float32" else pol.Tier.BF16
    with tqdm(total=args.max_tokens, desc="generating", unit="tok", file=sys.stderr, disable=args.quiet) as bar:
        proof, gen, commit_s = runner.prove(
            lm, kp, prompt, args.max_tokens, tier=tier, temp_milli=temp_milli, sample_seed=seed, on_token=lambda _t: bar.update(1)
        )
    data = encode(proof)
    Path(args.out).write_bytes(data)
    overhead = (gen.fingerprint_s + commit_s) / gen.total_s
    print(lm.decode(gen.output))
    print(
        f"model {lm.name} ({lm.model_id.hex()[:16]}..), tier {tier.name}, {len(gen.output)} tokens in "
        f"{gen.total_s:.1f} s (+{load_s:.1f} s load); PoL overhead {overhead * 100:.2f}% of generation; "
        f"root {proof.commitment.root.hex()[:16]}..; wrote {len(data)} bytes to {args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..core.codec import DecodeError, decode, encode
    from ..model import validate

    try:
        proof = decode(Path(args.proof).read_bytes(), expected=pol.PolProof)
    except OSError as exc:
        raise UserError(f"cannot read {args.proof}: {exc.strerror}") from None
    except DecodeError as exc:
        raise UserError(f"{args.proof} is not a PoL proof: {exc}") from None
    if not 1 <= args.positions <= pol.MAX_CHECKED_POSITIONS:
        raise UserError(f"--positions must be 1..{pol.MAX_CHECKED_POSITIONS}")
    if args.poh_hash is not None:
        try:
            poh = bytes.fromhex(args.poh_hash)
        except ValueError:
            poh = b""
        if len(poh) != 32:
            raise UserError("--poh-hash must be 64 hex digits")
    else:
        poh = os.urandom(32)  # stands in for a PoH hash recorded after the commitment
    vk = load_keypair(args.keypair, DEV_VALIDATOR_LABEL)
    t0 = time.perf_counter()
    lm = load_from_args(args)
    load_s = time.perf_counter() - t0
    verdict, res = validate.challenge_and_validate(lm, proof, later_poh_hash=poh, validator=vk, num_positions=args.positions)
    word = "ACCEPT" if verdict.accept else "REJECT"
    detail = f": {res.check.detail}" if res.check.detail else ""
    print(f"{word} ({verdict.reason}){detail}")
    print(
        f"positions {list(res.positions)} of {proof.commitment.num_tokens}; max deviation {res.max_dev_units} "
        f"grid units (tau {pol.TIERS[pol.Tier(proof.commitment.tier)].tau_units}); forward pass {res.forward_s:.2f} s, "
        f"validation {res.total_s:.2f} s (+{load_s:.1f} s load)"
    )
    if args.verdict_out:
        Path(args.verdict_out).write_bytes(encode(verdict))
    return 0 if verdict.accept else 1


def cmd_draw(args: argparse.Namespace) -> int:
    """Print the Logit Pool's draw of a query from the running node's chain data."""
    import json

    from ..core.crypto import CryptoError, decode_address

    try:
        decode_address(args.query)
    except (CryptoError, ValueError):
        raise UserError(f"QUERY must be a base58 query id, not {args.query!r}") from None
    from ..net.node import control_request

    node = Path(args.node)
    try:
        out = control_request(node, {"cmd": "pool_draw", "query": args.query})
    except OSError as exc:
        raise UserError(f"no node is running in {node} ({exc.strerror or exc})") from None
    if not out.get("ok"):
        raise UserError(f"the node refused pool_draw: {out.get('error')}")
    if args.json:
        print(json.dumps(out, indent=1, sort_keys=True))
        return 0
    q, d = out.get("query"), out.get("draw")
    if q is None:
        raise UserError(f"no query {args.query} on the node's chain (bank slot {out.get('bank_slot')})")
    print(f"query {args.query}: {q['status']}, result slot {q['result_slot']}, miner {q['winner']}, "
          f"{q['num_tokens']} tokens (bank slot {out['bank_slot']})")
    if d is None:
        print("no draw yet: the result has not landed or its beacon slot is not an ancestor")
        return 0
    print(f"draw {'stored' if d['stored'] else 'derived'}: round {d['round']}, beacon slot {d['beacon_slot']} "
          f"({d['beacon'][:16]}...), seed {d['seed'][:16]}..., verdicts until slot {d['verify_end_slot']}")
    for v in d["validators"]:
        print(f"  {v['validator']}  round {v['round']}  positions {v['positions']}  verdict {v['verdict'] or '-'}")
    return 0


def register(subparsers: Any) -> None:
    grp = subparsers.add_parser("pol", help="proof of logits: prove (generate + commit) and verify")
    grp.set_defaults(_parser=grp)
    sub = grp.add_subparsers(dest="pol_command", metavar="SUBCOMMAND")

    p = sub.add_parser("prove", help="generate an answer and write its PoL proof")
    p.add_argument("--prompt", required=True, help="user prompt (chat-formatted for the default model)")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); >0 = seeded top-k sampling")
    p.add_argument("--seed", default="0", help="sampling seed label (with --temperature > 0)")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--out", required=True, help="where to write the proof (CBOR)")
    p.add_argument("--keypair", default=None, help="miner keypair file (Solana JSON); default: a dev key")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=cmd_prove)

    v = sub.add_parser("verify", help="challenge a proof file at random positions and print the verdict")
    v.add_argument("proof", help="proof file written by 'pol prove'")
    v.add_argument("--positions", type=int, default=pol.DEFAULT_CHECKED_POSITIONS, help="positions to open (difficulty)")
    v.add_argument("--poh-hash", default=None, help="64-hex challenge PoH hash (default: random)")
    v.add_argument("--keypair", default=None, help="validator keypair file (Solana JSON); default: a dev key")
    v.add_argument("--verdict-out", default=None, help="also write the signed verdict (CBOR) here")
    add_model_args(v)
    v.set_defaults(func=cmd_verify)

    d = sub.add_parser("draw", help="print the validators and positions drawn to check a query's result "
                                    "(spec/logit_pool.md), from the running node's chain")
    d.add_argument("query", metavar="QUERY", help="the query id (base58, as `ambient-p2p query` prints it)")
    d.add_argument("--node", "--ledger", "--data-dir", dest="node", default="ambient-node", metavar="DIR",
                   help="the running node's directory (default ./ambient-node)")
    d.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    d.set_defaults(func=cmd_draw)
