// Small shared helpers: bytes, hashing, a bigint-preserving JSON parser and deep equality.
import { createHash } from "node:crypto";

export type Json = null | boolean | number | bigint | string | Json[] | { [k: string]: Json };

/** A handler's verdict on one case. */
export type Outcome = { accept: true; output: Json } | { accept: false; reason: string };

export class Reject extends Error {
  constructor(public readonly reason: string, detail = "") {
    super(detail ? `${reason}: ${detail}` : reason);
  }
}

export function reject(reason: string, detail = ""): never {
  throw new Reject(reason, detail);
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

export function unhex(s: string): Uint8Array {
  const t = s.startsWith("0x") ? s.slice(2) : s;
  if (t.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(t)) throw new Error(`bad hex: ${s.slice(0, 20)}`);
  return new Uint8Array(Buffer.from(t, "hex"));
}

export function bytesEq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function u64le(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}
export function u64be(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), false);
  return b;
}
export function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}
export function u32be(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, false);
  return b;
}
export function readU64le(b: Uint8Array, o: number): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(o, true);
}
export function readU64be(b: Uint8Array, o: number): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(o, false);
}
export function readU32le(b: Uint8Array, o: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(o, true);
}
export function readU32be(b: Uint8Array, o: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(o, false);
}
export function readU16le(b: Uint8Array, o: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint16(o, true);
}

/** JSON.parse that keeps integers outside the safe range as bigint (vectors carry u64s). */
export function parseJson(text: string): Json {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && " \t\r\n".includes(text[i])) i++;
  };
  const val = (): Json => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: { [k: string]: Json } = {};
      ws();
      if (text[i] === "}") {
        i++;
        return o;
      }
      for (;;) {
        ws();
        const k = val();
        if (typeof k !== "string") throw new Error("bad JSON key");
        ws();
        if (text[i++] !== ":") throw new Error("bad JSON: expected ':'");
        o[k] = val();
        ws();
        const d = text[i++];
        if (d === "}") return o;
        if (d !== ",") throw new Error("bad JSON: expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const a: Json[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return a;
      }
      for (;;) {
        a.push(val());
        ws();
        const d = text[i++];
        if (d === "]") return a;
        if (d !== ",") throw new Error("bad JSON: expected ',' or ']'");
      }
    }
    if (c === '"') {
      const start = i;
      i++;
      while (text[i] !== '"') {
        if (i >= text.length) throw new Error("bad JSON string");
        if (text[i] === "\\") i++;
        i++;
      }
      i++;
      return JSON.parse(text.slice(start, i)) as string;
    }
    const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (m) {
      i += m[0].length;
      if (m[1] === undefined && m[2] === undefined) {
        const b = BigInt(m[0]);
        return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
      }
      return Number(m[0]);
    }
    for (const [lit, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return v;
      }
    }
    throw new Error(`bad JSON at ${i}`);
  };
  const v = val();
  ws();
  if (i !== text.length) throw new Error("bad JSON: trailing text");
  return v;
}

/** Normalise numbers: safe bigints become numbers so both sides compare alike. */
export function norm(x: Json): Json {
  if (typeof x === "bigint") {
    return x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
  }
  if (Array.isArray(x)) return x.map(norm);
  if (x !== null && typeof x === "object") {
    const o: { [k: string]: Json } = {};
    for (const k of Object.keys(x)) o[k] = norm(x[k]);
    return o;
  }
  return x;
}

/** First difference between two JSON values, as a path and the two values; null if equal. */
export function diff(a: Json, b: Json, path = "$"): string | null {
  a = norm(a);
  b = norm(b);
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${path}: length ${a.length} != expected ${b.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = diff(a[i], b[i], `${path}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (a !== null && b !== null && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    for (const k of new Set([...ka, ...kb])) {
      if (!(k in a)) return `${path}.${k}: missing (expected ${show(b[k])})`;
      if (!(k in b)) return `${path}.${k}: unexpected ${show(a[k])}`;
      const d = diff(a[k], b[k], `${path}.${k}`);
      if (d) return d;
    }
    return null;
  }
  if (a === b) return null;
  return `${path}: got ${show(a)}, expected ${show(b)}`;
}

export function show(x: Json): string {
  const s = JSON.stringify(x, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  return s === undefined ? "undefined" : s.length > 120 ? s.slice(0, 117) + "..." : s;
}

// ---- typed accessors for JSON inputs ----
export function obj(x: Json, what = "object"): { [k: string]: Json } {
  if (x === null || typeof x !== "object" || Array.isArray(x)) throw new Error(`expected ${what}`);
  return x;
}
export function arr(x: Json, what = "array"): Json[] {
  if (!Array.isArray(x)) throw new Error(`expected ${what}`);
  return x;
}
export function str(x: Json, what = "string"): string {
  if (typeof x !== "string") throw new Error(`expected ${what}`);
  return x;
}
export function int(x: Json, what = "integer"): bigint {
  if (typeof x === "bigint") return x;
  if (typeof x === "number" && Number.isInteger(x)) return BigInt(x);
  throw new Error(`expected ${what}`);
}
export function num(x: Json, what = "integer"): number {
  const v = int(x, what);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new Error(`${what} too large`);
  return Number(v);
}
