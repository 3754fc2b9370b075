// One behaviour, every backend: the same scenarios against the Redis and the embedded queue, so
// intake and delivery can rely on the contract rather than on a backend.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { QueueBackend } from '../src/contract.js';
import { openEmbeddedQueue } from '../src/embedded/index.js';
import { openRedisQueue } from '../src/redis/index.js';
import { BUSY, OK, recordingDeliver, testMessage, UNKNOWN } from './redis-fixtures/deliveries.js';
import { parseReport } from './report-parser.js';

let redis: TestRedis;
const dirs: string[] = [];
const opened: QueueBackend[] = [];

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((q) => q.close()));
});

afterAll(async () => {
  await redis?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Each backend, Redis on each of its job engines (`redis` is the default engine). */
const backends: Record<'redis' | 'redis-bullmq' | 'embedded', () => Promise<QueueBackend>> = {
  redis: () => openRedisQueue({ url: redis.url, prefix: `c${randomBytes(4).toString('hex')}` }),
  'redis-bullmq': () =>
    openRedisQueue({ url: redis.url, prefix: `c${randomBytes(4).toString('hex')}`, engine: 'bullmq' }),
  embedded: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-contract-'));
    dirs.push(dir);
    return openEmbeddedQueue({ path: join(dir, 'queue.db') });
  },
};

const worker = { retry: { intervals: ['1s'], maxAge: '1m' }, hostname: 'mx.tern.test' } as const;

describe.each(Object.keys(backends) as (keyof typeof backends)[])('QueueBackend contract: %s', (kind) => {
  async function open(): Promise<QueueBackend> {
    const q = await backends[kind]();
    opened.push(q);
    expect(q.kind).toBe(kind === 'embedded' ? 'embedded' : 'redis');
    return q;
  }

  it('keeps the message until every job is done, one job per recipient domain', async () => {
    const q = await open();
    const message = testMessage('alice@src.test', ['bob@x.test', 'carol@y.test', 'dave@x.test']);
    const id = await q.enqueue(message);
    expect((await q.readMessage(id))?.equals(Buffer.concat(message.content.chunks() ?? []))).toBe(true);
    const record = await q.inspect(id);
    expect(record?.queueId).toBe(id);
    expect(record?.envelope).toEqual(message.envelope);
    expect(record?.jobs.map((j) => j.domain).sort()).toEqual(['x.test', 'y.test']);

    const { deliver, calls } = recordingDeliver();
    await q.startWorker(deliver, worker);
    await waitFor(async () => (await q.readMessage(id)) === null, 5000);
    expect(await q.inspect(id)).toBeNull();
    expect(calls.map((c) => c.job.recipients.map((r) => r.address).join(',')).sort()).toEqual([
      'bob@x.test,dave@x.test',
      'carol@y.test',
    ]);
    expect(calls.every((c) => c.message.equals(Buffer.concat(message.content.chunks() ?? [])))).toBe(true);
  });

  it('streams a stored message, reports a writable store, and passes intake facts to delivery', async () => {
    const q = await open();
    const before = Date.now();
    expect(q.health()).toMatchObject({ writable: true });
    expect(q.health().since).toBeLessThanOrEqual(before);
    const stop = q.onHealthChange(() => {});
    expect(typeof stop).toBe('function');
    stop();

    const message = { ...testMessage('alice@src.test', ['bob@x.test']), eightBit: true };
    const id = await q.enqueue(message);
    const chunks: Buffer[] = [];
    for await (const chunk of (await q.openMessage(id)) ?? []) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(Buffer.concat(message.content.chunks() ?? []))).toBe(true);

    const { deliver, calls } = recordingDeliver();
    await q.startWorker(deliver, worker);
    await waitFor(() => calls.length === 1, 5000);
    expect(calls[0]?.job).toMatchObject({ size: message.content.size, eightBit: true });
    await waitFor(async () => (await q.openMessage(id)) === null, 5000);
  });

  it('retries only the deferred recipient, on the schedule', async () => {
    const q = await open();
    const { deliver, calls } = recordingDeliver((address, attempt) =>
      address === 'bob@x.test' && attempt === 0 ? BUSY : OK,
    );
    const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test', 'dave@x.test']));
    await q.startWorker(deliver, worker);
    await waitFor(() => calls.length === 2, 5000);
    expect(calls[1]?.job.recipients.map((r) => r.address)).toEqual(['bob@x.test']);
    expect(calls[1]?.job.attempts).toBe(1);
    expect((calls[1]?.at ?? 0) - (calls[0]?.at ?? 0)).toBeGreaterThanOrEqual(900);
    await waitFor(async () => (await q.readMessage(id)) === null, 5000);
  });

  it('bounces a permanent failure through the same queue, from <> to the return path', async () => {
    const q = await open();
    const { deliver, calls } = recordingDeliver((address) => (address === 'bob@x.test' ? UNKNOWN : OK));
    await q.enqueue(testMessage('alice@src.test', ['bob@x.test', 'dave@x.test'], 'Contract'));
    await q.startWorker(deliver, worker);
    await waitFor(() => calls.some((c) => c.job.isBounce), 5000);
    const bounce = calls.find((c) => c.job.isBounce);
    expect(bounce?.job.envelope.mailFrom).toBe('');
    expect(bounce?.job.recipients.map((r) => r.address)).toEqual(['alice@src.test']);
    const report = parseReport(bounce?.message ?? Buffer.alloc(0));
    expect(report.status.slice(1).map((g) => [g['final-recipient'], g.action, g.status])).toEqual([
      ['rfc822; bob@x.test', 'failed', '5.1.1'],
    ]);
  });

  it('never bounces to <>', async () => {
    const q = await open();
    const { deliver, calls } = recordingDeliver(() => UNKNOWN);
    const id = await q.enqueue(testMessage('', ['bob@x.test']));
    await q.startWorker(deliver, worker);
    await waitFor(async () => (await q.readMessage(id)) === null, 5000);
    await sleep(300);
    expect(calls).toHaveLength(1);
  });
});
