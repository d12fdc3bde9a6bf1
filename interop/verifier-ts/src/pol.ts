// Proof of logits without the forward pass (spec/pol.md): fingerprints, commitments, openings.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, arr, bytesEq, concat, hex, int, num, readU64be, reject, Reject, sha256, str, u32be, unhex, utf8 } from "./util.js";
import { type Record as CborRecord, type Value, decodeMessage, encodeMessage, typeByName, view } from "./codec.js";
import { verifyDomain } from "./crypto.js";
import { depth, leafHash, root as merkleRoot, rootFromProof } from "./merkle.js";

export const GRID_BITS = 12;
export const TOP_K = 8;
export const Q_MAX = 2 ** 32 - 1;
export const TIERS: { [tier: number]: { tauUnits: number } } = { 1: { tauUnits: 4 }, 2: { tauUnits: 4096 } };
const TOKENS_DOMAIN = utf8("ambient/pol-tokens/v1\0");
const SAMPLE_DOMAIN = utf8("ambient/pol-sample/v1\0");

export function logitsFromHex(h: string): Float64Array {
  const b = unhex(h);
  if (b.length % 4 !== 0) reject("malformed", "logits not float32");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = new Float64Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
  return out;
}

/** q(t) = clip(floor(-log_softmax(x)[t] * 2^GRID_BITS + 1/2), 0, Q_MAX), log-softmax in float64. */
export function quantize(logits: Float64Array): number[] {
  for (const x of logits) if (!Number.isFinite(x)) reject("malformed", "non-finite logit");
  let m = -Infinity;
  for (const x of logits) if (x > m) m = x;
  let s = 0;
  for (const x of logits) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return Array.from(logits, (x) => {
    const q = Math.floor(-(x - lse) * 2 ** GRID_BITS + 0.5);
    return Math.min(Math.max(q, 0), Q_MAX);
  });
}

export function topK(q: number[], k: number): number[] {
  const ids = q.map((_, i) => i);
  ids.sort((a, b) => (q[a] !== q[b] ? q[a] - q[b] : a - b));
  return ids.slice(0, k);
}

