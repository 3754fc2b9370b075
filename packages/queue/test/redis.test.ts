// The Redis backend against a private redis-server: delivery, retries, bounces, splits, expiry,
// outages, memory exhaustion, a worker killed mid-delivery, and several workers on one queue.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { memorySource, PluginHost } from '@tern/plugin-api/host';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Deliver } from '../src/contract.js';
import { QueueUnavailableError } from '../src/errors.js';
import {
  engineKeys,
  openRedisQueue,
  type RedisQueue,
  type RedisQueueOptions,
  redisKeys,
} from '../src/redis/index.js';
import { type ChildScript, spawnScript } from './redis-fixtures/child-process.js';
import { startCountingProxy } from './redis-fixtures/counting-proxy.js';
import { BUSY, OK, recordingDeliver, testMessage, UNKNOWN } from './redis-fixtures/deliveries.js';
import { parseReport } from './report-parser.js';

/** Every test below runs on both job engines. */
const ENGINES = ['bullmq', 'tern'] as const;
let engine: (typeof ENGINES)[number] = 'bullmq';

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
    engine,
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

/** Jobs waiting to be taken, in the engine's own list. */
function waiting(q: RedisQueue): Promise<number> {
  return admin.llen(
    q.engine === 'tern' ? engineKeys(q.prefix, q.queueName).ready : `${q.prefix}:${q.queueName}:wait`,
  );
}

/** Jobs the engine still holds (waiting, due later, failed): none once every message is finished. */
/** Whether an attempt logged a `bounced` line saying that no notice went out, and why. */
function noNotice(records: readonly LogRecord[], why: string): boolean {
  return records.some((r) => r.message === 'bounced' && r.fields.noticeSkipped === why);
}

/**
 * Stalls the server for `ms`, as a stalled disk or a long command would: every client's commands
 * wait until then. Its reply means the pause is in effect, so what the test sends next is held.
 */
async function stallRedis(ms: number): Promise<void> {
  expect(await admin.call('CLIENT', 'PAUSE', String(ms), 'ALL')).toBe('OK');
}

async function jobsLeft(q: RedisQueue): Promise<number> {
  const k = engineKeys(q.prefix, q.queueName);
  const [ready, due, failed] = await Promise.all([
    admin.llen(k.ready),
    admin.zcard(k.due),
    admin.zcard(`${q.prefix}:${q.queueName}:failed`),
  ]);
  return ready + due + failed;
}

/** A worker started on `q` delivers the message `id` (left by a node killed -9), once, and nothing is left. */
async function deliversOnce(q: RedisQueue, id: string): Promise<void> {
  const { deliver, calls } = recordingDeliver();
  await q.startWorker(deliver, fast);
  await waitFor(() => calls.length === 1, 10_000);
  expect(calls[0]?.job.queueId).toBe(id);
  await waitFor(async () => (await q.readMessage(id)) === null, 5000);
  expect(await jobsLeft(q)).toBe(0);
}

