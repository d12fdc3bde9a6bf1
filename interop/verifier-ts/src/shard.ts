// Sharded inference (spec/shard.md): the boundary grid, stage commitments, the blame rule and
// the payment split.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, Reject, arr, bytesEq, hex, int, obj, reject, sha256, str, unhex, utf8 } from "./util.js";
import { type Record as CborRecord, decodeMessage, encodeMessage, typeByName } from "./codec.js";
import { domainBytes, publicKey, sign, verifyDomain } from "./crypto.js";
import { depth, leafHash, root as merkleRoot, rootFromProof } from "./merkle.js";

// spec/shard.md "Constants"
export const STAGE_GRID_BITS = 12;
export const STAGE_Q_MIN = -(2 ** 31);
export const STAGE_Q_MAX = 2 ** 31 - 1;
export const MAX_STAGE_HIDDEN = 16_384;
export const MAX_ROUTE_STAGES = 64;
/** Tolerance per tier (spec/pol.md tiers: 1 = FP32, 2 = BF16), thousandths of the row's RMS. */
export const STAGE_TAU_PER_MILLE: { [tier: number]: bigint } = { 1: 1n, 2: 64n };
export const STAGE_TAU_FLOOR_UNITS = 4n;
const PURPOSE = "stage-commitment";

const FP = typeByName("StageFingerprint");
const CMT = typeByName("StageCommitment");

/** Anything thrown while reading the input that is not a verdict: `malformed`, never a crash. */
function parsed<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof Reject) throw e;
    return reject("malformed", e instanceof Error ? e.message : String(e));
  }
}

/** A message that does not decode as the vectors' runner expects: `malformed` whatever the codec's reason. */
function malformedCodec<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    return reject("malformed", e instanceof Error ? e.message : String(e));
  }
}

function f32le(b: Uint8Array): number[] {
  if (b.length % 4 !== 0) reject("malformed", "not float32 little-endian");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: b.length / 4 }, (_, i) => dv.getFloat32(4 * i, true));
}

/** spec/shard.md "Leaf" `q`: each float32 widened exactly to float64 (a JS number),
 * `clip(floor(h * 2^12 + 1/2), -2^31, 2^31-1)`, int32 LE. The product by 2^12 is exact and the
 * `+ 1/2` rounds in float64, as the spec's float64 arithmetic does. Non-finite: `malformed-row`. */
export function quantizeRow(row: number[]): Int32Array {
  if (row.length === 0 || row.length > MAX_STAGE_HIDDEN) reject("malformed-row", `boundary row of ${row.length} values (1..${MAX_STAGE_HIDDEN})`);
  const q = new Int32Array(row.length);
  row.forEach((h, i) => {
    if (!Number.isFinite(h)) reject("malformed-row", "boundary row is not finite");
    q[i] = Math.min(Math.max(Math.floor(h * 2 ** STAGE_GRID_BITS + 0.5), STAGE_Q_MIN), STAGE_Q_MAX);
  });
  return q;
}
const qBytes = (q: Int32Array): Uint8Array => {
  const out = new Uint8Array(4 * q.length);
  const dv = new DataView(out.buffer);
  q.forEach((v, i) => dv.setInt32(4 * i, v, true));
  return out;
};
const unpackQ = (b: Uint8Array): Int32Array => {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Int32Array.from({ length: b.length / 4 }, (_, i) => dv.getInt32(4 * i, true));
};

function isqrt(n: bigint): bigint {
  if (n < 2n) return n;
  let x = n;
  let y = (x + 1n) / 2n;
  while (y < x) {
    x = y;
    y = (x + n / x) / 2n;
  }
  return x;
}

/** spec/shard.md "Tolerance": (max |q' - q|, isqrt(floor(sum q'^2 / H))), q' the validator's row. */
function boundaryDeviation(committed: Uint8Array, recomputed: number[]): [bigint, bigint] {
  const q = unpackQ(committed);
  const qv = quantizeRow(recomputed);
  if (q.length !== qv.length) reject("malformed", `committed row has ${q.length} values, recomputed ${qv.length}`);
  let dev = 0n;
  let sq = 0n;
  for (let i = 0; i < q.length; i++) {
    const d = BigInt(qv[i]) - BigInt(q[i]);
    const a = d < 0n ? -d : d;
    if (a > dev) dev = a;
    sq += BigInt(qv[i]) * BigInt(qv[i]);
  }
  return [dev, isqrt(sq / BigInt(qv.length))];
}

const tauPerMille = (tier: bigint): bigint => {
  const t = STAGE_TAU_PER_MILLE[Number(tier)];
  if (t === undefined) reject("malformed", `unknown tier ${tier}`);
  return t;
};
const withinTolerance = (dev: bigint, rms: bigint, tier: bigint): boolean => dev * 1000n <= rms * tauPerMille(tier) + 1000n * STAGE_TAU_FLOOR_UNITS;

