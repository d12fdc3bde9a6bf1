// The query auction program (spec/auction.md), run through the bank of spec/bank.md.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, arr, bytesEq, cmpBytes, hex, int, readU32le, reject, sha256, str, u64le, unhex, utf8 } from "./util.js";
import * as ed from "@noble/ed25519";
import { b58, unb58, verifyDomain } from "./crypto.js";
import { decodeMessage, encodeMessage, typeByName, type Record as CborRecord, type Value } from "./codec.js";
import { depth as merkleDepth, rootFromProof } from "./merkle.js";
import { Reject } from "./util.js";
import { Bank, PROGRAMS, type Program, ixError } from "./bank.js";
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
const BID_STATUS = ["", "COMMITTED", "REVEALED", "WON", "REFUNDED", "FORFEITED", "SLASHED"];
const [OPEN, AWARDED, RESULT_POSTED, EXPIRED, REFUNDED_Q] = [1, 2, 3, 4, 5];
const [COMMITTED, REVEALED, WON, REFUNDED_B, FORFEITED, SLASHED] = [1, 2, 3, 4, 5, 6];

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

const DATA_LEN: { [tag: number]: number } = { 0: 4, 1: 136, 2: 36, 3: 44, 4: 4, 5: 142, 6: 4, 8: 4 };