describe.each(ENGINES)('%s engine', (name) => {
  beforeAll(() => {
    engine = name;
  });

  describe('RedisQueue: delivery', () => {
    it('delivers an enqueued message, then removes its body and keys', async () => {
      const q = await queue();
      const { deliver, calls } = recordingDeliver();
      const message = testMessage('alice@src.test', ['bob@x.test', 'carol@y.test', 'dave@x.test']);
      const id = await q.enqueue(message);

      expect((await q.readMessage(id))?.equals(Buffer.concat(message.content.chunks() ?? []))).toBe(true);
      const keys = redisKeys(q.prefix, id);
      // Tern's engine keeps a body of up to one slice in the message hash, as bytes.
      const bodyKeys = q.engine === 'tern' ? [] : [keys.body];
      expect(await admin.exists(keys.meta, keys.jobs, ...bodyKeys)).toBe(2 + bodyKeys.length);
      if (q.engine === 'tern') {
        expect(await admin.hgetBuffer(keys.meta, 'body')).toEqual(
          Buffer.concat(message.content.chunks() ?? []),
        );
      }
      expect(await admin.smembers(keys.jobs)).toEqual(
        expect.arrayContaining([`${id}@x.test`, `${id}@y.test`]),
      );
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
      expect(byDomain['y.test']?.message.equals(Buffer.concat(message.content.chunks() ?? []))).toBe(true);

      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
      expect(await q.inspect(id)).toBeNull();
      expect(await messageKeys(q)).toEqual([]);
      // Completed jobs are removed, nothing lingers in BullMQ's failed set (or Tern's lists).
      expect(await admin.keys(`${q.prefix}:${q.queueName}:${id}*`)).toEqual([]);
      expect(await jobsLeft(q)).toBe(0);
    });
  });

  describe('RedisQueue: retries and bounces', () => {
    it('retries a 4xx after the schedule and delivers on the next attempt', async () => {
      const q = await queue();
      const { deliver, calls } = recordingDeliver((_, attempt) => (attempt === 0 ? BUSY : OK));
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      await q.startWorker(deliver, fast);

      await waitFor(async () => (await q.inspect(id))?.jobs[0]?.attempts === 1, 5000);
      const job = (await q.inspect(id))?.jobs[0];
      expect(job?.state).toBe('scheduled');
      expect(job?.recipients[0]?.lastReply).toEqual(BUSY);
      expect(job?.nextAttemptAt).toBeGreaterThanOrEqual((calls[0]?.at ?? 0) + 900);

      await waitFor(() => calls.length === 2, 5000);
      expect((calls[1]?.at ?? 0) - (calls[0]?.at ?? 0)).toBeGreaterThanOrEqual(900);
      expect(calls[1]?.job.attempts).toBe(1);
      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
      expect(calls).toHaveLength(2);
    });

    it('defers every recipient when deliver throws, and never leaves the job in the failed set', async () => {
      const q = await queue();
      const recorded = recordingDeliver();
      let thrown = 0;
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      await q.startWorker(async (job, open) => {
        if (thrown++ === 0) throw new Error('resolver exploded');
        return recorded.deliver(job, open);
      }, fast);
      await waitFor(() => recorded.calls.length === 1, 5000);
      expect(recorded.calls[0]?.job.attempts).toBe(1);
      expect(recorded.calls[0]?.job.recipients[0]?.lastReply?.enhanced).toBe('4.3.0');
      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
      expect(await jobsLeft(q)).toBe(0);
    });

    it('bounces a 5xx to the return path as an RFC 3464 report carrying the original headers', async () => {
      const q = await queue();
      const { deliver, calls } = recordingDeliver((address) => (address === 'bob@x.test' ? UNKNOWN : OK));
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Lunch on Friday'));
      await q.startWorker(deliver, fast);

      await waitFor(() => calls.length === 2, 5000);
      const bounce = calls[1];
      expect(bounce?.job.envelope.mailFrom).toBe('');
      expect(bounce?.job.isBounce).toBe(true);
      expect(bounce?.job.recipients.map((r) => r.address)).toEqual(['alice@src.test']);

      const report = parseReport(bounce?.message ?? Buffer.alloc(0));
      expect(report.headers.get('to')).toBe('<alice@src.test>');
      expect(report.headers.get('auto-submitted')).toBe('auto-replied');
      expect(report.status[0]).toMatchObject({ 'reporting-mta': 'dns; mx.tern.test', 'x-tern-queue-id': id });
      expect(report.status.slice(1)).toEqual([
        expect.objectContaining({
          'final-recipient': 'rfc822; bob@x.test',
          action: 'failed',
          status: '5.1.1',
          'diagnostic-code': 'smtp; 550 5.1.1 No such user here',
          'remote-mta': 'dns; mx.x.test',
        }),
      ]);
      const original = report.parts.find((p) => p.headers.get('content-type') === 'text/rfc822-headers');
      expect(original?.body).toContain('Subject: Lunch on Friday\r\n');
      expect(original?.body).not.toContain('Just a test.');

      await waitFor(async () => (await messageKeys(q)).length === 0, 5000);
    });

    it('never bounces to <>: a failed message from the null sender is dropped', async () => {
      const q = await queue();
      const logger = memoryLogger();
      const { deliver, calls } = recordingDeliver(() => UNKNOWN);
      const id = await q.enqueue(testMessage('', ['bob@x.test']));
      await q.startWorker(deliver, { ...fast, logger });
      // The attempt's `bounced` line says why no notice went out; a notice would be enqueued before it.
      await waitFor(() => noNotice(logger.records, 'null sender'), 5000);
      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
      expect(calls).toHaveLength(1);
      expect(await messageKeys(q)).toEqual([]);
    });

    it('drops a bounce of its own that fails, with a log line, instead of bouncing it', async () => {
      const q = await queue();
      const logger = memoryLogger();
      const { deliver, calls } = recordingDeliver(() => UNKNOWN);
      await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      await q.startWorker(deliver, { ...fast, logger });
      await waitFor(() => calls.length === 2, 5000);
      await waitFor(() => noNotice(logger.records, 'a bounce we generated'), 5000);
      await waitFor(async () => (await messageKeys(q)).length === 0, 5000);
      expect(calls).toHaveLength(2);
      expect(calls[1]?.job.isBounce).toBe(true);
      expect(
        logger.records.some((r) => r.level === 'warn' && /bounce we generated/.test(r.message ?? '')),
      ).toBe(true);
    });

    it('splits delivered from failed: the bounce names only the failed recipient', async () => {
      const q = await queue();
      const { deliver, calls } = recordingDeliver((address) => (address === 'bob@x.test' ? UNKNOWN : OK));
      await q.enqueue(testMessage('alice@src.test', ['bob@x.test', 'dave@x.test']));
      await q.startWorker(deliver, fast);
      await waitFor(() => calls.length === 2, 5000);
      expect(calls[0]?.job.recipients.map((r) => r.address)).toEqual(['bob@x.test', 'dave@x.test']);
      const report = parseReport(calls[1]?.message ?? Buffer.alloc(0));
      expect(report.status.slice(1).map((g) => g['final-recipient'])).toEqual(['rfc822; bob@x.test']);
    });

    it('splits delivered from deferred: only the deferred recipient is in the next attempt', async () => {
      const q = await queue();
      const { deliver, calls } = recordingDeliver((address, attempt) =>
        address === 'bob@x.test' && attempt === 0 ? BUSY : OK,
      );
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test', 'dave@x.test']));
      await q.startWorker(deliver, fast);
      await waitFor(() => calls.length === 2, 5000);
      expect(calls[0]?.job.recipients.map((r) => r.address)).toEqual(['bob@x.test', 'dave@x.test']);
      expect(calls[1]?.job.recipients.map((r) => r.address)).toEqual(['bob@x.test']);
      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
      expect(calls).toHaveLength(2);
    });

    it('bounces as expired once the message outlives the schedule', async () => {
      const q = await queue();
      const { deliver, calls } = recordingDeliver((address) => (address === 'bob@x.test' ? BUSY : OK));
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      await q.startWorker(deliver, { ...fast, retry: { intervals: ['1s'], maxAge: '2500ms' } });
      await waitFor(() => calls.some((c) => c.job.isBounce), 10_000);
      const attempts = calls.filter((c) => !c.job.isBounce);
      expect(attempts.length).toBeGreaterThanOrEqual(3);
      const report = parseReport(calls.find((c) => c.job.isBounce)?.message ?? Buffer.alloc(0));
      expect(report.status[1]).toMatchObject({
        'final-recipient': 'rfc822; bob@x.test',
        action: 'failed',
        status: '5.4.7',
        'diagnostic-code': 'smtp; 451 4.7.1 Greylisted, try later',
      });
      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
    });

    it('fires delivered, deferred and bounced hooks; deferred advice moves the retry, bounced advice suppresses', async () => {
      const q = await queue();
      const seen: string[] = [];
      const plugins = new PluginHost([
        {
          name: 'observer',
          delivered: (ctx) => {
            seen.push(
              `delivered ${ctx.results.map((r) => r.recipient.address).join(',')} via ${ctx.remoteMta}`,
            );
          },
          deferred: (ctx) => {
            seen.push(`deferred ${ctx.results.map((r) => r.recipient.address).join(',')}`);
            return { retryAt: new Date(Date.now() + 1000) };
          },
          bounced: (ctx) => {
            seen.push(`bounced ${ctx.reason} ${ctx.results.map((r) => r.recipient.address).join(',')}`);
            return { suppress: true };
          },
        },
      ]);
      const { deliver, calls } = recordingDeliver((address, attempt) =>
        address === 'bob@x.test' ? (attempt === 0 ? BUSY : UNKNOWN) : OK,
      );
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test', 'dave@x.test']));
      // The schedule says 1 minute; the plugin says 1 second.
      const logger = memoryLogger();
      await q.startWorker(deliver, { ...fast, retry: { intervals: ['1m'] }, plugins, logger });
      await waitFor(() => noNotice(logger.records, 'suppressed by a plugin'), 5000);
      await waitFor(async () => (await q.readMessage(id)) === null, 5000);
      expect(seen).toEqual([
        'delivered dave@x.test via mx.x.test[192.0.2.25]:25',
        'deferred bob@x.test',
        'bounced permanent bob@x.test',
      ]);
      // Suppressed: no bounce went out.
      expect(calls).toHaveLength(2);
    });
  });

  describe('RedisQueue: durability', () => {
    it('stores a large message in pieces and hands it to delivery unchanged', async () => {
      const q = await queue();
      const chunks = Array.from({ length: 80 }, (_, i) => randomBytes(64 * 1024 + i));
      const message = { ...testMessage('alice@src.test', ['bob@x.test']), content: memorySource(chunks) };
      const id = await q.enqueue(message);
      expect((await q.readMessage(id))?.equals(Buffer.concat(chunks))).toBe(true);
      const { deliver, calls } = recordingDeliver();
      await q.startWorker(deliver, fast);
      await waitFor(() => calls.length === 1, 5000);
      expect(calls[0]?.message.equals(Buffer.concat(chunks))).toBe(true);
    });

    it('keeps a small body of any bytes exactly, from enqueue to delivery and to readMessage', async () => {
      const q = await queue();
      // Bytes that are not UTF-8 (a lone 0xff, NULs, a split multi-byte sequence): a body turned
      // into a string anywhere on the way would come back changed.
      const bytes = Buffer.concat([
        Buffer.from('Subject: x\r\n\r\n'),
        randomBytes(3000),
        Buffer.from([0xff, 0, 0xe2, 0x82]),
      ]);
      const message = { ...testMessage('alice@src.test', ['bob@x.test']), content: memorySource([bytes]) };
      const id = await q.enqueue(message);
      expect((await q.readMessage(id))?.equals(bytes)).toBe(true);
      const { deliver, calls } = recordingDeliver();
      await q.startWorker(deliver, fast);
      await waitFor(() => calls.length === 1, 5000);
      expect(calls[0]?.message.equals(bytes)).toBe(true);
    });

    it('enqueues in one round trip to Redis', async () => {
      const proxy = await startCountingProxy(redis.port);
      try {
        const q = await queue({ url: `redis://127.0.0.1:${proxy.port}` });
        for (const n of [1, 2]) {
          proxy.reset();
          await q.enqueue(
            testMessage('alice@src.test', ['bob@x.test', 'carol@y.test', 'dave@z.test'], `rt${n}`),
          );
          expect(proxy.turns(), `enqueue #${n}`).toBe(1);
        }
        await q.close();
      } finally {
        await proxy.close();
      }
    });

    it('rejects enqueue at once while Redis is down, and recovers when it is back', async () => {
      const own = await startRedis();
      try {
        const q = await openRedisQueue({ url: own.url, prefix: 'down', enqueueTimeoutMs: 2000, engine });
        opened.push(q);
        await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
        await own.kill();
        const started = Date.now();
        await expect(q.enqueue(testMessage('alice@src.test', ['bob@x.test']))).rejects.toBeInstanceOf(
          QueueUnavailableError,
        );
        expect(Date.now() - started).toBeLessThan(2000);
        await own.restart();
        await waitFor(
          () =>
            q.enqueue(testMessage('alice@src.test', ['bob@x.test'])).then(
              () => true,
              () => false,
            ),
          10_000,
          100,
        );
      } finally {
        await own.stop();
      }
    });

    it('rejects enqueue when Redis is slower than the timeout, and leaves nothing to deliver', async () => {
      const q = await queue({ enqueueTimeoutMs: 500 });
      await stallRedis(1500);
      const started = Date.now();
      await expect(q.enqueue(testMessage('alice@src.test', ['bob@x.test']))).rejects.toBeInstanceOf(
        QueueUnavailableError,
      );
      expect(Date.now() - started).toBeLessThan(1200);
      // The transaction ran once the server was free, and the withdrawal right behind it.
      await waitFor(async () => (await waiting(q)) === 1, 3000);
      expect(await messageKeys(q)).toEqual([]);
      const { deliver, calls } = recordingDeliver();
      await q.startWorker(deliver, fast);
      // The worker took the job and dropped it (its message is gone): a delivery would come first.
      await waitFor(async () => (await waiting(q)) === 0, 5000);
      expect(calls).toHaveLength(0);
    });

    it('rejects enqueue when Redis is out of memory, and writes nothing', async () => {
      const q = await queue();
      await admin.config('SET', 'maxmemory', '1');
      try {
        await expect(q.enqueue(testMessage('alice@src.test', ['bob@x.test']))).rejects.toThrow(
          /OOM|EXECABORT/,
        );
        await expect(q.enqueue(testMessage('alice@src.test', ['bob@x.test']))).rejects.toBeInstanceOf(
          QueueUnavailableError,
        );
      } finally {
        await admin.config('SET', 'maxmemory', '0');
      }
      expect(await messageKeys(q)).toEqual([]);
      expect(await waiting(q)).toBe(0);
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      // Its hash, its body and its job set: a message of one job keeps the job's id in the hash
      // (what this version reads) and in the set (what a BullMQ worker of the previous version
      // reads; Tern's engine has no previous version, so no set).
      const keys = redisKeys(q.prefix, id);
      const sets = q.engine === 'tern' ? [] : [keys.jobs];
      // Tern's engine: the body is a field of the hash.
      const body = q.engine === 'tern' ? [] : [keys.body];
      expect((await messageKeys(q)).sort()).toEqual([keys.meta, ...body, ...sets].sort());
      expect(await admin.smembers(keys.jobs)).toEqual(sets.length === 0 ? [] : [`${id}@x.test`]);
      expect(await admin.hget(keys.meta, 'job')).toBe(`${id}@x.test`);
    });
  });

  describe('RedisQueue: health', () => {
    /** Health changes of `q`, as the app would log them. */
    function watch(q: RedisQueue): boolean[] {
      const changes: boolean[] = [];
      q.onHealthChange((health) => changes.push(health.writable));
      return changes;
    }

    it('says Redis cannot take writes while it is out of memory, once, and when it can again', async () => {
      // A fresh queue whose first enqueue meets the OOM: BullMQ's script was never loaded.
      const logger = memoryLogger();
      const q = await queue({ probeIntervalMs: 200, logger });
      const changes = watch(q);
      expect(q.health().writable).toBe(true);
      await admin.config('SET', 'maxmemory', '1');
      try {
        for (let i = 0; i < 3; i++) {
          await expect(q.enqueue(testMessage('alice@src.test', ['bob@x.test']))).rejects.toBeInstanceOf(
            QueueUnavailableError,
          );
        }
        expect(q.health()).toMatchObject({ writable: false, lastError: expect.stringMatching(/^OOM/) });
        // The probe keeps failing meanwhile; still one change, one log line.
        await waitFor(() =>
          logger.records.some((r) => r.level === 'error' && /maxmemory/.test(r.message ?? '')),
        );
      } finally {
        await admin.config('SET', 'maxmemory', '0');
      }
      await waitFor(() => q.health().writable, 5000);
      expect(changes).toEqual([false, true]);
      expect(logger.records.filter((r) => /cannot write/.test(r.message ?? ''))).toHaveLength(1);
      await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
    });

    it('says so while Redis is down, and when it is back', async () => {
      const own = await startRedis();
      try {
        const q = await openRedisQueue({ url: own.url, prefix: 'health', probeIntervalMs: 200, engine });
        opened.push(q);
        const changes = watch(q);
        await own.kill();
        // The lost connection alone says it, before any enqueue fails.
        await waitFor(() => !q.health().writable, 5000);
        expect(q.health().lastError).toMatch(/lost/);
        await own.restart();
        await waitFor(() => q.health().writable, 10_000);
        expect(changes).toEqual([false, true]);
        await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      } finally {
        await own.stop();
      }
    });
  });

  describe('RedisQueue: large bodies', () => {
    it('leaves nothing to deliver when killed between the slices and the commit; the upload expires', async () => {
      const prefix = `t${randomBytes(4).toString('hex')}`;
      const child = spawnScript('upload-child.ts', [redis.url, prefix, engine]);
      children.push(child);
      await child.line(/^stalled$/);
      await child.kill();
      const keys = await admin.keys(`${prefix}:*`);
      // Only the upload (and the queue's own bookkeeping), no message, no job.
      expect(keys.filter((k) => k.startsWith(`${prefix}:msg:`))).toEqual([
        expect.stringMatching(/^t[0-9a-f]+:msg:[0-9A-Z]+:upload$/),
      ]);
      const upload = keys.find((k) => k.endsWith(':upload')) as string;
      expect(await admin.strlen(upload)).toBeGreaterThan(0);
      const ttl = await admin.pttl(upload);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(10 * 60_000);
      expect(await admin.exists(`${prefix}:delivery:wait`, engineKeys(prefix, 'delivery').ready)).toBe(0);
    });
  });

  describe('RedisQueue: several workers', () => {
    it('runs a job again on another node when its worker is killed mid-delivery', async () => {
      const q = await queue();
      const child = spawnScript('worker-child.ts', [redis.url, q.prefix, q.queueName, '1000', engine]);
      children.push(child);
      await child.line(/^ready$/);
      const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test']));
      await child.line(new RegExp(`^delivering ${id}@x\\.test$`));
      await child.kill();

      await deliversOnce(q, id);
    });

    it('shares one queue between two workers, each message delivered once', async () => {
      const a = await queue();
      const b = await sibling(a);
      const recorded = recordingDeliver();
      const seenBy: Record<string, string[]> = { a: [], b: [] };
      const slow =
        (name: 'a' | 'b') =>
        async (...args: Parameters<typeof recorded.deliver>) => {
          seenBy[name]?.push(args[0].queueId);
          await sleep(100);
          return recorded.deliver(...args);
        };
      const ids: string[] = [];
      for (let i = 0; i < 8; i++)
        ids.push(await a.enqueue(testMessage('alice@src.test', ['bob@x.test'], `m${i}`)));
      await a.startWorker(slow('a'), { ...fast, concurrency: 1 });
      await b.startWorker(slow('b'), { ...fast, concurrency: 1 });
      await waitFor(() => recorded.calls.length === 8, 10_000);
      expect(seenBy.a?.length).toBeGreaterThan(0);
      expect(seenBy.b?.length).toBeGreaterThan(0);
      expect(recorded.calls.map((c) => c.job.queueId).sort()).toEqual([...ids].sort());
      await waitFor(async () => (await messageKeys(a)).length === 0, 5000);
    });
  });
});

