// LStake formula (spec/lstake.md "Accounting", "Slashing"), work accounts in the bank
// (spec/lstake.md "Work accounts in the bank") and inflation rewards (spec/rewards.md).
// Written from the spec text only; integers are bigint throughout.
import { type Json, Reject, arr, cmpBytes, concat, hex, int, obj, reject, sha256, str, u32le, u64le, unhex, utf8, readU64le } from "./util.js";
import { b58, unb58 } from "./crypto.js";
import { type Handler, jsonInput, ok } from "./handler.js";

const U64 = 1n << 64n;

/** Run `f`; any non-Reject error (malformed input) becomes a reject with `code`. */
function guarded(code: string, f: Handler): Handler {
  return (input, ctx) => {
    try {
      return f(input, ctx);
    } catch (e) {
      if (e instanceof Reject) throw e;
      return reject(code, e instanceof Error ? e.message : String(e));
    }
  };
}

const nat = (x: Json, what = "integer"): bigint => {
  const v = int(x, what);
  if (v < 0n) throw new Error(`${what} is negative`);
  return v;
};

const sortedKeys = <T>(m: Map<string, T>): string[] =>
  [...m.keys()].sort((a, b) => cmpBytes(unhex(a), unhex(b)));

// ------------------------------------------------------------------ LStake formula
const UNITS: { [kind: string]: [bigint, boolean] } = {
  "inference-tokens": [1n, true],
  "positions-validated": [2n, true],
  "training-steps": [1n, true],
  "leader-slots": [64n, false],
  votes: [1n, false],
};
const BOOTSTRAP_FADE_UNITS = 65_536n;

type Bucket = { credits: bigint; slashes: bigint; pool: bigint };

class Ledger {
  buckets = new Map<string, Map<bigint, Bucket>>();
  forfeits = new Map<string, bigint[]>();
  constructor(
    readonly short: bigint,
    readonly medium: bigint,
    readonly shortBps: bigint,
    readonly mediumBps: bigint,
    readonly bootstrap: Map<string, bigint>,
  ) {}
  bucket(id: string, e: bigint): Bucket {
    let per = this.buckets.get(id);
    if (!per) this.buckets.set(id, (per = new Map()));
    let b = per.get(e);
    if (!b) per.set(e, (b = { credits: 0n, slashes: 0n, pool: 0n }));
    return b;
  }
  cut(id: string, e: bigint): bigint {
    let c = -1n;
    for (const s of this.forfeits.get(id) ?? []) if (s <= e && s > c) c = s;
    return c;
  }
  W(id: string, e: bigint, n: bigint): bigint {
    const lo = e - n > this.cut(id, e) ? e - n : this.cut(id, e);
    let t = 0n;
    for (const [ep, b] of this.buckets.get(id) ?? []) if (lo < ep && ep <= e) t += b.credits - b.slashes;
    return t > 0n ? t : 0n;
  }
  P(e: bigint): bigint {
    let t = 0n;
    for (const [id, per] of this.buckets) {
      const c = this.cut(id, e);
      const lo = e - this.medium > c ? e - this.medium : c;
      for (const [ep, b] of per) if (lo < ep && ep <= e) t += b.pool;
    }
    return t;
  }
  B(id: string, e: bigint, p: bigint): bigint {
    for (const s of this.forfeits.get(id) ?? []) if (e - this.medium < s && s <= e) return 0n;
    return ((this.bootstrap.get(id) ?? 0n) * BOOTSTRAP_FADE_UNITS) / (BOOTSTRAP_FADE_UNITS + p);
  }
  lstake(id: string, e: bigint, p: bigint): bigint {
    return this.B(id, e, p) + (this.shortBps * this.W(id, e, this.short) + this.mediumBps * this.W(id, e, this.medium)) / 10_000n;
  }
}

