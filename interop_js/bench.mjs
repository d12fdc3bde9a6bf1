// Reference workload for `ambient-p2p bench gossip`: the same messages between two
// js-libp2p gossipsub processes (TCP + Noise + Yamux, StrictSign, sha256 message ids).
//
//   node --import ./polyfill.mjs bench.mjs recv <count> <seconds> [alike]      prints {"addr": ...}, then the result
//   node --import ./polyfill.mjs bench.mjs send <addr> <count> <size> [<for-seconds> [alike]]
//
// The sender publishes <count> messages, or for <for-seconds> when given (> 0), whichever
// comes first. With `alike` both sides do what an Ambient node does per message (spec/network.md
// 2.2-2.3; `ambient-p2p bench gossip --sustained`): the sender wraps each payload in a
// GossipEnvelope signed with ed25519 over the `gossip` domain (canonical CBOR, as peer.mjs), and
// the receiver's topic validator decodes it and checks topic, origin = libp2p `from` key,
// freshness, the ed25519 signature and the (origin, sha256(payload)) replay memory before the
// message is delivered or forwarded. Without it the payload is raw bytes and nothing is checked.
import { createHash } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub, TopicValidatorResult } from '@libp2p/gossipsub'
import { generateKeyPair, publicKeyFromRaw } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'

const topic = '/ambient/bench/txs/1'
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const sleep = (ms) => new Promise(r => setTimeout(r, ms))
const mode = process.argv[2]
const alike = process.argv.includes('alike')

// --- canonical CBOR (RFC 8949 4.2.1) for the GossipEnvelope (as peer.mjs) ---
function head (major, n) {
  const mt = major << 5
  if (n < 24) return Buffer.from([mt | n])
  if (n < 0x100) return Buffer.from([mt | 24, n])
  if (n < 0x10000) { const b = Buffer.alloc(3); b[0] = mt | 25; b.writeUInt16BE(n, 1); return b }
  if (n < 0x100000000) { const b = Buffer.alloc(5); b[0] = mt | 26; b.writeUInt32BE(n, 1); return b }
  const b = Buffer.alloc(9); b[0] = mt | 27; b.writeBigUInt64BE(BigInt(n), 1); return b
}
const cUint = (n) => head(0, n)
const cBytes = (b) => Buffer.concat([head(2, b.length), Buffer.from(b)])
const cText = (s) => { const b = Buffer.from(s, 'utf8'); return Buffer.concat([head(3, b.length), b]) }
function cMap (entries) {
  const enc = entries.map(([k, v]) => [cText(k), v]).sort((a, b) => Buffer.compare(a[0], b[0]))
  return Buffer.concat([head(5, enc.length), ...enc.flatMap(([k, v]) => [k, v])])
}
function envelope (origin, wallclock, payload, signature) {
  const body = cMap([['topic', cText(topic)], ['origin', cBytes(origin)], ['wallclock_ms', cUint(wallclock)],
    ['payload', cBytes(payload)], ['signature', cBytes(signature)]])
  return Buffer.concat([head(4, 3), cUint(0x0200), cUint(1), body])
}
const DOMAIN = Buffer.from('ambient/gossip/v1\x00', 'latin1')
// minimal strict decoder of exactly the shape above: [0x0200, 1, {5 text keys}] -> fields
function readHead (b, i) {
  const ib = b[i]; const major = ib >> 5; const ai = ib & 31
  if (ai < 24) return [major, ai, i + 1]
  if (ai === 24) return [major, b[i + 1], i + 2]
  if (ai === 25) return [major, b.readUInt16BE(i + 1), i + 3]
  if (ai === 26) return [major, b.readUInt32BE(i + 1), i + 5]
  if (ai === 27) return [major, Number(b.readBigUInt64BE(i + 1)), i + 9]
  throw new Error('bad head')
}
function decodeEnvelope (b) {
  let [m, n, i] = readHead(b, 0); if (m !== 4 || n !== 3) throw new Error('not an array of 3')
  ;[m, n, i] = readHead(b, i); if (m !== 0 || n !== 0x0200) throw new Error('type id')
  ;[m, n, i] = readHead(b, i); if (m !== 0 || n !== 1) throw new Error('version')
  ;[m, n, i] = readHead(b, i); if (m !== 5 || n !== 5) throw new Error('not a map of 5')
  const f = {}
  for (let k = 0; k < 5; k++) {
    ;[m, n, i] = readHead(b, i); if (m !== 3) throw new Error('key'); const key = b.toString('utf8', i, i + n); i += n
    const [vm, vn, vi] = readHead(b, i)
    if (key === 'signature') f.signatureAt = vi
    if (vm === 0) { f[key] = vn; i = vi } else if (vm === 2 || vm === 3) { f[key] = b.subarray(vi, vi + vn); i = vi + vn } else throw new Error('value')
  }
  if (i !== b.length) throw new Error('trailing bytes')
  return f
}
const seenPayloads = new Set()
function validateEnvelope (from, data) { // synchronous: node's ed25519 verify is
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  let f
  try { f = decodeEnvelope(b) } catch { return TopicValidatorResult.Reject }
  if (f.topic.toString('utf8') !== topic) return TopicValidatorResult.Reject
  const origin = from?.publicKey?.raw
  if (origin == null || Buffer.compare(Buffer.from(origin), f.origin) !== 0) return TopicValidatorResult.Reject
  const now = Date.now()
  if (f.wallclock_ms + 30000 < now || f.wallclock_ms > now + 2000) return TopicValidatorResult.Ignore
  if (f.signature.length !== 64) return TopicValidatorResult.Reject
  // the signed bytes: the domain and the received encoding with the signature zeroed (as
  // ours does: spliced, not re-encoded; the decoder above accepts only the canonical layout)
  const signed = Buffer.allocUnsafe(DOMAIN.length + b.length)
  DOMAIN.copy(signed, 0)
  b.copy(signed, DOMAIN.length)
  signed.fill(0, DOMAIN.length + f.signatureAt, DOMAIN.length + f.signatureAt + 64)
  if (!(publicKeyFromRaw(f.origin).verify(signed, f.signature))) return TopicValidatorResult.Reject
  const rkey = createHash('sha256').update(f.origin).update(f.payload).digest('hex')
  if (seenPayloads.has(rkey)) return TopicValidatorResult.Ignore
  seenPayloads.add(rkey)
  return TopicValidatorResult.Accept
}

