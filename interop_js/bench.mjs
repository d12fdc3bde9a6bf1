// Reference workload for `ambient-p2p bench gossip`: the same messages between two
// js-libp2p gossipsub processes (TCP + Noise + Yamux, StrictSign, sha256 message ids).
//
//   node --import ./polyfill.mjs bench.mjs recv <count> <seconds>        prints {"addr": ...}, then the result
//   node --import ./polyfill.mjs bench.mjs send <addr> <count> <size>    publishes <count> messages
import { createHash } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'

const topic = '/ambient/bench/txs/1'
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const sleep = (ms) => new Promise(r => setTimeout(r, ms))
const node = await createLibp2p({
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
const mode = process.argv[2]
if (mode === 'recv') {
  const count = Number(process.argv[3]); const seconds = Number(process.argv[4])
  const lat = []; let first = 0; let last = 0
  pubsub.addEventListener('message', (ev) => {
    const now = Date.now()
    if (!first) first = now
    last = now
    lat.push(now - Number(Buffer.from(ev.detail.data).readBigUInt64BE(0)))
  })
  out({ addr: node.getMultiaddrs()[0].toString() })
  const deadline = Date.now() + seconds * 1000
  while (lat.length < count && Date.now() < deadline) await sleep(20)
  lat.sort((a, b) => a - b)
  const pct = (q) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : null
  out({ got: lat.length, first_ms: first, last_ms: last, p50_ms: pct(0.5), p99_ms: pct(0.99) })
} else {
  const [addr, count, size] = [process.argv[3], Number(process.argv[4]), Number(process.argv[5])]
  await node.dial(multiaddr(addr))
  const deadline = Date.now() + 20000
  while (pubsub.getSubscribers(topic).length === 0 && Date.now() < deadline) await sleep(50)
  await sleep(2500)
  const t0 = Date.now()
  for (let i = 0; i < count; i++) {
    const b = Buffer.alloc(size)
    b.writeBigUInt64BE(BigInt(Date.now()), 0)
    b.writeUInt32BE(i, 8)
    await pubsub.publish(topic, b)
    if (i % 64 === 63) await sleep(0)
  }
  out({ published: count, publish_ms: Date.now() - t0 })
  await sleep(1000)
}
await node.stop()
process.exit(0)
