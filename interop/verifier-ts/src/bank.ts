// The minimal bank (spec/bank.md): fees, system transfers, the vote program, bank hash.
import { type Handler, jsonInput, ok } from "./handler.js";
import fs from "node:fs";
import path from "node:path";
import { type Json, arr, parseJson, bytesEq, cmpBytes, concat, hex, int, obj, readU32le, readU64le, reject, Reject, sha256, str, u32le, u64le, unhex, utf8 } from "./util.js";
import { b58, unb58, verifyDomain } from "./crypto.js";
import { decodeMessage, encodeMessage, typeByName, type Record as CborRecord } from "./codec.js";
import { type Transaction, checkTransaction, isSigner, isWritable } from "./tx.js";

export const LAMPORTS_PER_SIGNATURE = 5000n;
export const FEE_BURN_PERCENT = 50n;
export const MAX_PROCESSING_AGE = 150;
export const MAX_RECENT_BLOCKHASHES = 300;
export const MAX_SLOT_HASHES = 512;
export const SYSTEM_PROGRAM_ID = new Uint8Array(32);
export const VOTE_PROGRAM_ID = unb58("Vote111111111111111111111111111111111111111");
/** spec/svm.md "Rent": agave's mainnet Rent, 6,960 lamports per byte (3,480 per byte-year x 2 years) of data plus 128 bytes */
export const RENT_LAMPORTS_PER_BYTE = 6960n;
export const ACCOUNT_STORAGE_OVERHEAD_BYTES = 128n;
export const rentExemptMinimum = (dataLen: bigint): bigint => (ACCOUNT_STORAGE_OVERHEAD_BYTES + dataLen) * RENT_LAMPORTS_PER_BYTE;
export const RENT_EXEMPT_MINIMUM_NO_DATA = rentExemptMinimum(0n);
/** agave's RentState transition rule for an account without data: it may end with 0 lamports or
 * at least the minimum; below it (rent-paying) only if it was rent-paying before and was not credited. */
export const rentTransitionAllowed = (pre: bigint, post: bigint): boolean =>
  post === 0n || post >= RENT_EXEMPT_MINIMUM_NO_DATA || (pre > 0n && pre < RENT_EXEMPT_MINIMUM_NO_DATA && post <= pre);
const ZERO32 = new Uint8Array(32);

const H = (b: Uint8Array): string => hex(b);
const K = (h: string): Uint8Array => unhex(h);

/** An instruction error: fee stays, state rolls back. */
export class InstructionError extends Error {}
export const ixError = (code: string, detail: string): never => {
  throw new InstructionError(`${code}: ${detail}`);
};

export type Program = (bank: Bank, tx: Transaction, ixAccounts: number[], data: Uint8Array) => void;
export const PROGRAMS = new Map<string, Program>();

export class Bank {
  accounts = new Map<string, bigint>();
  parentAccounts = new Map<string, bigint>();
  blockhashes: Uint8Array[] = [];
  statusCache = new Set<string>();
  slotHashes: [bigint, Uint8Array][] = [];
  lastVotes = new Map<string, bigint>();
  auction = new Map<string, Uint8Array>();
  auctionModified = new Set<string>();
  /** work-credit accounts (spec/lstake.md "Work accounts in the bank"), written by the Logit Pool's settle */
  work = new Map<string, Uint8Array>();
  workModified = new Set<string>();
  /** the Logit Pool's LStake table for the draw (spec/logit_pool.md); null: weight 1 per validator */
  lstake: Map<string, bigint> | null = null;
  landed: [string, bigint][] = [];
  /** the chain's slot duration (genesis PohParams), the unit of the auction's windows (spec/auction.md "Windows") */
  slotDurationUs = 400_000n;
  fees = 0n;
  signatureCount = 0n;
  constructor(
    public slot: bigint,
    public parentHash: Uint8Array,
    public leader: Uint8Array,
  ) {}

  lamports(k: Uint8Array): bigint {
    return this.accounts.get(H(k)) ?? 0n;
  }
  setLamports(k: Uint8Array, v: bigint): void {
    if (v < 0n || v >= 1n << 64n) throw new Error("lamports out of range");
    this.accounts.set(H(k), v);
  }

