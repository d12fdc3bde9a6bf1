// The query auction program (spec/auction.md), run through the bank of spec/bank.md.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, arr, bytesEq, cmpBytes, hex, int, readU32le, reject, sha256, str, u64le, unhex, utf8 } from "./util.js";
import * as ed from "@noble/ed25519";
import { b58, unb58, verifyDomain } from "./crypto.js";
import { decodeMessage, encodeMessage, typeByName, type Record as CborRecord, type Value } from "./codec.js";
import { depth as merkleDepth, rootFromProof } from "./merkle.js";
import { Reject } from "./util.js";
import { Bank, PROGRAMS, type Program, ixError } from "./bank.js";
import { splitPayment } from "./shard.js";
import { adjustKnobs } from "./difficulty.js";
import { isSigner, isWritable, parseTransaction, type Transaction } from "./tx.js";

export const AUCTION_PROGRAM_ID = unb58("Auction111111111111111111111111111111111111");
export const INCINERATOR_ID = unb58("1nc1nerator11111111111111111111111111111111");
export const COMMIT_WINDOW_MS = 6_400n;
export const REVEAL_WINDOW_MS = 6_400n;
export const MIN_SERVE_MS = 6_400n;
/** spec/auction.md "Windows": ceil(ms * 1000 / slot_us) */
export const windowSlots = (ms: bigint, slotUs: bigint): bigint => (ms * 1000n + slotUs - 1n) / slotUs;
export const MAX_DEADLINE_SLOTS = 216_000n;
export const MAX_BIDS_PER_QUERY = 8;
export const BID_BOND_PERCENT = 100n;
export const MIN_BID_BOND_LAMPORTS = 10_000n;
export const QUERY_FEE_LAMPORTS = 10_000n;
export const BID_DOMAIN = utf8("ambient/auction-bid/v1\0");
const U64_MAX = (1n << 64n) - 1n;

const QUERY_STATUS = ["", "OPEN", "AWARDED", "RESULT_POSTED", "EXPIRED", "REFUNDED", "FINALIZED_VERIFIED", "FINALIZED_REJECTED"];
const BID_STATUS = ["", "COMMITTED", "REVEALED", "WON", "REFUNDED", "FORFEITED", "SLASHED", "HELD"];
const [OPEN, AWARDED, RESULT_POSTED, EXPIRED, REFUNDED_Q] = [1, 2, 3, 4, 5];
const [COMMITTED, REVEALED, WON, REFUNDED_B, FORFEITED, SLASHED, HELD] = [1, 2, 3, 4, 5, 6, 7];

// ---------------------------------------------------------------- program-derived addresses
function onCurve(b: Uint8Array): boolean {
  try {
    ed.Point.fromBytes(b, true);
    return true;
  } catch {
    return false;
  }
}
/** Solana find_program_address: highest bump whose sha256(seeds, bump, program, marker) is off the curve. */
export function findProgramAddress(seeds: Uint8Array[], program: Uint8Array = AUCTION_PROGRAM_ID): Uint8Array {
  for (let bump = 255; bump >= 0; bump--) {
    const h = sha256(...seeds, new Uint8Array([bump]), program, utf8("ProgramDerivedAddress"));
    if (!onCurve(h)) return h;
  }
  throw new Error("no program address");
}
export const queryAddress = (requester: Uint8Array, nonce: bigint): Uint8Array => findProgramAddress([utf8("query"), requester, u64le(nonce)]);
export const bidAddress = (query: Uint8Array, bidder: Uint8Array): Uint8Array => findProgramAddress([utf8("bid"), query, bidder]);
export const minerAddress = (miner: Uint8Array): Uint8Array => findProgramAddress([utf8("miner"), miner]);
export const bidCommitment = (query: Uint8Array, bidder: Uint8Array, salt: Uint8Array, price: bigint): Uint8Array =>
  sha256(BID_DOMAIN, query, bidder, salt, u64le(price));

// ---------------------------------------------------------------- layouts
type FieldDef = [name: string, offset: number, kind: "u8" | "u32" | "u64" | "bytes" | "addr", size?: number];
const QUERY_LAYOUT: FieldDef[] = [
  ["status", 1, "u8"],
  ["bid_count", 2, "u8"],
  ["revealed_count", 3, "u8"],
  ["winner_index", 4, "u8"],
  ["tier", 5, "u8"],
  ["top_k", 6, "u8"],
  ["prompt_tokens", 8, "u32"],
  ["max_output_tokens", 12, "u32"],
  ["temp_milli", 16, "u32"],
  ["vocab", 20, "u32"],
  ["num_tokens", 24, "u32"],
  ["nonce", 32, "u64"],
  ["max_price_per_token", 40, "u64"],
  ["request_slot", 48, "u64"],
  ["commit_end_slot", 56, "u64"],
  ["reveal_end_slot", 64, "u64"],
  ["deadline_slot", 72, "u64"],
  ["escrow_lamports", 80, "u64"],
  ["bond_lamports", 88, "u64"],
  ["lowest_price", 96, "u64"],
  ["second_price", 104, "u64"],
  ["clearing_price", 112, "u64"],
  ["result_slot", 120, "u64"],
  ["requester", 128, "addr"],
  ["model_id", 160, "bytes", 32],
  ["prompt_hash", 192, "bytes", 32],
  ["sample_seed", 224, "bytes", 32],
  ["winner", 256, "addr"],
  ["output_hash", 288, "bytes", 32],
  ["pol_root", 320, "bytes", 32],
  ["pol_signature", 352, "bytes", 64],
];
const BID_LAYOUT: FieldDef[] = [
  ["status", 1, "u8"],
  ["index", 2, "u8"],
  ["price", 8, "u64"],
  ["bond_lamports", 16, "u64"],
  ["commit_slot", 24, "u64"],
  ["reveal_slot", 32, "u64"],
  ["query", 48, "addr"],
  ["bidder", 80, "addr"],
  ["commitment", 112, "bytes", 32],
];
const MINER_LAYOUT: FieldDef[] = [
  ["registered_slot", 8, "u64"],
  ["authority", 16, "addr"],
];
const KINDS: { [k: number]: { name: string; size: number; layout: FieldDef[]; status?: string[] } } = {
  1: { name: "QueryAccount", size: 416, layout: QUERY_LAYOUT, status: QUERY_STATUS },
  2: { name: "BidAccount", size: 144, layout: BID_LAYOUT, status: BID_STATUS },
  3: { name: "MinerAccount", size: 48, layout: MINER_LAYOUT },
};

type Acct = { kind: number; f: Map<string, bigint | Uint8Array> };

function decodeAccount(d: Uint8Array): Acct {
  const k = KINDS[d[0]];
  if (!k || d.length !== k.size) throw new Error("bad auction account");
  const f = new Map<string, bigint | Uint8Array>();
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  for (const [name, o, kind, size] of k.layout) {
    if (kind === "u8") f.set(name, BigInt(d[o]));
    else if (kind === "u32") f.set(name, BigInt(dv.getUint32(o, true)));
    else if (kind === "u64") f.set(name, dv.getBigUint64(o, true));
    else f.set(name, d.slice(o, o + (kind === "addr" ? 32 : size!)));
  }
  return { kind: d[0], f };
}
function encodeAccount(a: Acct): Uint8Array {
  const k = KINDS[a.kind];
  const d = new Uint8Array(k.size);
  d[0] = a.kind;
  const dv = new DataView(d.buffer);
  for (const [name, o, kind] of k.layout) {
    const v = a.f.get(name);
    if (v === undefined) throw new Error(`missing ${name}`);
    if (kind === "u8") d[o] = Number(v as bigint);
    else if (kind === "u32") dv.setUint32(o, Number(v as bigint), true);
    else if (kind === "u64") dv.setBigUint64(o, v as bigint, true);
    else d.set(v as Uint8Array, o);
  }
  return d;
}
function viewAccount(d: Uint8Array): Json {
  const a = decodeAccount(d);
  const k = KINDS[a.kind];
  const out: { [x: string]: Json } = { kind: k.name };
  for (const [name, , kind] of k.layout) {
    const v = a.f.get(name)!;
    if (name === "status" && k.status) out[name] = k.status[Number(v as bigint)] ?? Number(v as bigint);
    else if (kind === "addr") out[name] = b58(v as Uint8Array);
    else if (kind === "bytes") out[name] = hex(v as Uint8Array);
    else out[name] = v as bigint;
  }
  return out;
}
function newAccount(kind: number, init: { [k: string]: bigint | number | Uint8Array }): Acct {
  const f = new Map<string, bigint | Uint8Array>();
  for (const [name, , t, size] of KINDS[kind].layout) {
    const v = init[name];
    if (t === "addr" || t === "bytes") f.set(name, (v as Uint8Array | undefined) ?? new Uint8Array(t === "addr" ? 32 : size!));
    else f.set(name, BigInt((v as bigint | number | undefined) ?? 0));
  }
  return { kind, f };
}

