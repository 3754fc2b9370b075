// Limits that wait: a job a per-destination limit refuses is not an attempt. On both queue
// backends, a backlog to a rate-limited domain drains at its limit without one deferral, and a
// domain without a limit, queued at the same time, is not held back by it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memorySource } from '@tern/plugin-api/host';
import {
  type Deliver,
  type DeliveryReport,
  openEmbeddedQueue,
  openRedisQueue,
  type QueueBackend,
} from '@tern/queue';
import {
  type SmtpSink,
  startDnsServer,
  startRedis,
  startSmtpSink,
  type TestDns,
  type TestRedis,
} from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer } from '../src/index.js';
import { SIMPLE_MESSAGE } from './helpers/jobs.js';

let dns: TestDns;
let sink: SmtpSink;
let redis: TestRedis;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tern-limit-wait-'));
  [sink, redis] = await Promise.all([startSmtpSink(), startRedis()]);
  dns = await startDnsServer({
    'slow.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
    'fast.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
    'mx.example.test': { A: ['127.0.0.1'] },
  });
});

afterAll(async () => {
  await Promise.all([sink.stop(), dns.stop(), redis.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

/** What each call of `deliver` saw and answered. */
interface Call {
  readonly domain: string;
  readonly attempts: number;
  readonly report: DeliveryReport;
}

const SLOW = 30;
const FAST = 5;
/** 10 a second, in bursts of up to 10: 30 messages take at least two seconds. */
const RATE = { limit: 10, per: 1000 };

async function drain(
  name: string,
  open: () => Promise<QueueBackend>,
  deliverer: Deliverer,
): Promise<{ calls: Call[]; slowDone: number; fastDone: number; started: number }> {
  const queue = await open();
  const calls: Call[] = [];
  const delivered = { slow: [] as number[], fast: [] as number[] };
  const deliver: Deliver = async (job, message, attempt) => {
    const report = await deliverer.deliver(job, message, attempt);
    calls.push({ domain: job.domain, attempts: job.attempts, report });
    if (report.recipients.every((r) => r.result === 'delivered')) {
      delivered[job.domain === 'slow.test' ? 'slow' : 'fast'].push(Date.now());
    }
    return report;
  };
  try {
    await queue.startWorker(deliver, { concurrency: 4 });
    const started = Date.now();
    const enqueue = (to: string, i: number): Promise<string> =>
      queue.enqueue({
        envelope: { mailFrom: `sender@${name}.test`, recipients: [{ address: `r${i}@${to}` }] },
        content: memorySource([Buffer.from(SIMPLE_MESSAGE)]),
        receivedAt: Date.now(),
      });
    // The slow backlog first, so the fast domain's jobs are queued behind it.
    for (let i = 0; i < SLOW; i++) await enqueue('slow.test', i);
    for (let i = 0; i < FAST; i++) await enqueue('fast.test', i);
    const deadline = Date.now() + 30_000;
    while (delivered.slow.length < SLOW || delivered.fast.length < FAST) {
      if (Date.now() > deadline) throw new Error(`${name}: not drained: ${JSON.stringify(delivered)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return {
      calls,
      started,
      slowDone: Math.max(...delivered.slow),
      fastDone: Math.max(...delivered.fast),
    };
  } finally {
    await queue.close();
  }
}

function check(result: Awaited<ReturnType<typeof drain>>): void {
  const { calls, started, slowDone, fastDone } = result;
  // Refused jobs came back, and each call saw the job with no attempt counted before it.
  expect(calls.some((c) => c.report.wait !== undefined)).toBe(true);
  expect(calls.every((c) => c.attempts === 0)).toBe(true);
  // Nothing went to the retry schedule: every call either delivered or waited for the limit.
  for (const call of calls) {
    if (call.report.wait !== undefined) continue;
    expect(call.report.recipients.map((r) => r.result)).toEqual(['delivered']);
  }
  // At 10 a second after a burst of 10, the backlog takes two seconds, and not the five minutes of a first retry.
  expect(slowDone - started).toBeGreaterThanOrEqual(1800);
  expect(slowDone - started).toBeLessThan(10_000);
  // The fast domain did not wait for the slow backlog.
  expect(fastDone).toBeLessThan(slowDone - 1000);
}

describe('a refused job waits for its limit, not for the retry schedule', () => {
  it('on the embedded queue', async () => {
    const deliverer = createDeliverer({
      hostname: 'out.tern.test',
      port: sink.port,
      dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
      limits: { domains: { 'slow.test': { messageRate: RATE } } },
    });
    try {
      const result = await drain(
        'embedded',
        async () => openEmbeddedQueue({ path: join(dir, 'embedded.db'), pollIntervalMs: 200 }),
        deliverer,
      );
      check(result);
    } finally {
      await deliverer.close();
    }
  });

  it('on the Redis queue, counting the limit in Redis', async () => {
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    const deliverer = createDeliverer({
      hostname: 'out.tern.test',
      port: sink.port,
      dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
      limits: { domains: { 'slow.test': { messageRate: RATE } } },
      redis: client,
    });
    try {
      const result = await drain(
        'redis',
        () => openRedisQueue({ url: redis.url, prefix: 'limit-wait' }),
        deliverer,
      );
      check(result);
    } finally {
      await deliverer.close();
      await client.quit();
    }
  });
});
