const { ReedSolomonErasure } = require('@digitaldefiance/reed-solomon-erasure.wasm');
const rs = ReedSolomonErasure.fromCurrentDirectorySync();
const out = [];
for (const [d, p, size] of [[2, 2, 3], [5, 3, 16], [32, 32, 16], [1, 1, 4], [17, 32, 8]]) {
  const shards = new Uint8Array(size * (d + p));
  for (let i = 0; i < d; i++) for (let j = 0; j < size; j++) shards[i * size + j] = (i * 31 + j * 7 + 3) % 256;
  const r = rs.encode(shards, d, p);
  if (r !== 0) throw new Error('encode ' + r);
  const parity = [];
  for (let i = d; i < d + p; i++) parity.push(Buffer.from(shards.slice(i * size, (i + 1) * size)).toString('hex'));
  out.push({ num_data: d, num_parity: p, shard_size: size, parity });
}
console.log(JSON.stringify(out, null, 1));
