// LStake leader schedule (spec/lstake.md) and Tower BFT (spec/tower.md).
import { cmpBytes, readU64le, reject, sha256, u64le } from "./util.js";

const TWO64 = 1n << 64n;

/** Draw i of the SHA-256 counter stream. */
const draw = (seed: Uint8Array, i: bigint): bigint => readU64le(sha256(seed, u64le(i)), 0);

export type Weighted = { key: Uint8Array; id: string; weight: bigint };

/** Sort by (weight, pubkey bytes) descending; zero weights dropped. */
export function order(ws: Weighted[]): Weighted[] {
  return ws.filter((w) => w.weight > 0n).sort((a, b) => (a.weight !== b.weight ? (a.weight > b.weight ? -1 : 1) : -cmpBytes(a.key, b.key)));
}

export class Stream {
  private i = 0n;
  constructor(private readonly seed: Uint8Array) {}
  uniformBelow(t: bigint): bigint {
    const limit = TWO64 - (TWO64 % t);
    for (;;) {
      const r = draw(this.seed, this.i++);
      if (r < limit) return r % t;
    }
  }
}

function pick(sorted: Weighted[], r: bigint): Weighted {
  let acc = 0n;
  for (const w of sorted) {
    acc += w.weight;
    if (acc > r) return w;
  }
  throw new Error("unreachable: r below total");
}

export function leaderSchedule(seed: Uint8Array, ws: Weighted[], slotsPerEpoch: bigint, leaderSlots: bigint): string[] {
  const sorted = order(ws);
  const total = sorted.reduce((a, w) => a + w.weight, 0n);
  if (total === 0n) reject("no-lstake");
  if (leaderSlots < 1n || slotsPerEpoch % leaderSlots !== 0n) reject("bad-params");
  const s = new Stream(seed);
  const out: string[] = [];
  for (let t = 0n; t < slotsPerEpoch / leaderSlots; t++) out.push(pick(sorted, s.uniformBelow(total)).id);
  return out;
}

// ---------------------------------------------------------------- tower
export const INITIAL_LOCKOUT = 2n;
export const MAX_LOCKOUT_HISTORY = 31;

export type Lockout = { slot: bigint; conf: number };

export class Tower {
  votes: Lockout[] = [];
  root: bigint | null = null;

  static lockout(v: Lockout): bigint {
    return INITIAL_LOCKOUT ** BigInt(v.conf);
  }

  /** Apply a vote to a copy; returns [tower, new root or null]. */
  simulate(s: bigint): [Tower, bigint | null] {
    const t = new Tower();
    t.votes = this.votes.map((v) => ({ ...v }));
    t.root = this.root;
    while (t.votes.length > 0) {
      const top = t.votes[t.votes.length - 1];
      if (top.slot + Tower.lockout(top) < s) t.votes.pop();
      else break;
    }
    let newRoot: bigint | null = null;
    if (t.votes.length === MAX_LOCKOUT_HISTORY) {
      newRoot = t.votes.shift()!.slot;
      t.root = newRoot;
    }
    t.votes.push({ slot: s, conf: 1 });
    const depth = t.votes.length;
    for (let i = 0; i < depth; i++) {
      if (depth > i + t.votes[i].conf) t.votes[i].conf += 1;
    }
    return [t, newRoot];
  }
}

export class ForkTree {
  constructor(readonly parents: Map<bigint, bigint>) {}
  has(s: bigint): boolean {
    return this.parents.has(s) || [...this.parents.values()].includes(s);
  }
  /** Is `a` equal to `s` or an ancestor of `s`? */
  isAncestorOrSelf(a: bigint, s: bigint): boolean {
    let x: bigint | undefined = s;
    while (x !== undefined) {
      if (x === a) return true;
      x = this.parents.get(x);
    }
    return false;
  }
}

