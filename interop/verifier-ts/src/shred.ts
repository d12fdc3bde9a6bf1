// agave chained Merkle shreds (spec/shred.md): parse, Merkle tree, make, Reed-Solomon, recover.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, arr, bytesEq, concat, hex, int, num, readU16le, readU32le, readU64le, reject, sha256, str, unhex, utf8 } from "./util.js";
import { publicKey, sign, verifyStrict } from "./crypto.js";
import * as rs from "./erasure.js";

export const PACKET_DATA_SIZE = 1232;
export const CODE_PAYLOAD_BYTES = 1228;
export const DATA_PAYLOAD_BYTES = 1203;
export const DATA_HEADERS = 88;
export const CODE_HEADERS = 89;
export const MERKLE_ROOT_BYTES = 32;
export const PROOF_ENTRY_BYTES = 20;
export const MAX_DATA_SHREDS_PER_SLOT = 32_768;
export const MAX_CODE_SHREDS_PER_SLOT = 32_768;
export const MAX_NUM_CODING_SHREDS = 256;
const LEAF_PREFIX = utf8("\x00SOLANA_MERKLE_SHREDS_LEAF");
const NODE_PREFIX = utf8("\x01SOLANA_MERKLE_SHREDS_NODE");
const FLAG_DATA_COMPLETE = 0x40;
const FLAG_LAST_IN_SLOT = 0xc0;
const TICK_MASK = 0x3f;

export type Shred = {
  payload: Uint8Array;
  isData: boolean;
  variant: number;
  proofSize: number;
  resigned: boolean;
  slot: bigint;
  index: number;
  version: number;
  fecSetIndex: number;
  // data
  parentOffset: number;
  flags: number;
  size: number;
  // code
  numData: number;
  numCoding: number;
  position: number;
  capacity: number;
};

export const join = (a: Uint8Array, b: Uint8Array): Uint8Array => sha256(NODE_PREFIX, a.subarray(0, 20), b.subarray(0, 20));

export function capacity(isData: boolean, proofSize: number, resigned: boolean): number {
  const payload = isData ? DATA_PAYLOAD_BYTES : CODE_PAYLOAD_BYTES;
  const h = isData ? DATA_HEADERS : CODE_HEADERS;
  return payload - h - MERKLE_ROOT_BYTES - PROOF_ENTRY_BYTES * proofSize - 64 * (resigned ? 1 : 0);
}

function variantInfo(v: number): { isData: boolean; resigned: boolean; proofSize: number } {
  if (v === 0x5a || v === 0xa5) reject("legacy-variant");
  const hi = v & 0xf0;
  const proofSize = v & 0x0f;
  switch (hi) {
    case 0x60:
      return { isData: false, resigned: false, proofSize };
    case 0x70:
      return { isData: false, resigned: true, proofSize };
    case 0x90:
      return { isData: true, resigned: false, proofSize };
    case 0xb0:
      return { isData: true, resigned: true, proofSize };
    case 0x40:
    case 0x80:
      return reject("unchained-variant");
    default:
      return reject("bad-variant", `0x${v.toString(16)}`);
  }
}

