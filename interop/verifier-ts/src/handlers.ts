// Handler registry: one function per interop/<format>/<handler>.
import { type Json, arr, bytesEq, hex, int, num, obj, parseJson, reject, str, unhex } from "./util.js";
import { decodeMessage, messageView } from "./codec.js";
import { b58, domainBytes, publicKey, sign, unb58, verifyStrict } from "./crypto.js";
import { deserializeEntries, hashN, hashTransactions, verifyEntries } from "./poh.js";
import { ForkChoiceView, ForkTree, Tower, applyVote, leaderSchedule, otherForkStake } from "./consensus.js";
import { SHRED_HANDLERS } from "./shred.js";
import { BANK_HANDLERS } from "./bank.js";
import { POL_HANDLERS } from "./pol.js";
import { AUCTION_HANDLERS } from "./auction.js";
import { BLOB_HANDLERS } from "./blobs.js";
import { GENESIS_HANDLERS } from "./genesis.js";
import { GOSSIP_HANDLERS } from "./gossip.js";
import { WORK_HANDLERS } from "./work.js";
import { DIFFICULTY_HANDLERS } from "./difficulty.js";
import { DUPLICATE_HANDLERS } from "./duplicate.js";
import { JOIN_HANDLERS } from "./join.js";
import { SHARD_HANDLERS } from "./shard.js";

import { type Handler, jsonInput, ok } from "./handler.js";
export type { Handler };

const codecRoundtrip: Handler = (input) => ok(messageView(decodeMessage(input)));
const codecReject: Handler = (input) => ok(messageView(decodeMessage(input)));

const rfc8032: Handler = (input) => {
  const j = jsonInput(input);
  const secret = unhex(str(j.secret));
  const pub = unhex(str(j.pubkey));
  const msg = unhex(str(j.message));
  const sig = unhex(str(j.signature));
  if (!bytesEq(publicKey(secret), pub)) reject("bad-keypair", "public key does not derive from the secret");
  if (!bytesEq(sign(msg, secret), sig)) reject("bad-signature", "signature differs from RFC 8032 signing");
  if (!verifyStrict(sig, msg, pub)) reject("bad-signature");
  return ok({ valid: true });
};

const signature: Handler = (input) => {
  const j = jsonInput(input);
  const purpose = str(j.purpose);
  let signed: Uint8Array;
  try {
    signed = domainBytes(purpose, unhex(str(j.message)));
  } catch {
    return reject("unknown-purpose", purpose);
  }
  let pub: Uint8Array;
  try {
    pub = unb58(str(j.pubkey));
  } catch {
    return reject("bad-pubkey");
  }
  if (!verifyStrict(unhex(str(j.signature)), signed, pub)) reject("bad-signature");
  return ok({ valid: true, signed_bytes: hex(signed) });
};

const keypair: Handler = (input) => {
  let v: Json;
  try {
    v = parseJson(Buffer.from(input).toString("utf8"));
  } catch {
    return reject("bad-keypair", "not JSON");
  }
  if (!Array.isArray(v) || v.length !== 64) reject("bad-keypair", "not an array of 64 integers");
  const bytes = new Uint8Array(64);
  (v as Json[]).forEach((x, i) => {
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0 || x > 255) reject("bad-keypair", "byte out of range");
    bytes[i] = x;
  });
  if (!bytesEq(publicKey(bytes.subarray(0, 32)), bytes.subarray(32))) reject("bad-keypair", "public half does not match the secret");
  return ok({ address: b58(bytes.subarray(32)) });
};

const pohHashN: Handler = (input) => {
  const j = jsonInput(input);
  return ok({ hash: hex(hashN(unhex(str(j.start)), num(j.n))) });
};
const pohMixin: Handler = (input) => {
  const es = deserializeEntries(input);
  if (es.length !== 1) reject("bad-entries", "expected one entry");
  return ok({ mixin: hex(hashTransactions(es[0].txs)) });
};
const pohEntries: Handler = (input) => {
  if (input.length < 32) reject("truncated-entries", "shorter than the start hash");
  const es = deserializeEntries(input.subarray(32));
  const bad = verifyEntries(input.subarray(0, 32), es);
  if (bad >= 0) reject("bad-poh", `entry ${bad}`);
  return ok({
    count: es.length,
    last_hash: es.length ? hex(es[es.length - 1].hash) : hex(input.subarray(0, 32)),
    ticks: es.filter((e) => e.txs.length === 0).length,
    transactions: es.reduce((a, e) => a + e.txs.length, 0),
  });
};