/** Apply one vote with the checks of spec/tower.md (not newer, root, tree, lockout). */
export function applyVote(tower: Tower, tree: ForkTree, s: bigint): [Tower, bigint | null] {
  const last = tower.votes.length ? tower.votes[tower.votes.length - 1].slot : null;
  if (last !== null && s <= last) reject("not-newer", `vote ${s} not above last vote ${last}`);
  if (tower.root !== null && s <= tower.root) reject("not-newer", `vote ${s} not above root ${tower.root}`);
  if (!tree.has(s)) reject("unknown-slot", `slot ${s}`);
  const [t, newRoot] = tower.simulate(s);
  for (const v of t.votes) if (!tree.isAncestorOrSelf(v.slot, s)) reject("locked-out", `vote on ${v.slot} locks out ${s}`);
  if (t.root !== null && !tree.isAncestorOrSelf(t.root, s)) reject("locked-out", `root ${t.root} is not an ancestor of ${s}`);
  return [t, newRoot];
}

/** LStake of validators locked out on another fork than the last vote L (switch threshold). */
export function otherForkStake(tree: ForkTree, lastVote: bigint, latest: Map<string, bigint>, stakes: Map<string, bigint>): bigint {
  if (!tree.has(lastVote)) reject("unknown-slot", `last vote ${lastVote}`);
  let sum = 0n;
  for (const [who, v] of latest) {
    if (!tree.has(v)) continue;
    if (tree.isAncestorOrSelf(v, lastVote) || tree.isAncestorOrSelf(lastVote, v)) continue;
    if (v > lastVote || v + INITIAL_LOCKOUT >= lastVote) sum += stakes.get(who) ?? 0n;
  }
  return sum;
}

// ---------------------------------------------------------------- fork choice
/** Heaviest-subtree fork choice over a tree rooted at `root` (spec/tower.md "Fork choice"). */
export class ForkChoiceView {
  readonly weights = new Map<bigint, bigint>();
  readonly total: bigint;
  private readonly children = new Map<bigint, bigint[]>();

  constructor(
    readonly tree: ForkTree,
    readonly root: bigint,
    stakes: Map<string, bigint>,
    latest: Map<string, bigint>,
    readonly duplicates: Set<bigint>,
  ) {
    this.total = [...stakes.values()].reduce((a, b) => a + b, 0n);
    const slots = new Set<bigint>([root]);
    for (const [c, p] of tree.parents) {
      slots.add(c);
      slots.add(p);
    }
    for (const s of slots) this.weights.set(s, 0n);
    for (const [c, p] of tree.parents) {
      const l = this.children.get(p) ?? [];
      l.push(c);
      this.children.set(p, l);
    }
    // weight(s) = LStake of validators whose latest vote is s or a descendant of s
    for (const [who, v] of latest) {
      if (!slots.has(v)) continue; // a vote outside the tree counts for nothing
      const w = stakes.get(who) ?? 0n;
      let x: bigint | undefined = v;
      while (x !== undefined) {
        this.weights.set(x, this.weights.get(x)! + w);
        x = x === root ? undefined : tree.parents.get(x);
      }
    }
  }

  /** > 2/3 of total LStake voted on the slot or a descendant. */
  confirmed(s: bigint): boolean {
    return this.weights.get(s)! * 3n > 2n * this.total;
  }
  /** > 52% of total LStake voted on the slot or a descendant. */
  duplicateConfirmed(s: bigint): boolean {
    return this.weights.get(s)! * 100n > 52n * this.total;
  }
  /** A slot with a duplicate proof is ineligible (with its subtree) until duplicate-confirmed. */
  eligible(s: bigint): boolean {
    return !this.duplicates.has(s) || this.duplicateConfirmed(s);
  }
  /** From the root, move to the heaviest eligible child (ties: the lower slot) until none;
   * the root itself when it is an unconfirmed duplicate. */
  bestSlot(): bigint {
    let s = this.root;
    if (!this.eligible(s)) return s; // an unconfirmed duplicate root: nothing below it is eligible
    for (;;) {
      let best: bigint | null = null;
      for (const c of this.children.get(s) ?? []) {
        if (!this.eligible(c)) continue;
        const wc = this.weights.get(c)!;
        if (best === null || wc > this.weights.get(best)! || (wc === this.weights.get(best)! && c < best)) best = c;
      }
      if (best === null) return s;
      s = best;
    }
  }
}