// ---------------------------------------------------------------- the program
class Ctx {
  constructor(
    readonly bank: Bank,
    readonly tx: Transaction,
    readonly accts: number[],
  ) {}
  key(i: number): Uint8Array {
    return this.tx.keys[this.accts[i]];
  }
  signer(i: number, who: string): void {
    if (!isSigner(this.tx, this.accts[i])) ixError("auction-missing-signature", `${who} did not sign`);
  }
  writable(...is: number[]): void {
    for (const i of is) if (!isWritable(this.tx, this.accts[i])) ixError("auction-bad-accounts", `account ${i} is not writable`);
  }
  load(addr: Uint8Array, kind: number): Acct | null {
    const d = this.bank.auction.get(hex(addr));
    if (!d || d[0] !== kind) return null;
    return decodeAccount(d);
  }
  store(addr: Uint8Array, a: Acct): void {
    this.bank.auction.set(hex(addr), encodeAccount(a));
    this.bank.auctionModified.add(hex(addr));
  }
  move(from: Uint8Array, to: Uint8Array, amount: bigint): void {
    if (amount === 0n) return;
    const a = this.bank.lamports(from);
    if (a < amount) ixError("auction-insufficient-funds", `${a} < ${amount}`);
    const b = this.bank.lamports(to);
    if (b + amount > U64_MAX) ixError("auction-insufficient-funds", "credit past u64");
    this.bank.setLamports(from, a - amount);
    this.bank.setLamports(to, this.bank.lamports(to) + amount);
  }
}

const g = (a: Acct, n: string): bigint => a.f.get(n) as bigint;
const gb = (a: Acct, n: string): Uint8Array => a.f.get(n) as Uint8Array;

const DATA_LEN: { [tag: number]: number } = { 0: 4, 1: 136, 2: 36, 3: 44, 4: 4, 5: 142, 6: 4, 8: 4, 10: 5, 11: 4 };

const auctionProgram: Program = (bank, tx, accts, data) => {
  if (data.length < 4) ixError("auction-bad-data", "no tag");
  const tag = readU32le(data, 0);
  if (tag === 7) return poolVerdict(new Ctx(bank, tx, accts), data);
  if (tag === 9) return poolChallenge(new Ctx(bank, tx, accts), data);
  if (tag === 12) return postRoute(new Ctx(bank, tx, accts), data);
  if (DATA_LEN[tag] === undefined || data.length !== DATA_LEN[tag]) ixError("auction-bad-data", `tag ${tag}, ${data.length} bytes`);
  const c = new Ctx(bank, tx, accts);
  if (tag === 8) return poolSettle(c, accts.length);
  if (tag === 10) return poolRuling(c, data[4]);
  if (tag === 11) return poolClose(c, accts.length);
  const count = (n: number): void => {
    if (accts.length !== n) ixError("auction-bad-accounts", `${accts.length} accounts, want ${n}`);
  };
  const slot = bank.slot;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (tag) {
    case 0: {
      count(2);
      c.signer(0, "the miner");
      c.writable(0, 1);
      const miner = c.key(0);
      if (!bytesEq(c.key(1), minerAddress(miner))) ixError("auction-bad-accounts", "not the miner address");
      if (bank.auction.has(hex(c.key(1)))) ixError("auction-miner-exists", "");
      c.store(c.key(1), newAccount(3, { registered_slot: slot, authority: miner }));
      return;
    }
    case 1: {
      count(2);
      c.signer(0, "the requester");
      c.writable(0, 1);
      const requester = c.key(0);
      const nonce = dv.getBigUint64(4, true);
      if (!bytesEq(c.key(1), queryAddress(requester, nonce))) ixError("auction-bad-accounts", "not the query address");
      if (bank.auction.has(hex(c.key(1)))) ixError("auction-query-exists", "");
      const promptTokens = dv.getUint32(76, true);
      const maxOut = dv.getUint32(80, true);
      const maxPrice = dv.getBigUint64(84, true);
      const temp = dv.getUint32(92, true);
      const deadlineSlots = dv.getBigUint64(128, true);
      const commitSlots = windowSlots(COMMIT_WINDOW_MS, bank.slotDurationUs);
      const revealSlots = windowSlots(REVEAL_WINDOW_MS, bank.slotDurationUs);
      const minDeadline = commitSlots + revealSlots + windowSlots(MIN_SERVE_MS, bank.slotDurationUs);
      if (promptTokens < 1 || promptTokens > 16384 || maxOut < 1 || maxOut > 4096 || maxPrice < 1n || temp > 10000 || deadlineSlots < minDeadline || deadlineSlots > MAX_DEADLINE_SLOTS) {
        ixError("auction-bad-params", "request values out of range");
      }
      const maxPayment = maxPrice * BigInt(maxOut);
      const escrow = maxPayment + QUERY_FEE_LAMPORTS;
      let bond = (maxPayment * BID_BOND_PERCENT) / 100n;
      if (bond < MIN_BID_BOND_LAMPORTS) bond = MIN_BID_BOND_LAMPORTS;
      if (escrow > U64_MAX || bond > U64_MAX) ixError("auction-bad-params", "escrow or bond beyond u64");
      c.move(requester, c.key(1), escrow);
      c.store(
        c.key(1),
        newAccount(1, {
          status: OPEN,
          winner_index: 255,
          prompt_tokens: promptTokens,
          max_output_tokens: maxOut,
          temp_milli: temp,
          nonce,
          max_price_per_token: maxPrice,
          request_slot: slot,
          commit_end_slot: slot + commitSlots,
          reveal_end_slot: slot + commitSlots + revealSlots,
          deadline_slot: slot + deadlineSlots,
          escrow_lamports: escrow,
          bond_lamports: bond,
          requester,
          model_id: data.slice(12, 44),
          prompt_hash: data.slice(44, 76),
          sample_seed: data.slice(96, 128),
        }),
      );
      return;
    }
    case 2: {
      count(4);
      c.signer(0, "the bidder");
      c.writable(0, 1, 2);
      const [bidder, qa, ba, ma] = [c.key(0), c.key(1), c.key(2), c.key(3)];
      if (!bytesEq(ba, bidAddress(qa, bidder)) || !bytesEq(ma, minerAddress(bidder))) ixError("auction-bad-accounts", "not the derived bid/miner address");
      const q = c.load(qa, 1);
      if (!q) return ixError("auction-no-query", "");
      if (Number(g(q, "status")) !== OPEN) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
      if (!c.load(ma, 3)) ixError("auction-not-miner", "");
      if (slot >= g(q, "commit_end_slot")) ixError("auction-commit-closed", "");
      if (bank.auction.has(hex(ba))) ixError("auction-bid-exists", "");
      if (Number(g(q, "bid_count")) >= MAX_BIDS_PER_QUERY) ixError("auction-too-many-bids", "");
      const bond = g(q, "bond_lamports");
      c.move(bidder, ba, bond);
      c.store(ba, newAccount(2, { status: COMMITTED, index: g(q, "bid_count"), bond_lamports: bond, commit_slot: slot, query: qa, bidder, commitment: data.slice(4, 36) }));
      q.f.set("bid_count", g(q, "bid_count") + 1n);
      c.store(qa, q);
      return;
    }
    case 3: {
      count(3);
      c.signer(0, "the bidder");
      c.writable(1, 2);
      const [bidder, qa, ba] = [c.key(0), c.key(1), c.key(2)];
      const q = c.load(qa, 1);
      if (!q) return ixError("auction-no-query", "");
      if (Number(g(q, "status")) !== OPEN) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
      const b = c.load(ba, 2);
      if (!b || !bytesEq(ba, bidAddress(qa, bidder)) || !bytesEq(gb(b, "bidder"), bidder) || !bytesEq(gb(b, "query"), qa)) return ixError("auction-no-bid", "");
      if (slot < g(q, "commit_end_slot")) ixError("auction-reveal-too-early", "");
      if (slot >= g(q, "reveal_end_slot")) ixError("auction-reveal-too-late", "");
      if (Number(g(b, "status")) !== COMMITTED) ixError("auction-already-revealed", "");
      const price = dv.getBigUint64(4, true);
      const salt = data.slice(12, 44);
      if (!bytesEq(bidCommitment(qa, bidder, salt, price), gb(b, "commitment"))) ixError("auction-bid-mismatch", "");
      if (salt.every((x) => x === 0) || bytesEq(salt, bidder) || bytesEq(salt, qa)) ixError("auction-weak-salt", "");
      if (price === 0n || price > g(q, "max_price_per_token")) ixError("auction-price-out-of-range", `${price}`);
      b.f.set("status", BigInt(REVEALED));
      b.f.set("price", price);
      b.f.set("reveal_slot", slot);
      const idx = g(b, "index");
      const lowest = g(q, "lowest_price");
      const second = g(q, "second_price");
      if (lowest === 0n || price < lowest) {
        q.f.set("second_price", lowest);
        q.f.set("lowest_price", price);
        q.f.set("winner_index", idx);
      } else if (price === lowest) {
        q.f.set("second_price", price);
        if (idx < g(q, "winner_index")) q.f.set("winner_index", idx);
      } else if (second === 0n || price < second) {
        q.f.set("second_price", price);
      }
      q.f.set("revealed_count", g(q, "revealed_count") + 1n);
      c.store(ba, b);
      c.store(qa, q);
      return;
    }
    case 4: {
      if (accts.length < 3 || (accts.length - 3) % 2 !== 0) ixError("auction-bad-accounts", `${accts.length} accounts`);
      c.writable(...accts.map((_, i) => i));
      const [qa, ra, ia] = [c.key(0), c.key(1), c.key(2)];
      if (!bytesEq(ia, INCINERATOR_ID)) ixError("auction-bad-accounts", "not the incinerator");
      const q = c.load(qa, 1);
      if (!q) return ixError("auction-no-query", "");
      if (!bytesEq(ra, gb(q, "requester"))) ixError("auction-bad-accounts", "not the query's requester");
      const n = (accts.length - 3) / 2;
      if (n !== Number(g(q, "bid_count"))) ixError("auction-bad-accounts", "not the query's bid list");
      const bids: [Uint8Array, Uint8Array, Acct][] = [];
      for (let i = 0; i < n; i++) {
        const [ba, bidder] = [c.key(3 + 2 * i), c.key(4 + 2 * i)];
        const b = c.load(ba, 2);
        if (!b || !bytesEq(ba, bidAddress(qa, bidder)) || !bytesEq(gb(b, "bidder"), bidder) || Number(g(b, "index")) !== i) {
          ixError("auction-bad-accounts", `bid ${i} is not the query's bid in commit order`);
        }
        bids.push([ba, bidder, b!]);
      }
      if (Number(g(q, "status")) !== OPEN) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
      if (slot < g(q, "reveal_end_slot")) ixError("auction-reveal-not-over", "");
      const award = g(q, "revealed_count") >= 1n && slot < g(q, "deadline_slot");
      const winnerIdx = Number(g(q, "winner_index"));
      for (const [ba, bidder, b] of bids) {
        const revealed = Number(g(b, "status")) === REVEALED;
        if (award && Number(g(b, "index")) === winnerIdx) {
          b.f.set("status", BigInt(WON));
          q.f.set("winner", bidder);
        } else if (revealed) {
          c.move(ba, bidder, g(b, "bond_lamports"));
          b.f.set("status", BigInt(REFUNDED_B));
        } else {
          c.move(ba, ia, g(b, "bond_lamports"));
          b.f.set("status", BigInt(FORFEITED));
        }
        c.store(ba, b);
      }
      if (award) {
        q.f.set("status", BigInt(AWARDED));
        q.f.set("clearing_price", g(q, "revealed_count") >= 2n ? g(q, "second_price") : g(q, "max_price_per_token"));
      } else {
        c.move(qa, ra, g(q, "escrow_lamports"));
        q.f.set("escrow_lamports", 0n);
        q.f.set("status", BigInt(REFUNDED_Q));
      }
      c.store(qa, q);
      return;
    }
    case 5: {
      count(2);
      c.signer(0, "the winner");
      c.writable(1);
      const [winner, qa] = [c.key(0), c.key(1)];
      const q = c.load(qa, 1);
      if (!q) return ixError("auction-no-query", "");
      if (Number(g(q, "status")) !== AWARDED) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
      if (!bytesEq(gb(q, "winner"), winner)) ixError("auction-not-winner", "");
      if (slot >= g(q, "deadline_slot")) ixError("auction-deadline-passed", "");
      const outputHash = data.slice(4, 36);
      const numTokens = dv.getUint32(36, true);
      const tier = data[40];
      const topK = data[41];
      const vocab = dv.getUint32(42, true);
      const polRoot = data.slice(46, 78);
      const polSig = data.slice(78, 142);
      if (numTokens < 1 || BigInt(numTokens) > g(q, "max_output_tokens") || (tier !== 1 && tier !== 2) || topK < 1 || topK > 64 || vocab < 1 || vocab > 1 << 24) {
        ixError("auction-bad-result", "");
      }
      const cm = new Map<string, Value>([
        ["model_id", gb(q, "model_id")],
        ["tier", BigInt(tier)],
        ["vocab", BigInt(vocab)],
        ["top_k", BigInt(topK)],
        ["temp_milli", g(q, "temp_milli")],
        ["sample_seed", gb(q, "sample_seed")],
        ["prompt_hash", gb(q, "prompt_hash")],
        ["output_hash", outputHash],
        ["num_tokens", BigInt(numTokens)],
        ["root", polRoot],
        ["miner", winner],
        ["signature", new Uint8Array(64)],
      ]);
      if (!verifyDomain("pol-commitment", encodeMessage(typeByName("PolCommitment"), cm), polSig, winner)) ixError("auction-bad-commitment", "");
      q.f.set("status", BigInt(RESULT_POSTED));
      q.f.set("tier", BigInt(tier));
      q.f.set("top_k", BigInt(topK));
      q.f.set("vocab", BigInt(vocab));
      q.f.set("num_tokens", BigInt(numTokens));
      q.f.set("output_hash", outputHash);
      q.f.set("pol_root", polRoot);
      q.f.set("pol_signature", polSig);
      q.f.set("result_slot", slot);
      c.store(qa, q);
      return;
    }
    case 6: {
      count(4);
      c.writable(0, 1, 2, 3);
      const [qa, ra, ia, ba] = [c.key(0), c.key(1), c.key(2), c.key(3)];
      if (!bytesEq(ia, INCINERATOR_ID)) ixError("auction-bad-accounts", "not the incinerator");
      const q = c.load(qa, 1);
      if (!q) return ixError("auction-no-query", "");
      if (!bytesEq(ra, gb(q, "requester"))) ixError("auction-bad-accounts", "not the query's requester");
      if (Number(g(q, "status")) !== AWARDED) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
      const b = c.load(ba, 2);
      if (!b || !bytesEq(ba, bidAddress(qa, gb(q, "winner")))) return ixError("auction-bad-accounts", "not the winner's bid");
      if (slot < g(q, "deadline_slot")) ixError("auction-deadline-not-reached", "");
      c.move(qa, ra, g(q, "escrow_lamports"));
      c.move(ba, ia, g(b, "bond_lamports"));
      q.f.set("escrow_lamports", 0n);
      q.f.set("status", BigInt(EXPIRED));
      b.f.set("status", BigInt(SLASHED));
      c.store(qa, q);
      c.store(ba, b);
      return;
    }
  }
};
PROGRAMS.set(hex(AUCTION_PROGRAM_ID), auctionProgram);