describe('RedisQueue: from the BullMQ engine to Tern', () => {
  it('a node on the tern engine delivers mail left in BullMQ (waiting and deferred), then stops its BullMQ worker', async () => {
    const old = await queue({ engine: 'bullmq' });
    const busyFirst = recordingDeliver((_, attempt) => (attempt === 0 ? BUSY : OK));
    const deferred = await old.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'deferred'));
    await old.startWorker(busyFirst.deliver, fast);
    await waitFor(async () => (await old.inspect(deferred))?.jobs[0]?.attempts === 1, 5000);
    await old.close();
    // Stopped with one job deferred in BullMQ; another arrives while no worker runs.
    const writer = await sibling(old, { engine: 'bullmq' });
    const left = await writer.enqueue(testMessage('alice@src.test', ['carol@y.test'], 'waiting'));
    await writer.close();
    expect(await admin.llen(`${old.prefix}:${old.queueName}:wait`)).toBe(1);
    expect(await admin.zcard(`${old.prefix}:${old.queueName}:delayed`)).toBe(1);

    const logger = memoryLogger();
    const node = await sibling(old, { engine: 'tern', logger });
    const { deliver, calls } = recordingDeliver();
    await node.startWorker(deliver, fast);
    const fresh = await node.enqueue(testMessage('alice@src.test', ['dave@z.test'], 'new'));
    await waitFor(() => calls.length === 3, 10_000);
    expect(calls.map((c) => c.job.queueId).sort()).toEqual([deferred, left, fresh].sort());
    for (const id of [deferred, left, fresh])
      await waitFor(async () => (await node.readMessage(id)) === null, 5000);
    await waitFor(() => logger.records.some((r) => /BullMQ queue drained/.test(r.message ?? '')), 10_000);

    // A rolling upgrade: a node of the older version (BullMQ) still takes mail after the drain.
    const straggler = await sibling(old, { engine: 'bullmq' });
    const late = await straggler.enqueue(testMessage('alice@src.test', ['erin@w.test'], 'late'));
    await waitFor(() => calls.some((c) => c.job.queueId === late), 20_000);
    await waitFor(async () => (await node.readMessage(late)) === null, 5000);
    await waitFor(
      () => logger.records.filter((r) => /BullMQ queue drained/.test(r.message ?? '')).length === 2,
      15_000,
    );
  }, 60_000);
});

