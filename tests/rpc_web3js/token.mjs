// @solana/web3.js v1 reading SPL Token state an Ambient node holds (tests/test_rpc_token_multiproc.py):
// getTokenAccountBalance, getTokenSupply, getTokenLargestAccounts, getParsedTokenAccountsByOwner
// (mint and programId filters), getTokenAccountsByOwner (base64), getParsedAccountInfo, and
// simulateTransaction of a failing transfer the caller built. web3.js checks each answer's
// shape with its own schemas (superstruct), so a field of the wrong type fails here.
// Usage: node token.mjs URL OWNER MINT FAILING_TX_BASE64. Prints one JSON line; exits 1 on failure.
import { Connection, PublicKey, VersionedTransaction } from "@solana/web3.js";

const [rpcUrl, owner, mint, failing] = process.argv.slice(2);
const TOKEN = new PublicKey("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
const conn = new Connection(rpcUrl, "confirmed");
const out = {};
try {
  const ownerKey = new PublicKey(owner);
  const mintKey = new PublicKey(mint);
  const byMint = await conn.getParsedTokenAccountsByOwner(ownerKey, { mint: mintKey });
  out.byMint = byMint.value.map((a) => ({ pubkey: a.pubkey.toBase58(), program: a.account.data.program,
                                          info: a.account.data.parsed.info }));
  const byProgram = await conn.getParsedTokenAccountsByOwner(ownerKey, { programId: TOKEN });
  out.byProgram = byProgram.value.map((a) => a.pubkey.toBase58());
  const raw = await conn.getTokenAccountsByOwner(ownerKey, { programId: TOKEN });
  out.rawLengths = raw.value.map((a) => a.account.data.length);
  const ata = byMint.value[0].pubkey;
  out.balance = (await conn.getTokenAccountBalance(ata)).value;
  out.supply = (await conn.getTokenSupply(mintKey)).value;
  out.largest = (await conn.getTokenLargestAccounts(mintKey)).value.map((a) => ({ address: a.address.toBase58(),
                                                                                  amount: a.amount }));
  out.mint = (await conn.getParsedAccountInfo(mintKey)).value.data;
  const tx = VersionedTransaction.deserialize(Buffer.from(failing, "base64"));
  const sim = await conn.simulateTransaction(tx, { replaceRecentBlockhash: true, commitment: "confirmed" });
  out.simErr = sim.value.err;
  out.simLogs = sim.value.logs;
  out.simUnits = sim.value.unitsConsumed;
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ ...out, error: String(e && e.stack || e) }));
  process.exit(1);
}
