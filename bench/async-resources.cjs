// Preload for a tern process (node --require bench/async-resources.cjs): counts the async
// resources it creates, by type (PROMISE, Timeout, TickObject, Immediate, ...), and writes the
// running totals as JSON to $TERN_ASYNC_COUNTS every 100 ms. Snapshot the file before and after a
// batch of messages and divide the difference by their number: promises per message do not move
// with the machine's load, unlike rates and CPU time. The hook itself slows the process: measure
// counts with it, time without it.
const { createHook } = require('node:async_hooks');
const { writeFileSync } = require('node:fs');

const counts = Object.create(null);
createHook({
  init(_id, type) {
    counts[type] = (counts[type] ?? 0) + 1;
  },
}).enable();
const out = process.env.TERN_ASYNC_COUNTS;
if (out) setInterval(() => writeFileSync(out, JSON.stringify(counts)), 100).unref();
