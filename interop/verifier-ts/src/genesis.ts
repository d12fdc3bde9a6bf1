// What a node derives from the genesis file (spec/genesis.md, spec/bank.md, spec/lstake.md).
import { type Handler, ok } from "./handler.js";
import { type Json, concat, hex, reject, sha256, u64le, unhex, utf8 } from "./util.js";
import { type Record as CborRecord, decodeMessage } from "./codec.js";
import { b58, unb58 } from "./crypto.js";
import { GENESIS_PROGRAM_ACCOUNT_HASHES, accountsHash } from "./bank.js";
import { leaderSchedule } from "./consensus.js";

const SCHEDULE_SEED_DOMAIN = concat(utf8("ambient/leader-schedule/v1"), new Uint8Array([0]));
const TWO64 = 1n << 64n;

/** spec/lstake.md step 3. */
export const scheduleSeed = (genesisHash: Uint8Array, epoch: bigint): Uint8Array => sha256(SCHEDULE_SEED_DOMAIN, genesisHash, u64le(epoch));

const derive: Handler = (input) => {
  const g = decodeMessage(input, "Genesis").body;
  const gh = sha256(input);
  const poh = g.get("poh") as CborRecord;
  const epoch = g.get("epoch") as CborRecord;
  const accounts = (g.get("accounts") as CborRecord[]).map((a) => [a.get("pubkey") as Uint8Array, a.get("lamports") as bigint] as [Uint8Array, bigint]);
  const nodes = g.get("bootstrap_nodes") as CborRecord[];
  const total = nodes.reduce((a, n) => a + (n.get("lstake") as bigint), 0n);
  if (total >= TWO64) reject("lstake-overflow", `bootstrap LStake sums to ${total}`);
  const ws = nodes.map((n) => {
    const key = n.get("identity") as Uint8Array;
    return { key, id: b58(key), weight: n.get("lstake") as bigint };
  });
  const leaders: { [k: string]: Json } = {};
  for (const e of [0n, 1n]) {
    leaders[e.toString()] = leaderSchedule(scheduleSeed(gh, e), ws, epoch.get("slots_per_epoch") as bigint, epoch.get("leader_slots") as bigint);
  }
  return ok({
    genesis_hash: hex(gh),
    genesis_address: b58(gh),
    chain_id: g.get("chain_id") as string,
    slot_duration_us: (poh.get("ticks_per_slot") as bigint) * (poh.get("target_tick_duration_us") as bigint),
    slot0_bank_hash: hex(sha256(utf8("ambient/bank-genesis/v1\0"), gh, accountsHash(accounts,
      GENESIS_PROGRAM_ACCOUNT_HASHES.map(([a, h]): [Uint8Array, Uint8Array] => [unb58(a), unhex(h)])))),
    leaders,
  });
};

export const GENESIS_HANDLERS: { [key: string]: Handler } = { "genesis/derive": derive };