const formula: Handler = guarded("bad-params", (input) => {
  const j = jsonInput(input);
  const p = obj(j.params);
  const [s, m, sb, mb] = ["short_window_epochs", "medium_window_epochs", "short_weight_bps", "medium_weight_bps"].map((k) => nat(p[k], k));
  if (!(1n <= s && s <= m)) reject("bad-params", "need 1 <= short <= medium");
  if (sb + mb !== 10_000n) reject("bad-params", "weights must sum to 10,000");
  const boot = new Map<string, bigint>();
  for (const [k, v] of Object.entries(obj(j.bootstrap))) boot.set(hex(unb58(k)), nat(v));
  const led = new Ledger(s, m, sb, mb, boot);
  for (const o of arr(j.ops)) {
    const op = obj(o);
    const id = hex(unb58(str(op.identity)));
    const e = nat(op.epoch, "epoch");
    const kind = str(op.op);
    if (kind === "credit") {
      const unit = UNITS[str(op.kind)];
      if (!unit) reject("bad-params", `unknown kind ${str(op.kind)}`);
      const units = nat(op.amount, "amount") * unit[0];
      const b = led.bucket(id, e);
      b.credits += units;
      if (unit[1]) b.pool += units;
    } else if (kind === "slash") {
      led.bucket(id, e).slashes += nat(op.units, "units");
    } else if (kind === "forfeit") {
      const l = led.forfeits.get(id) ?? [];
      l.push(e);
      led.forfeits.set(id, l);
    } else reject("bad-params", `unknown op ${kind}`);
  }
  const ids = new Set<string>([...boot.keys(), ...led.buckets.keys()]);
  const epochs = arr(j.epochs).map((x) => nat(x, "epoch"));
  return ok({
    epochs: epochs.map((e) => {
      const pw = led.P(e);
      const snap: { [k: string]: Json } = {};
      for (const id of [...ids].sort((a, b) => cmpBytes(unhex(a), unhex(b)))) {
        const v = led.lstake(id, e, pw);
        if (v > 0n) snap[b58(unhex(id))] = v;
      }
      return { epoch: e, pool_work: pw, lstake: snap };
    }),
  });
});

// ------------------------------------------------------------------ rewards
const INITIAL = 80_000_000n;
const TERMINAL = 15_000_000n;
const YEAR_US = 31_556_925_993_600n;
const DENOM = 1_000_000_000n;

function yearRate(y: bigint): bigint {
  let r = INITIAL;
  for (let i = 0n; i < y && r > TERMINAL; i++) r = (r * 85n) / 100n;
  return r > TERMINAL ? r : TERMINAL;
}
function epochRate(e: bigint, spe: bigint, slotUs: bigint): bigint {
  const t = e * spe * slotUs;
  const y = t / YEAR_US;
  const into = t % YEAR_US;
  const r0 = yearRate(y);
  const r1 = yearRate(y + 1n);
  return r0 - ((r0 - r1) * into) / YEAR_US;
}
function issuance(cap: bigint, e: bigint, spe: bigint, slotUs: bigint): bigint {
  return (cap * epochRate(e, spe, slotUs) * spe * slotUs) / (DENOM * YEAR_US);
}
/** spec/rewards.md "The split": floor shares, leftover lamports to the largest remainders, ties to the smaller identity. */
function split(amount: bigint, units: Map<string, bigint>): Map<string, bigint> {
  const earners = [...units].filter(([, u]) => u > 0n);
  const total = earners.reduce((a, [, u]) => a + u, 0n);
  const out = new Map<string, bigint>();
  if (total === 0n) return out;
  let left = amount;
  for (const [k, u] of earners) {
    const v = (amount * u) / total;
    out.set(k, v);
    left -= v;
  }
  earners.sort(([ka, ua], [kb, ub]) => {
    const ra = (amount * ua) % total;
    const rb = (amount * ub) % total;
    return ra !== rb ? (rb > ra ? 1 : -1) : cmpBytes(unhex(ka), unhex(kb));
  });
  for (let i = 0n; i < left; i++) {
    const k = earners[Number(i)][0];
    out.set(k, out.get(k)! + 1n);
  }
  for (const [k, v] of [...out]) if (v === 0n) out.delete(k);
  return out;
}

