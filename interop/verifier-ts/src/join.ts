// Joining a running network (spec/join.md): the genesis answer, the snapshot trust rule, chunks.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, Reject, bytesEq, cmpBytes, concat, hex, int, num, obj, reject, sha256, str, u32le, u64le, unhex } from "./util.js";
import { type Record as CborRecord, decodeMessage } from "./codec.js";
import { verifyDomain } from "./crypto.js";

/** spec/join.md "Chunking". */
export const SNAPSHOT_CHUNK_BYTES = 65_536n;
export const MAX_SNAPSHOT_CHUNKS = 64n;
export const MAX_SNAPSHOT_BYTES = SNAPSHOT_CHUNK_BYTES * MAX_SNAPSHOT_CHUNKS;
/** The largest genesis a peer may hand over (the `Genesis` message's own bound). */
export const MAX_GENESIS_BYTES = 1 << 20;

const field = (j: { [k: string]: Json }, k: string): Json => {
  if (!(k in j)) reject("malformed", `missing ${k}`);
  return j[k];
};

/** Input JSON fields as the vectors write them; anything else is `malformed`. */
function parsed<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof Reject) throw e;
    return reject("malformed", e instanceof Error ? e.message : String(e));
  }
}

/** spec/join.md "The requester's checks", in order. */
const genesisAnswer: Handler = (input) => {
  const { expected, response } = parsed(() => {
    const j = jsonInput(input);
    const e = field(j, "expected");
    return { expected: e === null ? null : unhex(str(e)), response: unhex(str(field(j, "response"))) };
  });
  const resp = decodeMessage(response, "GenesisResponse").body;
  const raw = resp.get("genesis") as Uint8Array | undefined;
  if (raw === undefined) reject("not-found", "the peer holds no genesis");
  if (raw.length > MAX_GENESIS_BYTES) reject("too-large", `${raw.length} bytes`);
  let g: CborRecord;
  try {
    g = decodeMessage(raw, "Genesis").body;
  } catch (e) {
    // decodeMessage's own canonical check (re-encode, same bytes) is step 3's rule
    if (e instanceof Reject && e.reason === "non-canonical") reject("non-canonical", "the genesis bytes are not the canonical encoding");
    throw e;
  }
  const gh = sha256(raw);
  if (expected !== null && !bytesEq(gh, expected)) reject("genesis-mismatch", `genesis hash ${hex(gh)} is not the expected ${hex(expected)}`);
  return ok({ genesis_hash: hex(gh), chain_id: g.get("chain_id") as string });
};

type Attestation = {
  identity: Uint8Array;
  genesisHash: Uint8Array;
  slot: bigint;
  bankHash: Uint8Array;
  snapshotHash: Uint8Array;
  size: bigint;
  chunkBytes: bigint;
  chunkHashes: Uint8Array[];
  signature: Uint8Array;
};

function offers(rawHex: string): Attestation[] {
  const raw = parsed(() => unhex(rawHex));
  return (decodeMessage(raw, "SnapshotOffers").body.get("offers") as CborRecord[]).map((a) => ({
    identity: a.get("identity") as Uint8Array,
    genesisHash: a.get("genesis_hash") as Uint8Array,
    slot: a.get("slot") as bigint,
    bankHash: a.get("bank_hash") as Uint8Array,
    snapshotHash: a.get("snapshot_hash") as Uint8Array,
    size: a.get("size") as bigint,
    chunkBytes: a.get("chunk_bytes") as bigint,
    chunkHashes: a.get("chunk_hashes") as Uint8Array[],
    signature: a.get("signature") as Uint8Array,
  }));
}

/** The signed fixed layout (spec/join.md "Attestation"), purpose `snapshot`. */
const signingBytes = (a: Attestation): Uint8Array =>
  concat(a.genesisHash, u64le(a.slot), a.bankHash, a.snapshotHash, u32le(Number(a.size)), u32le(Number(a.chunkBytes)), ...a.chunkHashes);

/** Why an attestation cannot count (shape, chain, signature), or null; stake is the trust rule's. */
function attestationProblem(a: Attestation, genesisHash: Uint8Array): string | null {
  if (!bytesEq(a.genesisHash, genesisHash)) return "wrong-chain";
  if (!(a.size > 0n && a.size <= MAX_SNAPSHOT_BYTES) || !(a.chunkBytes > 0n && a.chunkBytes <= SNAPSHOT_CHUNK_BYTES)) return "bad-size";
  if (BigInt(a.chunkHashes.length) !== (a.size + a.chunkBytes - 1n) / a.chunkBytes) return "bad-chunks";
  if (!verifyDomain("snapshot", signingBytes(a), a.signature, a.identity)) return "bad-signature";
  return null;
}