// ---------------------------------------------------------------- the Logit Pool (spec/logit_pool.md)
const DRAW_DELAY_SLOTS = 4n;
const VERIFY_WINDOW_SLOTS = 32n;
const VALIDATOR_ACTIVE_SLOTS = 64n;
const POSITIONS_PER_VALIDATOR = 8;
const MAX_DRAW_ROUNDS = 2;
const SLASH_TO_REQUESTER_PERCENT = 50n;
const POOL_KIND = 5;
const MAX_DRAWN = 14; // MAX_VALIDATORS (7) x MAX_DRAW_ROUNDS
const VOFF = 88;
const DOFF = VOFF + 32 * MAX_DRAWN; // 536
const SOFF = DOFF + MAX_DRAWN + 2; // 552
const POOL_BYTES = SOFF + 8; // 560
const [NO_VERDICT, ACCEPT, REJECT, UNAVAILABLE] = [0, 1, 2, 3];
const DRAW_DOMAIN = utf8("ambient/pool-draw/v1\0");
const CHALLENGE_DOMAIN = utf8("ambient/pol-challenge/v1\0");
const POSITIONS_DOMAIN = utf8("ambient/pol-positions/v1\0");
const TWO64 = 1n << 64n;

export const poolAddress = (query: Uint8Array): Uint8Array => findProgramAddress([utf8("pool"), query]);

type Pool = { round: number; start1: number; beaconSlot: bigint; verifyEnd: bigint; beacon: Uint8Array; first: Uint8Array; validators: Uint8Array[]; verdicts: number[]; settled: bigint; positions: number; perRound: number };

function decodePool(d: Uint8Array): Pool {
  if (d.length !== POOL_BYTES || d[0] !== POOL_KIND) throw new Error("not a pool account");
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const n = d[2];
  const validators: Uint8Array[] = [];
  const verdicts: number[] = [];
  for (let i = 0; i < n; i++) {
    validators.push(d.slice(VOFF + 32 * i, VOFF + 32 + 32 * i));
    verdicts.push(d[DOFF + i]);
  }
  const round = d[1] & 0x0f;
  return {
    round, start1: round === 0 ? 0 : d[1] >> 4, beaconSlot: dv.getBigUint64(8, true), verifyEnd: dv.getBigUint64(16, true), beacon: d.slice(24, 56),
    first: d.slice(56, 88), validators, verdicts, settled: dv.getBigUint64(SOFF, true), positions: d[3], perRound: d[4],
  };
}
function encodePool(p: Pool): Uint8Array {
  const d = new Uint8Array(POOL_BYTES);
  const dv = new DataView(d.buffer);
  d[0] = POOL_KIND;
  d[1] = p.round | (p.start1 << 4);
  d[2] = p.validators.length;
  d[3] = p.positions;
  d[4] = p.perRound;
  dv.setBigUint64(SOFF, p.settled, true);
  dv.setBigUint64(8, p.beaconSlot, true);
  dv.setBigUint64(16, p.verifyEnd, true);
  d.set(p.beacon, 24);
  d.set(p.first, 56);
  p.validators.forEach((v, i) => d.set(v, VOFF + 32 * i));
  p.verdicts.forEach((v, i) => (d[DOFF + i] = v));
  return d;
}
function viewPool(d: Uint8Array): Json {
  const p = decodePool(d);
  return {
    kind: "PoolAccount", round: BigInt(p.round), beacon_slot: p.beaconSlot, verify_end_slot: p.verifyEnd, beacon: hex(p.beacon),
    first_beacon: hex(p.first), validators: p.validators.map(b58), verdicts: p.verdicts.map((v) => BigInt(v)),
    round_starts: p.round === 0 ? [0n] : [0n, BigInt(p.start1)], settled_slot: p.settled, positions: BigInt(p.positions),
    per_round: BigInt(p.perRound),
  };
}
const quorum = (p: Pool): number => Math.floor(p.perRound / 2) + 1;
const roundStart = (p: Pool): number => (p.round === 0 ? 0 : p.start1);
const beaconOf = (p: Pool, i: number): Uint8Array => (p.round > 0 && i >= p.start1 ? p.beacon : p.first);

