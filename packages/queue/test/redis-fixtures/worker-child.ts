// Runs a Redis queue worker in its own process for crash tests: it prints `delivering <job id>`
// when an attempt starts and then never finishes it, so the parent can SIGKILL it mid-delivery.
import { openRedisQueue } from '../../src/redis/index.js';

const [url, prefix, queueName, lockMs, engine] = process.argv.slice(2);
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
  { concurrency: 1 },
);
console.log('ready');
