// Runs a Redis queue worker in its own process for crash tests: it prints `delivering <job id>`
// when an attempt starts and then never finishes it, so the parent can SIGKILL it mid-delivery.
// With `enqueue` as the last argument it also enqueues one message once ready (a free slot: Tern's
// engine hands the job straight to this node) and prints `enqueued <queue id>` as soon as the
// enqueue is confirmed, so the parent can SIGKILL it right after the 250.
import { openRedisQueue } from '../../src/redis/index.js';
import { testMessage } from './deliveries.js';

const [url, prefix, queueName, lockMs, engine, mode] = process.argv.slice(2);
const queue = await openRedisQueue({
  url: url as string,
  prefix: prefix as string,
  queueName: queueName as string,
  lockDurationMs: Number(lockMs),
  stalledIntervalMs: Number(lockMs),
  engine: engine === 'tern' ? 'tern' : 'bullmq',
});
await queue.startWorker(
  async (job) => {
    console.log(`delivering ${job.id}`);
    return new Promise(() => {});
  },
  { concurrency: mode === 'enqueue' ? 4 : 1 },
);
console.log('ready');
if (mode === 'enqueue') {
  const id = await queue.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'handed'));
  console.log(`enqueued ${id}`);
}