/** spec/pol.md select_positions: min(count, n) distinct positions, sorted. */
function selectPositions(seed: Uint8Array, n: number, count: number): number[] {
  const want = Math.max(0, Math.min(count, n));
  const nn = BigInt(n);
  const bound = TWO64 - (TWO64 % nn);
  const chosen = new Set<number>();
  for (let counter = 0; chosen.size < want; counter++) {
    const cb = new Uint8Array(4);
    new DataView(cb.buffer).setUint32(0, counter, false);
    const dg = sha256(POSITIONS_DOMAIN, seed, cb);
    const dv = new DataView(dg.buffer, dg.byteOffset, 32);
    for (let off = 0; off < 32 && chosen.size < want; off += 8) {
      const r = dv.getBigUint64(off, false);
      if (r < bound) chosen.add(Number(r % nn));
    }
  }
  return [...chosen].sort((a, b) => a - b);
}

/** core/lstake.py stake_weighted_sample: LStake-weighted, without replacement. */
function weightedSample(weights: Map<string, bigint>, seed: Uint8Array, count: number): Uint8Array[] {
  const remaining = new Map([...weights].filter(([, v]) => v > 0n));
  let counter = 0n;
  const next = (): bigint => {
    const dg = sha256(seed, u64le(counter++));
    return new DataView(dg.buffer, dg.byteOffset, 8).getBigUint64(0, true);
  };
  const out: Uint8Array[] = [];
  while (remaining.size > 0 && out.length < count) {
    const ordered = [...remaining].sort((a, b) => (a[1] !== b[1] ? (a[1] < b[1] ? 1 : -1) : -cmpBytes(unhex(a[0]), unhex(b[0]))));
    const total = ordered.reduce((s, [, v]) => s + v, 0n);
    const limit = TWO64 - (TWO64 % total);
    let r = next();
    while (r >= limit) r = next();
    r %= total;
    let acc = 0n;
    for (const [k, v] of ordered) {
      acc += v;
      if (r < acc) {
        out.push(unhex(k));
        remaining.delete(k);
        break;
      }
    }
  }
  return out;
}

function commitmentHash(q: Acct): Uint8Array {
  const cm = new Map<string, Value>([
    ["model_id", gb(q, "model_id")], ["tier", g(q, "tier")], ["vocab", g(q, "vocab")], ["top_k", g(q, "top_k")],
    ["temp_milli", g(q, "temp_milli")], ["sample_seed", gb(q, "sample_seed")], ["prompt_hash", gb(q, "prompt_hash")],
    ["output_hash", gb(q, "output_hash")], ["num_tokens", g(q, "num_tokens")], ["root", gb(q, "pol_root")],
    ["miner", gb(q, "winner")], ["signature", gb(q, "pol_signature")],
  ]);
  return sha256(encodeMessage(typeByName("PolCommitment"), cm));
}
const positionsFor = (q: Acct, beacon: Uint8Array, v: Uint8Array, count: number = POSITIONS_PER_VALIDATOR): number[] =>
  selectPositions(sha256(CHALLENGE_DOMAIN, beacon, v, commitmentHash(q)), Number(g(q, "num_tokens")), count);
const positionsOf = (q: Acct, p: Pool, i: number): number[] => positionsFor(q, beaconOf(p, i), p.validators[i], p.positions);

/** The draw of one round: beacon = first ancestor >= `after`, candidates = recent voters with LStake. */
/** Slots after which an unknown beacon is lost (core/logit_pool.py BEACON_LOST_SLOTS). */
const BEACON_LOST_SLOTS = 300n;
function drawRound(bank: Bank, q: Acct, qa: Uint8Array, after: bigint, exclude: Uint8Array[], count: number): { slot: bigint; beacon: Uint8Array; validators: Uint8Array[] } | null {
  const later = bank.slotHashes.map(([s]) => s).filter((s) => s >= after).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const idx = bank.blockhashes.length - later.length;
  if (later.length === 0 || idx < 0) {
    // a lost beacon draws nobody (spec/logit_pool.md "Lost beacons")
    if (bank.slot >= after + BEACON_LOST_SLOTS) return null;
    return ixError("auction-draw-not-ready", `no ancestor at or after ${after}`);
  }
  const [slot, beacon] = [later[0], bank.blockhashes[idx]];
  const since = slot > VALIDATOR_ACTIVE_SLOTS ? slot - VALIDATOR_ACTIVE_SLOTS : 0n;
  const ex = new Set(exclude.map(hex));
  const weights = new Map<string, bigint>();
  for (const [v, s] of bank.lastVotes) {
    if (s < since || ex.has(v)) continue;
    const w = bank.lstake === null ? 1n : bank.lstake.get(v) ?? 0n;
    if (w > 0n) weights.set(v, w);
  }
  const seed = sha256(DRAW_DOMAIN, commitmentHash(q), qa, beacon);
  return { slot, beacon, validators: weightedSample(weights, seed, count) };
}
/** Candidates and beacon as drawRound, for a jury (spec/logit_pool.md "Retrospective slashing"). */
function juryDraw(bank: Bank, q: Acct, qa: Uint8Array, position: number, after: bigint, exclude: Uint8Array[]): { slot: bigint; beacon: Uint8Array; jurors: Uint8Array[] } {
  const later = bank.slotHashes.map(([s]) => s).filter((s) => s >= after).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const idx = bank.blockhashes.length - later.length;
  if (later.length === 0 || idx < 0) {
    if (bank.slot >= after + BEACON_LOST_SLOTS) return { slot: after, beacon: new Uint8Array(32), jurors: [] };
    return ixError("auction-draw-not-ready", `no ancestor at or after ${after}`);
  }
  const [slot, beacon] = [later[0], bank.blockhashes[idx]];
  const since = slot > VALIDATOR_ACTIVE_SLOTS ? slot - VALIDATOR_ACTIVE_SLOTS : 0n;
  const ex = new Set(exclude.map(hex));
  const weights = new Map<string, bigint>();
  for (const [v, s] of bank.lastVotes) {
    if (s < since || ex.has(v)) continue;
    const w = bank.lstake === null ? 1n : bank.lstake.get(v) ?? 0n;
    if (w > 0n) weights.set(v, w);
  }
  const pb = new Uint8Array(4);
  new DataView(pb.buffer).setUint32(0, position, true);
  const seed = sha256(JURY_DOMAIN, commitmentHash(q), qa, pb, beacon);
  return { slot, beacon, jurors: weightedSample(weights, seed, JURORS_PER_DISPUTE) };
}

