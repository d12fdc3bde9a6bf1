"""``ambient-p2p bench pol``: proof-of-logits figures (spec/pol.md, "Measurements"): PoL
commit overhead as a fraction of generation time, validation time per position vs one full
generation, proof bytes per token, honest drift (a)-(e), honest acceptance over many
positions, and detection rates of cheating producers per tier. TOPLOC (optional, never a
runtime dependency) is run side by side when it can be imported. The experiments live in
:mod:`.polbench` and :mod:`.toploc_compare`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..commands.pol import add_model_args, load_from_args
from ..core import pol
from ..errors import UserError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_pol(args: argparse.Namespace) -> int:
    import torch

    from . import polbench

    cases = args.cases.split(",") if args.cases else list(polbench.DETECTION_CASES)
    unknown = sorted(set(cases) - set(polbench.DETECTION_CASES))
    if unknown:
        raise UserError(f"unknown case(s) {unknown}; choose from {','.join(polbench.DETECTION_CASES)}")
    if not 0 <= args.proofs <= len(polbench.SUBJECTS) * len(polbench.TEMPLATES):
        raise UserError(f"--proofs must be 0..{len(polbench.SUBJECTS) * len(polbench.TEMPLATES)} (0: no detection run)")
    if args.dtype != "float32":
        raise UserError("bench pol measures the fp32 tier; run it with --dtype float32")
    t0 = time.perf_counter()
    load0 = [round(v, 2) for v in os.getloadavg()]  # the machine's contention, with every figure
    lm = load_from_args(args)
    report: dict[str, Any] = {
        "model": lm.name,
        "model_id": lm.model_id.hex(),
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "constants": {
            "GRID_BITS": pol.GRID_BITS,
            "TOP_K": pol.TOP_K,
            "tau_units": {t.name: p.tau_units for t, p in pol.TIERS.items()},
            "DEFAULT_CHECKED_POSITIONS": pol.DEFAULT_CHECKED_POSITIONS,
        },
        "args": {k: v for k, v in vars(args).items() if k not in ("func", "_parser")},
    }
    _log(f"loaded {lm.name} in {time.perf_counter() - t0:.1f} s, {torch.get_num_threads()} thread(s)")

    if not args.skip_cost:
        chat = lm.encode_prompt("Write a short paragraph about why the sky is blue.")
        report["cost"] = polbench.cost_figures(lm, chat, args.cost_tokens, args.positions)
        _log("cost: " + json.dumps(report["cost"]))

    if args.drift_prompts:
        ids = [lm.encode_prompt(p, chat=False) for p in polbench.prompts(args.drift_prompts)]
        report["drift"] = [d.as_dict() for d in polbench.measure_drift(lm, ids, args.drift_tokens, _log)]
        for d in report["drift"]:
            _log(f"drift {d['name']}: max top-k {d['max_topk_nats']:.3g} nats, vocab {d['max_vocab_nats']:.3g}, {d['max_units']} units")

    if args.proofs and cases:
        ids = [lm.encode_prompt(p, chat=False) for p in polbench.prompts(args.proofs)]
        cache: dict[int, Any] = {}
        report["detection"] = []
        for case in cases:
            _log(f"case {case} ...")
            res = polbench.run_detection(lm, case, ids, args.tokens, args.positions, args.batch, cache, _log)
            report["detection"].append(res.as_dict())
            _log(json.dumps(res.as_dict()))
            if case == "honest" and args.alt_threads:
                threads = torch.get_num_threads()
                torch.set_num_threads(args.alt_threads)
                res2 = polbench.run_detection(lm, "honest", ids, args.tokens, args.positions, args.batch, cache, _log)
                torch.set_num_threads(threads)
                d = res2.as_dict()
                d["case"] = f"honest (validator threads {args.alt_threads}, miner threads {threads})"
                report["detection"].append(d)
                _log(json.dumps(d))

    if args.toploc:
        from . import toploc_compare

        try:
            report["toploc"] = toploc_compare.compare(lm, args, _log)
        except RuntimeError as exc:
            raise UserError(str(exc)) from None

    report["total_s"] = round(time.perf_counter() - t0, 1)
    report["load_average_1_5_15"] = {"start": load0, "end": [round(v, 2) for v in os.getloadavg()]}
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pol", help="proof of logits: overhead, validation cost, bytes, drift, detection")
    p.add_argument("--proofs", type=int, default=200, help="proofs per detection case (default 200; 0 skips detection)")
    p.add_argument("--tokens", type=int, default=12, help="output tokens per detection proof (default 12)")
    p.add_argument("--positions", type=int, default=pol.DEFAULT_CHECKED_POSITIONS, help="positions challenged per proof")
    p.add_argument("--batch", type=int, default=50, help="proofs generated per padded batch")
    p.add_argument("--cases", default=None, help="comma-separated subset of detection cases")
    p.add_argument("--alt-threads", type=int, default=2, help="re-validate honest proofs with this many threads (0: skip)")
    p.add_argument("--drift-prompts", type=int, default=16, help="prompts for drift measurements (0: skip)")
    p.add_argument("--drift-tokens", type=int, default=24, help="tokens per drift prompt")
    p.add_argument("--cost-tokens", type=int, default=64, help="tokens for the overhead/timing figures")
    p.add_argument("--skip-cost", action="store_true", help="skip the overhead/timing figures")
    p.add_argument("--toploc", action="store_true", help="also run TOPLOC side by side (needs the toploc package)")
    p.add_argument("--toploc-proofs", type=int, default=50, help="proofs per case for the TOPLOC comparison")
    p.add_argument("--toploc-tokens", type=int, default=32, help="tokens per TOPLOC proof")
    p.add_argument("--json", default=None, help="also write the report here")
    add_model_args(p)
    p.set_defaults(func=cmd_pol)