/** Parse and sanitize one packet (no signature check). */
export function parseShred(packet: Uint8Array): Shred {
  if (packet.length > PACKET_DATA_SIZE) reject("oversized");
  if (packet.length < 65) reject("wrong-size", "shorter than the variant byte");
  const variant = packet[64];
  const { isData, resigned, proofSize } = variantInfo(variant);
  const size = isData ? DATA_PAYLOAD_BYTES : CODE_PAYLOAD_BYTES;
  if (packet.length < size) reject("wrong-size", `${packet.length} < ${size}`);
  const payload = packet.subarray(0, size);
  const cap = capacity(isData, proofSize, resigned);
  if (cap <= 0) reject("bad-proof-size");
  const s: Shred = {
    payload,
    isData,
    variant,
    proofSize,
    resigned,
    slot: readU64le(payload, 65),
    index: readU32le(payload, 73),
    version: readU16le(payload, 77),
    fecSetIndex: readU32le(payload, 79),
    parentOffset: 0,
    flags: 0,
    size: 0,
    numData: 0,
    numCoding: 0,
    position: 0,
    capacity: cap,
  };
  if (isData) {
    s.parentOffset = readU16le(payload, 83);
    s.flags = payload[85];
    s.size = readU16le(payload, 86);
    if (s.index >= MAX_DATA_SHREDS_PER_SLOT || s.index < s.fecSetIndex) reject("bad-index");
    if ((s.flags & 0x80) !== 0 && (s.flags & 0x40) === 0) reject("bad-flags");
    if (s.size < DATA_HEADERS || s.size > DATA_HEADERS + cap) reject("bad-data-size", `${s.size}`);
    if (BigInt(s.parentOffset) > s.slot || (s.parentOffset === 0 && s.slot !== 0n)) reject("bad-parent");
  } else {
    s.numData = readU16le(payload, 83);
    s.numCoding = readU16le(payload, 85);
    s.position = readU16le(payload, 87);
    if (s.numData === 0 || s.numCoding === 0 || s.numCoding > MAX_NUM_CODING_SHREDS || s.position >= s.numCoding || s.numData + s.numCoding > 256) {
      reject("bad-coding-header");
    }
    if (s.index >= MAX_CODE_SHREDS_PER_SLOT || s.index < s.position) reject("bad-index");
    if (s.fecSetIndex + s.numData > MAX_DATA_SHREDS_PER_SLOT || s.index - s.position + s.numCoding > MAX_CODE_SHREDS_PER_SLOT) reject("bad-index");
    let want = 0;
    while (1 << want < s.numData + s.numCoding) want++;
    if (proofSize !== want) reject("bad-proof-size", `${proofSize} != ${want}`);
  }
  return s;
}

const H = (s: Shred): number => (s.isData ? DATA_HEADERS : CODE_HEADERS);
export const shardIndex = (s: Shred): number => (s.isData ? s.index - s.fecSetIndex : s.numData + s.position);
export const chainedRoot = (s: Shred): Uint8Array => s.payload.subarray(H(s) + s.capacity, H(s) + s.capacity + 32);
export const leaf = (s: Shred): Uint8Array => sha256(LEAF_PREFIX, s.payload.subarray(64, H(s) + s.capacity + 32));
export function proofEntries(s: Shred): Uint8Array[] {
  const o = H(s) + s.capacity + 32;
  return Array.from({ length: s.proofSize }, (_, k) => s.payload.subarray(o + 20 * k, o + 20 * k + 20));
}
export const erasureShard = (s: Shred): Uint8Array => (s.isData ? s.payload.subarray(64, DATA_HEADERS + s.capacity) : s.payload.subarray(CODE_HEADERS, CODE_HEADERS + s.capacity));

export function merkleRootOf(s: Shred): Uint8Array {
  let node = leaf(s);
  let i = shardIndex(s);
  for (const e of proofEntries(s)) {
    node = i % 2 === 0 ? join(node, e) : join(e, node);
    i >>= 1;
  }
  if (i !== 0) reject("bad-proof");
  return node;
}

export function verifyShred(s: Shred, leader: Uint8Array): Uint8Array {
  const root = merkleRootOf(s);
  if (!verifyStrict(s.payload.subarray(0, 64), root, leader)) reject("bad-signature");
  return root;
}

/** Tree levels over already-hashed leaves. */
export function treeLevels(leaves: Uint8Array[]): Uint8Array[][] {
  const lv: Uint8Array[][] = [leaves];
  while (lv[lv.length - 1].length > 1) {
    const l = lv[lv.length - 1];
    const n: Uint8Array[] = [];
    for (let i = 0; i < l.length; i += 2) n.push(join(l[i], l[Math.min(i + 1, l.length - 1)]));
    lv.push(n);
  }
  return lv;
}
export function treeProof(lv: Uint8Array[][], i: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let d = 0; d < lv.length - 1; d++) {
    out.push(lv[d][Math.min(i ^ 1, lv[d].length - 1)].subarray(0, 20));
    i >>= 1;
  }
  return out;
}

