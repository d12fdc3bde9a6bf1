// @solana/web3.js v1 against an Ambient node (tests/test_rpc_web3js.py): airdrop confirmed over
// the PubSub WebSocket (Connection.confirmTransaction), a transfer with sendAndConfirmTransaction,
// balances read back. Prints one JSON line; exits 1 on any failure.
import {
  Connection, Keypair, LAMPORTS_PER_SOL, SystemProgram, Transaction, sendAndConfirmTransaction,
} from "@solana/web3.js";

const [rpcUrl] = process.argv.slice(2);
const conn = new Connection(rpcUrl, "confirmed"); // PubSub: the next port, web3.js's default
const out = {};
try {
  out.version = await conn.getVersion();
  const a = Keypair.generate();
  const b = Keypair.generate();
  const sig = await conn.requestAirdrop(a.publicKey, 2 * LAMPORTS_PER_SOL);
  const latest = await conn.getLatestBlockhash();
  const conf = await conn.confirmTransaction({ signature: sig, ...latest }, "confirmed");
  out.airdropErr = conf.value.err;
  out.balanceA = await conn.getBalance(a.publicKey);
  const tx = new Transaction().add(SystemProgram.transfer({ fromPubkey: a.publicKey, toPubkey: b.publicKey,
                                                            lamports: 1_004_321 }));  // above the rent-exempt minimum of a new account (890,880)
  out.transfer = await sendAndConfirmTransaction(conn, tx, [a], { commitment: "confirmed" });
  out.balanceB = await conn.getBalance(b.publicKey);
  out.balanceA2 = await conn.getBalance(a.publicKey);
  const got = await conn.getTransaction(out.transfer, { commitment: "confirmed", maxSupportedTransactionVersion: 0 });
  out.fee = got.meta.fee;
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ ...out, error: String(e && e.stack || e) }));
  process.exit(1);
}
