// A js-libp2p gossipsub peer that joins an Ambient network (used by
// tests/test_net_interop_js.py). It dials one of our nodes over TCP + Noise + Yamux,
// subscribes to /ambient/<chain>/txs/1, prints every message it receives as a JSON line,
// and publishes GossipEnvelopes built and signed exactly as spec/network.md says, plus one
// with a broken Ambient signature that our validators must reject.
//
// usage: node --import ./polyfill.mjs peer.mjs <multiaddr> <chain-id> <n-valid> <seconds>
import { createHash } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'

const [addr, chain, nValid, seconds] = process.argv.slice(2)
const topic = `/ambient/${chain}/txs/1`
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

// --- canonical CBOR (RFC 8949 4.2.1) for the few shapes we need ---
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
function cMap (entries) { // entries: [[key, encodedValue]]; keys sorted bytewise on their encoding
  const enc = entries.map(([k, v]) => [cText(k), v]).sort((a, b) => Buffer.compare(a[0], b[0]))
  return Buffer.concat([head(5, enc.length), ...enc.flatMap(([k, v]) => [k, v])])
}
function envelope (origin, wallclock, payload, signature) {
  const body = cMap([['topic', cText(topic)], ['origin', cBytes(origin)], ['wallclock_ms', cUint(wallclock)],
    ['payload', cBytes(payload)], ['signature', cBytes(signature)]])
  return Buffer.concat([head(4, 3), cUint(0x0200), cUint(1), body])
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
      allowPublishToZeroTopicPeers: true,
      emitSelf: false
    })
  }
})
const pubsub = node.services.pubsub
pubsub.addEventListener('message', (ev) => {
  const m = ev.detail
  out({ event: 'recv', topic: m.topic, len: m.data.length, data: Buffer.from(m.data).toString('hex') })
})
pubsub.subscribe(topic)
out({ event: 'started', peer_id: node.peerId.toString() })
await node.dial(multiaddr(addr))
out({ event: 'connected' })
const deadline = Date.now() + Number(seconds) * 1000
while (pubsub.getSubscribers(topic).length === 0 && Date.now() < deadline) await new Promise(r => setTimeout(r, 100))
await new Promise(r => setTimeout(r, 2500)) // a few heartbeats for the mesh
const origin = key.publicKey.raw
const domain = Buffer.from('ambient/gossip/v1\x00', 'latin1')
for (let i = 0; i < Number(nValid); i++) {
  const payload = Buffer.from(`from-js-${i}`)
  const now = Date.now()
  const unsigned = envelope(origin, now, payload, Buffer.alloc(64))
  const sig = await key.sign(Buffer.concat([domain, unsigned]))
  await pubsub.publish(topic, envelope(origin, now, payload, Buffer.from(sig)))
  out({ event: 'published', i })
}
{ // a broken Ambient signature: must be rejected by our validator
  const now = Date.now()
  const bad = envelope(origin, now, Buffer.from('from-js-bad'), Buffer.alloc(64, 7))
  await pubsub.publish(topic, bad)
  out({ event: 'published-bad' })
}
while (Date.now() < deadline) await new Promise(r => setTimeout(r, 100))
out({ event: 'done' })
await node.stop()
process.exit(0)
