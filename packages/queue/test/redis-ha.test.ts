// The Redis backend on a Sentinel-managed primary and on a Redis Cluster: mail accepted before a
// failover is delivered after it, a 250 can wait for a replica (451 when none confirms), and on a
// Cluster every key of the queue shares one hash slot.
import { randomBytes } from 'node:crypto';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import {
  startRedis,
  startRedisCluster,
  startRedisSentinel,
  type TestRedisCluster,
  type TestRedisSentinel,
  waitFor,
} from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QueueUnavailableError } from '../src/errors.js';
import { openRedisQueue, type RedisQueue, type RedisQueueOptions, redisKeys } from '../src/redis/index.js';
import { recordingDeliver, testMessage } from './redis-fixtures/deliveries.js';

const opened: RedisQueue[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((q) => q.close()));
});

async function open(options: RedisQueueOptions): Promise<RedisQueue> {
  const q = await openRedisQueue({
    prefix: `ha${randomBytes(4).toString('hex')}`,
    lockDurationMs: 2000,
    stalledIntervalMs: 1000,
    ...options,
  });
  opened.push(q);
  return q;
}

/** The job engines of the Redis backend; the first is the default. */
const ENGINES = ['tern', 'bullmq'] as const;

const fast = { retry: { intervals: ['1s'], maxAge: '1m' }, hostname: 'mx.tern.test' } as const;

describe.each(ENGINES)('RedisQueue on Sentinel (%s engine)', (engine) => {
  let set: TestRedisSentinel;
  beforeAll(async () => {
    set = await startRedisSentinel();
  }, 60_000);
  afterAll(async () => set?.stop());

  it('answers 451 while no replica confirms in time (replica paused), and accepts once it does', async () => {
    const q = await open({
      connection: { sentinels: set.sentinels, name: set.name },
      replicaAck: { replicas: 1, timeoutMs: 500 },
      engine,
    });
    expect(await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'acked'))).toMatch(/\w/);
    const replica = await set.replica();
    replica.pause();
    try {
      const refused = q.enqueue(testMessage('a@src.test', ['b@x.test'], 'unacked'));
      await expect(refused).rejects.toThrow(QueueUnavailableError);
      await expect(refused).rejects.toThrow(/0 of 1 Redis replica\(s\) confirmed/);
      // Withdrawn: the refused message left no keys, so the client's retry is the only copy.
      const summary = await q.summary();
      expect(summary.totals.total).toBe(1);
      // The primary itself is fine: the health monitor was not told otherwise.
      expect(q.health().writable).toBe(true);
    } finally {
      replica.resume();
    }
    expect(await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'again'))).toMatch(/\w/);
  }, 60_000);

  it('delivers, after kill -9 of the primary and a Sentinel failover, mail accepted before it', async () => {
    const q = await open({
      connection: { sentinels: set.sentinels, name: set.name },
      replicaAck: { replicas: 1, timeoutMs: 2000 },
      engine,
    });
    const before: string[] = [];
    for (let i = 0; i < 20; i++)
      before.push(await q.enqueue(testMessage('a@src.test', [`r${i}@x.test`], `pre${i}`)));

    const { ms, from } = await set.failover();
    // Without a replica the promoted primary cannot confirm anything: 451, never a bare 250.
    await expect(q.enqueue(testMessage('a@src.test', ['b@x.test'], 'alone'))).rejects.toThrow(
      QueueUnavailableError,
    );
    // The old primary comes back; the Sentinels make it a replica of the new one, and the queue,
    // which found the new primary by itself, takes acknowledged writes again.
    await from.restart();
    let lastError: unknown;
    await waitFor(async () => {
      try {
        before.push(await q.enqueue(testMessage('a@src.test', ['late@x.test'], 'post')));
        return true;
      } catch (error) {
        lastError = error;
        return false;
      }
    }, 30_000).catch((error) => {
      throw new Error(`${(error as Error).message}; last enqueue error: ${String(lastError)}`);
    });

    const { deliver, calls } = recordingDeliver();
    await q.startWorker(deliver, fast);
    // Every accepted message delivered first, then exactly those: a withdrawn (451) message
    // delivered too shows as an extra id in the comparison, not as a wait that runs out.
    const delivered = () => new Set(calls.map((c) => c.job.queueId));
    await waitFor(() => before.every((id) => delivered().has(id)), 30_000).catch(async (error: Error) => {
      const missing = before.filter((id) => !delivered().has(id));
      throw new Error(`${error.message}; not delivered: ${missing.join(' ')}; ${await set.describe()}`);
    });
    expect(delivered()).toEqual(new Set(before));
    expect(ms).toBeLessThan(20_000);
  }, 120_000);

  it('a worker running through the failover (its blocking take, its lease) delivers mail accepted after it', async () => {
    const q = await open({ connection: { sentinels: set.sentinels, name: set.name }, engine });
    const { deliver, calls } = recordingDeliver();
    await q.startWorker(deliver, fast);
    const before = await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'before'));
    await waitFor(() => calls.some((c) => c.job.queueId === before), 10_000);

    const { from } = await set.failover();
    await from.restart();
    // Enqueue works again once the queue found the new primary; the worker, which never stopped,
    // takes from the new primary by itself.
    let after: string | undefined;
    await waitFor(async () => {
      after = await q.enqueue(testMessage('a@src.test', ['c@x.test'], 'after')).catch(() => undefined);
      return after !== undefined;
    }, 30_000);
    await waitFor(() => calls.some((c) => c.job.queueId === after), 30_000);
    await waitFor(async () => (await q.summary()).totals.total === 0, 30_000);
  }, 120_000);
});