// ---------------------------------------------------------------- handlers
const parse: Handler = (input) => {
  const leader = input.subarray(0, 32);
  const s = parseShred(input.subarray(32));
  const root = verifyShred(s, leader);
  const common: { [k: string]: Json } = {
    chained: true,
    chained_merkle_root: "0x" + hex(chainedRoot(s)),
    fec_set_index: s.fecSetIndex,
    index: s.index,
    merkle_root: "0x" + hex(root),
    proof_size: s.proofSize,
    resigned: s.resigned,
    slot: s.slot,
    type: s.isData ? "data" : "code",
    variant: s.variant,
    version: s.version,
  };
  if (s.isData) {
    return ok({
      ...common,
      data_complete: (s.flags & FLAG_DATA_COMPLETE) !== 0,
      last_in_slot: (s.flags & FLAG_LAST_IN_SLOT) === FLAG_LAST_IN_SLOT,
      data_sha256: "0x" + hex(sha256(s.payload.subarray(DATA_HEADERS, s.size))),
      flags: s.flags,
      parent_offset: s.parentOffset,
      reference_tick: s.flags & TICK_MASK,
      size: s.size,
    });
  }
  return ok({ ...common, num_coding_shreds: s.numCoding, num_data_shreds: s.numData, position: s.position });
};

const merkle: Handler = (input) => {
  const nodes = arr(jsonInput(input).nodes).map((x) => unhex(str(x)));
  const lv = treeLevels(nodes);
  return ok({ root: hex(lv[lv.length - 1][0]), proofs: nodes.map((_, i) => treeProof(lv, i).map(hex)) });
};

const rsH: Handler = (input) => {
  const d = input[0];
  const p = input[1];
  const body = input.subarray(2);
  if (d === 0 || body.length % d !== 0) reject("bad-input");
  const len = body.length / d;
  const data = Array.from({ length: d }, (_, i) => body.subarray(i * len, (i + 1) * len));
  return ok({ parity: rs.encode(data, p).map(hex) });
};

function writeU16(b: Uint8Array, o: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint16(o, v, true);
}
function writeU32(b: Uint8Array, o: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(o, v, true);
}
function writeU64(b: Uint8Array, o: number, v: bigint): void {
  new DataView(b.buffer, b.byteOffset).setBigUint64(o, v, true);
}

/** Finish a FEC set: Reed-Solomon, chained root, tree, signature, proofs. Returns its root. */
function finishSet(data: Uint8Array[], code: Uint8Array[], cap: number, proofSize: number, chained: Uint8Array, seed: Uint8Array): Uint8Array {
  const parity = rs.encode(
    data.map((p) => p.subarray(64, DATA_HEADERS + cap)),
    code.length,
  );
  code.forEach((p, i) => p.set(parity[i], CODE_HEADERS));
  for (const p of data) p.set(chained, DATA_HEADERS + cap);
  const ccap = DATA_HEADERS + cap - 64; // a coding shard is as long as a data shard
  for (const p of code) p.set(chained, CODE_HEADERS + ccap);
  const leaves = [...data.map((p) => sha256(LEAF_PREFIX, p.subarray(64, DATA_HEADERS + cap + 32))), ...code.map((p) => sha256(LEAF_PREFIX, p.subarray(64, CODE_HEADERS + ccap + 32)))];
  const lv = treeLevels(leaves);
  const root = lv[lv.length - 1][0];
  const sig = sign(root, seed);
  [...data, ...code].forEach((p, i) => {
    const end = i < data.length ? DATA_HEADERS + cap : CODE_HEADERS + ccap;
    const pr = treeProof(lv, i);
    if (pr.length !== proofSize) throw new Error("proof size");
    pr.forEach((e, k) => p.set(e, end + 32 + 20 * k));
    p.set(sig, 0);
  });
  return root;
}