/** Python's round(): nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export function sampleToken(ids: number[], lps: number[], tempMilli: number, seed: Uint8Array, pos: number): number {
  const T = tempMilli / 1000;
  const w = lps.map((l) => BigInt(roundHalfEven(2 ** 32 * Math.exp(-(l - lps[0]) / (2 ** GRID_BITS * T)))));
  const total = w.reduce((a, b) => a + b, 0n);
  const u = readU64be(sha256(SAMPLE_DOMAIN, seed, u32be(pos)), 0) % total;
  let acc = 0n;
  for (let i = 0; i < w.length; i++) {
    acc += w[i];
    if (u < acc) return ids[i];
  }
  throw new Error("unreachable");
}

export const tokensHash = (toks: number[]): Uint8Array => sha256(TOKENS_DOMAIN, u32be(toks.length), ...toks.map(u32be));

const FP = typeByName("LogitFingerprint");
const fpRecord = (pos: number, tok: number, ids: number[], lps: number[]): CborRecord =>
  new Map<string, Value>([
    ["pos", BigInt(pos)],
    ["tok", BigInt(tok)],
    ["ids", ids.map(BigInt)],
    ["lps", lps.map(BigInt)],
  ]);
export const fpLeaf = (r: CborRecord): Uint8Array => encodeMessage(FP, r);

const nums = (v: Value | undefined): number[] => (v as bigint[]).map(Number);

const fingerprint: Handler = (input) => {
  const j = jsonInput(input);
  const q = quantize(logitsFromHex(str(j.logits_f32le)));
  const ids = topK(q, num(j.k));
  const lps = ids.map((i) => q[i]);
  const pos = num(j.position);
  const temp = num(j.temp_milli);
  const tok = temp === 0 ? ids[0] : sampleToken(ids, lps, temp, unhex(str(j.sample_seed)), pos);
  const rec = fpRecord(pos, tok, ids, lps);
  const leaf = fpLeaf(rec);
  return ok({ fingerprint: view(rec), leaf: hex(leaf), leaf_hash: hex(leafHash(leaf)) });
};

type Commitment = { rec: CborRecord; bytes: Uint8Array; hash: Uint8Array };

function decodeAs(bytes: Uint8Array, name: string, reason: string): CborRecord {
  try {
    return decodeMessage(bytes, name).body;
  } catch (e) {
    if (e instanceof Reject) return reject(reason, e.message);
    throw e;
  }
}

function checkCommitmentSignature(rec: CborRecord): void {
  const zeroed = new Map(rec);
  zeroed.set("signature", new Uint8Array(64));
  const ok = verifyDomain("pol-commitment", encodeMessage(typeByName("PolCommitment"), zeroed), rec.get("signature") as Uint8Array, rec.get("miner") as Uint8Array);
  if (!ok) reject("bad-signature", "commitment");
}

function commitment(rec: CborRecord): Commitment {
  const bytes = encodeMessage(typeByName("PolCommitment"), rec);
  return { rec, bytes, hash: sha256(bytes) };
}

const commitmentH: Handler = (input) => {
  const j = jsonInput(input);
  const proof = decodeAs(unhex(str(j.proof)), "PolProof", "malformed");
  const c = commitment(proof.get("commitment") as CborRecord);
  checkCommitmentSignature(c.rec);
  const prompt = nums(proof.get("prompt"));
  const output = nums(proof.get("output"));
  const fps = proof.get("fps") as CborRecord[];
  if (!bytesEq(tokensHash(prompt), c.rec.get("prompt_hash") as Uint8Array)) reject("wrong-prompt");
  if (!bytesEq(tokensHash(output), c.rec.get("output_hash") as Uint8Array)) reject("wrong-output");
  const n = Number(c.rec.get("num_tokens") as bigint);
  if (n !== output.length || fps.length !== n) reject("wrong-output", "num_tokens");
  fps.forEach((fp, i) => {
    if (Number(fp.get("pos") as bigint) !== i) reject("bad-proof", `fingerprint ${i} has pos ${String(fp.get("pos"))}`);
    if (Number(fp.get("tok") as bigint) !== output[i]) reject("token-mismatch", `position ${i}`);
  });
  const root = merkleRoot(fps.map(fpLeaf));
  if (!root || !bytesEq(root, c.rec.get("root") as Uint8Array)) reject("bad-proof", "root");
  return ok({
    commitment_hash: hex(c.hash),
    num_tokens: n,
    output_hash: hex(c.rec.get("output_hash") as Uint8Array),
    prompt_hash: hex(c.rec.get("prompt_hash") as Uint8Array),
    root: hex(root),
  });
};

const opening: Handler = (input) => {
  const j = jsonInput(input);
  const c = commitment(decodeAs(unhex(str(j.commitment)), "PolCommitment", "malformed"));
  const op = decodeAs(unhex(str(j.opening)), "PolOpening", "malformed");
  const output = arr(j.output).map((x) => num(x));
  const position = num(j.position);
  const cr = c.rec;
  // 1. commitment
  checkCommitmentSignature(cr);
  const tier = TIERS[Number(cr.get("tier") as bigint)];
  if (!tier) reject("wrong-tier");
  const topk = Number(cr.get("top_k") as bigint);
  if (topk !== TOP_K) reject("wrong-tier", "top_k");
  if (!bytesEq(tokensHash(output), cr.get("output_hash") as Uint8Array)) reject("wrong-output");
  const n = Number(cr.get("num_tokens") as bigint);
  if (n !== output.length) reject("wrong-output", "num_tokens");
  const tau = tier.tauUnits;
  // 2. the opening
  if (!bytesEq(op.get("cmt") as Uint8Array, c.hash)) reject("wrong-commitment");
  const fp = op.get("fp") as CborRecord;
  const pos = Number(fp.get("pos") as bigint);
  if (pos !== position) reject("wrong-position", `${pos} != ${position}`);
  const sibs = op.get("sibs") as Uint8Array[];
  if (sibs.length !== depth(n) || !bytesEq(rootFromProof(fpLeaf(fp), pos, sibs), cr.get("root") as Uint8Array)) reject("bad-proof");
  const ids = nums(fp.get("ids"));
  const lps = nums(fp.get("lps"));
  const vocab = Number(cr.get("vocab") as bigint);
  if (ids.length !== topk || new Set(ids).size !== ids.length || ids.some((i) => i >= vocab)) reject("malformed-fingerprint");
  for (let i = 1; i < ids.length; i++) {
    if (lps[i - 1] > lps[i] || (lps[i - 1] === lps[i] && ids[i - 1] > ids[i])) reject("malformed-fingerprint", "order");
  }
  const tok = Number(fp.get("tok") as bigint);
  if (tok !== output[pos]) reject("token-mismatch");
  const temp = Number(cr.get("temp_milli") as bigint);
  if (temp === 0) {
    const k = ids.indexOf(tok);
    if (k < 0 || lps[k] - lps[0] > tau) reject("token-not-argmax", "committed values");
  } else if (sampleToken(ids, lps, temp, cr.get("sample_seed") as Uint8Array, pos) !== tok) {
    reject("token-not-sampled");
  }
  // 4. the validator's values at this position
  const q = quantize(logitsFromHex(str(j.validator_logits_f32le)));
  if (q.length !== vocab) reject("wrong-model", "vocabulary size");
  let dev = 0;
  ids.forEach((id, i) => {
    dev = Math.max(dev, Math.abs(q[id] - lps[i]));
  });
  if (dev > tau) reject("value-out-of-tolerance", `${dev} units`);
  const committed = new Set(ids);
  let minUncommitted = Infinity;
  let minAll = Infinity;
  q.forEach((v, t) => {
    minAll = Math.min(minAll, v);
    if (!committed.has(t)) minUncommitted = Math.min(minUncommitted, v);
  });
  if (Math.max(...lps) - minUncommitted > tau) reject("uncommitted-exceeds");
  if (temp === 0 && q[tok] - minAll > tau) reject("token-not-argmax");
  return ok({ accept: true, dev_units: dev });
};

export const POL_HANDLERS: { [key: string]: Handler } = {
  "pol/fingerprint": fingerprint,
  "pol/commitment": commitmentH,
  "pol/opening": opening,
};
export { concat, int, type Json };
