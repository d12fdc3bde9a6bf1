// Solana wire transactions (legacy and v0): parse, sanitize, verify (spec/bank.md "Transactions").
import { reject } from "./util.js";
import { compactU16 } from "./poh.js";
import { verifyStrict } from "./crypto.js";

export const MAX_TRANSACTION_BYTES = 1232;

export type Instruction = { programIndex: number; accounts: number[]; data: Uint8Array };
export type Transaction = {
  bytes: Uint8Array;
  signatures: Uint8Array[];
  message: Uint8Array;
  version: "legacy" | 0;
  numRequired: number;
  numReadonlySigned: number;
  numReadonlyUnsigned: number;
  keys: Uint8Array[];
  recentBlockhash: Uint8Array;
  instructions: Instruction[];
  lookups: number;
};

export function parseTransaction(b: Uint8Array): Transaction {
  let o = 0;
  const bad = (why: string): never => reject("bad-transaction", why);
  const need = (n: number): void => {
    if (o + n > b.length) bad("truncated");
  };
  const cu16 = (): number => {
    const [v, n] = compactU16(b, o, bad);
    o = n;
    return v;
  };
  const nsig = cu16();
  need(64 * nsig);
  const signatures = Array.from({ length: nsig }, (_, i) => b.subarray(o + 64 * i, o + 64 * i + 64));
  o += 64 * nsig;
  const mstart = o;
  need(1);
  let version: "legacy" | 0 = "legacy";
  if (b[o] & 0x80) {
    if ((b[o] & 0x7f) !== 0) bad("unsupported message version");
    version = 0;
    o++;
  }
  need(3);
  const [numRequired, numReadonlySigned, numReadonlyUnsigned] = [b[o], b[o + 1], b[o + 2]];
  o += 3;
  const nkeys = cu16();
  need(32 * nkeys);
  const keys = Array.from({ length: nkeys }, (_, i) => b.subarray(o + 32 * i, o + 32 * i + 32));
  o += 32 * nkeys;
  need(32);
  const recentBlockhash = b.subarray(o, o + 32);
  o += 32;
  const nix = cu16();
  const instructions: Instruction[] = [];
  for (let i = 0; i < nix; i++) {
    need(1);
    const programIndex = b[o++];
    const k = cu16();
    need(k);
    const accounts = Array.from(b.subarray(o, o + k));
    o += k;
    const d = cu16();
    need(d);
    const data = b.subarray(o, o + d);
    o += d;
    instructions.push({ programIndex, accounts, data });
  }
  let lookups = 0;
  if (version === 0) {
    lookups = cu16();
    for (let i = 0; i < lookups; i++) {
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
  if (o !== b.length) bad("trailing bytes");
  // sanitize (Solana Message::sanitize)
  if (nsig !== numRequired) bad("signature count differs from the header");
  if (numRequired === 0 || numReadonlySigned >= numRequired) bad("bad header");
  if (numRequired + numReadonlyUnsigned > nkeys) bad("header exceeds the account keys");
  for (const ix of instructions) {
    if (ix.programIndex === 0 || ix.programIndex >= nkeys) bad("bad program id index");
    for (const a of ix.accounts) if (a >= nkeys) bad("account index out of range");
  }
  return {
    bytes: b,
    signatures,
    message: b.subarray(mstart),
    version,
    numRequired,
    numReadonlySigned,
    numReadonlyUnsigned,
    keys,
    recentBlockhash,
    instructions,
    lookups,
  };
}

export function verifySignatures(tx: Transaction): boolean {
  return tx.signatures.every((s, i) => verifyStrict(s, tx.message, tx.keys[i]));
}

export const isSigner = (tx: Transaction, i: number): boolean => i < tx.numRequired;
export function isWritable(tx: Transaction, i: number): boolean {
  if (i < tx.numRequired) return i < tx.numRequired - tx.numReadonlySigned;
  return i < tx.keys.length - tx.numReadonlyUnsigned;
}

/** Parse, sanitize, verify: the block-invalidating checks of one transaction. */
export function checkTransaction(b: Uint8Array): Transaction {
  if (b.length > MAX_TRANSACTION_BYTES) reject("oversized", `${b.length} bytes`);
  const tx = parseTransaction(b);
  if (tx.lookups > 0) reject("unsupported-transaction", "address lookup tables");
  if (!verifySignatures(tx)) reject("bad-signature");
  return tx;
}