type Rewards = { epoch: bigint; cap: bigint; rate: bigint; issuance: bigint; pools: bigint[]; payouts: Map<string, bigint>[] };

function epochRewards(epoch: bigint, cap: bigint, spe: bigint, slotUs: bigint, pool: Map<string, bigint>, lead: Map<string, bigint>,
  votes: Map<string, bigint>, weights: Map<string, bigint>): Rewards {
  const iss = issuance(cap, epoch, spe, slotUs);
  const lp = (iss * 6000n) / 10_000n;
  const ld = (iss * 2000n) / 10_000n;
  const vt = iss - lp - ld;
  const counted = new Map([...votes].filter(([k]) => (weights.get(k) ?? 0n) > 0n));
  return { epoch, cap, rate: epochRate(epoch, spe, slotUs), issuance: iss, pools: [lp, ld, vt], payouts: [split(lp, pool), split(ld, lead), split(vt, counted)] };
}

const unitMap = (x: Json): Map<string, bigint> => {
  const m = new Map<string, bigint>();
  for (const [k, v] of Object.entries(obj(x))) m.set(hex(unb58(k)), nat(v));
  return m;
};
const addrMap = (m: Map<string, bigint>): { [k: string]: Json } => {
  const o: { [k: string]: Json } = {};
  for (const k of sortedKeys(m)) o[b58(unhex(k))] = m.get(k)!;
  return o;
};
const paid = (r: Rewards): bigint => r.payouts.reduce((a, p) => a + [...p.values()].reduce((x, y) => x + y, 0n), 0n);

function params(j: { [k: string]: Json }): [bigint, bigint, bigint] {
  const spe = nat(j.slots_per_epoch);
  const slotUs = nat(j.slot_duration_us);
  const cap = nat(j.capitalization);
  if (spe < 1n || slotUs < 1n || cap >= U64) reject("bad-params", "slots, duration >= 1, capitalization a u64");
  return [spe, slotUs, cap];
}

const schedule: Handler = guarded("bad-params", (input) => {
  const j = jsonInput(input);
  const [spe, slotUs, cap] = params(j);
  const epochs = arr(j.epochs).map((x) => nat(x, "epoch"));
  const years = nat(j.years);
  const epy = YEAR_US / (spe * slotUs);
  return ok({
    epochs_per_year: epy > 1n ? epy : 1n,
    year_rates_ppb: Array.from({ length: Number(years) }, (_, y) => yearRate(BigInt(y))),
    epochs: epochs.map((e) => ({ epoch: e, rate_ppb: epochRate(e, spe, slotUs), issuance: issuance(cap, e, spe, slotUs) })),
  });
});

const POOLS = ["logit-pool", "leader", "voting"];

const epochSplit: Handler = guarded("bad-params", (input) => {
  const j = jsonInput(input);
  const [spe, slotUs, cap] = params(j);
  const r = epochRewards(nat(j.epoch), cap, spe, slotUs, unitMap(j.pool_units), unitMap(j.leader_slots), unitMap(j.votes), unitMap(j.vote_weights));
  const p = paid(r);
  return ok({
    rate_ppb: r.rate,
    issuance: r.issuance,
    pools: Object.fromEntries(POOLS.map((n, i) => [n, r.pools[i]])),
    payouts: Object.fromEntries(POOLS.map((n, i) => [n, addrMap(r.payouts[i])])),
    paid: p,
    unissued: r.issuance - p,
  });
});

// ------------------------------------------------------------------ work accounts in the bank
type Acc = {
  epoch: bigint; flags: number; tokens: bigint; positions: bigint; slashes: bigint;
  tTokens: bigint; tPositions: bigint; tSlashes: bigint; lastSlash: bigint; rewards: bigint; identity: Uint8Array;
};
const REASONS = new Set(["result-rejected", "fraud-proven", "accepted-fraud", "false-reject", "absent", "false-challenge", "result-unavailable"]);