describe('RedisQueue: Tern engine across a reconnect', () => {
  it('a job a take moved to the running list whose reply the node never got runs after the node reconnects', async () => {
    const q = await queue({ engine: 'tern' });
    const recorded = recordingDeliver();
    let release = (): void => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    // One slot, busy with the first job until released: the node is not taking meanwhile.
    const deliver: Deliver = async (job, open) => {
      if (recorded.calls.length === 0) await released;
      return recorded.deliver(job, open);
    };
    await q.startWorker(deliver, { ...fast, concurrency: 1 });
    const first = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'first'));
    const k = engineKeys(q.prefix, q.queueName);
    await waitFor(async () => (await admin.llen(k.ready)) === 0 && (await admin.zcard(k.nodes)) === 1, 5000);
    const [node] = await admin.zrange(k.nodes, 0, -1);
    const lost = await q.enqueue(testMessage('alice@src.test', ['carol@y.test'], 'lost'));
    // No slot free: in `ready` (a take in flight may bring it in first, and give it back).
    await waitFor(async () => (await admin.llen(k.ready)) === 1, 5000);
    // A take Redis ran but whose reply went down with the connection: the job is in the node's
    // running list, and the node does not know it.
    expect(await admin.lmove(k.ready, k.run(node as string), 'RIGHT', 'LEFT')).toBe(`${lost}@y.test`);
    await admin.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    release();
    await waitFor(() => recorded.calls.some((c) => c.job.queueId === lost), 10_000);
    expect(recorded.calls.map((c) => c.job.queueId)).toEqual([first, lost]);
    await waitFor(async () => (await messageKeys(q)).length === 0, 5000);
  });
});