// dynamic difficulty (spec/difficulty.md "In the chain"; the bank vectors know no epochs: epoch 0)
const DIFF_KIND = 7;
const DIFF_BYTES = 48;
export const difficultyAddress = (): Uint8Array => findProgramAddress([utf8("difficulty")]);
type Diff = { positions: bigint; validators: bigint; epoch: bigint; results: bigint; rejected: bigint; drawn: bigint; missed: bigint };
function difficultyAt(bank: Bank, epoch: bigint): Diff {
  const d = bank.auction.get(hex(difficultyAddress()));
  let a: Diff = { positions: 8n, validators: 3n, epoch, results: 0n, rejected: 0n, drawn: 0n, missed: 0n };
  if (d) {
    if (d.length !== DIFF_BYTES || d[0] !== DIFF_KIND) throw new Error("not a difficulty account");
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const u = (o: number): bigint => dv.getBigUint64(o, true);
    a = { positions: BigInt(d[1]), validators: BigInt(d[2]), epoch: u(8), results: u(16), rejected: u(24), drawn: u(32), missed: u(40) };
  }
  if (a.epoch < epoch) {
    const r = adjustKnobs(a.positions, a.validators, a.results, a.rejected < a.results ? a.rejected : a.results, a.drawn, a.missed < a.drawn ? a.missed : a.drawn);
    a = { positions: r.positions, validators: r.validators, epoch, results: 0n, rejected: 0n, drawn: 0n, missed: 0n };
  }
  return a;
}
function observe(bank: Bank, o: { results?: bigint; rejected?: bigint; drawn?: bigint; missed?: bigint }): void {
  const [r, j, dr, m] = [o.results ?? 0n, o.rejected ?? 0n, o.drawn ?? 0n, o.missed ?? 0n];
  if (r === 0n && j === 0n && dr === 0n && m === 0n) return;
  const a = difficultyAt(bank, 0n);
  const d = new Uint8Array(DIFF_BYTES);
  const dv = new DataView(d.buffer);
  d[0] = DIFF_KIND;
  d[1] = Number(a.positions);
  d[2] = Number(a.validators);
  [a.epoch, a.results + r, a.rejected + j, a.drawn + dr, a.missed + m].forEach((v, i) => dv.setBigUint64(8 + 8 * i, v, true));
  const k = hex(difficultyAddress());
  bank.auction.set(k, d);
  bank.auctionModified.add(k);
}
function viewDiff(d: Uint8Array): Json {
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const u = (o: number): bigint => dv.getBigUint64(o, true);
  return { kind: "DifficultyAccount", knobs: { positions: BigInt(d[1]), validators: BigInt(d[2]) }, epoch: u(8), results: u(16), rejected: u(24), drawn: u(32), missed: u(40) };
}
function openPool(c: Ctx, q: Acct, qa: Uint8Array, pa: Uint8Array): Pool {
  const d = c.bank.auction.get(hex(pa));
  if (d) return decodePool(d);
  const k = difficultyAt(c.bank, 0n);
  const after = g(q, "result_slot") + DRAW_DELAY_SLOTS;
  const r = drawRound(c.bank, q, qa, after, [gb(q, "winner")], Number(k.validators));
  if (r === null) {
    // lost: nobody drawn and no extension (its window would be long over): settle refunds
    return {
      round: 1, start1: 0, beaconSlot: after, verifyEnd: after + VERIFY_WINDOW_SLOTS, beacon: new Uint8Array(32), first: new Uint8Array(32),
      validators: [], verdicts: [], settled: 0n, positions: Number(k.positions), perRound: Number(k.validators),
    };
  }
  return {
    round: 0, start1: 0, beaconSlot: r.slot, verifyEnd: r.slot + VERIFY_WINDOW_SLOTS, beacon: r.beacon, first: r.beacon, validators: r.validators,
    verdicts: r.validators.map(() => NO_VERDICT), settled: 0n, positions: Number(k.positions), perRound: Number(k.validators),
  };
}
function storePool(c: Ctx, pa: Uint8Array, p: Pool): void {
  c.bank.auction.set(hex(pa), encodePool(p));
  c.bank.auctionModified.add(hex(pa));
}

// work accounts (spec/lstake.md "Work account layout"; the bank vectors know no epochs: epoch 0)
function workAccount(bank: Bank, id: Uint8Array): bigint[] {
  const d = bank.work.get(hex(id));
  if (!d) return [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n];
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  return [BigInt(d[2]), ...Array.from({ length: 9 }, (_, i) => dv.getBigUint64(8 + 8 * i, true))];
}
function setWork(bank: Bank, id: Uint8Array, f: bigint[]): void {
  const d = new Uint8Array(128);
  const dv = new DataView(d.buffer);
  d[0] = 4;
  d[1] = 1;
  d[2] = Number(f[0]);
  for (let i = 0; i < 9; i++) dv.setBigUint64(8 + 8 * i, f[i + 1], true);
  d.set(id, 80);
  bank.work.set(hex(id), d);
  bank.workModified.add(hex(id));
}
// fields: [flags, epoch, tokens, positions, slashes, total_tokens, total_positions, total_slashes, last_slash_slot, rewards]
function creditWork(bank: Bank, id: Uint8Array, tokens: bigint, positions: bigint): void {
  if (tokens === 0n && positions === 0n) return;
  const f = workAccount(bank, id);
  f[2] += tokens;
  f[3] += positions;
  f[5] += tokens;
  f[6] += positions;
  setWork(bank, id, f);
}
function slashWork(bank: Bank, id: Uint8Array): void {
  const f = workAccount(bank, id);
  f[0] |= 1n;
  f[2] = 0n;
  f[3] = 0n;
  f[4] += 1n;
  f[7] += 1n;
  f[8] = bank.slot;
  setWork(bank, id, f);
}

function poolVerdict(c: Ctx, data: Uint8Array): void {
  if (data.length < 5) ixError("auction-bad-data", "verdict data is at least 5 bytes");
  const accept = data[4]; // 0 reject (with evidence), 1 accept, 2 unavailable (without)
  const ev = data.slice(5);
  if (accept > 2 || (accept === 0) !== ev.length > 0) ixError("auction-bad-data", "accept with evidence or reject without");
  if (c.accts.length !== 3) ixError("auction-bad-accounts", "verdict takes 3 accounts");
  c.signer(0, "the validator");
  c.writable(0, 1, 2);
  const [v, qa, pa] = [c.key(0), c.key(1), c.key(2)];
  if (!bytesEq(pa, poolAddress(qa))) ixError("auction-bad-accounts", "not the pool address");
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== RESULT_POSTED) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  const p = openPool(c, q, qa, pa);
  const i = p.validators.findIndex((x) => bytesEq(x, v));
  if (i < 0) ixError("auction-not-drawn", "");
  if (i < roundStart(p)) ixError("auction-verify-closed", "an earlier round");
  if (c.bank.slot >= p.verifyEnd) ixError("auction-verify-closed", "window over");
  if (p.verdicts[i] !== NO_VERDICT) ixError("auction-verdict-exists", "");
  if (accept === 0) {
    let body: CborRecord;
    try {
      body = decodeMessage(ev, "PolOpening").body;
    } catch (e) {
      if (e instanceof Reject) return ixError("auction-bad-evidence", "not a PolOpening");
      throw e;
    }
    const fp = body.get("fp") as CborRecord;
    const pos = Number(fp.get("pos") as bigint);
    const sibs = body.get("sibs") as Uint8Array[];
    const n = Number(g(q, "num_tokens"));
    if (!bytesEq(body.get("cmt") as Uint8Array, commitmentHash(q))) ixError("auction-bad-evidence", "another commitment");
    if (!positionsOf(q, p, i).includes(pos)) ixError("auction-bad-evidence", "not a drawn position");
    const leaf = encodeMessage(typeByName("LogitFingerprint"), fp);
    if (pos >= n || sibs.length !== merkleDepth(n) || !bytesEq(rootFromProof(leaf, pos, sibs), gb(q, "pol_root"))) {
      ixError("auction-bad-evidence", "the Merkle path does not lead to the root");
    }
  }
  p.verdicts[i] = accept === 1 ? ACCEPT : accept === 2 ? UNAVAILABLE : REJECT;
  storePool(c, pa, p);
}