function pack(a: Acc): Uint8Array {
  const head = new Uint8Array(8);
  head[0] = 4;
  head[1] = 1;
  head[2] = a.flags;
  return concat(head, u64le(a.epoch), u64le(a.tokens), u64le(a.positions), u64le(a.slashes), u64le(a.tTokens),
    u64le(a.tPositions), u64le(a.tSlashes), u64le(a.lastSlash), u64le(a.rewards), a.identity, new Uint8Array(16));
}
function unpack(d: Uint8Array): Acc {
  if (d.length !== 128 || d[0] !== 4 || d[1] !== 1) reject("bad-work-account", "not a work account");
  const r = (o: number): bigint => readU64le(d, o);
  return { flags: d[2], epoch: r(8), tokens: r(16), positions: r(24), slashes: r(32), tTokens: r(40), tPositions: r(48),
    tSlashes: r(56), lastSlash: r(64), rewards: r(72), identity: d.slice(80, 112) };
}
/** The rollover: an account read in a later epoch sees zero epoch counters and flags. */
function atEpoch(a: Acc, e: bigint): Acc {
  return a.epoch === e ? { ...a } : { ...a, epoch: e, flags: 0, tokens: 0n, positions: 0n, slashes: 0n };
}
const fresh = (id: Uint8Array, e: bigint): Acc => ({ epoch: e, flags: 0, tokens: 0n, positions: 0n, slashes: 0n, tTokens: 0n,
  tPositions: 0n, tSlashes: 0n, lastSlash: 0n, rewards: 0n, identity: id });

function loadAccounts(j: { [k: string]: Json }): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  for (const [k, v] of Object.entries(obj(j.work_accounts))) {
    const id = unb58(k);
    const d = unhex(str(v));
    if (cmpBytes(unpack(d).identity, id) !== 0) reject("bad-work-account", "stored under another identity");
    m.set(hex(id), d);
  }
  return m;
}
/** auction_accounts_hash over a map (spec/bank.md): sorted, key || len u32 LE || data. */
function accountsHash(m: Map<string, Uint8Array>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const k of sortedKeys(m)) parts.push(unhex(k), u32le(m.get(k)!.length), m.get(k)!);
  return sha256(...parts);
}

const calls: Handler = guarded("malformed", (input) => {
  const j = jsonInput(input);
  const spe = nat(j.slots_per_epoch);
  const slot = nat(j.slot);
  const epoch = spe === 0n ? 0n : slot / spe;
  const accounts = loadAccounts(j);
  const written = new Set<string>();
  const events: Json[] = [];
  const current = (id: Uint8Array): Acc => {
    const d = accounts.get(hex(id));
    return d ? atEpoch(unpack(d), epoch) : fresh(id, epoch);
  };
  for (const c of arr(j.calls)) {
    const call = obj(c);
    if ("credit" in call) {
      let id: Uint8Array;
      try {
        id = unb58(str(call.credit));
      } catch {
        return reject("bad-work-call", "identity");
      }
      const t = int(call.tokens_served);
      const p = int(call.positions_validated);
      if (t < 0n || p < 0n) reject("bad-work-call", "negative count");
      if (t === 0n && p === 0n) continue;
      const a = current(id);
      a.tokens += t;
      a.positions += p;
      a.tTokens += t;
      a.tPositions += p;
      if ([a.tokens, a.positions, a.tTokens, a.tPositions].some((x) => x >= U64)) reject("bad-work-call", "overflow");
      accounts.set(hex(id), pack(a));
      written.add(hex(id));
      events.push({ identity: b58(id), tokens_served: t, positions_validated: p, reason: null });
    } else {
      const id = unb58(str(call.slash));
      const reason = str(call.reason);
      if (!REASONS.has(reason)) reject("bad-work-call", `unknown reason ${reason}`);
      const a = current(id);
      a.flags |= 1;
      a.tokens = 0n;
      a.positions = 0n;
      a.slashes += 1n;
      a.tSlashes += 1n;
      a.lastSlash = slot;
      accounts.set(hex(id), pack(a));
      written.add(hex(id));
      events.push({ identity: b58(id), tokens_served: 0, positions_validated: 0, reason });
    }
  }
  const out: { [k: string]: Json } = {};
  for (const k of sortedKeys(accounts)) {
    const d = accounts.get(k)!;
    const a = unpack(d);
    out[b58(unhex(k))] = {
      data: hex(d), epoch: a.epoch, flags: a.flags, tokens_served: a.tokens, positions_validated: a.positions, slashes: a.slashes,
      total_tokens_served: a.tTokens, total_positions_validated: a.tPositions, total_slashes: a.tSlashes,
      last_slash_slot: a.lastSlash, total_rewards_lamports: a.rewards,
    };
  }
  const changed = new Map([...accounts].filter(([k]) => written.has(k)));
  return ok({
    work_accounts: out,
    events,
    work_delta_hash: changed.size ? hex(sha256(utf8("ambient/work-delta/v1\0"), accountsHash(changed))) : null,
  });
});

