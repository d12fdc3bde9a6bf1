"""``ambient-p2p bench difficulty``: how likely a cheating miner escapes the Logit Pool's
checks, before and after the dynamic difficulty reacts (spec/difficulty.md).

For a miner that falsifies a fraction f in {1 %, 10 %, 50 %, 100 %} of an answer's tokens,
the exact escape probability ``(C(n - m, p) / C(n, p))^k`` (core/difficulty.py) at the
starting difficulty, after one epoch in which cheating was observed, and at the rule's
maximum; next to each exact figure, the in-run reference: a Monte Carlo estimate drawing
positions with the chain's own challenge derivation (core/pol.py ``select_positions``, random
seeds), which must agree within its sampling error.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

from ..errors import UserError

FRACTIONS_BPS = (100, 1_000, 5_000, 10_000)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("difficulty", help="escape probability of a cheating miner before and after the dynamic "
                                          "difficulty adjusts (exact, with a Monte Carlo check)")
    p.add_argument("--tokens", type=int, default=256, help="output tokens per answer (default 256)")
    p.add_argument("--trials", type=int, default=4000, help="Monte Carlo trials per cell (default 4000; 0: none)")
    p.add_argument("--seed", type=int, default=1, help="Monte Carlo seed (default 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(func=cmd_difficulty)


def _monte_carlo(rng: random.Random, n: int, m: int, positions: int, validators: int, trials: int) -> float:
    from ..core.pol import select_positions

    bad = set(range(m))  # which tokens are false does not matter: positions are uniform
    escaped = 0
    for _ in range(trials):
        if all(not bad.intersection(select_positions(rng.randbytes(32), n, positions)) for _ in range(validators)):
            escaped += 1
    return escaped / trials


def cmd_difficulty(args: argparse.Namespace) -> int:
    from ..core import difficulty as D

    if args.tokens < 1 or args.tokens > 4096:
        raise UserError("--tokens must be in 1..4096")
    if args.trials < 0:
        raise UserError("--trials must be >= 0")
    start = D.Difficulty()
    cheating = D.EpochObservation(results=100, rejected=5, drawn_verdicts=300, missed_verdicts=0)
    after, why = D.adjust(start, cheating)
    top = start
    while True:
        nxt, _ = D.adjust(top, cheating)
        if nxt == top:
            break
        top = nxt
    settings = [("start", start), (f"after 1 epoch ({why})", after), ("maximum", top)]
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    print(f"answer of {args.tokens} tokens; escape = no drawn validator opens a falsified token")
    for label, d in settings:
        print(f"\n{label}: {d.positions} positions x {d.validators} validators")
        print(f"{'falsified':>10} {'tokens':>7} {'exact escape':>14} {'Monte Carlo':>14} {'MC 3-sigma':>11}")
        for f in FRACTIONS_BPS:
            m = D.falsified_positions(args.tokens, f)
            exact = D.escape_probability(args.tokens, m, d.positions, d.validators)
            mc = _monte_carlo(rng, args.tokens, m, d.positions, d.validators, args.trials) if args.trials else None
            sigma = 3 * math.sqrt(float(exact) * (1 - float(exact)) / args.trials) if args.trials else 0.0
            mc_text = f"{mc:14.6f} {sigma:11.6f}" if mc is not None else f"{'-':>14} {'-':>11}"
            print(f"{f / 100:9.0f}% {m:7d} {float(exact):14.3e} {mc_text}")
            rows.append({"setting": label, "positions": d.positions, "validators": d.validators,
                         "fraction_bps": f, "falsified": m, "escape_exact": str(exact),
                         "escape": float(exact), "monte_carlo": mc, "mc_3sigma": sigma})
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": args.tokens, "trials": args.trials, "rows": rows},
                                              indent=2) + "\n")
    return 0
