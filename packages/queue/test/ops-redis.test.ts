// Operator operations and timelines on the Redis backend (the shared suite), plus what only Redis
// has: keys that expire, indexes that empty out, and any node answering for any message.
import { randomBytes } from 'node:crypto';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { opsKeys } from '../src/redis/ops-keys.js';
import { openRedisQueue, type RedisQueue, type RedisQueueOptions } from '../src/redis/redis-queue.js';
import { describeQueueOperations } from './ops-suite.js';
import { BUSY, OK, recordingDeliver, testMessage } from './redis-fixtures/deliveries.js';

/** Every test below runs on both job engines. */
const ENGINES = ['bullmq', 'tern'] as const;
let engine: (typeof ENGINES)[number] = 'bullmq';

let redis: TestRedis;
let admin: Redis;
const opened: RedisQueue[] = [];

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  admin = new Redis(redis.url);
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((q) => q.close()));
});

afterAll(async () => {
  admin?.disconnect();
  await redis?.stop();
});

async function queue(options: RedisQueueOptions = {}): Promise<RedisQueue> {
  const q = await openRedisQueue({
    url: redis.url,
    prefix: `o${randomBytes(4).toString('hex')}`,
    engine,
    ...options,
  });
  opened.push(q);
  return q;
}

describe.each(ENGINES)('%s engine', (name) => {
  beforeAll(() => {
    engine = name;
  });

  describeQueueOperations('redis', () => queue());

  describe('RedisQueue operations: Redis specifics', () => {
    it('empties every index when mail is finished, and keeps only the timeline, with a TTL', async () => {
      const q = await queue({ timelineRetentionMs: 120_000 });
      const { deliver, calls } = recordingDeliver((address, attempt) =>
        address.startsWith('slow') && attempt === 0 ? BUSY : OK,
      );
      await q.startWorker(deliver, { retry: { intervals: ['1s'], maxAge: '1m' } });
      const kept = await q.enqueue(testMessage('alice@src.test', ['slow@x.test', 'b@y.test'], 'Kept'));
      const gone = await q.enqueue(testMessage('alice@src.test', ['c@x.test'], 'Gone'));
      await q.hold(gone);
      await q.remove(gone);
      await waitFor(() => calls.length >= 3, 8000);
      await waitFor(async () => (await q.details(kept))?.state === 'finished', 8000);

      // The worker leaves an emptied domain in the domains set (one command less per job); the
      // summary forgets it, and lists nothing for it.
      expect((await q.summary()).destinations).toEqual([]);
      const k = opsKeys(q.prefix);
      const left = (await admin.keys(`${q.prefix}:ops:*`)).sort();
      // Tern's engine writes a finished timeline whole, as a string, and keeps Message-IDs in one
      // index that a sweep empties once the timelines are gone (the next test).
      const timelines =
        q.engine === 'tern'
          ? [k.timelineDone(kept), k.timelineDone(gone)]
          : [k.timeline(kept), k.timeline(gone), k.messageId('Kept@src.test'), k.messageId('Gone@src.test')];
      const lasting = q.engine === 'tern' ? [k.mids, k.midSweep] : [];
      expect(left).toEqual([...timelines, ...lasting].sort());
      for (const key of timelines) {
        const ttl = await admin.ttl(key);
        expect(ttl).toBeGreaterThan(100);
        expect(ttl).toBeLessThanOrEqual(120);
      }
      expect(await admin.keys(`${q.prefix}:msg:*`)).toEqual([]);
    });

    it('forgets a Message-ID once its message is finished and its timeline expired', async () => {
      const q = await queue({ timelineRetentionMs: 1000 });
      const { deliver, calls } = recordingDeliver();
      await q.startWorker(deliver);
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Short'));
      expect(await q.findByMessageId('<Short@src.test>')).toEqual([id]);
      await waitFor(() => calls.length === 1, 8000);
      await waitFor(async () => (await q.details(id))?.state === 'finished', 8000);
      expect(await q.findByMessageId('Short@src.test')).toEqual([id]);
      const k = opsKeys(q.prefix);
      // The timeline expires after the retention; then the Message-ID entry (or set) goes too.
      await waitFor(async () => (await q.details(id)) === null, 8000);
      expect(await q.findByMessageId('Short@src.test')).toEqual([]);
      await waitFor(
        async () =>
          (await admin.exists(k.messageId('Short@src.test'))) === 0 && (await admin.zcard(k.mids)) === 0,
        15_000,
      );
    });

    it('a hold that comes while the last attempt runs leaves nothing held once the message is delivered', async () => {
      const q = await queue();
      const { deliver: record, calls } = recordingDeliver();
      let started!: () => void;
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      let finish!: () => void;
      const gate = new Promise<void>((resolve) => {
        finish = resolve;
      });
      await q.startWorker(async (job, open) => {
        started();
        await gate;
        return record(job, open);
      });
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'HeldLate'));
      await running;
      expect(await q.hold(id)).toBe(1);
      const k = opsKeys(q.prefix);
      expect(await admin.smembers(k.held)).toEqual([`${id}@x.test`]);
      finish();
      await waitFor(async () => (await q.details(id))?.state === 'finished', 8000);
      expect(calls).toHaveLength(1);
      // The worker does not look at the held set; the summary counts only queued jobs and forgets the rest.
      expect((await q.summary()).totals).toMatchObject({ total: 0, held: 0 });
      expect(await admin.exists(k.held)).toBe(0);
    });

    it('answers for any message from any node sharing the queue', async () => {
      const a = await queue();
      const b = await queue({ prefix: a.prefix, queueName: a.queueName });
      const id = await a.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Shared'));
      expect((await b.details(id))?.envelope?.mailFrom).toBe('alice@src.test');
      expect(await b.findByMessageId('<Shared@src.test>')).toEqual([id]);
      expect(await b.hold(id)).toBe(1);
      expect((await a.details(id))?.held).toBe(true);
      expect((await a.summary()).totals).toMatchObject({ total: 1, held: 1 });
      expect(await b.ping()).toBeGreaterThanOrEqual(0);
    });

    it('refuses a queue name that would collide with the operator keys', async () => {
      await expect(queue({ queueName: 'ops' })).rejects.toThrow(/'ops'/);
    });
  });
});
