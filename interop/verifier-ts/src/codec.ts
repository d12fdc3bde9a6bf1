// Canonical CBOR messages (spec/encoding.md): strict decoding, schemas, JSON view, encoding.
import { decode, encode, Tag } from "cbor2";
import { type Json, Reject, reject, hex, bytesEq, cmpBytes } from "./util.js";

export const MAX_MESSAGE_BYTES = 1_048_576;
export const MAX_DEPTH = 16;
export const MAX_FIELD_NAME_BYTES = 23;
/** spec/blobs.md: the largest blob (a `BlobResponse`'s `data`). */
export const MAX_BLOB_BYTES = 66_560;

/** A decoded CBOR value as this module represents it. */
export type Value = bigint | boolean | string | Uint8Array | Value[] | Record;
export type Record = Map<string, Value>;

export type Schema =
  | { k: "u"; bits: number; min?: bigint; max?: bigint }
  | { k: "i"; bits: number }
  | { k: "bytes"; len?: number; max?: number }
  | { k: "text"; max: number; nonEmpty?: boolean; pattern?: RegExp }
  | { k: "bool" }
  | { k: "list"; of: Schema; max: number; min?: number }
  | { k: "rec"; fields: { [name: string]: Field }; check?: (r: Record) => string | null };
export type Field = { s: Schema; opt?: boolean };

export const u = (bits: number, min?: bigint, max?: bigint): Schema => ({ k: "u", bits, min, max });
export const b = (len: number): Schema => ({ k: "bytes", len });
export const bmax = (max: number): Schema => ({ k: "bytes", max });
export const text = (max: number, extra: { nonEmpty?: boolean; pattern?: RegExp } = {}): Schema => ({ k: "text", max, ...extra });
export const list = (of: Schema, max: number, min?: number): Schema => ({ k: "list", of, max, min });
export const rec = (fields: { [name: string]: Schema | Field }, check?: (r: Record) => string | null): Schema => {
  const f: { [name: string]: Field } = {};
  for (const [n, s] of Object.entries(fields)) f[n] = "s" in s ? s : { s };
  return { k: "rec", fields: f, check };
};
export const opt = (s: Schema): Field => ({ s, opt: true });
export const bool: Schema = { k: "bool" };

export type MessageType = { id: number; name: string; version: number; maxSize: number; body: Schema };

// ---------------------------------------------------------------- schemas
const uniqueBy = (field: string) => (items: Value): boolean => {
  const seen = new Set<string>();
  for (const it of items as Record[]) {
    const k = hex(it.get(field) as Uint8Array);
    if (seen.has(k)) return false;
    seen.add(k);
  }
  return true;
};
const strictlyAscendingBy = (field: string) => (items: Value): boolean => {
  const l = items as Record[];
  for (let i = 1; i < l.length; i++) if (cmpBytes(l[i - 1].get(field) as Uint8Array, l[i].get(field) as Uint8Array) >= 0) return false;
  return true;
};

const NodeInfo = rec({ identity: b(32), genesis_hash: b(32), addrs: list(text(256), 8), wallclock_ms: u(64), software: text(64), signature: b(64) });

