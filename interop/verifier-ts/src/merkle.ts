// agave merkle-tree crate (spec/crypto.md "Hashes"): transaction-signature roots, PoL roots.
import { sha256 } from "./util.js";

const LEAF = new Uint8Array([0x00]);
const NODE = new Uint8Array([0x01]);

export const leafHash = (data: Uint8Array): Uint8Array => sha256(LEAF, data);

/** All levels, leaves first. An odd last node is paired with itself. */
export function levels(items: Uint8Array[]): Uint8Array[][] {
  const out: Uint8Array[][] = [items.map(leafHash)];
  while (out[out.length - 1].length > 1) {
    const lv = out[out.length - 1];
    const next: Uint8Array[] = [];
    for (let i = 0; i < lv.length; i += 2) next.push(sha256(NODE, lv[i], lv[Math.min(i + 1, lv.length - 1)]));
    out.push(next);
  }
  return out;
}

export function root(items: Uint8Array[]): Uint8Array | null {
  if (items.length === 0) return null;
  const lv = levels(items);
  return lv[lv.length - 1][0];
}

/** Siblings of leaf `i`, leaf level first. */
export function proof(items: Uint8Array[], i: number): Uint8Array[] {
  const lv = levels(items);
  const sibs: Uint8Array[] = [];
  for (let d = 0; d < lv.length - 1; d++) {
    const l = lv[d];
    sibs.push(l[Math.min(i ^ 1, l.length - 1)]);
    i >>= 1;
  }
  return sibs;
}

/** Root reached from a leaf's data and its proof. */
export function rootFromProof(data: Uint8Array, i: number, sibs: Uint8Array[]): Uint8Array {
  let node = leafHash(data);
  for (const s of sibs) {
    node = i % 2 === 0 ? sha256(NODE, node, s) : sha256(NODE, s, node);
    i >>= 1;
  }
  return node;
}

/** Depth of a tree of n leaves (number of siblings in a proof). */
export function depth(n: number): number {
  let d = 0;
  while (n > 1) {
    n = Math.ceil(n / 2);
    d++;
  }
  return d;
}