const signable = (c: CborRecord): Uint8Array => {
  const z = new Map(c);
  z.set("signature", new Uint8Array(64));
  return encodeMessage(CMT, z);
};
const cmtHash = (c: CborRecord): Uint8Array => sha256(encodeMessage(CMT, c));

// ---------------------------------------------------------------- handlers
/** input {row_f32le} -> {q}. */
const quantize: Handler = (input) => {
  const row = parsed(() => f32le(unhex(str(jsonInput(input).row_f32le))));
  return ok({ q: hex(qBytes(quantizeRow(row))) });
};

/** spec/shard.md "Payment": input {total, work [[layers, tokens]]} -> {parts}; `no-work` otherwise. */
const split: Handler = (input) => {
  const { total, work } = parsed(() => {
    const j = jsonInput(input);
    return { total: int(j.total), work: arr(j.work).map((w) => arr(w).map((x) => int(x))) };
  });
  if (total < 0n || work.length === 0 || work.some((w) => w.length !== 2 || w[0] < 0n || w[1] < 0n)) {
    reject("no-work", "need total >= 0 and non-negative (layers, tokens) for >= 1 stage");
  }
  if (work.reduce((x, [a, b]) => x + a * b, 0n) === 0n) reject("no-work", "no work to pay for");
  return ok({ parts: splitPayment(total, work) });
};

/** The largest-remainder split of `total` by layers x tokens (ties: the earlier stage); the work sum must be > 0. */
export function splitPayment(total: bigint, work: bigint[][]): bigint[] {
  const w = work.map(([a, b]) => a * b);
  const W = w.reduce((x, y) => x + y, 0n);
  const parts = w.map((wi) => (total * wi) / W);
  const rem = w.map((wi) => (total * wi) % W);
  const left = Number(total - parts.reduce((x, y) => x + y, 0n));
  const order = w.map((_, i) => i).sort((a, b) => (rem[a] !== rem[b] ? (rem[b] > rem[a] ? 1 : -1) : a - b));
  for (const i of order.slice(0, left)) parts[i] += 1n;
  return parts;
}

/** input {stage_seed, query, model_id, start, end, total, tier, prompt_hash, leaves} ->
 * {leaf_hashes, root, commitment (signed by the deterministic key ("stage", stage_seed)), hash}. */
const commitment: Handler = (input) => {
  const { seed, rec, leaves } = parsed(() => {
    const j = jsonInput(input);
    const leaves = arr(j.leaves).map((x, i) => {
      const l = obj(x);
      if (int(l.pos) !== BigInt(i)) throw new Error(`fingerprint ${i} is for position ${String(l.pos)}`);
      return encodeMessage(
        FP,
        new Map<string, bigint | Uint8Array>([
          ["pos", int(l.pos)],
          ["in_digest", unhex(str(l.in_digest))],
          ["out_digest", unhex(str(l.out_digest))],
          ["q", unhex(str(l.q))],
        ]),
      );
    });
    // spec/crypto.md: deterministic keys for tests
    const seed = sha256(utf8("ambient/test-key/v1\0stage\0"), (() => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, int(j.stage_seed));
      return b;
    })());
    const rec = new Map<string, bigint | Uint8Array>([
      ["query", unhex(str(j.query))],
      ["model_id", unhex(str(j.model_id))],
      ["start", int(j.start)],
      ["end", int(j.end)],
      ["total", int(j.total)],
      ["tier", int(j.tier)],
      ["prompt_hash", unhex(str(j.prompt_hash))],
      ["num_tokens", BigInt(leaves.length)],
    ]);
    return { seed, rec, leaves };
  });
  tauPerMille(rec.get("tier") as bigint);
  // every leaf must itself be a valid StageFingerprint
  malformedCodec(() => leaves.forEach((l) => decodeMessage(l, "StageFingerprint")));
  const root = merkleRoot(leaves);
  if (root === null) reject("malformed", "no leaves");
  rec.set("root", root);
  rec.set("stage", publicKey(seed));
  rec.set("signature", new Uint8Array(64));
  const unsigned = encodeMessage(CMT, rec);
  malformedCodec(() => decodeMessage(unsigned, "StageCommitment")); // the schema's ranges
  rec.set("signature", sign(domainBytes(PURPOSE, unsigned), seed));
  const bytes = encodeMessage(CMT, rec);
  return ok({ leaf_hashes: leaves.map((l) => hex(leafHash(l))), root: hex(root), commitment: hex(bytes), hash: hex(sha256(bytes)) });
};

type Verdict = { who: string; reason: string; stage: number | null; devs: [bigint, bigint][] };
const verdict = (who: string, reason: string, stage: number | null = null, devs: [bigint, bigint][] = []): Verdict => ({ who, reason, stage, devs });

