// Redis memory stays bounded: after delivery nothing of a message is left but keys that expire
// (its timeline, its Message-ID entry), besides a fixed set of per-queue keys. Prints the bytes
// per queued and per finished message quoted in the README (2 KiB messages, one recipient).
import { randomBytes } from 'node:crypto';
import { memorySource } from '@tern/plugin-api/host';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { IncomingMessage } from '../src/contract.js';
import { openRedisQueue } from '../src/redis/index.js';
import { recordingDeliver } from './redis-fixtures/deliveries.js';

let redis: TestRedis;
let admin: Redis;
beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  admin = new Redis(redis.url);
});
afterAll(async () => {
  admin?.disconnect();
  await redis?.stop();
});

const COUNT = 500;
const BODY = 2048;

function message(i: number): IncomingMessage {
  const headers = `From: <app@src.test>\r\nTo: <r${i}@x.test>\r\nSubject: memory ${i}\r\nMessage-ID: <m${i}.${randomBytes(6).toString('hex')}@src.test>\r\n\r\n`;
  const body = 'x'.repeat(BODY - headers.length - 2);
  return {
    envelope: { mailFrom: 'app@src.test', recipients: [{ address: `r${i}@x.test` }] },
    content: memorySource([Buffer.from(`${headers}${body}\r\n`)]),
    receivedAt: Date.now(),
    messageId: `<m${i}@src.test>`,
  };
}

async function usedMemory(): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
}

/** The job engines of the Redis backend; the first is the default. */
const ENGINES = ['tern', 'bullmq'] as const;

it.each(
  ENGINES,
)('%s engine: a queued and a finished message cost a bounded number of bytes, and what is left expires', async (engine) => {
  const q = await openRedisQueue({ url: redis.url, prefix: `m${randomBytes(3).toString('hex')}`, engine });
  // One message first: the queue's own keys (BullMQ meta, id counter, scripts) are not per message.
  await q.enqueue(message(-1));
  const { deliver, calls } = recordingDeliver();
  await q.startWorker(deliver, { hostname: 'mx.tern.test', retry: { intervals: ['1s'], maxAge: '1m' } });
  await waitFor(() => calls.length === 1, 10_000);
  await q.close();
  const empty = await usedMemory();

  const intake = await openRedisQueue({ url: redis.url, prefix: q.prefix, engine });
  for (let i = 0; i < COUNT; i++) await intake.enqueue(message(i));
  const queued = await usedMemory();
  const worker = recordingDeliver();
  await intake.startWorker(worker.deliver, {
    hostname: 'mx.tern.test',
    retry: { intervals: ['1s'], maxAge: '1m' },
  });
  await waitFor(async () => (await intake.summary()).totals.total === 0, 60_000);
  const finished = await usedMemory();
  await intake.close();

  const perQueued = (queued - empty) / COUNT;
  const perFinished = (finished - empty) / COUNT;
  process.stderr.write(
    `redis memory (${engine} engine): ${perQueued.toFixed(0)} bytes per queued message, ${perFinished.toFixed(0)} bytes per finished message (${BODY} B bodies)\n`,
  );
  // A body is 2 KiB; the rest (envelope, job, indexes, timeline) must stay within a few KiB.
  expect(perQueued).toBeLessThan(BODY + 6000);
  expect(perFinished).toBeLessThan(2500);

  // What is left of finished messages has a TTL; only per-queue keys (a fixed number) do not.
  const keys: string[] = [];
  for (let cursor = '0'; ; ) {
    const [next, batch] = await admin.scan(cursor, 'MATCH', `${q.prefix}:*`, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
    if (cursor === '0') break;
  }
  const lasting: string[] = [];
  for (const key of keys) if ((await admin.pttl(key)) < 0) lasting.push(key);
  expect(keys.length).toBeGreaterThanOrEqual(COUNT);
  expect(
    lasting.filter((k) => k.includes(':msg:') || k.includes(':timeline:') || k.includes(':mid:')),
  ).toEqual([]);
  expect(lasting.length).toBeLessThan(10);
}, 120_000);