const Genesis = rec(
  {
    chain_id: text(32, { pattern: /^[a-z0-9][a-z0-9-]{0,31}$/ }),
    creation_time_s: u(64),
    poh: rec({ hashes_per_tick: u(64, 1n), ticks_per_slot: u(64, 1n), target_tick_duration_us: u(64, 1n) }),
    epoch: rec({ slots_per_epoch: u(64), leader_slots: u(32) }, (r) => {
      const ls = r.get("leader_slots") as bigint;
      const spe = r.get("slots_per_epoch") as bigint;
      return ls >= 1n && ls <= spe && spe % ls === 0n ? null : "epoch: need 1 <= leader_slots <= slots_per_epoch, slots_per_epoch % leader_slots == 0";
    }),
    lstake: rec({ short_window_epochs: u(32), medium_window_epochs: u(32), short_weight_bps: u(32), medium_weight_bps: u(32) }, (r) => {
      const s = r.get("short_window_epochs") as bigint;
      const m = r.get("medium_window_epochs") as bigint;
      if (!(1n <= s && s <= m)) return "lstake windows: need 1 <= short <= medium";
      return (r.get("short_weight_bps") as bigint) + (r.get("medium_weight_bps") as bigint) === 10_000n ? null : "lstake weights must sum to 10,000";
    }),
    model: rec({ name: text(128, { nonEmpty: true }), digest: opt(b(32)) }),
    accounts: list(rec({ pubkey: b(32), lamports: u(64) }), 4096),
    bootstrap_nodes: list(rec({ identity: b(32), lstake: u(64, 1n) }), 256, 1),
  },
  (r) => {
    if (!uniqueBy("pubkey")(r.get("accounts")!)) return "duplicate account pubkey";
    if (!uniqueBy("identity")(r.get("bootstrap_nodes")!)) return "duplicate bootstrap identity";
    return null;
  },
);

// v5 (spec/blockstore.md): v3 plus the work-credit state (spec/lstake.md, spec/rewards.md, v4)
// and full accounts (spec/bank.md "Accounts", v5)
const BankSnapshotV5 = rec(
  {
    slot: u(64),
    parent_slot: u(64),
    bank_hash: b(32),
    leader: b(32),
    accounts: list(rec({ pubkey: b(32), lamports: u(64) }), 16_384),
    blockhashes: list(b(32), 300),
    status_cache: list(rec({ signature: b(64), slot: u(64) }), 1 << 20), // bounded by the 1 MiB message
    slot_hashes: list(rec({ slot: u(64), bank_hash: b(32) }), 512),
    last_votes: list(rec({ voter: b(32), slot: u(64) }), 16_384),
    auction_accounts: list(rec({ address: b(32), data: bmax(1368) }), 704),
    slots_per_epoch: u(64),
    work_accounts: list(rec({ identity: b(32), data: b(128) }), 2048),
    tally_epoch: u(64),
    epoch_tally: list(rec({ identity: b(32), leader_slots: u(64), votes: u(64) }), 4096),
    account_meta: list(
      rec({ pubkey: b(32), owner: b(32), executable: bool, rent_epoch: u(64), data: bmax(1 << 20), genesis_data: bool }),
      16_384,
    ),
  },
  (r) => {
    if (!strictlyAscendingBy("pubkey")(r.get("account_meta")!)) return "account_meta not strictly ascending by pubkey";
    if (!strictlyAscendingBy("address")(r.get("auction_accounts")!)) return "auction_accounts not strictly ascending by address";
    if (!strictlyAscendingBy("identity")(r.get("work_accounts")!)) return "work_accounts not strictly ascending by identity";
    if (!strictlyAscendingBy("identity")(r.get("epoch_tally")!)) return "epoch_tally not strictly ascending by identity";
    return null;
  },
);

export const VoteSchema = rec({ voter: b(32), slot: u(64), bank_hash: b(32), root: opt(u(64)), timestamp_ms: u(64), signature: b(64) });

export const FingerprintSchema = rec({ pos: u(32), tok: u(32), ids: list(u(32), 64), lps: list(u(32), 64) }, (r) => {
  const n = (r.get("ids") as Value[]).length;
  return n >= 1 && n === (r.get("lps") as Value[]).length ? null : "ids and lps must have the same length >= 1";
});
export const CommitmentSchema = rec({
  model_id: b(32),
  tier: u(8),
  vocab: u(32),
  top_k: u(8),
  temp_milli: u(32),
  sample_seed: b(32),
  prompt_hash: b(32),
  output_hash: b(32),
  num_tokens: u(32, 1n, 4096n),
  root: b(32),
  miner: b(32),
  signature: b(64),
});