function poolSettle(c: Ctx, n: number): void {
  if (n < 7) ixError("auction-bad-accounts", "settle takes at least 7 accounts");
  c.writable(...Array.from({ length: n }, (_, i) => i));
  const [qa, pa, ra, wa, ba, ia, da] = [0, 1, 2, 3, 4, 5, 6].map((i) => c.key(i));
  if (!bytesEq(pa, poolAddress(qa))) ixError("auction-bad-accounts", "not the pool address");
  if (!bytesEq(da, difficultyAddress())) ixError("auction-bad-accounts", "not the difficulty account");
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== RESULT_POSTED) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  if (!bytesEq(ra, gb(q, "requester"))) ixError("auction-bad-accounts", "not the requester");
  const winner = gb(q, "winner");
  if (!bytesEq(wa, winner)) ixError("auction-bad-accounts", "not the winner");
  if (!bytesEq(ba, bidAddress(qa, winner))) ixError("auction-bad-accounts", "not the winning bid");
  if (!bytesEq(ia, INCINERATOR_ID)) ixError("auction-bad-accounts", "not the incinerator");
  const p = openPool(c, q, qa, pa);
  const nv = p.validators.length;
  const listed = Array.from({ length: Math.min(nv, n - 7) }, (_, i) => c.key(7 + i));
  if (listed.length !== nv || listed.some((x, i) => !bytesEq(x, p.validators[i]))) ixError("auction-bad-accounts", "the drawn validators in draw order");
  // a sharded answer: its route account and distinct stage keys follow (spec/shard.md "Payment")
  const rd = c.bank.auction.get(hex(routeAddress(qa)));
  const route = rd === undefined ? null : decodeRoute(rd);
  const want = route === null ? [] : [routeAddress(qa), ...routePayees(route)];
  const extra = Array.from({ length: n - 7 - nv }, (_, i) => c.key(7 + nv + i));
  if (extra.length !== want.length || extra.some((x, i) => !bytesEq(x, want[i]))) ixError("auction-bad-accounts", "the route account and stage keys");
  const accepts = p.verdicts.filter((x) => x === ACCEPT).length;
  const rejects = p.verdicts.filter((x) => x === REJECT).length;
  const decided = accepts >= quorum(p) || rejects >= quorum(p);
  const slot = c.bank.slot;
  if (!decided && slot < p.verifyEnd) ixError("auction-verify-open", "");
  if (!decided) {
    const absent = p.validators.filter((_, i) => i >= roundStart(p) && p.verdicts[i] === NO_VERDICT);
    let r: { slot: bigint; beacon: Uint8Array; validators: Uint8Array[] } | null = null;
    if (p.round + 1 < MAX_DRAW_ROUNDS) r = drawRound(c.bank, q, qa, p.verifyEnd, [winner, ...p.validators], p.perRound);
    for (const v of absent) slashWork(c.bank, v);
    observe(c.bank, { missed: BigInt(absent.length) });
    if (r !== null && r.validators.length > 0) {
      storePool(c, pa, {
        round: p.round + 1, start1: p.validators.length, beaconSlot: r.slot, verifyEnd: (r.slot > slot ? r.slot : slot) + VERIFY_WINDOW_SLOTS, beacon: r.beacon,
        first: p.first, validators: [...p.validators, ...r.validators], verdicts: [...p.verdicts, ...r.validators.map(() => NO_VERDICT)],
        settled: 0n, positions: p.positions, perRound: p.perRound,
      });
      return;
    }
  }
  const any = accepts + rejects > 0;
  observe(c.bank, { drawn: BigInt(p.validators.length), results: any ? 1n : 0n, rejected: any && !(rejects < quorum(p) && accepts >= rejects) ? 1n : 0n });
  const b = c.load(ba, 2);
  if (!b) return ixError("auction-no-bid", "");
  const bond = g(b, "bond_lamports");
  const escrow = g(q, "escrow_lamports");
  if (accepts === 0 && rejects === 0) {
    // nobody checked it; a quorum of present validators that found nothing to check burns the bond
    const unavailable = p.verdicts.filter((x) => x === UNAVAILABLE).length >= quorum(p);
    c.move(qa, ra, escrow);
    c.move(ba, unavailable ? INCINERATOR_ID : winner, bond);
    b.f.set("status", BigInt(unavailable ? SLASHED : REFUNDED_B));
    q.f.set("status", 7n);
    q.f.set("escrow_lamports", 0n);
    c.store(ba, b);
    c.store(qa, q);
    if (unavailable) slashWork(c.bank, winner);
    return;
  }
  const verified = rejects < quorum(p) && accepts >= rejects;
  const side = verified ? ACCEPT : REJECT;
  const counted = p.validators.filter((_, i) => p.verdicts[i] === side);
  const feeShare = escrow - g(q, "max_price_per_token") * g(q, "max_output_tokens");
  let left = escrow;
  const each = feeShare / BigInt(counted.length);
  for (const v of counted) {
    c.move(qa, v, each);
    left -= each;
  }
  if (verified) {
    const pay = g(q, "clearing_price") * g(q, "num_tokens");
    if (route === null) c.move(qa, winner, pay);
    else splitPayment(pay, route.map((r) => [r.end - r.start, g(q, "num_tokens")])).forEach((part, k) => c.move(qa, route[k].stage, part));
    c.move(qa, ra, left - pay);
    b.f.set("status", BigInt(HELD)); // the bond waits out the challenge window
  } else {
    const toRequester = (bond * SLASH_TO_REQUESTER_PERCENT) / 100n;
    const share = (bond - toRequester) / BigInt(counted.length);
    for (const v of counted) c.move(ba, v, share);
    c.move(ba, ra, bond - share * BigInt(counted.length));
    c.move(qa, ra, left);
    b.f.set("status", BigInt(SLASHED));
  }
  q.f.set("status", verified ? 6n : 7n);
  q.f.set("escrow_lamports", 0n);
  c.store(ba, b);
  c.store(qa, q);
  storePool(c, pa, { ...p, settled: c.bank.slot });
  if (verified && route === null) creditWork(c.bank, winner, g(q, "num_tokens"), 0n);
  else if (verified && route !== null) {
    const nt = g(q, "num_tokens");
    splitPayment(nt, route.map((r) => [r.end - r.start, nt])).forEach((t, k) => creditWork(c.bank, route[k].stage, t, 0n));
  } else slashWork(c.bank, winner);
  for (const v of counted) creditWork(c.bank, v, 0n, BigInt(positionsOf(q, p, p.validators.findIndex((x) => bytesEq(x, v))).length));
}

// ---------------------------------------------------------------- sharded answers (spec/shard.md "Payment")
const ROUTE_KIND = 8;
const MAX_SETTLED_ROUTE_STAGES = 8;
type RouteStage = { stage: Uint8Array; start: bigint; end: bigint; tier: bigint; root: Uint8Array };
export const routeAddress = (query: Uint8Array): Uint8Array => findProgramAddress([utf8("route"), query]);
function decodeRoute(d: Uint8Array): RouteStage[] {
  const n = d[1];
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  return Array.from({ length: n }, (_, i) => {
    const o = 2 + 69 * i;
    return { stage: d.slice(o, o + 32), start: BigInt(dv.getUint16(o + 32, true)), end: BigInt(dv.getUint16(o + 34, true)), tier: BigInt(d[o + 36]), root: d.slice(o + 37, o + 69) };
  });
}
function encodeRoute(r: RouteStage[]): Uint8Array {
  const d = new Uint8Array(2 + 69 * r.length);
  const dv = new DataView(d.buffer);
  d[0] = ROUTE_KIND;
  d[1] = r.length;
  r.forEach((s, i) => {
    const o = 2 + 69 * i;
    d.set(s.stage, o);
    dv.setUint16(o + 32, Number(s.start), true);
    dv.setUint16(o + 34, Number(s.end), true);
    d[o + 36] = Number(s.tier);
    d.set(s.root, o + 37);
  });
  return d;
}
function viewRoute(d: Uint8Array): Json {
  return { kind: "RouteAccount", stages: decodeRoute(d).map((s) => ({ stage: b58(s.stage), start: s.start, end: s.end, tier: s.tier, root: hex(s.root) })) };
}
function routePayees(r: RouteStage[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const s of r) if (!out.some((x) => bytesEq(x, s.stage))) out.push(s.stage);
  return out;
}
function postRoute(c: Ctx, data: Uint8Array): void {
  const n = data.length >= 5 ? data[4] : 0;
  if (data.length !== 5 + 133 * n) ixError("auction-bad-data", `post_route data is ${5 + 133 * n} bytes, got ${data.length}`);
  if (c.accts.length !== 3) ixError("auction-bad-accounts", "post_route takes 3 accounts");
  c.signer(0, "the winner");
  c.writable(2);
  const [winner, qa, ra] = [c.key(0), c.key(1), c.key(2)];
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== RESULT_POSTED) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  if (!bytesEq(gb(q, "winner"), winner)) ixError("auction-not-winner", "");
  if (!bytesEq(ra, routeAddress(qa))) ixError("auction-bad-accounts", "not the route address");
  if (c.bank.auction.has(hex(ra))) ixError("auction-route-exists", "");
  if (n < 1 || n > MAX_SETTLED_ROUTE_STAGES) ixError("auction-bad-route", "1..8 stages");
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stages: RouteStage[] = [];
  const total = BigInt(dv.getUint16(5 + 133 * (n - 1) + 34, true));
  let at = 0n;
  for (let i = 0; i < n; i++) {
    const o = 5 + 133 * i;
    const s: RouteStage = { stage: data.slice(o, o + 32), start: BigInt(dv.getUint16(o + 32, true)), end: BigInt(dv.getUint16(o + 34, true)), tier: BigInt(data[o + 36]), root: data.slice(o + 37, o + 69) };
    const sig = data.slice(o + 69, o + 133);
    if (s.start !== at || s.end <= s.start || total > 1024n) ixError("auction-bad-route", `stage ${i} does not continue the route`);
    if (s.tier !== 1n && s.tier !== 2n) ixError("auction-bad-route", `stage ${i}: unknown tier`);
    const cm = new Map<string, Value>([
      ["query", qa], ["model_id", gb(q, "model_id")], ["start", s.start], ["end", s.end], ["total", total], ["tier", s.tier],
      ["prompt_hash", gb(q, "prompt_hash")], ["num_tokens", g(q, "num_tokens")], ["root", s.root], ["stage", s.stage], ["signature", new Uint8Array(64)],
    ]);
    if (!verifyDomain("stage-commitment", encodeMessage(typeByName("StageCommitment"), cm), sig, s.stage)) ixError("auction-bad-route", `stage ${i}: signature`);
    stages.push(s);
    at = s.end;
  }
  c.bank.auction.set(hex(ra), encodeRoute(stages));
  c.bank.auctionModified.add(hex(ra));
}

// ---------------------------------------------------------------- retrospective slashing (spec/logit_pool.md)
const CHALLENGE_WINDOW_SLOTS = 64n;
const CHALLENGE_GRACE_SLOTS = 16n;
const CHALLENGE_BOND_LAMPORTS = 10_000n;
const JURORS_PER_DISPUTE = 3;
const RULING_QUORUM = 2;
const OPENING_MAX_BYTES = 1152;
const JURY_DOMAIN = utf8("ambient/pool-jury/v1\0");
const DISPUTE_KIND = 6;
const DISPUTE_BYTES = 216 + OPENING_MAX_BYTES;
const [D_OPEN, D_UPHELD, D_DISMISSED, D_LAPSED] = [1, 2, 3, 4];
const [NO_RULING, FRAUD, NO_FRAUD] = [0, 1, 2];
const TAU: { [tier: number]: bigint } = { 1: 4n, 2: 4096n };
export const disputeAddress = (query: Uint8Array): Uint8Array => findProgramAddress([utf8("dispute"), query]);

