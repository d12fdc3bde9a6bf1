// ed25519 (strict RFC 8032 verification), domain separation, base58 (spec/crypto.md).
import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";
import bs58 from "bs58";
import { concat, utf8 } from "./util.js";

ed.hashes.sha512 = sha512;

export const PURPOSES = new Set([
  "genesis",
  "vote",
  "gossip",
  "repair",
  "node-info",
  "pol-commitment",
  "pol-verdict",
  "auction-bid",
  "auction-query",
  "stage-commitment",
  "snapshot",
  "test",
]);
const PURPOSE_RE = /^[a-z0-9-]{1,32}$/;

export function domainBytes(purpose: string, message: Uint8Array): Uint8Array {
  if (!PURPOSE_RE.test(purpose) || !PURPOSES.has(purpose)) throw new Error(`unknown purpose ${purpose}`);
  return concat(utf8(`ambient/${purpose}/v1`), new Uint8Array([0]), message);
}

/** Strict verification: S < L, canonical encodings (RFC 8032, not ZIP-215), no small-order keys. */
export function verifyStrict(sig: Uint8Array, msg: Uint8Array, pub: Uint8Array): boolean {
  if (sig.length !== 64 || pub.length !== 32) return false;
  try {
    const A = ed.Point.fromBytes(pub, false);
    if (A.isSmallOrder()) return false;
    const R = ed.Point.fromBytes(sig.subarray(0, 32), false);
    if (R.isSmallOrder()) return false;
    return ed.verify(sig, msg, pub, { zip215: false });
  } catch {
    return false;
  }
}

export function verifyDomain(purpose: string, msg: Uint8Array, sig: Uint8Array, pub: Uint8Array): boolean {
  let signed: Uint8Array;
  try {
    signed = domainBytes(purpose, msg);
  } catch {
    return false;
  }
  return verifyStrict(sig, signed, pub);
}

export const publicKey = (seed: Uint8Array): Uint8Array => ed.getPublicKey(seed);
export const sign = (msg: Uint8Array, seed: Uint8Array): Uint8Array => ed.sign(msg, seed);

export const b58 = (b: Uint8Array): string => bs58.encode(b);
export function unb58(s: string, len = 32): Uint8Array {
  const b = bs58.decode(s);
  if (b.length !== len) throw new Error(`base58 ${s} is not ${len} bytes`);
  return b;
}
