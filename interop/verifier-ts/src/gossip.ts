// Gossip envelopes and the topic validator's generic checks (spec/network.md 2.1 to 2.3).
import { type Handler, jsonInput, ok } from "./handler.js";
import { type Json, arr, bytesEq, hex, int, reject, sha256, str, unhex } from "./util.js";
import { type Message, type Record as CborRecord, decodeMessage, encodeMessage } from "./codec.js";
import { b58, unb58, verifyDomain } from "./crypto.js";

/** spec/network.md 2.1: max encoded envelope per topic kind. */
export const TOPIC_LIMITS: { [kind: string]: number } = {
  shreds: 131_584,
  votes: 4096,
  "logit-pool": 65_536,
  auction: 8192,
  txs: 65_536,
};
export const FRESHNESS_WINDOW_MS = 30_000n;
export const FUTURE_SKEW_MS = 2000n;

/** `/ambient/<chain-id>/<kind>/1` -> kind, or null. */
export function kindOfTopic(chainId: string, topic: string): string | null {
  const prefix = `/ambient/${chainId}/`;
  if (!topic.startsWith(prefix) || !topic.endsWith("/1")) return null;
  const kind = topic.slice(prefix.length, topic.length - 2);
  return Object.hasOwn(TOPIC_LIMITS, kind) ? kind : null;
}

/** Steps 2 to 9 of the validation table (step 0, 1 are libp2p's, 10 is per kind); first failure wins. */
export class EnvelopeValidator {
  private readonly seen = new Map<string, Set<string>>(); // kind -> origin || sha256(payload)
  constructor(readonly chainId: string) {}

  check(topic: string, data: Uint8Array, sender: Uint8Array, nowMs: bigint): { kind: string; env: CborRecord } {
    const kind = kindOfTopic(this.chainId, topic);
    if (kind === null) reject("unknown-topic", topic);
    if (data.length > TOPIC_LIMITS[kind]) reject("too-large", `${data.length} > ${TOPIC_LIMITS[kind]}`);
    let m: Message;
    try {
      m = decodeMessage(data, "GossipEnvelope");
    } catch (e) {
      return reject("malformed", e instanceof Error ? e.message : String(e));
    }
    const env = m.body;
    if (env.get("topic") !== topic) reject("wrong-topic");
    const origin = env.get("origin") as Uint8Array;
    if (!bytesEq(origin, sender)) reject("origin-mismatch");
    const wall = env.get("wallclock_ms") as bigint;
    if (wall + FRESHNESS_WINDOW_MS < nowMs) reject("stale");
    if (wall > nowMs + FUTURE_SKEW_MS) reject("future");
    const zeroed = new Map(env);
    zeroed.set("signature", new Uint8Array(64));
    if (!verifyDomain("gossip", encodeMessage(m.type, zeroed), env.get("signature") as Uint8Array, origin)) reject("bad-signature");
    const key = hex(origin) + hex(sha256(env.get("payload") as Uint8Array));
    const seen = this.seen.get(kind) ?? new Set<string>();
    if (seen.has(key)) reject("replay");
    seen.add(key);
    this.seen.set(kind, seen);
    return { kind, env };
  }
}

const envelope: Handler = (input) => {
  const j = jsonInput(input);
  const v = new EnvelopeValidator(str(j.chain_id));
  const sender = unb58(str(j.sender));
  const now = int(j.now_ms);
  for (const earlier of arr(j.accepted_before)) v.check(str(j.topic), unhex(str(earlier)), sender, now);
  const data = unhex(str(j.data));
  const { kind, env } = v.check(str(j.topic), data, sender, now);
  const out: { [k: string]: Json } = {
    message_id: hex(sha256(data)),
    kind,
    origin: b58(env.get("origin") as Uint8Array),
    wallclock_ms: env.get("wallclock_ms") as bigint,
    payload: hex(env.get("payload") as Uint8Array),
  };
  return ok(out);
};

export const GOSSIP_HANDLERS: { [key: string]: Handler } = { "gossip/envelope": envelope };