/** make_shreds_from_data (spec/shred.md "Making shreds"). */
export function makeShreds(j: { [k: string]: Json }): { data: Uint8Array[]; code: Uint8Array[]; root: Uint8Array } {
  const seed = unhex(str(j.seed));
  void publicKey(seed);
  const data = unhex(str(j.data));
  const slot = int(j.slot);
  const parent = int(j.parent);
  const version = num(j.version);
  const refTick = Math.min(num(j.reference_tick), TICK_MASK);
  const last = j.last_in_slot === true;
  let chained = unhex(str(j.chained_merkle_root));
  let nextIndex = num(j.next_index);
  let nextCode = j.next_code_index === undefined ? nextIndex : num(j.next_code_index);
  const proofSize = 6;
  const resigned = last;
  const dcap = capacity(true, proofSize, resigned);
  const ccap = capacity(false, proofSize, resigned);
  if (DATA_HEADERS + dcap - 64 !== ccap) throw new Error("data and coding shards must have equal lengths");
  const setBytes = 32 * dcap;
  const nsets = Math.max(1, Math.ceil(data.length / setBytes));
  const dataOut: Uint8Array[] = [];
  const codeOut: Uint8Array[] = [];
  for (let k = 0; k < nsets; k++) {
    const chunk = data.subarray(k * setBytes, (k + 1) * setBytes);
    const fec = nextIndex;
    const dps: Uint8Array[] = [];
    for (let i = 0; i < 32; i++) {
      const piece = chunk.subarray(i * dcap, (i + 1) * dcap);
      const p = new Uint8Array(DATA_PAYLOAD_BYTES);
      p[64] = (resigned ? 0xb0 : 0x90) | proofSize;
      writeU64(p, 65, slot);
      writeU32(p, 73, nextIndex + i);
      writeU16(p, 77, version);
      writeU32(p, 79, fec);
      writeU16(p, 83, Number(slot - parent));
      let flags = refTick;
      if (k === nsets - 1 && i === 31) flags |= last ? FLAG_LAST_IN_SLOT : FLAG_DATA_COMPLETE;
      p[85] = flags;
      writeU16(p, 86, DATA_HEADERS + piece.length);
      p.set(piece, DATA_HEADERS);
      dps.push(p);
    }
    const cps: Uint8Array[] = [];
    for (let i = 0; i < 32; i++) {
      const p = new Uint8Array(CODE_PAYLOAD_BYTES);
      p[64] = (resigned ? 0x70 : 0x60) | proofSize;
      writeU64(p, 65, slot);
      writeU32(p, 73, nextCode + i);
      writeU16(p, 77, version);
      writeU32(p, 79, fec);
      writeU16(p, 83, 32);
      writeU16(p, 85, 32);
      writeU16(p, 87, i);
      cps.push(p);
    }
    chained = finishSet(dps, cps, dcap, proofSize, chained, seed);
    nextIndex += 32;
    nextCode += 32;
    dataOut.push(...dps);
    codeOut.push(...cps);
  }
  return { data: dataOut, code: codeOut, root: chained };
}

const make: Handler = (input) => {
  const r = makeShreds(jsonInput(input));
  return ok({ data: r.data.map((p) => hex(sha256(p))), code: r.code.map((p) => hex(sha256(p))), merkle_root: hex(r.root) });
};

