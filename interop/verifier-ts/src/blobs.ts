// Blobs (spec/blobs.md): token blobs and the requester's checks of a BlobResponse.
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, bytesEq, concat, hex, readU32be, reject, sha256, u32be, unhex, utf8 } from "./util.js";
import { MAX_BLOB_BYTES, decodeMessage } from "./codec.js";

/** spec/pol.md: the domain of `tokens_hash`, and so the token blob's header. */
export const DOMAIN_TOKENS = utf8("ambient/pol-tokens/v1\0");
/** DOMAIN_TOKENS (22 bytes) || u32_be(len). */
export const TOKEN_BLOB_HEADER_BYTES = DOMAIN_TOKENS.length + 4;
/** (MAX_BLOB_BYTES - 26) / 4: the most token ids one blob holds. */
export const MAX_BLOB_TOKENS = Math.floor((MAX_BLOB_BYTES - TOKEN_BLOB_HEADER_BYTES) / 4);
const U32_LIMIT = 1n << 32n;

/** token_blob(ids) = DOMAIN_TOKENS || u32_be(len(ids)) || u32_be(id)...; too-large above MAX_BLOB_TOKENS. */
export function tokenBlob(ids: bigint[]): Uint8Array {
  if (ids.length > MAX_BLOB_TOKENS) reject("too-large", `${ids.length} tokens > ${MAX_BLOB_TOKENS}`);
  const parts = [DOMAIN_TOKENS, u32be(ids.length)];
  for (const id of ids) {
    if (id < 0n || id >= U32_LIMIT) reject("bad-token-blob", `token id ${id} is not a u32`);
    parts.push(u32be(Number(id)));
  }
  return concat(...parts);
}

/** The ids of a token blob: header, then the count against the body, then the count's bound. */
export function blobTokens(blob: Uint8Array): number[] {
  if (blob.length < TOKEN_BLOB_HEADER_BYTES || !bytesEq(blob.subarray(0, DOMAIN_TOKENS.length), DOMAIN_TOKENS)) {
    reject("bad-token-blob", "no token-blob header");
  }
  const n = readU32be(blob, DOMAIN_TOKENS.length);
  const body = blob.length - TOKEN_BLOB_HEADER_BYTES;
  if (body !== 4 * n) reject("bad-token-blob", `header says ${n} ids, body holds ${body} bytes`);
  if (n > MAX_BLOB_TOKENS) reject("too-large", `${n} tokens > ${MAX_BLOB_TOKENS}`);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(readU32be(blob, TOKEN_BLOB_HEADER_BYTES + 4 * i));
  return out;
}

const tokenBlobH: Handler = (input) => {
  const j = jsonInput(input);
  const t = j.tokens;
  if (!Array.isArray(t) || !t.every((x: Json) => typeof x === "bigint" || (typeof x === "number" && Number.isInteger(x)))) {
    reject("malformed", "tokens must be a list of integers");
  }
  const blob = tokenBlob((t as (number | bigint)[]).map((x) => BigInt(x)));
  return ok({ blob: hex(blob), sha256: hex(sha256(blob)) });
};

const parseTokenBlobH: Handler = (input) => ok({ tokens: blobTokens(input), sha256: hex(sha256(input)) });

/** The requester's checks (spec/blobs.md, "Requester", steps 1 and 3 to 5; the vectors carry no nonce). */
const answerH: Handler = (input) => {
  const j = jsonInput(input);
  let requested: Uint8Array;
  let raw: Uint8Array;
  try {
    requested = unhex(String(j.requested));
    raw = unhex(String(j.response));
  } catch (e) {
    return reject("malformed", String(e));
  }
  const m = decodeMessage(raw, "BlobResponse"); // strict; data above MAX_BLOB_BYTES is too-large
  const data = m.body.get("data") as Uint8Array | undefined;
  if (data === undefined) reject("not-found");
  if (!bytesEq(m.body.get("sha256") as Uint8Array, requested)) reject("wrong-hash");
  if (!bytesEq(sha256(data), requested)) reject("hash-mismatch");
  return ok({ sha256: hex(requested), size: data.length });
};

export const BLOB_HANDLERS: { [key: string]: Handler } = {
  "blobs/token-blob": tokenBlobH,
  "blobs/parse-token-blob": parseTokenBlobH,
  "blobs/answer": answerH,
};