const leaderScheduleH: Handler = (input) => {
  const j = jsonInput(input);
  const ws = Object.entries(obj(j.weights)).map(([id, w]) => ({ id, key: unb58(id), weight: int(w) }));
  return ok({ leaders: leaderSchedule(unhex(str(j.seed)), ws, int(j.slots_per_epoch), int(j.leader_slots)) });
};

function tree(j: Json): ForkTree {
  return new ForkTree(new Map(Object.entries(obj(j)).map(([k, v]) => [BigInt(k), int(v)])));
}

const voteSequence: Handler = (input) => {
  const j = jsonInput(input);
  const t = tree(j.parents);
  let tower = new Tower();
  const steps: Json[] = [];
  for (const s of arr(j.votes)) {
    const slot = int(s);
    let newRoot: bigint | null;
    [tower, newRoot] = applyVote(tower, t, slot);
    steps.push({ slot, votes: tower.votes.map((v) => [v.slot, v.conf]), root: tower.root, new_root: newRoot });
  }
  return ok({ steps });
};

const switchStake: Handler = (input) => {
  const j = jsonInput(input);
  const stakes = new Map(Object.entries(obj(j.stakes)).map(([k, v]) => [k, int(v)]));
  const latest = new Map(Object.entries(obj(j.latest_votes)).map(([k, v]) => [k, int(v)]));
  const total = [...stakes.values()].reduce((a, b) => a + b, 0n);
  const other = otherForkStake(tree(j.parents), int(j.last_vote), latest, stakes);
  // > 38% of total, exact integer arithmetic
  return ok({ other_fork_stake: other, total_stake: total, switch_allowed: other * 100n > 38n * total });
};

/** spec/tower.md "Vectors": tower/fork-choice. */
const forkChoice: Handler = (input) => {
  const j = jsonInput(input);
  const t = tree(j.parents);
  for (const [c, p] of t.parents) if (p >= c || p < 0n || (p !== 0n && !t.parents.has(p))) reject("malformed", `parent ${p} of ${c}`);
  const stakes = new Map(Object.entries(obj(j.stakes)).map(([k, v]) => [k, int(v)]));
  for (const [k, v] of stakes) if (v <= 0n) reject("malformed", `stake of ${k}`);
  const latest = new Map(Object.entries(obj(j.latest_votes)).map(([k, v]) => [k, int(v)]));
  for (const k of latest.keys()) if (!stakes.has(k)) reject("malformed", `voter ${k} has no stake`);
  const dups = new Set(arr(j.duplicates).map((x) => int(x)));
  for (const d of dups) if (!t.has(d)) reject("unknown-slot", `duplicate ${d}`);
  const fc = new ForkChoiceView(t, 0n, stakes, latest, dups);
  const slots = [...fc.weights.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const weights: { [k: string]: Json } = {};
  for (const s of slots) weights[s.toString()] = fc.weights.get(s)!;
  return ok({
    weights,
    total_stake: fc.total,
    best_slot: fc.bestSlot(),
    confirmed: slots.filter((s) => fc.confirmed(s)),
    duplicate_confirmed: slots.filter((s) => dups.has(s) && fc.duplicateConfirmed(s)),
  });
};

export const HANDLERS: { [key: string]: Handler } = {
  "codec/roundtrip": codecRoundtrip,
  "codec/reject": codecReject,
  "crypto/ed25519-rfc8032": rfc8032,
  "crypto/signature": signature,
  "crypto/keypair": keypair,
  "poh/hash_n": pohHashN,
  "poh/mixin": pohMixin,
  "poh/entries": pohEntries,
  "lstake/leader-schedule": leaderScheduleH,
  "tower/vote-sequence": voteSequence,
  "tower/switch-stake": switchStake,
  "tower/fork-choice": forkChoice,
  ...SHRED_HANDLERS,
  ...BANK_HANDLERS,
  ...POL_HANDLERS,
  ...AUCTION_HANDLERS,
  ...BLOB_HANDLERS,
  ...GENESIS_HANDLERS,
  ...GOSSIP_HANDLERS,
  ...WORK_HANDLERS,
  ...DIFFICULTY_HANDLERS,
  ...DUPLICATE_HANDLERS,
  ...JOIN_HANDLERS,
  ...SHARD_HANDLERS,
};