/** spec/join.md "Snapshot sync": one node's signed statement about a snapshot it serves. */
export const SnapshotAttestation = rec({
  identity: b(32),
  genesis_hash: b(32),
  slot: u(64),
  bank_hash: b(32),
  snapshot_hash: b(32),
  size: u(32),
  chunk_bytes: u(32),
  chunk_hashes: list(b(32), 64),
  signature: b(64),
});

/** spec/shard.md "Leaf": one stage's fingerprint of one output position. */
export const StageFingerprintSchema = rec({ pos: u(32), in_digest: b(32), out_digest: b(32), q: bmax(4 * 16_384) }, (r) => {
  const n = (r.get("q") as Uint8Array).length;
  return n > 0 && n % 4 === 0 ? null : "q must hold at least one int32";
});
/** spec/shard.md "Commitment"; ranges as in "Stages" (0 <= start < end <= total <= MAX_MODEL_LAYERS). */
export const StageCommitmentSchema = rec(
  {
    query: b(32),
    model_id: b(32),
    start: u(16),
    end: u(16),
    total: u(16),
    tier: u(8),
    prompt_hash: b(32),
    num_tokens: u(32, 1n, 4096n),
    root: b(32),
    stage: b(32),
    signature: b(64),
  },
  (r) => {
    const [s, e, t] = ["start", "end", "total"].map((k) => r.get(k) as bigint);
    return s < e && e <= t && t <= 1024n ? null : "need 0 <= start < end <= total <= 1024";
  },
);