type Dispute = {
  state: number; klass: number; position: number; challengeSlot: bigint; beaconSlot: bigint; judgeEnd: bigint; bond: bigint; closed: bigint;
  challenger: Uint8Array; beacon: Uint8Array; jurors: Uint8Array[]; rulings: number[]; opening: Uint8Array;
};
function decodeDispute(d: Uint8Array): Dispute {
  if (d.length !== DISPUTE_BYTES || d[0] !== DISPUTE_KIND) throw new Error("not a dispute account");
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const u = (o: number): bigint => dv.getBigUint64(o, true);
  const n = d[3];
  const jurors: Uint8Array[] = [];
  const rulings: number[] = [];
  for (let i = 0; i < n; i++) {
    jurors.push(d.slice(112 + 32 * i, 144 + 32 * i));
    rulings.push(d[208 + i]);
  }
  const olen = dv.getUint16(212, true);
  return {
    state: d[1], klass: d[2], position: dv.getUint32(4, true), challengeSlot: u(8), beaconSlot: u(16), judgeEnd: u(24), bond: u(32), closed: u(40),
    challenger: d.slice(48, 80), beacon: d.slice(80, 112), jurors, rulings, opening: d.slice(216, 216 + olen),
  };
}
function storeDispute(bank: Bank, addr: Uint8Array, x: Dispute): void {
  const d = new Uint8Array(DISPUTE_BYTES);
  const dv = new DataView(d.buffer);
  d[0] = DISPUTE_KIND;
  d[1] = x.state;
  d[2] = x.klass;
  d[3] = x.jurors.length;
  dv.setUint32(4, x.position, true);
  [x.challengeSlot, x.beaconSlot, x.judgeEnd, x.bond, x.closed].forEach((v, i) => dv.setBigUint64(8 + 8 * i, v, true));
  d.set(x.challenger, 48);
  d.set(x.beacon, 80);
  x.jurors.forEach((j, i) => d.set(j, 112 + 32 * i));
  x.rulings.forEach((r, i) => (d[208 + i] = r));
  dv.setUint16(212, x.opening.length, true);
  d.set(x.opening, 216);
  bank.auction.set(hex(addr), d);
  bank.auctionModified.add(hex(addr));
}
function viewDispute(d: Uint8Array): Json {
  const x = decodeDispute(d);
  return {
    kind: "DisputeAccount", state: BigInt(x.state), fault_class: BigInt(x.klass), position: BigInt(x.position), challenge_slot: x.challengeSlot,
    challenger: b58(x.challenger), bond_lamports: x.bond, opening: hex(x.opening), beacon_slot: x.beaconSlot, judge_end_slot: x.judgeEnd,
    beacon: hex(x.beacon), jurors: x.jurors.map(b58), rulings: x.rulings.map((r) => BigInt(r)), closed_slot: x.closed,
  };
}
const accepters = (p: Pool): Uint8Array[] => p.validators.filter((_, i) => p.verdicts[i] === ACCEPT);
function releaseSlot(p: Pool, x: Dispute | null): bigint {
  let end = p.settled + CHALLENGE_WINDOW_SLOTS;
  if (x !== null && (x.state === D_DISMISSED || x.state === D_LAPSED) && x.closed + CHALLENGE_GRACE_SLOTS > end) end = x.closed + CHALLENGE_GRACE_SLOTS;
  return end;
}
/** spec/logit_pool.md rule 1: the committed leaf contradicts itself (integers only). */
function selfContradiction(q: Acct, fp: CborRecord): boolean {
  const ids = (fp.get("ids") as bigint[]).map(Number);
  const lps = (fp.get("lps") as bigint[]).map((x) => BigInt(x));
  const tok = Number(fp.get("tok") as bigint);
  if (BigInt(ids.length) !== g(q, "top_k")) return true;
  if (new Set(ids).size !== ids.length || BigInt(Math.max(...ids)) >= g(q, "vocab")) return true;
  for (let i = 1; i < ids.length; i++) {
    if (lps[i] < lps[i - 1] || (lps[i] === lps[i - 1] && ids[i] < ids[i - 1])) return true;
  }
  const at = ids.indexOf(tok);
  if (at < 0) return true;
  if (g(q, "temp_milli") === 0n && lps[at] - lps[0] > (TAU[Number(g(q, "tier"))] ?? 0n)) return true;
  return false;
}
function settledPool(c: Ctx, pa: Uint8Array): Pool {
  const d = c.bank.auction.get(hex(pa));
  const p = d ? decodePool(d) : null;
  if (p === null || p.settled === 0n) return ixError("auction-wrong-status", "not verified by the pool");
  return p;
}
function heldBid(c: Ctx, ba: Uint8Array): Acct {
  const b = c.load(ba, 2);
  if (!b) return ixError("auction-no-bid", "");
  if (Number(g(b, "status")) !== HELD) ixError("auction-wrong-status", "bid not HELD");
  return b;
}
function uphold(c: Ctx, q: Acct, qa: Uint8Array, p: Pool, ba: Uint8Array, b: Acct, challenger: Uint8Array): void {
  const bond = g(b, "bond_lamports");
  const toRequester = (bond * SLASH_TO_REQUESTER_PERCENT) / 100n;
  c.move(ba, gb(q, "requester"), toRequester);
  c.move(ba, challenger, bond - toRequester);
  b.f.set("status", BigInt(SLASHED));
  q.f.set("status", 7n);
  c.store(ba, b);
  c.store(qa, q);
  observe(c.bank, { results: 1n, rejected: 1n });
  slashWork(c.bank, gb(q, "winner"));
  for (const v of accepters(p)) slashWork(c.bank, v);
}
function loadDispute(c: Ctx, da: Uint8Array): Dispute | null {
  const d = c.bank.auction.get(hex(da));
  return d ? decodeDispute(d) : null;
}

function poolChallenge(c: Ctx, data: Uint8Array): void {
  if (c.accts.length !== 7) ixError("auction-bad-accounts", "challenge takes 7 accounts");
  c.signer(0, "the challenger");
  c.writable(0, 1, 2, 3, 4, 5, 6);
  const [ca, qa, pa, ba, da, ra, fa] = [0, 1, 2, 3, 4, 5, 6].map((i) => c.key(i));
  if (!bytesEq(pa, poolAddress(qa))) ixError("auction-bad-accounts", "not the pool address");
  if (!bytesEq(da, disputeAddress(qa))) ixError("auction-bad-accounts", "not the dispute address");
  if (!bytesEq(fa, difficultyAddress())) ixError("auction-bad-accounts", "not the difficulty account");
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== 6) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  const winner = gb(q, "winner");
  if (!bytesEq(ba, bidAddress(qa, winner))) ixError("auction-bad-accounts", "not the winning bid");
  if (!bytesEq(ra, gb(q, "requester"))) ixError("auction-bad-accounts", "not the requester");
  const p = settledPool(c, pa);
  const old = loadDispute(c, da);
  if (old !== null && old.state === D_OPEN) ixError("auction-dispute-open", "");
  if (c.bank.slot >= releaseSlot(p, old)) ixError("auction-challenge-closed", "");
  if (bytesEq(ca, winner) || accepters(p).some((v) => bytesEq(v, ca))) ixError("auction-bad-challenger", "");
  const ev = data.slice(4);
  if (ev.length > OPENING_MAX_BYTES) ixError("auction-bad-evidence", "too long");
  let body: CborRecord;
  try {
    body = decodeMessage(ev, "PolOpening").body;
  } catch (e) {
    if (e instanceof Reject) return ixError("auction-bad-evidence", "not a PolOpening");
    throw e;
  }
  const fp = body.get("fp") as CborRecord;
  const pos = Number(fp.get("pos") as bigint);
  const sibs = body.get("sibs") as Uint8Array[];
  const n = Number(g(q, "num_tokens"));
  if (!bytesEq(body.get("cmt") as Uint8Array, commitmentHash(q))) ixError("auction-bad-evidence", "another commitment");
  if (pos >= n) ixError("auction-bad-evidence", "position out of range");
  const leaf = encodeMessage(typeByName("LogitFingerprint"), fp);
  if (sibs.length !== merkleDepth(n) || !bytesEq(rootFromProof(leaf, pos, sibs), gb(q, "pol_root"))) ixError("auction-bad-evidence", "Merkle path");
  const b = heldBid(c, ba);
  const slot = c.bank.slot;
  const base = { position: pos, challengeSlot: slot, beaconSlot: 0n, judgeEnd: 0n, challenger: ca, beacon: new Uint8Array(32), jurors: [], rulings: [], opening: ev };
  if (selfContradiction(q, fp)) {
    storeDispute(c.bank, da, { ...base, state: D_UPHELD, klass: 1, bond: 0n, closed: slot });
    uphold(c, q, qa, p, ba, b, ca);
    return;
  }
  if (c.bank.lamports(ca) < CHALLENGE_BOND_LAMPORTS) ixError("auction-insufficient-funds", "the challenge bond");
  c.move(ca, da, CHALLENGE_BOND_LAMPORTS);
  storeDispute(c.bank, da, { ...base, state: D_OPEN, klass: 2, bond: CHALLENGE_BOND_LAMPORTS, closed: 0n });
}

