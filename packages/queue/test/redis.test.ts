// The Redis backend against a private redis-server: delivery, retries, bounces, splits, expiry,
// outages, memory exhaustion, a worker killed mid-delivery, and several workers on one queue.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { memoryLogger, PluginHost } from '@tern/plugin-api';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QueueUnavailableError } from '../src/errors.js';
import { openRedisQueue, type RedisQueue, type RedisQueueOptions, redisKeys } from '../src/redis/index.js';
import { type ChildScript, spawnScript } from './redis-fixtures/child-process.js';
import { startCountingProxy } from './redis-fixtures/counting-proxy.js';
import { BUSY, OK, recordingDeliver, testMessage, UNKNOWN } from './redis-fixtures/deliveries.js';
import { parseReport } from './report-parser.js';

let redis: TestRedis;
let admin: Redis;
const opened: RedisQueue[] = [];
const children: ChildScript[] = [];

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  admin = new Redis(redis.url);
});

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill()));
  await Promise.all(opened.splice(0).map((q) => q.close()));
});

afterAll(async () => {
  admin.disconnect();
  await redis?.stop();
});

/** A queue with its own prefix and name, so tests never see each other's jobs. */
async function queue(options: RedisQueueOptions = {}): Promise<RedisQueue> {
  const q = await openRedisQueue({
    url: redis.url,
    prefix: `t${randomBytes(4).toString('hex')}`,
    lockDurationMs: 1000,
    stalledIntervalMs: 500,
    ...options,
  });
  opened.push(q);
  return q;
}

/** A second queue object on the same Redis queue (another node). */
async function sibling(of: RedisQueue, options: RedisQueueOptions = {}): Promise<RedisQueue> {
  return queue({ prefix: of.prefix, queueName: of.queueName, ...options });
}

const fast = { retry: { intervals: ['1s'], maxAge: '1m' }, hostname: 'mx.tern.test' } as const;

async function messageKeys(q: RedisQueue): Promise<string[]> {
  return admin.keys(`${q.prefix}:msg:*`);
}

describe('RedisQueue: delivery', () => {
  it('delivers an enqueued message, then removes its body and keys', async () => {
    const q = await queue();
    const { deliver, calls } = recordingDeliver();
    const message = testMessage('alice@src.test', ['bob@x.test', 'carol@y.test', 'dave@x.test']);
    const id = await q.enqueue(message);

    expect((await q.readMessage(id))?.equals(Buffer.concat(message.chunks))).toBe(true);
    const record = await q.inspect(id);
    expect(record?.envelope).toEqual(message.envelope);
    expect(record?.jobs.map((j) => [j.domain, j.state, j.recipients.map((r) => r.address)])).toEqual([
      ['x.test', 'scheduled', ['bob@x.test', 'dave@x.test']],
      ['y.test', 'scheduled', ['carol@y.test']],
    ]);

    await q.startWorker(deliver, fast);
    await waitFor(() => calls.length === 2, 5000);
    const byDomain = Object.fromEntries(calls.map((c) => [c.job.domain, c]));
    expect(byDomain['x.test']?.job.recipients.map((r) => r.address)).toEqual(['bob@x.test', 'dave@x.test']);
    expect(byDomain['x.test']?.job.envelope.mailFrom).toBe('alice@src.test');
    expect(byDomain['y.test']?.message.equals(Buffer.concat(message.chunks))).toBe(true);

    await waitFor(async () => (await q.readMessage(id)) === null, 5000);
    expect(await q.inspect(id)).toBeNull();
    expect(await messageKeys(q)).toEqual([]);
    // Completed jobs are removed, nothing lingers in BullMQ's failed set.
    expect(await admin.keys(`${q.prefix}:${q.queueName}:${id}*`)).toEqual([]);
    expect(await admin.zcard(`${q.prefix}:${q.queueName}:failed`)).toBe(0);
  });
});