const key = await generateKeyPair('Ed25519')
const node = await createLibp2p({
  privateKey: key,
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    pubsub: gossipsub({
      globalSignaturePolicy: 'StrictSign',
      msgIdFn: (msg) => createHash('sha256').update(msg.data).digest(),
      allowPublishToZeroTopicPeers: false
    })
  }
})
const pubsub = node.services.pubsub
pubsub.subscribe(topic)
if (alike) pubsub.topicValidators.set(topic, (peer, msg) => validateEnvelope(msg.from, msg.data))
if (mode === 'recv') {
  const count = Number(process.argv[3]); const seconds = Number(process.argv[4])
  const lat = []; let first = 0; let last = 0
  pubsub.addEventListener('message', (ev) => {
    const now = Date.now()
    if (!first) first = now
    last = now
    const d = Buffer.from(ev.detail.data)
    lat.push(now - (alike ? decodeEnvelope(d).wallclock_ms : Number(d.readBigUInt64BE(0))))
  })
  out({ addr: node.getMultiaddrs()[0].toString() })
  const deadline = Date.now() + seconds * 1000
  // until all arrived, the deadline, or nothing new for 3 s after the first message
  while (lat.length < count && Date.now() < deadline && !(last && Date.now() - last > 3000)) await sleep(20)
  lat.sort((a, b) => a - b)
  const pct = (q) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : null
  out({ got: lat.length, first_ms: first, last_ms: last, p50_ms: pct(0.5), p99_ms: pct(0.99) })
} else {
  const [addr, count, size] = [process.argv[3], Number(process.argv[4]), Number(process.argv[5])]
  const forMs = Number(process.argv[6] ?? 0) * 1000
  const origin = key.publicKey.raw
  await node.dial(multiaddr(addr))
  const deadline = Date.now() + 20000
  while (pubsub.getSubscribers(topic).length === 0 && Date.now() < deadline) await sleep(50)
  await sleep(2500)
  const t0 = Date.now()
  let i = 0
  for (; i < count && !(forMs > 0 && Date.now() - t0 >= forMs); i++) {
    const b = Buffer.alloc(size)
    b.writeBigUInt64BE(BigInt(Date.now()), 0)
    b.writeUInt32BE(i, 8)
    if (alike) { // the payload in a signed GossipEnvelope, as an Ambient node publishes it
      // encoded once with a zero signature, signed with the domain in front, the signature
      // written into place (as ours does); it sits just before the wallclock_ms entry
      const now = Date.now()
      const buf = Buffer.concat([DOMAIN, envelope(origin, now, b, Buffer.alloc(64))])
      const sig = await key.sign(buf)
      buf.set(sig, buf.length - 13 - cUint(now).length - 64)
      await pubsub.publish(topic, buf.subarray(DOMAIN.length))
    } else {
      await pubsub.publish(topic, b)
    }
    if (i % 64 === 63) await sleep(0)
  }
  out({ published: i, publish_ms: Date.now() - t0 })
  await sleep(1000)
}
await node.stop()
process.exit(0)