const auctionProgram: Program = (bank, tx, accts, data) => {
  if (data.length < 4) ixError("auction-bad-data", "no tag");
  const tag = readU32le(data, 0);
  if (tag === 7) return poolVerdict(new Ctx(bank, tx, accts), data);
  if (DATA_LEN[tag] === undefined || data.length !== DATA_LEN[tag]) ixError("auction-bad-data", `tag ${tag}, ${data.length} bytes`);
  const c = new Ctx(bank, tx, accts);
  if (tag === 8) return poolSettle(c, accts.length);
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
const VALIDATORS_PER_QUERY = 3;
const VERDICT_QUORUM = 2;
const DRAW_DELAY_SLOTS = 4n;
const VERIFY_WINDOW_SLOTS = 32n;
const VALIDATOR_ACTIVE_SLOTS = 64n;
const POSITIONS_PER_VALIDATOR = 8;
const MAX_DRAW_ROUNDS = 2;
const SLASH_TO_REQUESTER_PERCENT = 50n;
const POOL_KIND = 5;
const POOL_BYTES = 288;
const [NO_VERDICT, ACCEPT, REJECT] = [0, 1, 2];
const DRAW_DOMAIN = utf8("ambient/pool-draw/v1\0");
const CHALLENGE_DOMAIN = utf8("ambient/pol-challenge/v1\0");
const POSITIONS_DOMAIN = utf8("ambient/pol-positions/v1\0");
const TWO64 = 1n << 64n;

export const poolAddress = (query: Uint8Array): Uint8Array => findProgramAddress([utf8("pool"), query]);

type Pool = { round: number; start1: number; beaconSlot: bigint; verifyEnd: bigint; beacon: Uint8Array; first: Uint8Array; validators: Uint8Array[]; verdicts: number[] };

function decodePool(d: Uint8Array): Pool {
  if (d.length !== POOL_BYTES || d[0] !== POOL_KIND) throw new Error("not a pool account");
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const n = d[2];
  const validators: Uint8Array[] = [];
  const verdicts: number[] = [];
  for (let i = 0; i < n; i++) {
    validators.push(d.slice(88 + 32 * i, 120 + 32 * i));
    verdicts.push(d[280 + i]);
  }
  const round = d[1] & 0x0f;
  return { round, start1: round === 0 ? 0 : d[1] >> 4, beaconSlot: dv.getBigUint64(8, true), verifyEnd: dv.getBigUint64(16, true), beacon: d.slice(24, 56), first: d.slice(56, 88), validators, verdicts };
}
function encodePool(p: Pool): Uint8Array {
  const d = new Uint8Array(POOL_BYTES);
  const dv = new DataView(d.buffer);
  d[0] = POOL_KIND;
  d[1] = p.round | (p.start1 << 4);
  d[2] = p.validators.length;
  dv.setBigUint64(8, p.beaconSlot, true);
  dv.setBigUint64(16, p.verifyEnd, true);
  d.set(p.beacon, 24);
  d.set(p.first, 56);
  p.validators.forEach((v, i) => d.set(v, 88 + 32 * i));
  p.verdicts.forEach((v, i) => (d[280 + i] = v));
  return d;
}
function viewPool(d: Uint8Array): Json {
  const p = decodePool(d);
  return {
    kind: "PoolAccount", round: BigInt(p.round), beacon_slot: p.beaconSlot, verify_end_slot: p.verifyEnd, beacon: hex(p.beacon),
    first_beacon: hex(p.first), validators: p.validators.map(b58), verdicts: p.verdicts.map((v) => BigInt(v)),
    round_starts: p.round === 0 ? [0n] : [0n, BigInt(p.start1)],
  };
}
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
const positionsFor = (q: Acct, beacon: Uint8Array, v: Uint8Array): number[] =>
  selectPositions(sha256(CHALLENGE_DOMAIN, beacon, v, commitmentHash(q)), Number(g(q, "num_tokens")), POSITIONS_PER_VALIDATOR);

/** The draw of one round: beacon = first ancestor >= `after`, candidates = recent voters with LStake. */
function drawRound(bank: Bank, q: Acct, qa: Uint8Array, after: bigint, exclude: Uint8Array[]): { slot: bigint; beacon: Uint8Array; validators: Uint8Array[] } {
  const later = bank.slotHashes.map(([s]) => s).filter((s) => s >= after).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const idx = bank.blockhashes.length - later.length;
  if (later.length === 0 || idx < 0) return ixError("auction-draw-not-ready", `no ancestor at or after ${after}`);
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
  return { slot, beacon, validators: weightedSample(weights, seed, VALIDATORS_PER_QUERY) };
}
function openPool(c: Ctx, q: Acct, qa: Uint8Array, pa: Uint8Array): Pool {
  const d = c.bank.auction.get(hex(pa));
  if (d) return decodePool(d);
  const r = drawRound(c.bank, q, qa, g(q, "result_slot") + DRAW_DELAY_SLOTS, [gb(q, "winner")]);
  return { round: 0, start1: 0, beaconSlot: r.slot, verifyEnd: r.slot + VERIFY_WINDOW_SLOTS, beacon: r.beacon, first: r.beacon, validators: r.validators, verdicts: r.validators.map(() => NO_VERDICT) };
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
  const accept = data[4];
  const ev = data.slice(5);
  if (accept > 1 || (accept === 1) === ev.length > 0) ixError("auction-bad-data", "accept with evidence or reject without");
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
    if (!positionsFor(q, beaconOf(p, i), v).includes(pos)) ixError("auction-bad-evidence", "not a drawn position");
    const leaf = encodeMessage(typeByName("LogitFingerprint"), fp);
    if (pos >= n || sibs.length !== merkleDepth(n) || !bytesEq(rootFromProof(leaf, pos, sibs), gb(q, "pol_root"))) {
      ixError("auction-bad-evidence", "the Merkle path does not lead to the root");
    }
  }
  p.verdicts[i] = accept === 1 ? ACCEPT : REJECT;
  storePool(c, pa, p);
}

