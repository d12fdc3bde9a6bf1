// Dynamic difficulty of the Logit Pool (spec/difficulty.md), from the spec text only.
import { type Json, Reject, int, reject } from "./util.js";
import { type Handler, jsonInput, ok } from "./handler.js";

const MIN_POSITIONS = 4n;
const MAX_POSITIONS = 64n;
const MIN_VALIDATORS = 3n;
const MAX_VALIDATORS = 7n;

function guarded(f: Handler): Handler {
  return (input, ctx) => {
    try {
      return f(input, ctx);
    } catch (e) {
      if (e instanceof Reject) throw e;
      return reject("bad-params", e instanceof Error ? e.message : String(e));
    }
  };
}
const nat = (x: Json): bigint => {
  const v = int(x);
  if (v < 0n) reject("bad-params", "negative");
  return v;
};

const adjust: Handler = guarded((input) => {
  const j = jsonInput(input);
  const p = int(j.positions);
  const k = int(j.validators);
  const [results, rejected, drawn, missed] = [j.results, j.rejected, j.drawn_verdicts, j.missed_verdicts].map(nat);
  if (p < MIN_POSITIONS || p > MAX_POSITIONS || k < MIN_VALIDATORS || k > MAX_VALIDATORS) reject("bad-params", "knob out of bounds");
  if (rejected > results || missed > drawn) reject("bad-params", "rejected > results or missed > drawn");
  const r = adjustKnobs(p, k, results, rejected, drawn, missed);
  return ok({ positions: r.positions, validators: r.validators, rule: r.rule });
});

/** spec/difficulty.md "The rule": the next epoch's knobs from one epoch's observation. */
export function adjustKnobs(p: bigint, k: bigint, results: bigint, rejected: bigint, drawn: bigint, missed: bigint): { positions: bigint; validators: bigint; rule: string } {
  let rule: string;
  if (results < 8n) rule = "too-few-results";
  else {
    const rejectBps = (rejected * 10_000n) / results;
    const missedBps = drawn > 0n ? (missed * 10_000n) / drawn : 0n;
    const overloaded = missedBps > 1_000n;
    if (rejectBps > 100n) {
      if (overloaded) rule = "cheating-but-overloaded";
      else if (p < MAX_POSITIONS) {
        p = p * 2n < MAX_POSITIONS ? p * 2n : MAX_POSITIONS;
        rule = "cheating-more-positions";
      } else if (k < MAX_VALIDATORS) {
        k += 1n;
        rule = "cheating-more-validators";
      } else rule = "at-maximum";
    } else if (overloaded) {
      if (k > MIN_VALIDATORS) {
        k -= 1n;
        rule = "overloaded-fewer-validators";
      } else {
        p = p / 2n > MIN_POSITIONS ? p / 2n : MIN_POSITIONS;
        rule = "overloaded-fewer-positions";
      }
    } else if (rejected === 0n) {
      if (k > MIN_VALIDATORS) {
        k -= 1n;
        rule = "quiet-fewer-validators";
      } else {
        p = p - 1n > MIN_POSITIONS ? p - 1n : MIN_POSITIONS;
        rule = "quiet-fewer-positions";
      }
    } else rule = "steady";
  }
  return { positions: p, validators: k, rule };
}

function binom(n: bigint, r: bigint): bigint {
  if (r < 0n || r > n) return 0n;
  let out = 1n;
  for (let i = 1n; i <= r; i++) out = (out * (n - r + i)) / i;
  return out;
}
function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

const escape: Handler = guarded((input) => {
  const j = jsonInput(input);
  const n = int(j.tokens);
  const m = int(j.falsified);
  const positions = int(j.positions);
  const k = int(j.validators);
  if (n < 1n || m < 0n || m > n || positions < 1n || k < 1n) reject("bad-params", "need n >= 1, 0 <= m <= n, p, k >= 1");
  const p = positions < n ? positions : n;
  let num = binom(n - m, p) ** k;
  let den = binom(n, p) ** k;
  const g = gcd(num, den);
  if (g > 1n) {
    num /= g;
    den /= g;
  }
  if (num === 0n) den = 1n;
  return ok({ numerator: num.toString(), denominator: den.toString() });
});

export const DIFFICULTY_HANDLERS: { [key: string]: Handler } = {
  "difficulty/adjust": adjust,
  "difficulty/escape": escape,
};
