// node bench/queue-io.js: what a queue backend costs per message, without SMTP in the way: this
// process enqueues BENCH_MESSAGES (2000) messages of 2.3 KB, BENCH_CONCURRENCY (20) at a time (as
// 20 sessions would), to a worker that "delivers" each at once, and reports the disk bytes written
// per message (its own /proc/self/io write_bytes; with BENCH_BACKEND=redis, redis-server's) and
// CPU ms per message; for Redis also the commands per message (INFO commandstats of its own
// redis-server, commands inside Lua scripts included; BENCH_COMMANDS=1 lists them). The counts
// repeat from run to run, unlike rates on a shared machine. BENCH_CONCURRENCY=1 is the
// single-session case. BENCH_REDIS_ENGINE=tern|bullmq: the Redis job engine. Run `npx turbo run build` first.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandDelta, cpuMs, redisCommandStats, root, testkit, writeBytes as writeBytesOf } from './lib.js';

const { openEmbeddedQueue, openRedisQueue } = await import(join(root, 'packages/queue/dist/index.js'));
const { memorySource } = await import(join(root, 'packages/plugin-api/dist/host.js'));

const messages = Number(process.env.BENCH_MESSAGES ?? 2000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
const body = Buffer.from(`${'x'.repeat(76)}\r\n`.repeat(27)); // 2106 bytes
const backend = process.env.BENCH_BACKEND ?? 'embedded';
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
let redis;
let redisPid;
let queue;
if (backend === 'redis') {
  redis = await testkit.startRedis({
    appendonly: true,
    appendfsync: 'everysec',
    maxmemoryPolicy: 'noeviction',
  });
  queue = await openRedisQueue({
    url: redis.url,
    ...(process.env.BENCH_REDIS_ENGINE === undefined ? {} : { engine: process.env.BENCH_REDIS_ENGINE }),
  });
  const info = spawnSync('redis-cli', ['-p', String(redis.port), 'INFO', 'server'], {
    encoding: 'utf8',
  }).stdout;
  redisPid = Number(/^process_id:(\d+)/m.exec(info)?.[1]);
} else {
  queue = openEmbeddedQueue({ path: join(dir, 'queue.db') });
}
const writeBytes = () => writeBytesOf(redisPid ?? process.pid);
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
const commands0 = redis === undefined ? undefined : redisCommandStats(redis.port);
const cpu0 = cpu();
const redisCpu0 = redisPid === undefined ? 0 : cpuMs(redisPid);
const t0 = performance.now();
await run(messages);
// Whatever the queue still has to write for these messages (results written in batches).
await testkit.waitFor(async () => (await queue.summary()).totals.total === 0, 30_000, 5);
const ms = performance.now() - t0;
const bytes = writeBytes() - bytes0;
const redisCpu = redisPid === undefined ? undefined : cpuMs(redisPid) - redisCpu0;
const commands = commands0 === undefined ? undefined : commandDelta(commands0, redisCommandStats(redis.port));
const size = message(0).content.size;
await queue.close();
await redis?.stop();
rmSync(dir, { recursive: true, force: true });
if (commands !== undefined && process.env.BENCH_COMMANDS === '1') {
  for (const [name, n] of commands) console.log(`  ${(n / messages).toFixed(2).padStart(7)}  ${name}`);
}
const perMessage = commands?.reduce((sum, [, n]) => sum + n, 0) / messages;
console.log(
  `${backend} queue, ${messages} messages of ${size} bytes, ${concurrency} concurrent enqueues: ` +
    `${(bytes / messages).toFixed(0)} disk bytes/msg (${(bytes / messages / size).toFixed(1)}× the message), ` +
    `${((cpu() - cpu0) / messages).toFixed(3)} CPU ms/msg, ${((messages / ms) * 1000).toFixed(0)} msg/s` +
    (commands === undefined ? '' : `, ${perMessage.toFixed(1)} Redis commands/msg`) +
    (redisCpu === undefined ? '' : `, redis-server ${(redisCpu / messages).toFixed(3)} CPU ms/msg`),
);