function poolSettle(c: Ctx, n: number): void {
  if (n < 6) ixError("auction-bad-accounts", "settle takes at least 6 accounts");
  c.writable(...Array.from({ length: n }, (_, i) => i));
  const [qa, pa, ra, wa, ba, ia] = [0, 1, 2, 3, 4, 5].map((i) => c.key(i));
  if (!bytesEq(pa, poolAddress(qa))) ixError("auction-bad-accounts", "not the pool address");
  const q = c.load(qa, 1);
  if (!q) return ixError("auction-no-query", "");
  if (Number(g(q, "status")) !== RESULT_POSTED) ixError("auction-wrong-status", QUERY_STATUS[Number(g(q, "status"))]);
  if (!bytesEq(ra, gb(q, "requester"))) ixError("auction-bad-accounts", "not the requester");
  const winner = gb(q, "winner");
  if (!bytesEq(wa, winner)) ixError("auction-bad-accounts", "not the winner");
  if (!bytesEq(ba, bidAddress(qa, winner))) ixError("auction-bad-accounts", "not the winning bid");
  if (!bytesEq(ia, INCINERATOR_ID)) ixError("auction-bad-accounts", "not the incinerator");
  const p = openPool(c, q, qa, pa);
  const listed = Array.from({ length: n - 6 }, (_, i) => c.key(6 + i));
  if (listed.length !== p.validators.length || listed.some((x, i) => !bytesEq(x, p.validators[i]))) ixError("auction-bad-accounts", "the drawn validators in draw order");
  const accepts = p.verdicts.filter((x) => x === ACCEPT).length;
  const rejects = p.verdicts.filter((x) => x === REJECT).length;
  const decided = accepts >= VERDICT_QUORUM || rejects >= VERDICT_QUORUM;
  const slot = c.bank.slot;
  if (!decided && slot < p.verifyEnd) ixError("auction-verify-open", "");
  if (!decided) {
    const absent = p.validators.filter((_, i) => i >= roundStart(p) && p.verdicts[i] === NO_VERDICT);
    let r: { slot: bigint; beacon: Uint8Array; validators: Uint8Array[] } | null = null;
    if (p.round + 1 < MAX_DRAW_ROUNDS) r = drawRound(c.bank, q, qa, p.verifyEnd, [winner, ...p.validators]);
    for (const v of absent) slashWork(c.bank, v);
    if (r !== null && r.validators.length > 0) {
      storePool(c, pa, {
        round: p.round + 1, start1: p.validators.length, beaconSlot: r.slot, verifyEnd: r.slot + VERIFY_WINDOW_SLOTS, beacon: r.beacon,
        first: p.first, validators: [...p.validators, ...r.validators], verdicts: [...p.verdicts, ...r.validators.map(() => NO_VERDICT)],
      });
      return;
    }
  }
  const b = c.load(ba, 2);
  if (!b) return ixError("auction-no-bid", "");
  const bond = g(b, "bond_lamports");
  const escrow = g(q, "escrow_lamports");
  if (accepts === 0 && rejects === 0) {
    c.move(qa, ra, escrow);
    c.move(ba, winner, bond);
    b.f.set("status", BigInt(REFUNDED_B));
    q.f.set("status", 7n);
    q.f.set("escrow_lamports", 0n);
    c.store(ba, b);
    c.store(qa, q);
    return;
  }
  const verified = rejects < VERDICT_QUORUM && accepts >= rejects;
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
    c.move(qa, winner, pay);
    c.move(ba, winner, bond);
    c.move(qa, ra, left - pay);
    b.f.set("status", BigInt(REFUNDED_B));
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
  if (verified) creditWork(c.bank, winner, g(q, "num_tokens"), 0n);
  else slashWork(c.bank, winner);
  for (const v of counted) creditWork(c.bank, v, 0n, BigInt(positionsFor(q, beaconOf(p, p.validators.findIndex((x) => bytesEq(x, v))), v).length));
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
    changed[b58(unhex(k))] = d[0] === POOL_KIND ? viewPool(d) : viewAccount(d);
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
  ...Object.fromEntries(["register_miner", "request", "commit_bid", "reveal_bid", "close_auction", "post_result", "expire", "verdict", "settle"].map((t) => [`auction/${t}`, transition])),
};