/** What two attesters must agree on to attest the same snapshot. */
const claimKey = (a: Attestation): string =>
  [a.slot.toString(), hex(a.bankHash), hex(a.snapshotHash), a.size.toString(), a.chunkBytes.toString(), ...a.chunkHashes.map(hex)].join("/");

/** spec/join.md "Trust rule". */
const trust: Handler = (input) => {
  const { genesisHash, stakes, offersHex } = parsed(() => {
    const j = jsonInput(input);
    const st = new Map<string, bigint>();
    for (const [k, v] of Object.entries(obj(field(j, "stakes")))) st.set(hex(unhex(k)), int(v));
    return { genesisHash: unhex(str(field(j, "genesis_hash"))), stakes: st, offersHex: str(field(j, "offers")) };
  });
  const atts = offers(offersHex);
  const total = [...stakes.values()].reduce((x, y) => x + y, 0n);
  const refused = new Map<string, bigint>();
  const claims = new Map<string, { first: Attestation; signers: Set<string> }>();
  for (const a of atts) {
    const why = attestationProblem(a, genesisHash);
    if (why !== null) {
      refused.set(why, (refused.get(why) ?? 0n) + 1n);
      continue;
    }
    // no anchor LStake: counts nothing, but stays an attester of its claim (the epoch check)
    if ((stakes.get(hex(a.identity)) ?? 0n) <= 0n) refused.set("no-stake", (refused.get("no-stake") ?? 0n) + 1n);
    const k = claimKey(a);
    const c = claims.get(k) ?? { first: a, signers: new Set<string>() };
    c.signers.add(hex(a.identity)); // each identity counts once per claim
    claims.set(k, c);
  }
  type Trusted = { a: Attestation; stake: bigint; servers: string[] };
  let best: Trusted | null = null;
  for (const { first, signers } of claims.values()) {
    const stake = [...signers].reduce((x, id) => x + ((v) => (v > 0n ? v : 0n))(stakes.get(id) ?? 0n), 0n);
    if (total <= 0n || stake <= 0n || 3n * stake < 2n * total) continue;
    const cand: Trusted = { a: first, stake, servers: [...signers].sort() };
    // the highest slot wins; ties: more stake, then the smaller snapshot hash
    const better =
      best === null ||
      cand.a.slot > best.a.slot ||
      (cand.a.slot === best.a.slot &&
        (cand.stake > best.stake || (cand.stake === best.stake && cmpBytes(cand.a.snapshotHash, best.a.snapshotHash) < 0)));
    if (better) best = cand;
  }
  const refusedJson: { [k: string]: Json } = {};
  for (const k of [...refused.keys()].sort()) refusedJson[k] = refused.get(k)!;
  if (best === null) reject("no-trusted-snapshot", JSON.stringify(refusedJson, (_, v: unknown) => (typeof v === "bigint" ? Number(v) : v)));
  return ok({
    slot: best.a.slot,
    bank_hash: hex(best.a.bankHash),
    snapshot_hash: hex(best.a.snapshotHash),
    attested_stake: best.stake,
    total_stake: total,
    servers: best.servers,
    refused: refusedJson,
  });
};

/** spec/join.md "Download": chunk `index` must have the attested length and sha256. */
const chunk: Handler = (input) => {
  const { index, data, offersHex } = parsed(() => {
    const j = jsonInput(input);
    return { index: num(field(j, "index")), data: unhex(str(field(j, "data"))), offersHex: str(field(j, "offers")) };
  });
  const atts = offers(offersHex);
  if (atts.length !== 1) reject("malformed", "chunk vectors carry one attestation");
  const a = atts[0];
  if (!(index >= 0 && index < a.chunkHashes.length)) reject("bad-index", `chunk ${index}`);
  const rest = a.size - BigInt(index) * a.chunkBytes;
  const want = rest < a.chunkBytes ? rest : a.chunkBytes;
  if (BigInt(data.length) !== want) reject("bad-length", `chunk ${index}: ${data.length} bytes, attested ${want}`);
  if (!bytesEq(sha256(data), a.chunkHashes[index])) reject("chunk-mismatch", `chunk ${index}`);
  return ok({ ok: true });
};

export const JOIN_HANDLERS: { [key: string]: Handler } = {
  "join/genesis-answer": genesisAnswer,
  "join/trust": trust,
  "join/chunk": chunk,
};