/** Recover a FEC set (agave merkle::recover); returns the rebuilt shreds in shard order. */
export function recover(shreds: Shred[]): Shred[] {
  const code = shreds.filter((s) => !s.isData);
  if (code.length === 0) reject("too-few-parity-shreds");
  const ref = code[code.length - 1];
  const d = ref.numData;
  const n = d + ref.numCoding;
  for (const s of shreds) {
    const sameCfg = s.isData || (s.numData === ref.numData && s.numCoding === ref.numCoding);
    const sameVariant = (s.variant & 0x3f) === (ref.variant & 0x3f) || (s.resigned === ref.resigned && s.proofSize === ref.proofSize);
    if (s.slot !== ref.slot || s.version !== ref.version || s.fecSetIndex !== ref.fecSetIndex || !bytesEq(s.payload.subarray(0, 64), ref.payload.subarray(0, 64)) || !sameVariant || !sameCfg) {
      reject("fec-set-mismatch");
    }
  }
  const slots: (Shred | null)[] = Array.from({ length: n }, () => null);
  for (const s of shreds) {
    const i = shardIndex(s);
    if (i < 0 || i >= n) reject("fec-set-mismatch", "shard index outside the set");
    if (slots[i]) reject("duplicate-shred");
    slots[i] = s;
  }
  const present = slots.filter((s) => s !== null).length;
  if (present < d) reject("too-few-shreds", `${present} < ${d}`);
  const shards = rs.reconstruct(
    slots.map((s) => (s ? erasureShard(s) : null)),
    d,
  );
  const sig = ref.payload.subarray(0, 64);
  const chained = chainedRoot(ref);
  const cap = ref.capacity;
  const dcap = capacity(true, ref.proofSize, ref.resigned);
  const firstCodingIndex = ref.index - ref.position;
  const full: Shred[] = [];
  const rebuilt: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = slots[i];
    if (s) {
      full.push(s);
      continue;
    }
    rebuilt.push(i);
    let p: Uint8Array;
    if (i < d) {
      p = new Uint8Array(DATA_PAYLOAD_BYTES);
      p.set(sig, 0);
      p.set(shards[i], 64);
      p.set(chained, DATA_HEADERS + dcap);
      if (ref.resigned) p.set(ref.payload.subarray(CODE_PAYLOAD_BYTES - 64), DATA_PAYLOAD_BYTES - 64);
    } else {
      p = new Uint8Array(CODE_PAYLOAD_BYTES);
      p.set(ref.payload.subarray(0, CODE_HEADERS), 0);
      writeU32(p, 73, firstCodingIndex + (i - d));
      writeU16(p, 87, i - d);
      p.set(shards[i], CODE_HEADERS);
      p.set(chained, CODE_HEADERS + cap);
      if (ref.resigned) p.set(ref.payload.subarray(CODE_PAYLOAD_BYTES - 64), CODE_PAYLOAD_BYTES - 64);
    }
    let r: Shred;
    try {
      r = parseShred(p);
    } catch {
      return reject("bad-recovered-shred", `shard ${i}`);
    }
    if (r.slot !== ref.slot || r.version !== ref.version || r.fecSetIndex !== ref.fecSetIndex || shardIndex(r) !== i || (r.isData && r.variant !== ((ref.resigned ? 0xb0 : 0x90) | ref.proofSize))) {
      reject("bad-recovered-shred", `shard ${i}`);
    }
    full.push(r);
  }
  const lv = treeLevels(full.map(leaf));
  const root = lv[lv.length - 1][0];
  const signedRoot = merkleRootOf(ref);
  if (!bytesEq(root, signedRoot)) reject("merkle-root-mismatch");
  const out: Shred[] = [];
  for (const i of rebuilt) {
    const s = full[i];
    const h = s.isData ? DATA_HEADERS : CODE_HEADERS;
    treeProof(lv, i).forEach((e, k) => s.payload.set(e, h + s.capacity + 32 + 20 * k));
    out.push(s);
  }
  return out;
}

const recoverH: Handler = (input) => {
  const count = readU16le(input, 0);
  let o = 2;
  const shreds: Shred[] = [];
  for (let k = 0; k < count; k++) {
    const len = readU16le(input, o);
    shreds.push(parseShred(input.slice(o + 2, o + 2 + len)));
    o += 2 + len;
  }
  if (o !== input.length) reject("bad-input", "trailing bytes");
  return ok(recover(shreds).map((s) => ({ index: s.index, sha256: hex(sha256(s.payload)), type: s.isData ? "data" : "code" })));
};

export const SHRED_HANDLERS: { [key: string]: Handler } = {
  "shred/parse": parse,
  "shred/merkle": merkle,
  "shred/rs": rsH,
  "shred/make": make,
  "shred/recover": recoverH,
};
export { concat };
