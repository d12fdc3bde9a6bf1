// Duplicate-slot proofs (spec/blockstore.md "Checking a duplicate-slot proof"), written from
// the spec text: checks in the spec's order, the first failure is the reason.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, Reject, bytesEq, hex, int, reject, str, unhex } from "./util.js";
import { unb58 } from "./crypto.js";
import { CODE_HEADERS, DATA_HEADERS, type Shred, parseShred, verifyShred } from "./shred.js";

/** The kinds, in the spec table's order (also the order of `shows`). */
export const DUPLICATE_KINDS = [
  "same-index-different-payload",
  "merkle-root-conflict",
  "index-past-last-in-slot",
  "last-in-slot-below-received",
  "erasure-config-conflict",
] as const;

const LAST_IN_SLOT = 0xc0;
const isLast = (s: Shred): boolean => s.isData && (s.flags & LAST_IN_SLOT) === LAST_IN_SLOT;

/** Step 2 for one shred; returns the shred with a zeroed retransmitter field (step 3) and its root. */
function checkShred(bytes: Uint8Array, slot: bigint, leader: Uint8Array, which: string): { s: Shred; payload: Uint8Array; root: Uint8Array } {
  let s: Shred;
  try {
    s = parseShred(bytes);
  } catch (e) {
    if (e instanceof Reject) return reject("malformed-shred", `${which}: ${e.reason}`);
    throw e;
  }
  if (bytes.length !== s.payload.length) reject("malformed-shred", `${which}: ${bytes.length} bytes, its variant has ${s.payload.length}`);
  if (s.slot !== slot) reject("slot-mismatch", `${which} is of slot ${s.slot}`);
  let root: Uint8Array;
  try {
    root = verifyShred(s, leader);
  } catch (e) {
    if (e instanceof Reject) return reject("bad-signature", `${which}: ${e.reason}`);
    throw e;
  }
  const payload = Uint8Array.from(s.payload);
  if (s.resigned) {
    const off = (s.isData ? DATA_HEADERS : CODE_HEADERS) + s.capacity + 32 + 20 * s.proofSize;
    payload.fill(0, off, off + 64);
  }
  return { s, payload, root };
}

const duplicateProof: Handler = (input) => {
  let leader: Uint8Array, slot: bigint, kind: string, b1: Uint8Array, b2: Uint8Array;
  try {
    const j = jsonInput(input);
    leader = unb58(str(j.leader));
    slot = int(j.slot);
    if (slot < 0n || slot >= 1n << 64n) throw new Error("slot out of range");
    kind = str(j.kind);
    b1 = unhex(str(j.shred1));
    b2 = unhex(str(j.shred2));
  } catch (e) {
    return reject("malformed-input", e instanceof Error ? e.message : String(e));
  }
  if (!(DUPLICATE_KINDS as readonly string[]).includes(kind)) reject("unknown-kind", kind);
  const a = checkShred(b1, slot, leader, "shred1");
  const b = checkShred(b2, slot, leader, "shred2");
  if (bytesEq(a.payload, b.payload)) reject("same-shred");
  const A = a.s;
  const B = b.s;
  const shown: { [k: string]: boolean } = {
    "same-index-different-payload": A.isData === B.isData && A.index === B.index,
    "merkle-root-conflict": A.fecSetIndex === B.fecSetIndex && !bytesEq(a.root, b.root),
    "index-past-last-in-slot": A.isData && B.isData && isLast(A) && B.index > A.index,
    "last-in-slot-below-received": A.isData && B.isData && isLast(B) && A.index > B.index,
    "erasure-config-conflict":
      !A.isData &&
      !B.isData &&
      A.fecSetIndex === B.fecSetIndex &&
      (A.numData !== B.numData || A.numCoding !== B.numCoding || A.index - A.position !== B.index - B.position),
  };
  const shows: Json[] = DUPLICATE_KINDS.filter((k) => shown[k]);
  if (!shown[kind]) reject("not-a-conflict", `shows ${shows.join(", ") || "none"}`);
  return ok({ slot, kind, shows, merkle_roots: [hex(a.root), hex(b.root)] });
};

export const DUPLICATE_HANDLERS: { [key: string]: Handler } = {
  "duplicate/proof": duplicateProof,
};
