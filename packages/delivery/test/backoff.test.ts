// Automatic back-off end to end: the embedded queue drives a real deliverer against real receiving
// servers that answer with the replies that set each rule kind off (a block, a rate limit, too
// many connections, no answer at all); the message timelines show every action.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memorySource } from '@tern/plugin-api/host';
import {
  openEmbeddedQueue,
  openRedisQueue,
  type QueueBackend,
  type QueueOperations,
  type ShapingEvent,
} from '@tern/queue';
import {
  freePort,
  type SmtpSink,
  startDnsServer,
  startRedis,
  startSmtpSink,
  type TestDns,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type BackoffRule, createDeliverer, type Deliverer, type DelivererOptions } from '../src/index.js';
import { SIMPLE_MESSAGE } from './helpers/jobs.js';
import { startWireTap } from './helpers/wire-tap.js';

let dns: TestDns;
let redis: TestRedis;
let dir: string;
type Queue = QueueBackend & QueueOperations;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tern-backoff-'));
  redis = await startRedis();
  dns = await startDnsServer({
    'blocked.test': { MX: [{ exchange: 'mx.blocked.test', priority: 10 }] },
    'mx.blocked.test': { A: ['127.0.0.1'] },
    'limited.test': { MX: [{ exchange: 'mx.limited.test', priority: 10 }] },
    'mx.limited.test': { A: ['127.0.0.1'] },
    // The first MX says "too many connections" at the greeting; the second takes the mail.
    'busy.test': {
      MX: [
        { exchange: 'mx1.busy.test', priority: 10 },
        { exchange: 'mx2.busy.test', priority: 20 },
      ],
    },
    'mx1.busy.test': { A: ['127.0.0.2'] },
    'mx2.busy.test': { A: ['127.0.0.3'] },
    'down.test': { MX: [{ exchange: 'mx.down.test', priority: 10 }] },
    'mx.down.test': { A: ['127.0.0.1'] },
  });
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await Promise.all([dns.stop(), redis.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

let queues = 0;

/** An embedded queue whose worker delivers through a deliverer on `port` with `extra` options. */
async function setUp(
  port: number,
  extra: Partial<DelivererOptions>,
  backend: 'embedded' | 'redis' = 'embedded',
): Promise<{ queue: Queue; deliverer: Deliverer; send: (to: string) => Promise<string> }> {
  const queue: Queue =
    backend === 'redis'
      ? await openRedisQueue({ url: redis.url, prefix: `backoff${queues++}` })
      : openEmbeddedQueue({ path: join(dir, `q${queues++}.db`), pollIntervalMs: 100 });
  const deliverer = createDeliverer({
    hostname: 'out.tern.test',
    port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    timeouts: { connectMs: 1000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    ...extra,
  });
  cleanups.push(
    () => deliverer.close(),
    () => queue.close(),
  );
  await queue.startWorker((job, message, attempt) => deliverer.deliver(job, message, attempt), {
    concurrency: 8,
    retry: { intervals: ['1h'] },
  });
  const send = (to: string): Promise<string> =>
    queue.enqueue({
      envelope: { mailFrom: 'sender@origin.test', recipients: [{ address: to }] },
      content: memorySource([Buffer.from(SIMPLE_MESSAGE)]),
      receivedAt: Date.now(),
    });
  return { queue, deliverer, send };
}

async function shapingOf(queue: Queue, queueId: string): Promise<ShapingEvent[]> {
  const details = await queue.details(queueId);
  return (details?.timeline ?? []).filter((e): e is ShapingEvent => e.type === 'shaping');
}

async function attemptsOf(queue: Queue, queueId: string): Promise<number> {
  const details = await queue.details(queueId);
  return (details?.timeline ?? []).filter((e) => e.type === 'attempt').length;
}

async function sink(options: Parameters<typeof startSmtpSink>[0] = {}): Promise<SmtpSink> {
  const s = await startSmtpSink(options);
  cleanups.push(() => s.stop());
  return s;
}

describe('back-off rules', () => {
  it.each([
    'embedded',
    'redis',
  ] as const)('suspends a destination that answers "554 5.7.1 blocked", and resumes after the quiet period (%s)', async (backend) => {
    let blocked = true;
    const server = await sink({
      rcptReply: () =>
        blocked ? { code: 554, message: '5.7.1 Service unavailable; client host blocked' } : undefined,
    });
    const { queue, deliverer, send } = await setUp(
      server.port,
      {
        shaping: {
          defaultRules: false,
          rules: [
            {
              name: 'blocked',
              match: { codes: [554], enhanced: '5.7.1', text: 'blocked' },
              action: { kind: 'suspend' },
              durationMs: 1500,
            },
          ],
        },
      },
      backend,
    );
    const first = await send('a@blocked.test');
    // The block is a real failure for the first message: bounced, and the rule in force.
    await waitFor(async () => (await queue.details(first))?.state === 'finished', 10_000);
    const triggered = await shapingOf(queue, first);
    expect(triggered).toMatchObject([
      {
        cause: 'triggered',
        rule: 'blocked',
        action: 'suspend',
        destination: 'blocked.test',
        code: 554,
        enhanced: '5.7.1',
      },
    ]);
    expect(deliverer.backoffs()).toMatchObject([
      { rule: 'blocked', action: 'suspend', destination: 'blocked.test' },
    ]);
    blocked = false;
    const sentAt = Date.now();
    const second = await send('b@blocked.test');
    await waitFor(() => server.messages.some((m) => m.rcptTo.includes('b@blocked.test')), 10_000);
    // It waited out the suspension (1.5 s from the block) without an attempt before it.
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(1000);
    await waitFor(async () => (await queue.details(second))?.state === 'finished', 10_000);
    expect(await attemptsOf(queue, second)).toBe(1);
    expect((await shapingOf(queue, second))[0]).toMatchObject({
      cause: 'waiting',
      rule: 'blocked',
      action: 'suspend',
    });
    expect(deliverer.backoffs()).toEqual([]);
  });

  it('lowers the rate after "421 4.7.28 rate limited" (the shipped Gmail rule) and retries the refused message', async () => {
    let refuse = 1;
    const server = await sink({
      rcptReply: () =>
        refuse-- > 0
          ? {
              code: 421,
              message: '4.7.28 Our system has detected an unusual rate of unsolicited mail; rate limited',
            }
          : undefined,
    });
    const { queue, deliverer, send } = await setUp(server.port, {});
    const first = await send('a@limited.test');
    await waitFor(async () => (await attemptsOf(queue, first)) === 1, 10_000);
    // A real deferral: the message is on the retry schedule, its reply recorded.
    const details = await queue.details(first);
    expect(details?.jobs[0]?.attempts).toBe(1);
    expect((await shapingOf(queue, first))[0]).toMatchObject({
      cause: 'triggered',
      rule: 'gmail-rate-limited',
      action: 'rate',
      detail: '1 per 1000 ms',
    });
    expect(deliverer.backoffs()[0]).toMatchObject({ action: 'rate', destination: 'limited.test' });
    // Three more go out at one a second, each waiting for the lowered rate without an attempt.
    const started = Date.now();
    const ids = [await send('b@limited.test'), await send('c@limited.test'), await send('d@limited.test')];
    await waitFor(() => server.messages.length >= 3, 15_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    for (const id of ids) {
      await waitFor(async () => (await queue.details(id))?.state === 'finished', 10_000);
      expect(await attemptsOf(queue, id)).toBe(1);
    }
    const waited = (await Promise.all(ids.map((id) => shapingOf(queue, id)))).flat();
    expect(waited.some((e) => e.cause === 'waiting' && e.rule === 'gmail-rate-limited')).toBe(true);
  });

  it('lowers concurrency after "421 4.7.0 Too many connections" at the greeting', async () => {
    const port = await freePort();
    const server = await sink();
    // mx1 refuses at the greeting; mx2 (a slow relay to the sink) counts connections in use.
    const busy: Server = createServer((socket) =>
      socket.end('421 4.7.0 Too many connections from your IP\r\n'),
    );
    await new Promise<void>((resolve) => busy.listen(port, '127.0.0.2', resolve));
    cleanups.push(() => new Promise<void>((resolve) => busy.close(() => resolve())));
    const tap = await startWireTap({
      upstreamPort: server.port,
      host: '127.0.0.3',
      port,
      greetingDelayMs: 150,
    });
    cleanups.push(() => tap.stop());
    const { queue, deliverer, send } = await setUp(port, { pool: { maxMessagesPerConnection: 1 } });
    const first = await send('a@busy.test');
    await waitFor(() => server.messages.length >= 1, 10_000);
    await waitFor(async () => (await queue.details(first))?.state === 'finished', 10_000);
    expect((await shapingOf(queue, first))[0]).toMatchObject({
      cause: 'triggered',
      rule: 'too-many-connections',
      action: 'connections',
      code: 421,
      enhanced: '4.7.0',
    });
    expect(deliverer.backoffs()[0]).toMatchObject({ action: 'connections', detail: '2 connections' });
    await Promise.all(Array.from({ length: 8 }, (_, i) => send(`r${i}@busy.test`)));
    await waitFor(() => server.messages.length >= 9, 20_000);
    expect(tap.maxInUse).toBeLessThanOrEqual(2);
  });

  it('opens the circuit after consecutive connection failures: later messages wait, not retry', async () => {
    const closed = await freePort();
    const { queue, deliverer, send } = await setUp(closed, {
      shaping: { defaultRules: false, circuitBreaker: { failures: 2, suspendMs: 60_000 } },
    });
    const a = await send('a@down.test');
    await waitFor(async () => (await attemptsOf(queue, a)) === 1, 10_000);
    const b = await send('b@down.test');
    await waitFor(async () => (await attemptsOf(queue, b)) === 1, 10_000);
    expect((await shapingOf(queue, b))[0]).toMatchObject({
      cause: 'triggered',
      rule: 'circuit-breaker',
      action: 'circuit',
    });
    expect(deliverer.backoffs()).toMatchObject([
      { action: 'circuit', destination: 'down.test', source: '*' },
    ]);
    const c = await send('c@down.test');
    await waitFor(async () => (await shapingOf(queue, c)).length > 0, 10_000);
    expect((await shapingOf(queue, c))[0]).toMatchObject({ cause: 'waiting', action: 'circuit' });
    // Waiting for the circuit is not an attempt: c keeps its first attempt for when it closes.
    const details = await queue.details(c);
    expect(details?.jobs[0]?.attempts).toBe(0);
    expect(await attemptsOf(queue, c)).toBe(0);
  });
});

describe('rule validation', () => {
  it('names the field and the fix for a bad rule', () => {
    const bad =
      (rule: Partial<BackoffRule>): (() => void) =>
      () =>
        createDeliverer({ hostname: 'out.tern.test', shaping: { rules: [rule as BackoffRule] } });
    expect(bad({ name: 'x', match: {}, action: { kind: 'suspend' }, durationMs: 1 })).toThrow(
      'delivery.shaping.rules[0].match: give at least one of codes, enhanced or text',
    );
    expect(bad({ name: 'x', match: { text: '(' }, action: { kind: 'suspend' }, durationMs: 1 })).toThrow(
      /delivery\.shaping\.rules\[0\]\.match\.text: not a regular expression/,
    );
    expect(
      bad({ name: 'x', match: { codes: [421] }, action: { kind: 'rate' } as never, durationMs: 1000 }),
    ).toThrow('delivery.shaping.rules[0].action.messageRate: expected { limit, per }');
  });
});