describe('RedisQueue: Tern engine hands fresh jobs to its own free slots', () => {
  /** Calls of one command since the last CONFIG RESETSTAT. */
  async function calls(command: string): Promise<number> {
    const info = await admin.info('commandstats');
    return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
  }

  it('delivers a job handed over by its enqueue without reading its gate', async () => {
    const q = await queue({ engine: 'tern' });
    const { deliver, calls: delivered } = recordingDeliver();
    await q.startWorker(deliver, fast);
    await admin.config('RESETSTAT');
    const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'handed'));
    await waitFor(async () => (await messageKeys(q)).length === 0, 5000);
    expect(delivered.map((c) => c.job.queueId)).toEqual([id]);
    expect(delivered[0]?.message.toString()).toContain('Subject: handed');
    // The take and the gate read are what a hand-off saves (BLMOVE is counted when it returns).
    expect(await calls('hmget')).toBe(0);
  });

  it('never runs more jobs than slots, and leaves the rest in ready for whoever has one', async () => {
    const q = await queue({ engine: 'tern' });
    const recorded = recordingDeliver();
    let running = 0;
    let most = 0;
    const deliver: Deliver = async (job, open) => {
      most = Math.max(most, ++running);
      await sleep(30);
      running--;
      return recorded.deliver(job, open);
    };
    await q.startWorker(deliver, { ...fast, concurrency: 2 });
    const ids = await Promise.all(
      Array.from({ length: 8 }, (_, i) => q.enqueue(testMessage('alice@src.test', ['bob@x.test'], `s${i}`))),
    );
    await waitFor(async () => (await messageKeys(q)).length === 0, 10_000);
    expect(recorded.calls.map((c) => c.job.queueId).sort()).toEqual([...ids].sort());
    expect(most).toBe(2);
    expect(await jobsLeft(q)).toBe(0);
  });

  it('a hand-off whose enqueue timed out goes back to ready, is dropped, and frees its slot', async () => {
    const q = await queue({ engine: 'tern', enqueueTimeoutMs: 500 });
    const { deliver, calls: delivered } = recordingDeliver();
    await q.startWorker(deliver, fast);
    const k = engineKeys(q.prefix, q.queueName);
    const [node] = await admin.zrange(k.nodes, 0, -1);
    await stallRedis(1500);
    await expect(q.enqueue(testMessage('alice@src.test', ['bob@x.test']))).rejects.toBeInstanceOf(
      QueueUnavailableError,
    );
    // The script ran once the server was free (the job on this node's running list, its slot
    // given up), the withdrawal right behind it; the reclaim puts the job back and it is dropped.
    await waitFor(
      async () => (await admin.llen(k.run(node as string))) === 0 && (await jobsLeft(q)) === 0,
      5000,
    );
    await waitFor(() => q.health().writable, 10_000);
    const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'after'));
    await waitFor(async () => (await messageKeys(q)).length === 0, 5000);
    expect(delivered.map((c) => c.job.queueId)).toEqual([id]);
  });

  it('a job handed over is delivered by another node after the enqueuing node is killed -9 right after the 250', async () => {
    const q = await queue({ engine: 'tern' });
    const child = spawnScript('worker-child.ts', [
      redis.url,
      q.prefix,
      q.queueName,
      '1000',
      'tern',
      'enqueue',
    ]);
    children.push(child);
    const line = await child.line(/^enqueued /);
    await child.kill();
    const id = line.slice('enqueued '.length);
    // Handed over: on the dead node's running list, not in ready.
    const k = engineKeys(q.prefix, q.queueName);
    const [node] = await admin.zrange(k.nodes, 0, -1);
    expect(await admin.lrange(k.run(node as string), 0, -1)).toEqual([`${id}@x.test`]);
    expect(await admin.llen(k.ready)).toBe(0);

    await deliversOnce(q, id);
  });
});
