"""Dynamic-difficulty vectors (spec/difficulty.md).

``adjust/<case>``: input.json {positions, validators, results, rejected, drawn_verdicts,
missed_verdicts}; output {positions, validators, rule}. Must reject (``bad-params``): a
difficulty outside its bounds, negative counts, rejected > results or missed > drawn.

``escape/<case>``: input.json {tokens, falsified, positions, validators}; output
{numerator, denominator} (decimal strings of the reduced fraction ``(C(n - m, p) / C(n,
p))^k``, ``p = min(positions, tokens)``). Must reject (``bad-params``): tokens < 1,
falsified outside 0..tokens, positions or validators < 1.
"""

from __future__ import annotations

import json
from typing import Any

from ...core.difficulty import Difficulty, DifficultyError, EpochObservation, adjust, escape_probability
from .. import Case, Rejected, case_from_run

FORMAT = "difficulty"


def _nat(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{v!r} is not an integer")
    return v


def run(handler: str, data: bytes) -> Any:
    try:
        v = json.loads(data)
        if handler == "adjust":
            d = Difficulty(_nat(v["positions"]), _nat(v["validators"]))
            obs = EpochObservation(_nat(v["results"]), _nat(v["rejected"]), _nat(v["drawn_verdicts"]),
                                   _nat(v["missed_verdicts"]))
            nxt, rule = adjust(d, obs)
            return {"positions": nxt.positions, "validators": nxt.validators, "rule": rule}
        if handler == "escape":
            f = escape_probability(_nat(v["tokens"]), _nat(v["falsified"]), _nat(v["positions"]),
                                   _nat(v["validators"]))
            return {"numerator": str(f.numerator), "denominator": str(f.denominator)}
    except (ValueError, KeyError, TypeError, DifficultyError) as exc:
        raise Rejected("bad-params", str(exc)) from None
    raise Rejected("unknown-handler", handler)


def _case(handler: str, name: str, desc: str, inp: dict[str, Any]) -> Case:
    data = (json.dumps(inp, indent=2, sort_keys=True) + "\n").encode()
    return case_from_run(run, handler, name, data, desc, "input.json")


def cases() -> list[Case]:
    def adj(name: str, desc: str, p: int, k: int, results: int, rejected: int, drawn: int, missed: int) -> Case:
        return _case("adjust", name, desc, {"positions": p, "validators": k, "results": results, "rejected": rejected,
                                            "drawn_verdicts": drawn, "missed_verdicts": missed})

    def esc(name: str, desc: str, n: int, m: int, p: int, k: int) -> Case:
        return _case("escape", name, desc, {"tokens": n, "falsified": m, "positions": p, "validators": k})

    return [
        adj("too-few-results", "7 results: no change", 8, 3, 7, 7, 21, 0),
        adj("cheating-more-positions", "2 % rejected: positions double", 8, 3, 100, 2, 300, 0),
        adj("cheating-positions-capped", "positions double up to the maximum", 48, 3, 100, 50, 300, 0),
        adj("cheating-more-validators", "positions at the maximum: one more validator", 64, 3, 100, 2, 300, 0),
        adj("at-maximum", "both at the maximum: no change", 64, 7, 100, 90, 700, 0),
        adj("boundary-1-percent", "exactly 1 % rejected is not above the threshold: steady", 8, 3, 100, 1, 300, 0),
        adj("cheating-but-overloaded", "cheating seen, but 11 % of verdicts missing: no increase", 8, 3, 100, 5, 300, 33),
        adj("overloaded-fewer-validators", "overloaded, no cheating: one validator fewer", 8, 5, 100, 0, 500, 60),
        adj("overloaded-fewer-positions", "overloaded at the minimum validators: positions halve", 9, 3, 100, 0, 300, 40),
        adj("quiet-fewer-validators", "a clean epoch: one validator fewer first", 16, 4, 50, 0, 200, 0),
        adj("quiet-fewer-positions", "a clean epoch at 3 validators: one position fewer", 16, 3, 50, 0, 150, 0),
        adj("quiet-at-minimum", "a clean epoch at the minimum: stays", 4, 3, 50, 0, 150, 0),
        adj("positions-below-minimum", "3 positions: must reject", 3, 3, 50, 0, 150, 0),
        adj("rejected-above-results", "more rejected than results: must reject", 8, 3, 5, 6, 15, 0),
        esc("one-of-64-start", "1 false token of 64, 8 positions x 3 validators", 64, 1, 8, 3),
        esc("ten-percent-of-64", "7 false tokens of 64, 8 x 3", 64, 7, 8, 3),
        esc("half-of-256-after", "128 of 256 false, 16 x 3", 256, 128, 16, 3),
        esc("all-false", "every token false: never escapes", 64, 64, 4, 3),
        esc("none-false", "nothing false: always 'escapes'", 64, 0, 8, 3),
        esc("positions-above-tokens", "more positions than tokens: every token is opened", 5, 1, 8, 3),
        esc("falsified-above-tokens", "65 false tokens of 64: must reject", 64, 65, 8, 3),
    ]