export const TYPES: MessageType[] = [
  { id: 0x0001, name: "Genesis", version: 1, maxSize: 1_048_576, body: Genesis },
  { id: 0x0002, name: "NodeInfo", version: 1, maxSize: 4096, body: NodeInfo },
  { id: 0x0107, name: "BankSnapshot", version: 5, maxSize: 1_048_576, body: BankSnapshotV5 },
  // spec/network.md 2.2
  {
    id: 0x0200,
    name: "GossipEnvelope",
    version: 1,
    maxSize: 131_584,
    body: rec({ topic: text(96), origin: b(32), wallclock_ms: u(64), payload: bmax(131_072), signature: b(64) }),
  },
  { id: 0x0210, name: "RepairRequest", version: 1, maxSize: 128, body: rec({ slot: u(64), index: u(32), kind: u(8, 0n, 2n), nonce: u(32) }) },
  { id: 0x0211, name: "NoncedShreds", version: 1, maxSize: 79_104, body: rec({ nonce: u(32), shreds: list(bmax(1232), 64) }) },
  { id: 0x0217, name: "SlotShredsRequest", version: 1, maxSize: 128, body: rec({ slot: u(64), first_index: u(32), nonce: u(32) }) },
  { id: 0x0218, name: "ShredPushAck", version: 1, maxSize: 64, body: rec({ nonce: u(32), inserted: u(32), rejected: u(32) }) },
  // spec/blobs.md "Wire: /ambient/blob/1"
  { id: 0x0219, name: "BlobRequest", version: 1, maxSize: 128, body: rec({ nonce: u(32), sha256: b(32) }) },
  { id: 0x021a, name: "BlobResponse", version: 1, maxSize: 66_688, body: rec({ nonce: u(32), sha256: b(32), data: opt(bmax(MAX_BLOB_BYTES)) }) },
  // spec/tpu.md "1. /ambient/tpu/1"
  { id: 0x0220, name: "TxBatch", version: 1, maxSize: 79_104, body: rec({ nonce: u(32), txs: list(bmax(1232), 64) }) },
  {
    id: 0x0221,
    name: "TxBatchAck",
    version: 1,
    maxSize: 704,
    body: rec({ nonce: u(32), admitted: u(32), reasons: list(text(32), 16), counts: list(u(32), 16) }, (r) =>
      (r.get("reasons") as Value[]).length === (r.get("counts") as Value[]).length ? null : "reasons and counts differ in length",
    ),
  },
  // spec/join.md "Genesis" and "Snapshot sync"
  { id: 0x0230, name: "GenesisRequest", version: 1, maxSize: 64, body: rec({ nonce: u(32) }) },
  { id: 0x0231, name: "GenesisResponse", version: 1, maxSize: 1_048_576, body: rec({ nonce: u(32), genesis: opt(bmax(1_048_576 - 128)) }) },
  { id: 0x0232, name: "SnapshotOffersRequest", version: 1, maxSize: 64, body: rec({ nonce: u(32) }) },
  { id: 0x0233, name: "SnapshotOffers", version: 1, maxSize: 10_048, body: rec({ nonce: u(32), offers: list(SnapshotAttestation, 4) }) },
  { id: 0x0234, name: "SnapshotChunkRequest", version: 1, maxSize: 128, body: rec({ nonce: u(32), snapshot_hash: b(32), index: u(32) }) },
  { id: 0x0235, name: "SnapshotChunk", version: 1, maxSize: 65_664, body: rec({ nonce: u(32), index: u(32), data: bmax(65_536) }) },
  { id: 0x0302, name: "Vote", version: 1, maxSize: 512, body: VoteSchema },
  { id: 0x0400, name: "LogitFingerprint", version: 1, maxSize: 1024, body: FingerprintSchema },
  { id: 0x0401, name: "PolCommitment", version: 1, maxSize: 1024, body: CommitmentSchema },
  { id: 0x0402, name: "PolOpening", version: 1, maxSize: 4096, body: rec({ cmt: b(32), fp: FingerprintSchema, sibs: list(b(32), 32) }) },
  {
    id: 0x0404,
    name: "PolProof",
    version: 1,
    maxSize: 1_048_576,
    body: rec({ commitment: CommitmentSchema, prompt: list(u(32), 16384), output: list(u(32), 4096), fps: list(FingerprintSchema, 4096) }),
  },
  // spec/shard.md "Stage proof of logits"
  { id: 0x0420, name: "StageFingerprint", version: 1, maxSize: 65_792, body: StageFingerprintSchema },
  { id: 0x0421, name: "StageCommitment", version: 1, maxSize: 1024, body: StageCommitmentSchema },
  {
    id: 0x0422,
    name: "StageOpening",
    version: 1,
    maxSize: 67_584,
    body: rec({ cmt: b(32), fp: StageFingerprintSchema, sibs: list(b(32), 32) }),
  },
  { id: 0x0423, name: "RouteCommitments", version: 1, maxSize: 16_384, body: rec({ stages: list(StageCommitmentSchema, 64) }) },
  // spec/shard.md "Chained sessions"
  {
    id: 0x0247,
    name: "StageChainFrame",
    version: 1,
    maxSize: 1_004_608,
    body: rec(
      { nonce: u(32), query: b(32), pos: u(32), rows: u(32), tokens: list(u(32), 1024), hidden: bmax(934_208), leaf: opt(StageFingerprintSchema) },
      (r) => {
        const rows = r.get("rows") as bigint;
        const toks = r.get("tokens") as Value[];
        const hidden = r.get("hidden") as Uint8Array;
        if (rows < 1n || rows > 1024n) return "rows must be 1..1024";
        if (toks.length > 0 === hidden.length > 0) return "a frame carries either tokens or hidden bytes";
        if (toks.length > 0 && BigInt(toks.length) !== rows) return "one token per row";
        if (toks.length > 0 && r.has("leaf")) return "token frames come from the driver, which has no leaf";
        return null;
      },
    ),
  },
  { id: 0x0248, name: "StageResultsRequest", version: 1, maxSize: 128, body: rec({ nonce: u(32), query: b(32) }) },
  { id: 0x0249, name: "StageLeavesRequest", version: 1, maxSize: 128, body: rec({ nonce: u(32), query: b(32), first: u(32) }) },
  {
    id: 0x024a,
    name: "StageLeavesResponse",
    version: 1,
    maxSize: 1_048_576,
    body: rec({ nonce: u(32), first: u(32), leaves: list(StageFingerprintSchema, 4096) }),
  },
];
const BY_ID = new Map(TYPES.map((t) => [t.id, t]));
export const typeByName = (n: string): MessageType => {
  const t = TYPES.find((x) => x.name === n);
  if (!t) throw new Error(`no type ${n}`);
  return t;
};