  /** Process one wire transaction: BlockError (Reject) or a result with an optional error. */
  process(raw: Uint8Array): { fee: bigint; error: string | null; signature: Uint8Array } {
    const tx = checkTransaction(raw);
    const recent = this.blockhashes.slice(-MAX_PROCESSING_AGE);
    if (!recent.some((h) => bytesEq(h, tx.recentBlockhash))) reject("blockhash-not-found");
    const sigKey = H(tx.signatures[0]);
    if (this.statusCache.has(sigKey)) reject("already-processed");
    if (!isSigner(tx, 0) || !isWritable(tx, 0)) reject("bad-fee-payer");
    const fee = LAMPORTS_PER_SIGNATURE * BigInt(tx.signatures.length);
    const payer = tx.keys[0];
    if (this.lamports(payer) < fee) reject("insufficient-funds-for-fee");
    const left = this.lamports(payer) - fee;
    // agave validate_fee_payer: a rent-exempt payer may not be left rent-paying (spec/svm.md "Rent")
    if (left > 0n && left < RENT_EXEMPT_MINIMUM_NO_DATA && this.lamports(payer) >= RENT_EXEMPT_MINIMUM_NO_DATA) reject("insufficient-funds-for-rent");
    this.setLamports(payer, this.lamports(payer) - fee);
    this.fees += fee;
    this.signatureCount += BigInt(tx.signatures.length);
    this.statusCache.add(sigKey);
    // instructions run atomically: journal = copies of the mutable state
    const saved = {
      accounts: new Map(this.accounts),
      lastVotes: new Map(this.lastVotes),
      landed: this.landed.length,
      auction: new Map(this.auction),
      auctionModified: new Set(this.auctionModified),
      work: new Map(this.work),
      workModified: new Set(this.workModified),
    };
    let error: string | null = null;
    try {
      for (const ix of tx.instructions) {
        const pid = tx.keys[ix.programIndex];
        const prog = bytesEq(pid, SYSTEM_PROGRAM_ID) ? systemProgram : bytesEq(pid, VOTE_PROGRAM_ID) ? voteProgram : PROGRAMS.get(H(pid));
        if (prog === undefined) return ixError("unknown-program", b58(pid));
        prog(this, tx, ix.accounts, ix.data);
      }
    } catch (e) {
      if (!(e instanceof InstructionError)) throw e;
      error = e.message;
      this.accounts = saved.accounts;
      this.lastVotes = saved.lastVotes;
      this.landed.length = saved.landed;
      this.auction = saved.auction;
      this.auctionModified = saved.auctionModified;
      this.work = saved.work;
      this.workModified = saved.workModified;
    }
    return { fee, error, signature: tx.signatures[0] };
  }

  freeze(lastBlockhash: Uint8Array): Uint8Array {
    const toLeader = this.fees - (this.fees * FEE_BURN_PERCENT) / 100n;
    if (toLeader > 0n) this.setLamports(this.leader, this.lamports(this.leader) + toLeader);
    this.blockhashes.push(lastBlockhash);
    if (this.blockhashes.length > MAX_RECENT_BLOCKHASHES) this.blockhashes.splice(0, this.blockhashes.length - MAX_RECENT_BLOCKHASHES);
    const parts = [this.parentHash, this.accountsDeltaHash(), u64le(this.signatureCount), lastBlockhash];
    const vh = this.votesHash();
    if (vh) parts.push(vh);
    if (this.auctionModified.size > 0) parts.push(this.auctionDeltaHash());
    return sha256(...parts);
  }

  changedAccounts(): [Uint8Array, bigint][] {
    const out: [Uint8Array, bigint][] = [];
    for (const [k, v] of this.accounts) if (this.parentAccounts.get(k) !== v) out.push([K(k), v]);
    // an account the SVM left with 0 lamports is gone (agave): written, with 0 lamports
    for (const [k, v] of this.parentAccounts) if (!this.accounts.has(k) && v !== 0n) out.push([K(k), 0n]);
    return out;
  }
  accountsDeltaHash(): Uint8Array {
    const ch = this.changedAccounts();
    return ch.length === 0 ? ZERO32 : accountsHash(ch);
  }
  votesHash(): Uint8Array | null {
    if (this.landed.length === 0) return null;
    return sha256(...this.landed.flatMap(([v, s]) => [K(v), u64le(s)]));
  }
  auctionDeltaHash(): Uint8Array {
    const m: [Uint8Array, Uint8Array][] = [...this.auctionModified].map((a) => [K(a), this.auction.get(a) ?? new Uint8Array(0)]);
    return sha256(utf8("ambient/auction-delta/v1\0"), auctionAccountsHash(m));
  }
}