describe('RedisQueue on a Redis Cluster', () => {
  let cluster: TestRedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(async () => cluster?.stop());

  it.each(
    ENGINES,
  )('%s engine: accepts, delivers and counts with every key of the queue in one hash slot', async (engine) => {
    const q = await open({ connection: { cluster: cluster.nodes }, engine });
    expect(q.keyBase).toBe(`{${q.prefix}}`);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++)
      ids.push(await q.enqueue(testMessage('a@src.test', [`r@d${i}.test`, 's@x.test'], `c${i}`)));
    expect((await q.summary()).totals.total).toBe(20);
    expect(await q.findByMessageId('<c3@src.test>')).toEqual([ids[3]]);

    // Every key lives on the one node that owns the tag's slot.
    const nodes = cluster.servers.map((s) => new Redis(s.url));
    try {
      const counts = await Promise.all(nodes.map(async (n) => (await n.keys(`{${q.prefix}}*`)).length));
      expect(counts.filter((c) => c > 0)).toHaveLength(1);
      expect(counts.some((c) => c > 0)).toBe(true);
    } finally {
      for (const n of nodes) n.disconnect();
    }

    const { deliver, calls } = recordingDeliver();
    await q.startWorker(deliver, fast);
    await waitFor(() => calls.length === 20, 20_000);
    await waitFor(async () => (await q.readMessage(ids[9] as string)) === null, 10_000);
    expect(redisKeys(q.keyBase, 'x').meta).toBe(`{${q.prefix}}:msg:x`);
    expect((await q.summary()).totals.total).toBe(0);
  }, 60_000);
});

describe.each(
  ENGINES,
)('RedisQueue when the primary refuses writes for want of replicas (min-replicas-to-write, %s engine)', (engine) => {
  it('stops fetching jobs instead of looping on NOREPLICAS, and delivers once writes work again', async () => {
    const redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
    const admin = new Redis(redis.url);
    try {
      const records: LogRecord[] = [];
      const q = await open({ url: redis.url, probeIntervalMs: 200, logger: memoryLogger(records), engine });
      const id = await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'noreplicas'));
      await admin.config('SET', 'min-replicas-to-write', '1');
      const { deliver, calls } = recordingDeliver();
      await q.startWorker(deliver, fast);
      await waitFor(() => !q.health().writable, 10_000);
      // Fetches: BullMQ's fetch script (EVALSHA), Tern's engine's take (BLMOVE) and tick (EVALSHA).
      const fetches = async (): Promise<number> => {
        const stats = await admin.info('commandstats');
        const calls = (command: string): number =>
          Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
        return calls('evalsha') + calls('blmove');
      };
      const before = await fetches();
      // Several probe intervals pass (each probe fails again). BullMQ alone runs its fetch script
      // again at once after each refusal: hundreds of calls in this time.
      await waitFor(() => Date.now() - (q.health().since ?? 0) > 1500, 5000);
      expect((await fetches()) - before).toBeLessThan(20);
      expect(records.filter((r) => r.level === 'error').length).toBeLessThan(5);
      expect(calls).toHaveLength(0);
      await admin.config('SET', 'min-replicas-to-write', '0');
      await waitFor(() => calls.length === 1, 15_000);
      expect(calls[0]?.job.queueId).toBe(id);
    } finally {
      // Before the server goes: a queue closing against a dead Redis waits for it.
      await Promise.all(opened.splice(0).map((q) => q.close()));
      admin.disconnect();
      await redis.stop();
    }
  }, 60_000);
});