// ---------------------------------------------------------------- decoding
const CBOR_OPTS = {
  cde: true,
  rejectStreaming: true,
  rejectDuplicateKeys: true,
  rejectFloats: true,
  rejectSimple: true,
  rejectUndefined: true,
  rejectLargeNegatives: false,
  preferMap: true,
  preferBigInt: true,
  ignoreGlobalTags: true,
  maxDepth: 64,
} as const;

function cborReason(msg: string): string {
  const m = msg.toLowerCase();
  if (m.includes("outside the bounds") || m.includes("unexpected end") || m.includes("insufficient")) return "truncated";
  if (m.includes("extra data")) return "trailing-bytes";
  if (m.includes("streaming") || m.includes("indefinite") || m.includes("break")) return "indefinite-length";
  if (m.includes("long integer") || m.includes("preferred")) return "non-canonical";
  if (m.includes("duplicate or out of order")) return "unsorted-keys"; // duplicates are told apart below
  if (m.includes("nan")) return "nan";
  if (m.includes("floating")) return "float";
  if (m.includes("undefined")) return "undefined";
  if (m.includes("simple")) return "simple-value";
  if (m.includes("utf-8") || m.includes("utf8")) return "invalid-utf8";
  if (m.includes("depth")) return "too-deep";
  return "malformed";
}

/** Walk the raw structure: tags, null, depth, key kinds, field-name length. */
function structural(v: unknown, depth: number): void {
  if (v instanceof Tag) reject("unknown-tag", `tag ${String(v.tag)}`);
  if (v === null) return; // a schema never allows null: reported as wrong-type where it sits
  if (Array.isArray(v) || v instanceof Map) {
    if (depth + 1 > MAX_DEPTH) reject("too-deep");
    if (Array.isArray(v)) for (const x of v) structural(x, depth + 1);
    else
      for (const [k, x] of v) {
        structural(k, depth + 1);
        structural(x, depth + 1);
      }
  }
}

function checkSchema(v: unknown, s: Schema, path: string): void {
  const wrong = (): never => reject("wrong-type", path);
  switch (s.k) {
    case "u":
    case "i": {
      if (typeof v !== "bigint") return wrong();
      const lo = s.k === "u" ? 0n : -(1n << BigInt(s.bits - 1));
      const hi = s.k === "u" ? 1n << BigInt(s.bits) : 1n << BigInt(s.bits - 1);
      if (v < lo || v >= hi) reject("out-of-range", path);
      if (s.k === "u" && ((s.min !== undefined && v < s.min) || (s.max !== undefined && v > s.max))) reject("invalid-value", path);
      return;
    }
    case "bytes":
      if (!(v instanceof Uint8Array)) return wrong();
      if (s.len !== undefined && v.length !== s.len) reject("wrong-length", path);
      if (s.max !== undefined && v.length > s.max) reject("too-large", path);
      return;
    case "text": {
      if (typeof v !== "string") return wrong();
      const n = Buffer.byteLength(v, "utf8");
      if (n > s.max) reject("too-large", path);
      if (s.nonEmpty && n === 0) reject("invalid-value", path);
      if (s.pattern && !s.pattern.test(v)) reject("invalid-value", path);
      return;
    }
    case "bool":
      if (typeof v !== "boolean") wrong();
      return;
    case "list":
      if (!Array.isArray(v)) return wrong();
      if (v.length > s.max) reject("too-large", path);
      if (s.min !== undefined && v.length < s.min) reject("invalid-value", path);
      v.forEach((x, i) => checkSchema(x, s.of, `${path}[${i}]`));
      return;
    case "rec": {
      if (!(v instanceof Map)) return wrong();
      for (const k of v.keys()) {
        if (typeof k !== "string") reject("wrong-type", `${path} key`);
        if (Buffer.byteLength(k, "utf8") > MAX_FIELD_NAME_BYTES || !(k in s.fields)) reject("unknown-field", `${path}.${String(k)}`);
      }
      for (const [name, f] of Object.entries(s.fields)) {
        if (!v.has(name)) {
          if (!f.opt) reject("missing-field", `${path}.${name}`);
          continue;
        }
        checkSchema(v.get(name), f.s, `${path}.${name}`);
      }
      if (s.check) {
        const e = s.check(v as Record);
        if (e) reject("invalid-value", `${path}: ${e}`);
      }
      return;
    }
  }
}