function drawnDispute(c: Ctx, q: Acct, qa: Uint8Array, p: Pool, x: Dispute): Dispute {
  if (x.beaconSlot > 0n) return x;
  const r = juryDraw(c.bank, q, qa, x.position, x.challengeSlot + DRAW_DELAY_SLOTS, [gb(q, "winner"), x.challenger, ...accepters(p)]);
  return { ...x, beaconSlot: r.slot, judgeEnd: r.slot + VERIFY_WINDOW_SLOTS, beacon: r.beacon, jurors: r.jurors, rulings: r.jurors.map(() => NO_RULING) };
}

function poolRuling(c: Ctx, fraud: number): void {
  if (fraud > 1) ixError("auction-bad-data", "fraud is 0 or 1");
  if (c.accts.length !== 4) ixError("auction-bad-accounts", "ruling takes 4 accounts");
  c.signer(0, "the juror");
  c.writable(0, 1, 2, 3);
  const [ja, qa, pa, da] = [0, 1, 2, 3].map((i) => c.key(i));
  if (!bytesEq(pa, poolAddress(qa))) ixError("auction-bad-accounts", "not the pool address");
  if (!bytesEq(da, disputeAddress(qa))) ixError("auction-bad-accounts", "not the dispute address");
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== 6) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  const p = settledPool(c, pa);
  const old = loadDispute(c, da);
  if (old === null || old.state !== D_OPEN) return ixError("auction-no-dispute", "");
  const x = drawnDispute(c, q, qa, p, old);
  const i = x.jurors.findIndex((j) => bytesEq(j, ja));
  if (i < 0) ixError("auction-not-drawn", "");
  if (c.bank.slot >= x.judgeEnd) ixError("auction-verify-closed", "");
  if (x.rulings[i] !== NO_RULING) ixError("auction-verdict-exists", "");
  x.rulings[i] = fraud === 1 ? FRAUD : NO_FRAUD;
  storeDispute(c.bank, da, x);
}

function poolClose(c: Ctx, n: number): void {
  if (n < 8) ixError("auction-bad-accounts", "close takes at least 8 accounts");
  c.writable(...Array.from({ length: n }, (_, i) => i));
  const [qa, pa, ba, da, ra, wa, ia, fa] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => c.key(i));
  const rest = Array.from({ length: n - 8 }, (_, i) => c.key(8 + i));
  if (!bytesEq(pa, poolAddress(qa))) ixError("auction-bad-accounts", "not the pool address");
  if (!bytesEq(da, disputeAddress(qa))) ixError("auction-bad-accounts", "not the dispute address");
  if (!bytesEq(fa, difficultyAddress())) ixError("auction-bad-accounts", "not the difficulty account");
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== 6) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  const winner = gb(q, "winner");
  if (!bytesEq(ba, bidAddress(qa, winner))) ixError("auction-bad-accounts", "not the winning bid");
  if (!bytesEq(ra, gb(q, "requester"))) ixError("auction-bad-accounts", "not the requester");
  if (!bytesEq(wa, winner)) ixError("auction-bad-accounts", "not the winner");
  if (!bytesEq(ia, INCINERATOR_ID)) ixError("auction-bad-accounts", "not the incinerator");
  const p = settledPool(c, pa);
  const b = heldBid(c, ba);
  const old = loadDispute(c, da);
  const slot = c.bank.slot;
  if (old === null || old.state !== D_OPEN) {
    if (rest.length > 0) ixError("auction-bad-accounts", "a release lists no parties");
    if (slot < releaseSlot(p, old)) ixError("auction-window-open", "");
    c.move(ba, winner, g(b, "bond_lamports"));
    b.f.set("status", BigInt(REFUNDED_B));
    c.store(ba, b);
    return;
  }
  const x = drawnDispute(c, q, qa, p, old);
  const parties = [x.challenger, ...x.jurors];
  if (rest.length !== parties.length || rest.some((k, i) => !bytesEq(k, parties[i]))) ixError("auction-bad-accounts", "challenger, then jurors");
  const fraud = x.rulings.filter((r) => r === FRAUD).length;
  const noFraud = x.rulings.filter((r) => r === NO_FRAUD).length;
  if (fraud < RULING_QUORUM && noFraud < RULING_QUORUM && slot < x.judgeEnd) ixError("auction-verify-open", "");
  x.jurors.forEach((j, i) => {
    if (x.rulings[i] === NO_RULING) slashWork(c.bank, j);
  });
  let state: number;
  let side = -1;
  if (fraud >= RULING_QUORUM) {
    c.move(da, x.challenger, x.bond);
    uphold(c, q, qa, p, ba, b, x.challenger);
    state = D_UPHELD;
    side = FRAUD;
  } else if (noFraud >= RULING_QUORUM) {
    c.move(da, winner, x.bond);
    slashWork(c.bank, x.challenger);
    state = D_DISMISSED;
    side = NO_FRAUD;
  } else {
    c.move(da, x.challenger, x.bond);
    state = D_LAPSED;
  }
  storeDispute(c.bank, da, { ...x, state, closed: slot });
  x.jurors.forEach((j, i) => {
    if (x.rulings[i] === side) creditWork(c.bank, j, 0n, 1n);
  });
}

// ---------------------------------------------------------------- handlers
const transition: Handler = (input) => {
  const j = jsonInput(input);
  const bank = new Bank(int(j.slot), new Uint8Array(32), new Uint8Array(32));
  for (const p of arr(j.accounts)) bank.accounts.set(hex(unb58(str(arr(p)[0]))), int(arr(p)[1]));
  bank.parentAccounts = new Map(bank.accounts);
  for (const p of arr(j.auction_accounts)) bank.auction.set(hex(unb58(str(arr(p)[0]))), unhex(str(arr(p)[1])));
  if (j.slot_duration_us !== undefined) {
    bank.slotDurationUs = int(j.slot_duration_us);
    if (bank.slotDurationUs < 1n) reject("malformed", "slot_duration_us must be >= 1");
  }
  const raw = unhex(str(j.tx));
  // the bank's only recent blockhash is the transaction's (interop/README.md, auction rows);
  // the Logit Pool's rows carry the chain context its draw reads (spec/logit_pool.md)
  const pool = j.blockhashes !== undefined;
  bank.blockhashes = pool ? arr(j.blockhashes).map((h) => unhex(str(h))) : [parseTransaction(raw).recentBlockhash];
  if (pool) {
    bank.slotHashes = arr(j.slot_hashes).map((p) => [int(arr(p)[0]), unhex(str(arr(p)[1]))] as [bigint, Uint8Array]);
    for (const p of arr(j.last_votes)) bank.lastVotes.set(hex(unb58(str(arr(p)[0]))), int(arr(p)[1]));
    const stakes = arr(j.lstake);
    if (stakes.length > 0) bank.lstake = new Map(stakes.map((p) => [hex(unb58(str(arr(p)[0]))), int(arr(p)[1])]));
  }
  const res = bank.process(raw);
  if (res.error !== null) reject(res.error.split(":")[0], res.error);
  const sortK = <T,>(m: Map<string, T>): [string, T][] => [...m.entries()].sort((a, b) => cmpBytes(unhex(a[0]), unhex(b[0])));
  const changed: { [k: string]: Json } = {};
  for (const [k] of sortK(new Map([...bank.auctionModified].map((x) => [x, 0])))) {
    const d = bank.auction.get(k)!;
    changed[b58(unhex(k))] = d[0] === ROUTE_KIND ? viewRoute(d) : d[0] === POOL_KIND ? viewPool(d) : d[0] === DISPUTE_KIND ? viewDispute(d) : d[0] === DIFF_KIND ? viewDiff(d) : viewAccount(d);
  }
  const work: { [k: string]: Json } = {};
  for (const [k] of sortK(new Map([...bank.workModified].map((x) => [x, 0])))) work[b58(unhex(k))] = hex(bank.work.get(k)!);
  return ok({
    ...(pool ? { work_accounts: work } : {}),
    accounts: sortK(bank.accounts).map(([k, v]) => [b58(unhex(k)), v]),
    auction_accounts: sortK(bank.auction).map(([k, v]) => [b58(unhex(k)), hex(v)]),
    changed,
    auction_delta_hash: hex(bank.auctionDeltaHash()),
  });
};

const bidCommitmentH: Handler = (input) => {
  const j = jsonInput(input);
  return ok({ commitment: hex(bidCommitment(unb58(str(j.query)), unb58(str(j.bidder)), unhex(str(j.salt)), int(j.price))) });
};

export const AUCTION_HANDLERS: { [key: string]: Handler } = {
  "auction/bid-commitment": bidCommitmentH,
  ...Object.fromEntries(["register_miner", "request", "commit_bid", "reveal_bid", "close_auction", "post_result", "expire", "verdict", "settle", "challenge", "ruling", "close", "post_route"].map((t) => [`auction/${t}`, transition])),
};
