// A Node service sending events to the Rhythm collector with Segment's official library
// (docs/collector.md runs this very file: tests/integration/test_collector.py).
//   node send.mjs http://127.0.0.1:8088 <write key> <user prefix> <events>
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, prefix, count] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushAt: 20, maxRetries: 3 })
const failures = []
analytics.on('error', (err) => failures.push(String(err?.reason ?? err?.message ?? err)))

for (let i = 0; i < Number(count); i++) {
  analytics.track({
    userId: `${prefix}-${i % 5}`,
    event: 'Order Completed',
    properties: { order: `o-${i}`, total: 10 + i, currency: 'EUR' },
    context: { groupId: 'acct-7' },
  })
}
analytics.identify({
  userId: `${prefix}-0`,
  traits: { firstName: 'Ann', lastName: 'Example', email: 'ann@example.com' },
})
await analytics.closeAndFlush({ timeout: 30000 })
console.log(JSON.stringify({ sent: Number(count) + 1, failures }))
process.exit(failures.length ? 1 : 0)