const INCINERATOR = hex(unb58("1nc1nerator11111111111111111111111111111111"));

const boundary: Handler = guarded("malformed", (input) => {
  const j = jsonInput(input);
  const spe = nat(j.slots_per_epoch);
  const slotUs = nat(j.slot_duration_us);
  const slot = nat(j.slot);
  const tallyEpoch = nat(j.tally_epoch);
  const balances = unitMap(j.balances);
  const accounts = loadAccounts(j);
  const epoch = spe === 0n ? 0n : slot / spe;
  if (spe === 0n || epoch <= tallyEpoch) reject("not-epoch-start", "not the first bank of an epoch");
  let cap = 0n;
  for (const [k, v] of balances) if (k !== INCINERATOR) cap += v;
  const pool = new Map<string, bigint>();
  for (const [k, d] of accounts) {
    const a = unpack(d);
    if (a.epoch === tallyEpoch) pool.set(k, a.tokens * 1n + a.positions * 2n);
  }
  const lead = new Map<string, bigint>();
  const votes = new Map<string, bigint>();
  for (const [k, t] of Object.entries(obj(j.epoch_tally))) {
    const [l, v] = arr(t).map((x) => nat(x));
    lead.set(hex(unb58(k)), l);
    votes.set(hex(unb58(k)), v);
  }
  const r = epochRewards(tallyEpoch, cap, spe, slotUs, pool, lead, votes, unitMap(j.vote_weights));
  const totals = new Map<string, bigint>();
  for (const p of r.payouts) for (const [k, v] of p) totals.set(k, (totals.get(k) ?? 0n) + v);
  for (const k of sortedKeys(totals)) {
    balances.set(k, (balances.get(k) ?? 0n) + totals.get(k)!);
    const d = accounts.get(k);
    const a = d ? atEpoch(unpack(d), epoch) : fresh(unhex(k), epoch);
    a.rewards += totals.get(k)!;
    accounts.set(k, pack(a));
  }
  const parts: Uint8Array[] = [utf8("ambient/epoch-rewards/v1\0"), u64le(r.epoch), u64le(r.cap), u64le(r.rate), u64le(r.issuance),
    ...r.pools.map((x) => u64le(x))];
  for (const p of r.payouts) {
    parts.push(u32le(p.size));
    for (const k of sortedKeys(p)) parts.push(unhex(k), u64le(p.get(k)!));
  }
  const wa: { [k: string]: Json } = {};
  for (const k of sortedKeys(accounts)) wa[b58(unhex(k))] = hex(accounts.get(k)!);
  return ok({
    epoch: r.epoch, capitalization: r.cap, issuance: r.issuance, paid: paid(r),
    balances: addrMap(balances), work_accounts: wa, rewards_hash: hex(sha256(...parts)),
  });
});

export const WORK_HANDLERS: { [key: string]: Handler } = {
  "lstake/formula": formula,
  "rewards/schedule": schedule,
  "rewards/epoch-split": epochSplit,
  "work/calls": calls,
  "work/epoch-boundary": boundary,
};