export type Message = { type: MessageType; version: number; body: Record };

/** Decode one message; `expect` names the type the context requires. Throws Reject. */
export function decodeMessage(input: Uint8Array, expect?: string): Message {
  if (input.length > MAX_MESSAGE_BYTES) reject("too-large", "message above MAX_MESSAGE_BYTES");
  if (input.length === 0) reject("truncated", "empty input");
  let v: unknown;
  try {
    v = decode(input, CBOR_OPTS);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    let r = cborReason(msg);
    if (r === "unsorted-keys" && /duplicate/i.test(msg)) {
      // cbor2 reports both faults with one message: a key equal to an earlier one is a duplicate
      r = duplicateKeyPresent(input) ? "duplicate-key" : "unsorted-keys";
    }
    reject(r, msg);
  }
  structural(v, 0);
  if (!Array.isArray(v) || v.length !== 3 || typeof v[0] !== "bigint" || typeof v[1] !== "bigint" || !(v[2] instanceof Map)) {
    reject("bad-envelope");
  }
  const [tid, ver, body] = v as [bigint, bigint, Record];
  const t = BY_ID.get(Number(tid));
  if (tid > 0xffffn || !t) reject("unknown-type", `0x${tid.toString(16)}`);
  if (expect !== undefined && t.name !== expect) reject("unexpected-type", `${t.name}, expected ${expect}`);
  if (input.length > t.maxSize) reject("too-large", `${t.name} above ${t.maxSize} bytes`);
  if (ver !== BigInt(t.version)) reject("unsupported-version", `${t.name} v${ver}`);
  checkSchema(body, t.body, "$.body");
  const again = encodeMessage(t, body);
  if (!bytesEq(again, input)) reject("non-canonical", "re-encoding differs");
  return { type: t, version: t.version, body };
}

/** Does some map in `input` repeat a key? (cbor2's canonical mode reports both faults alike.) */
function duplicateKeyPresent(input: Uint8Array): boolean {
  try {
    decode(input, { ...CBOR_OPTS, cde: false, sortKeys: null, rejectDuplicateKeys: true });
    return false;
  } catch (e) {
    return e instanceof Error && /duplicate key/i.test(e.message);
  }
}

export function encodeMessage(t: MessageType, body: Record): Uint8Array {
  return encode([BigInt(t.id), BigInt(t.version), body], { cde: true });
}

// ---------------------------------------------------------------- JSON view
export function view(v: Value): Json {
  if (typeof v === "bigint" || typeof v === "boolean" || typeof v === "string") return v;
  if (v instanceof Uint8Array) return "0x" + hex(v);
  if (Array.isArray(v)) return v.map(view);
  const o: { [k: string]: Json } = {};
  for (const [k, x] of v) o[k] = view(x);
  return o;
}

export function messageView(m: Message): Json {
  return { type: m.type.name, type_id: m.type.id, version: m.version, body: view(m.body) };
}

export { Reject };
