// Proof of History, entries (agave bincode) and transaction framing (spec/poh.md).
import { concat, readU64le, reject, sha256 } from "./util.js";
import { root as merkleRoot } from "./merkle.js";

export const ZERO_HASH = new Uint8Array(32);
export const MAX_ENTRIES_PER_BATCH = 65_536;
export const MAX_TRANSACTIONS_PER_ENTRY = 16_384;
export const MAX_TRANSACTION_BYTES = 1_232;
export const DEFAULT_MAX_HASHES_PER_ENTRY = 1n << 24n;

export function hashN(start: Uint8Array, n: number): Uint8Array {
  let h = start;
  for (let i = 0; i < n; i++) h = sha256(h);
  return h;
}

/** Solana short_vec: 7 bits per byte, at most 3 bytes, value <= 0xFFFF, no alias encodings. */
export function compactU16(b: Uint8Array, o: number, fail: (why: string) => never): [number, number] {
  let v = 0;
  for (let i = 0; i < 3; i++) {
    if (o + i >= b.length) fail("compact-u16 runs past the end");
    const byte = b[o + i];
    if (i === 2 && byte > 0x03) fail("compact-u16 above 0xFFFF");
    v |= (byte & 0x7f) << (7 * i);
    if ((byte & 0x80) === 0) {
      if (i > 0 && byte === 0) fail("compact-u16 alias (redundant zero byte)");
      return [v, o + i + 1];
    }
    if (i === 2) fail("compact-u16 longer than 3 bytes");
  }
  return fail("compact-u16");
}

export type TxFrame = { bytes: Uint8Array; signatures: Uint8Array[]; messageStart: number };

/** Split one transaction off `b` at `o` by its framing only. Returns the frame and the next offset. */
export function frameTransaction(b: Uint8Array, o: number): [TxFrame, number] {
  const start = o;
  const trunc = (why: string): never => reject("truncated-transaction", why);
  const bad = (why: string): never => reject("bad-transaction", why);
  const need = (n: number): void => {
    if (o + n > b.length) trunc("transaction runs past the end");
  };
  const cu16 = (): number => {
    const [v, n] = compactU16(b, o, (w) => (w.includes("past the end") ? trunc(w) : bad(w)));
    o = n;
    return v;
  };
  const nsig = cu16();
  if (nsig < 1) bad("no signatures");
  need(64 * nsig);
  const signatures: Uint8Array[] = [];
  for (let i = 0; i < nsig; i++) signatures.push(b.subarray(o + 64 * i, o + 64 * i + 64));
  o += 64 * nsig;
  const messageStart = o;
  need(1);
  let v0 = false;
  if (b[o] & 0x80) {
    if ((b[o] & 0x7f) !== 0) bad("unsupported message version");
    v0 = true;
    o += 1;
  }
  need(3);
  o += 3;
  const nkeys = cu16();
  need(32 * nkeys + 32);
  o += 32 * nkeys + 32;
  const nix = cu16();
  for (let i = 0; i < nix; i++) {
    need(1);
    o += 1;
    const k = cu16();
    need(k);
    o += k;
    const d = cu16();
    need(d);
    o += d;
  }
  if (v0) {
    const nl = cu16();
    for (let i = 0; i < nl; i++) {
      need(32);
      o += 32;
      const w = cu16();
      need(w);
      o += w;
      const r = cu16();
      need(r);
      o += r;
    }
  }
  return [{ bytes: b.subarray(start, o), signatures, messageStart: messageStart - start }, o];
}

export type Entry = { numHashes: bigint; hash: Uint8Array; txs: TxFrame[] };

export function deserializeEntries(b: Uint8Array): Entry[] {
  const trunc = (): never => reject("truncated-entries");
  if (b.length < 8) trunc();
  const count = readU64le(b, 0);
  // each entry needs at least 48 bytes: a count that cannot fit is bad-entries
  if (count > BigInt(MAX_ENTRIES_PER_BATCH) || count * 48n > BigInt(b.length - 8)) reject("bad-entries", `count ${count}`);
  let o = 8;
  const out: Entry[] = [];
  for (let e = 0; e < Number(count); e++) {
    if (o + 48 > b.length) trunc();
    const numHashes = readU64le(b, o);
    const hash = b.subarray(o + 8, o + 40);
    const ntx = readU64le(b, o + 40);
    o += 48;
    if (ntx > BigInt(MAX_TRANSACTIONS_PER_ENTRY)) reject("bad-entries", `transaction count ${ntx}`);
    const txs: TxFrame[] = [];
    for (let t = 0; t < Number(ntx); t++) {
      if (o >= b.length) trunc();
      let f: TxFrame;
      try {
        [f, o] = frameTransaction(b, o);
      } catch (err) {
        if (err instanceof Error && err.message.startsWith("truncated-transaction")) trunc();
        throw err;
      }
      txs.push(f);
    }
    out.push({ numHashes, hash, txs });
  }
  if (o !== b.length) reject("trailing-bytes", `${b.length - o} bytes after the entries`);
  return out;
}

export function hashTransactions(txs: TxFrame[]): Uint8Array {
  const sigs = txs.flatMap((t) => t.signatures);
  return merkleRoot(sigs) ?? ZERO_HASH;
}

export function nextHash(start: Uint8Array, n: bigint, txs: TxFrame[]): Uint8Array {
  if (n === 0n && txs.length === 0) return start;
  if (n > DEFAULT_MAX_HASHES_PER_ENTRY) reject("bad-poh", `num_hashes ${n} above the verifier bound`);
  let h = start;
  const plain = (n > 1n ? n : 1n) - 1n;
  for (let i = 0n; i < plain; i++) h = sha256(h);
  if (txs.length === 0) return sha256(h);
  return sha256(h, hashTransactions(txs));
}

/** Index of the first entry whose hash does not follow, or -1. */
export function verifyEntries(start: Uint8Array, entries: Entry[]): number {
  let h = start;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const want = nextHash(h, e.numHashes, e.txs);
    if (Buffer.compare(want, e.hash) !== 0) return i;
    h = e.hash;
  }
  return -1;
}

export { concat };