/** spec/shard.md "Blame" step 1: each commitment in layer order; the first failure names its index. */
function checkRoute(cmts: CborRecord[], modelId: Uint8Array, totalLayers: bigint): Verdict | null {
  if (cmts.length === 0 || cmts.length > MAX_ROUTE_STAGES) return verdict("driver", "bad-route");
  const head = cmts[0];
  let at = 0n;
  for (let k = 0; k < cmts.length; k++) {
    const c = cmts[k];
    if (!verifyDomain(PURPOSE, signable(c), c.get("signature") as Uint8Array, c.get("stage") as Uint8Array)) return verdict("driver", "bad-signature", k);
    if (!bytesEq(c.get("model_id") as Uint8Array, modelId) || c.get("total") !== totalLayers) return verdict("driver", "wrong-model", k);
    const same =
      bytesEq(c.get("query") as Uint8Array, head.get("query") as Uint8Array) &&
      bytesEq(c.get("prompt_hash") as Uint8Array, head.get("prompt_hash") as Uint8Array) &&
      c.get("num_tokens") === head.get("num_tokens") &&
      c.get("tier") === head.get("tier");
    if (!same) return verdict("driver", "bad-route", k);
    if (c.get("start") !== at) return verdict("driver", "bad-route", k);
    at = c.get("end") as bigint;
  }
  return at === totalLayers ? null : verdict("driver", "bad-route");
}

/** Steps 2 to 4 at one position. */
function blamePosition(cmts: CborRecord[], openings: CborRecord[], rows: number[][], position: bigint, firstIn: Uint8Array, finalOut: Uint8Array): Verdict {
  if (openings.length !== cmts.length || rows.length !== cmts.length) return verdict("driver", "bad-proof");
  const fps = openings.map((o) => o.get("fp") as CborRecord);
  for (let k = 0; k < cmts.length; k++) {
    const c = cmts[k];
    const fp = fps[k];
    if (!bytesEq(openings[k].get("cmt") as Uint8Array, cmtHash(c)) || fp.get("pos") !== position) return verdict("driver", "bad-proof", k);
    const n = Number(c.get("num_tokens") as bigint);
    const sibs = openings[k].get("sibs") as Uint8Array[];
    if (position >= BigInt(n) || sibs.length !== depth(n) || !bytesEq(rootFromProof(encodeMessage(FP, fp), Number(position), sibs), c.get("root") as Uint8Array)) {
      return verdict("driver", "bad-proof", k);
    }
    if ((fp.get("q") as Uint8Array).length !== 4 * rows[k].length) return verdict("stage", "malformed-fingerprint", k);
  }
  if (!bytesEq(fps[0].get("in_digest") as Uint8Array, firstIn)) return verdict("driver", "wrong-input", 0);
  for (let k = 1; k < cmts.length; k++) {
    if (!bytesEq(fps[k].get("in_digest") as Uint8Array, fps[k - 1].get("out_digest") as Uint8Array)) return verdict("driver", "broken-link", k);
  }
  if (!bytesEq(fps[fps.length - 1].get("out_digest") as Uint8Array, finalOut)) return verdict("driver", "wrong-output", cmts.length - 1);
  const devs: [bigint, bigint][] = [];
  for (let k = 0; k < cmts.length; k++) {
    const [dev, rms] = boundaryDeviation(fps[k].get("q") as Uint8Array, rows[k]);
    devs.push([dev, rms]);
    if (!withinTolerance(dev, rms, cmts[k].get("tier") as bigint)) return verdict("stage", "boundary-out-of-tolerance", k, devs);
  }
  return verdict("nobody", "ok", null, devs);
}

/** input {commitments, openings (hex CBOR), recomputed_f32le (one row per stage), position,
 * first_input_digest, final_output_digest, model_id, total_layers} -> {who, reason, stage, devs}. */
const blame: Handler = (input) => {
  const j = parsed(() => jsonInput(input));
  const hexes = (k: string): Uint8Array[] => parsed(() => arr(j[k]).map((x) => unhex(str(x))));
  const cmts = malformedCodec(() => hexes("commitments").map((b) => decodeMessage(b, "StageCommitment").body));
  const { modelId, totalLayers } = parsed(() => ({ modelId: unhex(str(j.model_id)), totalLayers: int(j.total_layers) }));
  let v = checkRoute(cmts, modelId, totalLayers);
  if (v === null) {
    const openings = malformedCodec(() => hexes("openings").map((b) => decodeMessage(b, "StageOpening").body));
    const rows = parsed(() => hexes("recomputed_f32le").map(f32le));
    const { position, firstIn, finalOut } = parsed(() => ({
      position: int(j.position),
      firstIn: unhex(str(j.first_input_digest)),
      finalOut: unhex(str(j.final_output_digest)),
    }));
    v = blamePosition(cmts, openings, rows, position, firstIn, finalOut);
  }
  return ok({ who: v.who, reason: v.reason, stage: v.stage, devs: v.devs as Json });
};

export const SHARD_HANDLERS: { [key: string]: Handler } = {
  "shard/quantize": quantize,
  "shard/split": split,
  "shard/commitment": commitment,
  "shard/blame": blame,
};
