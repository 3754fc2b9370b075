// Enqueue throughput of the embedded store for the README: 2 KiB messages, one client at a time
// (one fsync per message) and many at once (group commit shares the fsync); then how fast a
// worker with an instant delivery drains them (one transaction per finished job).
// Run: node --conditions=tern-source --import jiti/register test/embedded-fixtures/bench-enqueue.ts [dir]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEmbeddedQueue } from '../../src/embedded/index.js';
import { testMessage } from './messages.js';

const dir = mkdtempSync(join(process.argv[2] ?? tmpdir(), 'tern-bench-'));
const queue = openEmbeddedQueue({ path: join(dir, 'queue.db') });
const message = testMessage({ bodySize: 2048 });

async function run(label: string, total: number, parallel: number): Promise<void> {
  const started = performance.now();
  for (let done = 0; done < total; done += parallel) {
    await Promise.all(Array.from({ length: Math.min(parallel, total - done) }, () => queue.enqueue(message)));
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `${label}: ${total} messages in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} enqueues/s`,
  );
}

try {
  await run('warm-up', 200, 1);
  await run('1 at a time (1 fsync each)', 2000, 1);
  await run('10 at a time', 5000, 10);
  await run('50 at a time', 10000, 50);
  const waiting = (await queue.summary()).totals.total;
  const started = performance.now();
  let left = waiting;
  await new Promise<void>((resolve) => {
    void queue.startWorker(
      async (job) => {
        if (--left === 0) setImmediate(resolve);
        return {
          recipients: job.recipients.map((r) => ({
            address: r.address,
            result: 'delivered',
            reply: { code: 250, enhanced: '2.0.0', text: 'OK' },
          })),
        };
      },
      { concurrency: 20 },
    );
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `worker, instant delivery: ${waiting} jobs in ${seconds.toFixed(2)} s = ${Math.round(waiting / seconds)} jobs/s`,
  );
} finally {
  await queue.close();
  rmSync(dir, { recursive: true, force: true });
}
