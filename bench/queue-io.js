// node bench/queue-io.js: what the embedded queue writes to disk per message, without SMTP in the
// way: this process enqueues BENCH_MESSAGES (2000) messages of 2.3 KB, BENCH_CONCURRENCY (20) at a
// time (as 20 sessions would), to a worker that "delivers" each at once, and reports its own
// /proc/self/io write_bytes per message and the CPU ms per message. The counts repeat from run to
// run, unlike rates on a shared machine. BENCH_CONCURRENCY=1 is the single-session case.
// Run `npx turbo run build` first.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, testkit } from './lib.js';

const { openEmbeddedQueue } = await import(join(root, 'packages/queue/dist/index.js'));
const { memorySource } = await import(join(root, 'packages/plugin-api/dist/host.js'));

const messages = Number(process.env.BENCH_MESSAGES ?? 2000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
const body = Buffer.from(`${'x'.repeat(76)}\r\n`.repeat(27)); // 2106 bytes
const writeBytes = () => Number(/^write_bytes: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

function message(i) {
  const head = Buffer.from(
    `From: <bench@load.test>\r\nTo: <b@example.net>\r\nSubject: bench ${i}\r\n` +
      `Message-ID: <${i}.${Date.now()}@load.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`,
  );
  return {
    envelope: { mailFrom: 'bench@load.test', recipients: [{ address: 'b@example.net' }] },
    content: memorySource([head, body]),
    receivedAt: Date.now(),
    source: { listener: 'bench', remoteAddress: '127.0.0.1', helo: 'load.test', sessionId: `s${i}` },
    messageId: `${i}.${Date.now()}@load.test`,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'tern-queue-io-'));
const queue = openEmbeddedQueue({ path: join(dir, 'queue.db') });
let delivered = 0;
await queue.startWorker(
  async (job, open) => {
    for await (const _ of await open());
    delivered++;
    return {
      recipients: job.recipients.map((r) => ({
        address: r.address,
        result: 'delivered',
        reply: { code: 250, enhanced: '2.0.0', text: 'OK queued as 1234' },
      })),
      remoteMta: 'sink[127.0.0.1]:2600',
    };
  },
  { concurrency: 50 },
);

async function run(count) {
  let next = 0;
  const base = delivered;
  const session = async () => {
    while (next < count) {
      next++;
      await queue.enqueue(message(next));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, session));
  await testkit.waitFor(() => delivered - base >= count, 120_000, 5);
}

await run(200); // warm-up: JIT, pages
const bytes0 = writeBytes();
const cpu0 = cpu();
const t0 = performance.now();
await run(messages);
// Whatever the queue still has to write for these messages (results written in batches).
await testkit.waitFor(async () => (await queue.summary()).totals.total === 0, 30_000, 5);
const ms = performance.now() - t0;
const bytes = writeBytes() - bytes0;
const size = message(0).content.size;
await queue.close();
rmSync(dir, { recursive: true, force: true });
console.log(
  `embedded queue, ${messages} messages of ${size} bytes, ${concurrency} concurrent enqueues: ` +
    `${(bytes / messages).toFixed(0)} disk bytes/msg (${(bytes / messages / size).toFixed(1)}× the message), ` +
    `${((cpu() - cpu0) / messages).toFixed(3)} CPU ms/msg, ${((messages / ms) * 1000).toFixed(0)} msg/s`,
);
