// The query auction program (spec/auction.md), run through the bank of spec/bank.md.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, arr, bytesEq, cmpBytes, hex, int, readU32le, reject, sha256, str, u64le, unhex, utf8 } from "./util.js";
import * as ed from "@noble/ed25519";
import { b58, unb58, verifyDomain } from "./crypto.js";
import { encodeMessage, typeByName, type Value } from "./codec.js";
import { Bank, PROGRAMS, type Program, ixError } from "./bank.js";
import { isSigner, isWritable, parseTransaction, type Transaction } from "./tx.js";

export const AUCTION_PROGRAM_ID = unb58("Auction111111111111111111111111111111111111");
export const INCINERATOR_ID = unb58("1nc1nerator11111111111111111111111111111111");
export const COMMIT_WINDOW_SLOTS = 8n;
export const REVEAL_WINDOW_SLOTS = 8n;
export const MIN_SERVE_SLOTS = 8n;
export const MAX_DEADLINE_SLOTS = 216_000n;
export const MAX_BIDS_PER_QUERY = 8;
export const BID_BOND_PERCENT = 100n;
export const MIN_BID_BOND_LAMPORTS = 10_000n;
export const QUERY_FEE_LAMPORTS = 10_000n;
export const BID_DOMAIN = utf8("ambient/auction-bid/v1\0");
const U64_MAX = (1n << 64n) - 1n;

const QUERY_STATUS = ["", "OPEN", "AWARDED", "RESULT_POSTED", "EXPIRED", "REFUNDED", "SETTLED", "REJECTED"];
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

const DATA_LEN: { [tag: number]: number } = { 0: 4, 1: 136, 2: 36, 3: 44, 4: 4, 5: 142, 6: 4 };

const auctionProgram: Program = (bank, tx, accts, data) => {
  if (data.length < 4) ixError("auction-bad-data", "no tag");
  const tag = readU32le(data, 0);
  if (DATA_LEN[tag] === undefined || data.length !== DATA_LEN[tag]) ixError("auction-bad-data", `tag ${tag}, ${data.length} bytes`);
  const c = new Ctx(bank, tx, accts);
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
      const minDeadline = COMMIT_WINDOW_SLOTS + REVEAL_WINDOW_SLOTS + MIN_SERVE_SLOTS;
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
          commit_end_slot: slot + COMMIT_WINDOW_SLOTS,
          reveal_end_slot: slot + COMMIT_WINDOW_SLOTS + REVEAL_WINDOW_SLOTS,
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

// ---------------------------------------------------------------- handlers
const transition: Handler = (input) => {
  const j = jsonInput(input);
  const bank = new Bank(int(j.slot), new Uint8Array(32), new Uint8Array(32));
  for (const p of arr(j.accounts)) bank.accounts.set(hex(unb58(str(arr(p)[0]))), int(arr(p)[1]));
  bank.parentAccounts = new Map(bank.accounts);
  for (const p of arr(j.auction_accounts)) bank.auction.set(hex(unb58(str(arr(p)[0]))), unhex(str(arr(p)[1])));
  const raw = unhex(str(j.tx));
  // the bank's only recent blockhash is the transaction's (interop/README.md, auction rows)
  bank.blockhashes = [parseTransaction(raw).recentBlockhash];
  const res = bank.process(raw);
  if (res.error !== null) reject(res.error.split(":")[0], res.error);
  const sortK = <T,>(m: Map<string, T>): [string, T][] => [...m.entries()].sort((a, b) => cmpBytes(unhex(a[0]), unhex(b[0])));
  const changed: { [k: string]: Json } = {};
  for (const [k] of sortK(new Map([...bank.auctionModified].map((x) => [x, 0])))) changed[b58(unhex(k))] = viewAccount(bank.auction.get(k)!);
  return ok({
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
  ...Object.fromEntries(["register_miner", "request", "commit_bid", "reveal_bid", "close_auction", "post_result", "expire"].map((t) => [`auction/${t}`, transition])),
};