/** spec/bank.md "Account hash" of a system account without data: sha256(lamports u64 LE ||
 * rent_epoch u64 LE (0) || data (none) || executable u8 (0) || owner (system: 32 zero bytes) ||
 * pubkey); 32 zero bytes for 0 lamports. */
export function systemAccountHash(k: Uint8Array, lamports: bigint): Uint8Array {
  if (lamports === 0n) return ZERO32;
  return sha256(u64le(lamports), u64le(0n), new Uint8Array([0]), ZERO32, k);
}
/** sha256 over (pubkey || account hash), sorted by pubkey: lamport-only accounts (system
 * accounts without data) plus accounts given by their account hash (the genesis programs). */
export function accountsHash(accts: [Uint8Array, bigint][], hashed: [Uint8Array, Uint8Array][] = []): Uint8Array {
  const all: [Uint8Array, Uint8Array][] = [...accts.map(([k, v]): [Uint8Array, Uint8Array] => [k, systemAccountHash(k, v)]), ...hashed];
  all.sort((a, b) => cmpBytes(a[0], b[0]));
  return sha256(...all.flatMap(([k, h]) => [k, h]));
}
/** The genesis programs (spec/svm.md "Genesis programs"): address and account hash. */
export const GENESIS_PROGRAM_ACCOUNT_HASHES: [string, string][] = [
  ["MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "07e98fbcb1e9febeb5465d78ff7df3a98f55f11a42b9d6d1cd248457928a2693"],
  ["TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", "d011a76bf5b4c7490ada638a5b5a2e0a0497daaabbd0563ee27eecea01e6e7ee"],
  ["TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb", "b23868cca2e413ba0120f6f78715070c68a9bdf6fb827f06957cf15f726b348d"],
  ["3gvYRKWyXRR9xKWe1ZjPhLY5ZJRN7KDB4rFZFGoJfFk2", "14f2ae5428f66c78376bfe864925298e0b232f8c6ec80abf4ffb343a88bfeec0"],
  ["ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL", "5dd63e394779a905ea001661cb332fe5d0e61969fe3fd1957babc1f8357242a9"],
  ["DoU57AYuPFu2QU514RktNPG22QhApEjnKxnBcu4BHDTY", "f3f258750883747172e77a9e2c6075ce9036c3969d88246882c239071827611a"],
];
export function auctionAccountsHash(m: [Uint8Array, Uint8Array][]): Uint8Array {
  const s = [...m].sort((a, b) => cmpBytes(a[0], b[0]));
  return sha256(...s.flatMap(([k, d]) => [k, u32le(d.length), d]));
}

// ---------------------------------------------------------------- programs
const systemProgram: Program = (bank, tx, accts, data) => {
  if (data.length !== 12 || readU32le(data, 0) !== 2) ixError("unsupported-instruction", "only Transfer");
  if (accts.length < 2) ixError("missing-accounts", "transfer needs from and to");
  const [from, to] = accts;
  if (!isSigner(tx, from)) ixError("missing-signature", "transfer source must sign");
  if (!isWritable(tx, from) || !isWritable(tx, to)) ixError("readonly-account", "transfer accounts must be writable");
  const amount = readU64le(data, 4);
  const a = tx.keys[from];
  const b = tx.keys[to];
  const [preA, preB] = [bank.lamports(a), bank.lamports(b)];
  if (bank.lamports(a) < amount) ixError("insufficient-lamports", `${bank.lamports(a)} < ${amount}`);
  bank.setLamports(a, bank.lamports(a) - amount);
  if (bank.lamports(b) + amount >= 1n << 64n) ixError("overflow", "u64");
  bank.setLamports(b, bank.lamports(b) + amount);
  // agave's rent check after the run (spec/svm.md "Rent"; per transaction there, the same for a
  // single transfer): neither account may end rent-paying unless it was and was not credited
  for (const [k, pre] of [[a, preA], [b, preB]] as [Uint8Array, bigint][]) {
    if (!rentTransitionAllowed(pre, bank.lamports(k))) ixError("insufficient-funds-for-rent", b58(k));
  }
  // the system program runs in the SVM: an account left with 0 lamports is gone (spec/bank.md "Accounts")
  for (const k of [a, b]) if (bank.lamports(k) === 0n) bank.accounts.delete(H(k));
};

export type Vote = { voter: Uint8Array; slot: bigint; bankHash: Uint8Array; root: bigint | null; timestampMs: bigint };

/** The Vote carried as instruction data: canonical, voter, own signature, root (spec/bank.md). */
export function decodeVoteData(data: Uint8Array, account: Uint8Array): Vote {
  let body: CborRecord;
  try {
    body = decodeMessage(data, "Vote").body;
  } catch (e) {
    if (e instanceof Reject) return ixError("vote-bad-data", e.message);
    throw e;
  }
  const voter = body.get("voter") as Uint8Array;
  if (!bytesEq(voter, account)) ixError("vote-wrong-voter", "vote.voter is not the account");
  const zeroed = new Map(body);
  zeroed.set("signature", new Uint8Array(64));
  if (!verifyDomain("vote", encodeMessage(typeByName("Vote"), zeroed), body.get("signature") as Uint8Array, voter)) ixError("vote-bad-signature", "");
  const slot = body.get("slot") as bigint;
  const root = body.has("root") ? (body.get("root") as bigint) : null;
  if (root !== null && root > slot) ixError("vote-bad-root", `${root} > ${slot}`);
  return { voter, slot, bankHash: body.get("bank_hash") as Uint8Array, root, timestampMs: body.get("timestamp_ms") as bigint };
}

const voteProgram: Program = (bank, tx, accts, data) => {
  if (accts.length !== 1) ixError("vote-bad-accounts", `${accts.length} accounts`);
  if (!isSigner(tx, accts[0])) ixError("vote-missing-signature", "");
  const v = decodeVoteData(data, tx.keys[accts[0]]);
  const sh = bank.slotHashes.find(([s]) => s === v.slot);
  if (v.slot >= bank.slot || !sh) ixError("vote-not-ancestor", `${v.slot}`);
  if (!bytesEq(sh![1], v.bankHash)) ixError("vote-hash-mismatch", `${v.slot}`);
  const last = bank.lastVotes.get(H(v.voter));
  if (last !== undefined && v.slot <= last) ixError("vote-too-old", `the voter's last landed vote is slot ${last}`);
  bank.lastVotes.set(H(v.voter), v.slot);
  bank.landed.push([H(v.voter), v.slot]);
};

// ---------------------------------------------------------------- vote transactions
export function parseVoteTransaction(raw: Uint8Array): { tx: Transaction; vote: Vote } {
  const tx = checkTransaction(raw);
  if (tx.signatures.length !== 1 || tx.instructions.length !== 1 || !bytesEq(tx.keys[tx.instructions[0].programIndex], VOTE_PROGRAM_ID)) reject("not-a-vote");
  const ix = tx.instructions[0];
  if (ix.accounts.length !== 1 || ix.accounts[0] !== 0) reject("vote-bad-accounts");
  try {
    return { tx, vote: decodeVoteData(ix.data, tx.keys[0]) };
  } catch (e) {
    if (e instanceof InstructionError) reject(e.message.split(":")[0], e.message);
    throw e;
  }
}

// ---------------------------------------------------------------- handlers
const pairs = (x: Json): [string, Json][] => arr(x).map((p) => [str(arr(p)[0]), arr(p)[1]]);
const sortedAccounts = (m: Map<string, bigint>): Json =>
  [...m.entries()].sort((a, b) => cmpBytes(K(a[0]), K(b[0]))).map(([k, v]) => [b58(K(k)), v]);

const genesis: Handler = (input) => {
  const j = jsonInput(input);
  const acc = pairs(j.accounts).map(([a, l]) => [unb58(a), int(l)] as [Uint8Array, bigint]);
  const h = sha256(utf8("ambient/bank-genesis/v1\0"), unhex(str(j.genesis_hash)), accountsHash(acc));
  return ok({ bank_hash: hex(h) });
};

/** A child bank of the JSON parent state (spec/bank.md `child()`). */
export function childBank(parent: { [k: string]: Json }, slot: bigint, leader: Uint8Array): Bank {
  const bank = new Bank(slot, unhex(str(parent.bank_hash)), leader);
  for (const [a, l] of pairs(parent.accounts)) bank.accounts.set(H(unb58(a)), int(l));
  bank.parentAccounts = new Map(bank.accounts);
  bank.blockhashes = arr(parent.blockhashes).map((h) => unhex(str(h)));
  bank.slotHashes = arr(parent.slot_hashes).map((p) => [int(arr(p)[0]), unhex(str(arr(p)[1]))]);
  bank.slotHashes.push([int(parent.slot), bank.parentHash]);
  if (bank.slotHashes.length > MAX_SLOT_HASHES) bank.slotHashes.splice(0, bank.slotHashes.length - MAX_SLOT_HASHES);
  for (const [v, s] of pairs(parent.last_votes ?? [])) bank.lastVotes.set(H(unb58(v)), int(s));
  if (parent.status_cache !== undefined) for (const s of arr(parent.status_cache)) bank.statusCache.add(str(Array.isArray(s) ? s[0] : s));
  return bank;
}

/** Instruction errors compare by code: the vote and auction programs' codes are normative
 * (spec/bank.md, spec/auction.md); the system program's error text is not, so only its
 * presence is compared ("error"). */
export const errorCode = (e: Json): Json => {
  if (e === null) return null;
  const code = String(e).split(":")[0];
  return /^(vote|auction)-[a-z0-9-]+$/.test(code) ? code : "error";
};
const projectResults = (out: Json): Json => {
  const o = obj(out);
  return { ...o, results: arr(o.results).map((r) => ({ ...obj(r), error: errorCode(obj(r).error ?? null) })) };
};

const slotH: Handler = (input) => {
  const j = jsonInput(input);
  const bank = childBank(obj(j.parent), int(j.slot), unb58(str(j.leader)));
  const results: Json[] = [];
  for (const t of arr(j.txs)) {
    const r = bank.process(unhex(str(t)));
    results.push({ error: r.error, fee: r.fee, signature: hex(r.signature) });
  }
  const bankHash = bank.freeze(unhex(str(j.last_blockhash)));
  const vh = bank.votesHash();
  return ok({
    accounts: sortedAccounts(bank.accounts),
    accounts_delta_hash: hex(bank.accountsDeltaHash()),
    bank_hash: hex(bankHash),
    landed_votes: bank.landed.map(([v, s]) => [b58(K(v)), s]),
    results,
    votes_hash: vh ? hex(vh) : null,
  });
};

const voteTx: Handler = (input) => {
  const { tx, vote } = parseVoteTransaction(input);
  return ok({
    bank_hash: hex(vote.bankHash),
    recent_blockhash: hex(tx.recentBlockhash),
    root: vote.root,
    slot: vote.slot,
    timestamp_ms: vote.timestampMs,
    voter: b58(vote.voter),
  });
};

const voteLand: Handler = (input) => {
  const j = jsonInput(input);
  const { tx } = parseVoteTransaction(unhex(str(j.tx)));
  const bank = new Bank(int(j.bank_slot), ZERO32, ZERO32);
  bank.slotHashes = arr(j.slot_hashes).map((p) => [int(arr(p)[0]), unhex(str(arr(p)[1]))]);
  for (const [v, s] of pairs(j.last_votes)) bank.lastVotes.set(H(unb58(v)), int(s));
  try {
    voteProgram(bank, tx, tx.instructions[0].accounts, tx.instructions[0].data);
  } catch (e) {
    if (e instanceof InstructionError) reject(e.message.split(":")[0], e.message);
    throw e;
  }
  const vh = bank.votesHash();
  return ok({
    landed: bank.landed.map(([v, s]) => [b58(K(v)), s]),
    last_votes: [...bank.lastVotes.entries()].sort((a, b) => cmpBytes(K(a[0]), K(b[0]))).map(([v, s]) => [b58(K(v)), s]),
    votes_hash: vh ? hex(vh) : null,
  });
};

/** spec/bank.md "Account hash": agave's field order, sha256; 0 lamports -> 32 zero bytes. */
export function accountHash(k: Uint8Array, lamports: bigint, owner: Uint8Array, data: Uint8Array, executable: boolean, rentEpoch: bigint): Uint8Array {
  if (lamports === 0n) return ZERO32;
  return sha256(u64le(lamports), u64le(rentEpoch), data, new Uint8Array([executable ? 1 : 0]), owner, k);
}

const accountHashH: Handler = (input) => {
  const j = jsonInput(input);
  const U64 = 1n << 64n;
  const accts = arr(j.accounts).map((a0) => {
    const a = obj(a0);
    const lamports = int(a.lamports);
    const rentEpoch = int(a.rent_epoch);
    if (lamports < 0n || lamports >= U64 || rentEpoch < 0n || rentEpoch >= U64) reject("malformed", "u64");
    if (typeof a.executable !== "boolean") reject("malformed", "executable");
    const k = unb58(str(a.pubkey));
    return { k, h: accountHash(k, lamports, unb58(str(a.owner)), unhex(str(a.data)), a.executable === true, rentEpoch) };
  });
  if (new Set(accts.map((a) => H(a.k))).size !== accts.length) reject("malformed", "duplicate pubkey");
  return ok({
    account_hashes: accts.map((a) => hex(a.h)),
    accounts_hash: hex(accountsHash([], accts.map((a): [Uint8Array, Uint8Array] => [a.k, a.h]))),
  });
};

const SPL_TOKEN_PROGRAM_ID = unb58("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
const COMPUTE_BUDGET_PROGRAM_ID = unb58("ComputeBudget111111111111111111111111111111");
type FullAccount = { k: Uint8Array; lamports: bigint; owner: Uint8Array; data: Uint8Array; executable: boolean; rentEpoch: bigint };
function fullAccount(a0: Json): FullAccount {
  const a = obj(a0);
  const lamports = int(a.lamports);
  const rentEpoch = int(a.rent_epoch);
  if (lamports < 0n || lamports >= 1n << 64n || rentEpoch < 0n || rentEpoch >= 1n << 64n) reject("malformed", "u64");
  if (typeof a.executable !== "boolean") reject("malformed", "executable");
  return { k: unb58(str(a.pubkey)), lamports, owner: unb58(str(a.owner)), data: unhex(str(a.data)), executable: a.executable === true, rentEpoch };
}
const fullHash = (a: FullAccount): Uint8Array => accountHash(a.k, a.lamports, a.owner, a.data, a.executable, a.rentEpoch);

/** bank/svm-slot (spec/bank.md "Vectors"): this verifier has no SVM, so it cannot execute the
 * SPL Token instructions. It checks everything that follows from the spec without one: every
 * transaction's sanitizing, signatures, blockhash, status cache and fee (5,000 per signature; no
 * compute-budget instruction in these vectors), the signature count; the written accounts the
 * vector states (output.json) are only accounts a transaction could write (its writable keys, or
 * the leader), include every fee payer, conserve lamports (they changed by exactly minus the
 * burned half of the fees) and tokens (per mint, the token accounts' amounts over the whole
 * post-state add up to the supply); from them it recomputes the decoded token view, the
 * accounts-delta hash and the bank hash. Which transaction fails, its logs and compute units are
 * taken as stated (projected out of the comparison). */
const svmSlotH: Handler = (input, ctx) => {
  const j = jsonInput(input);
  const p = obj(j.parent);
  const parent = new Map<string, FullAccount>();
  for (const a of arr(p.accounts).map(fullAccount)) {
    if (parent.has(H(a.k))) reject("malformed", "duplicate pubkey");
    parent.set(H(a.k), a);
  }
  const leader = unb58(str(j.leader));
  const blockhashes = arr(p.blockhashes).map((h) => unhex(str(h))).slice(-MAX_PROCESSING_AGE);
  const claimed = obj(parseJson(fs.readFileSync(path.join(ctx.dir, "output.json"), "utf8")));
  const claimedResults = arr(claimed.results);
  const txs = arr(j.txs).map((t) => checkTransaction(unhex(str(t))));
  if (claimedResults.length !== txs.length) reject("malformed", "one result per transaction");
  const seen = new Set<string>();
  const writable = new Set<string>([H(leader)]);
  const payers = new Set<string>();
  let fees = 0n;
  let signatureCount = 0n;
  const results: Json[] = txs.map((tx, i) => {
    if (!blockhashes.some((h) => bytesEq(h, tx.recentBlockhash))) reject("blockhash-not-found");
    if (seen.has(H(tx.signatures[0]))) reject("already-processed");
    seen.add(H(tx.signatures[0]));
    if (!isSigner(tx, 0) || !isWritable(tx, 0)) reject("bad-fee-payer");
    if (tx.instructions.some((ix) => bytesEq(tx.keys[ix.programIndex], COMPUTE_BUDGET_PROGRAM_ID))) reject("malformed", "compute-budget instructions are not in these vectors");
    tx.keys.forEach((k, n) => {
      if (isWritable(tx, n)) writable.add(H(k));
    });
    payers.add(H(tx.keys[0]));
    const fee = LAMPORTS_PER_SIGNATURE * BigInt(tx.signatures.length);
    fees += fee;
    signatureCount += BigInt(tx.signatures.length);
    const c = obj(claimedResults[i]);
    return { signature: hex(tx.signatures[0]), fee, error: c.error ?? null, compute_units: c.compute_units ?? null, logs: c.logs ?? null };
  });
  const written = arr(claimed.written).map(fullAccount);
  const post = new Map(parent);
  let delta = 0n;
  for (const a of written) {
    if (!writable.has(H(a.k))) reject("malformed", `${b58(a.k)} is written but no transaction could write it`);
    delta += a.lamports - (parent.get(H(a.k))?.lamports ?? 0n);
    post.set(H(a.k), a);
  }
  for (const f of payers) if (!written.some((a) => H(a.k) === f)) reject("malformed", "a fee payer is not written");
  if (delta !== -((fees * FEE_BURN_PERCENT) / 100n)) reject("malformed", `lamports changed by ${delta}, not minus the burned fees`);
  // tokens: per mint, the token accounts of the whole post-state add up to the supply
  const supply = new Map<string, bigint>();
  const held = new Map<string, bigint>();
  for (const a of post.values()) {
    if (!bytesEq(a.owner, SPL_TOKEN_PROGRAM_ID) || a.lamports === 0n) continue;
    if (a.data.length === 82) supply.set(H(a.k), readU64le(a.data, 36));
    else if (a.data.length === 165) held.set(H(a.data.subarray(0, 32)), (held.get(H(a.data.subarray(0, 32))) ?? 0n) + readU64le(a.data, 64));
  }
  for (const [m, s] of supply) if ((held.get(m) ?? 0n) !== s) reject("malformed", `token accounts of ${b58(K(m))} hold ${held.get(m) ?? 0n}, supply ${s}`);
  const tokens = { mints: [] as Json[], accounts: [] as Json[] };
  for (const a of written) {
    if (!bytesEq(a.owner, SPL_TOKEN_PROGRAM_ID) || a.lamports === 0n) continue;
    if (a.data.length === 82) tokens.mints.push({ pubkey: b58(a.k), supply: readU64le(a.data, 36), decimals: BigInt(a.data[44]) });
    else if (a.data.length === 165)
      tokens.accounts.push({ pubkey: b58(a.k), mint: b58(a.data.subarray(0, 32)), owner: b58(a.data.subarray(32, 64)), amount: readU64le(a.data, 64) });
  }
  const sorted = [...written].sort((x, y) => cmpBytes(x.k, y.k));
  const deltaHash = sorted.length === 0 ? ZERO32 : sha256(...sorted.flatMap((a) => [a.k, fullHash(a)]));
  const bankHash = sha256(unhex(str(p.bank_hash)), deltaHash, u64le(signatureCount), unhex(str(j.last_blockhash)));
  return ok({
    accounts_delta_hash: hex(deltaHash),
    bank_hash: hex(bankHash),
    results,
    signature_count: signatureCount,
    tokens,
    written: sorted.map((a) => ({ data: hex(a.data), executable: a.executable, lamports: a.lamports, owner: b58(a.owner), pubkey: b58(a.k), rent_epoch: a.rentEpoch })),
  });
};
const projectSvmResults = (out: Json): Json => {
  const o = obj(out);
  return { ...o, results: arr(o.results).map((r) => ({ signature: obj(r).signature, fee: obj(r).fee })) };
};

export const BANK_HANDLERS: { [key: string]: Handler } = {
  "bank/svm-slot": Object.assign(svmSlotH, { project: projectSvmResults }),
  "bank/account-hash": accountHashH,
  "bank/genesis": genesis,
  "bank/slot": Object.assign(slotH, { project: projectResults }),
  "vote/vote-tx": voteTx,
  "vote/vote-land": voteLand,
};
export { concat };
