// Per-destination limits: in-process and shared through a private redis-server by several deliverers,
// counted by @tern/limiter (the same limiter the inbound rate-limit plugin uses).
import { createLimiter, type Limiter, type LimiterOptions } from '@tern/limiter';
import { silentLogger } from '@tern/plugin-api';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import {
  type SmtpSink,
  startDnsServer,
  startRedis,
  startSmtpSink,
  type TestDns,
  type TestRedis,
} from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions, type Throttle } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

let redis: TestRedis;
let dns: TestDns;
let sink: SmtpSink;
let tap: WireTap;
const clients: Redis[] = [];
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  [redis, sink] = await Promise.all([startRedis(), startSmtpSink()]);
  // A slow server (greeting held 150 ms), so deliveries that are allowed to overlap do overlap.
  tap = await startWireTap({
    upstreamPort: sink.port,
    host: '127.0.0.2',
    port: sink.port,
    greetingDelayMs: 150,
  });
  dns = await startDnsServer({
    'limited.test': { MX: [{ exchange: 'mx.shared.test', priority: 10 }] },
    'other.test': { MX: [{ exchange: 'mx.shared.test', priority: 10 }] },
    'mx.shared.test': { A: ['127.0.0.2'] },
  });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit().catch(() => {})));
  await Promise.all([tap.stop(), sink.stop(), dns.stop(), redis.stop()]);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function client(url = redis.url): Redis {
  const c = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  clients.push(c);
  return c;
}

/** A fresh slow relay on `address` that mx.shared.test points to for this test (its counts start at 0). */
async function slowMxAt(address: string): Promise<WireTap> {
  const relay = await startWireTap({
    upstreamPort: sink.port,
    host: address,
    port: sink.port,
    greetingDelayMs: 150,
  });
  cleanups.push(() => relay.stop());
  dns.set('mx.shared.test', { A: [address] });
  cleanups.push(async () => dns.set('mx.shared.test', { A: ['127.0.0.2'] }));
  return relay;
}

/** A limiter as the deliverer makes its own (fail open), on `redis` or in process. */
function limiterOn(redisClient: Redis | undefined, extra: Partial<LimiterOptions> = {}): Limiter {
  const l = createLimiter({ redis: redisClient, failMode: 'open', logger: silentLogger, ...extra });
  cleanups.push(() => l.close());
  return l;
}

function make(extra: Partial<DelivererOptions>): Deliverer {
  const d = createDeliverer({
    hostname: 'out.tern.test',
    port: sink.port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    // One message per connection, so a connection in use is a delivery in flight.
    pool: { maxMessagesPerConnection: 1 },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    ...extra,
  });
  cleanups.push(() => d.close());
  return d;
}

describe('per-destination concurrency', () => {
  it('holds two deliverers on one Redis to one connection at a time for the domain', async () => {
    const tapPerTest = await slowMxAt('127.0.0.3');
    const limits = { domains: { 'limited.test': { maxConnections: 1 } }, waitMs: 10_000 };
    const a = make({ redis: client(), limits });
    const b = make({ redis: client(), limits });
    const jobs = [a, b, a, b, a, b].map((d, i) =>
      d.deliver(makeJob([`r${i}@limited.test`]), storedMessage(SIMPLE_MESSAGE)),
    );
    const reports = await Promise.all(jobs);
    expect(reports.map((r) => r.recipients[0]?.result)).toEqual(Array(6).fill('delivered'));
    expect(tapPerTest.connections).toBe(6);
    expect(tapPerTest.maxInUse).toBe(1);
  });

  it('lets them overlap without the shared Redis (the measurement sees overlap)', async () => {
    const tapPerTest = await slowMxAt('127.0.0.4');
    const limits = { domains: { 'limited.test': { maxConnections: 1 } }, waitMs: 10_000 };
    const a = make({ limits });
    const b = make({ limits });
    const reports = await Promise.all(
      [a, b, a, b].map((d, i) => d.deliver(makeJob([`r${i}@limited.test`]), storedMessage(SIMPLE_MESSAGE))),
    );
    expect(reports.map((r) => r.recipients[0]?.result)).toEqual(Array(4).fill('delivered'));
    expect(tapPerTest.maxInUse).toBe(2);
  });

  it('limits by MX host name across domains (a leading dot matches a suffix)', async () => {
    const tapPerTest = await slowMxAt('127.0.0.5');
    const d = make({ limits: { hosts: { '.shared.test': { maxConnections: 1 } }, waitMs: 10_000 } });
    const reports = await Promise.all([
      d.deliver(makeJob(['a@limited.test']), storedMessage(SIMPLE_MESSAGE)),
      d.deliver(makeJob(['b@other.test']), storedMessage(SIMPLE_MESSAGE)),
      d.deliver(makeJob(['c@other.test']), storedMessage(SIMPLE_MESSAGE)),
    ]);
    expect(reports.map((r) => r.recipients[0]?.result)).toEqual(['delivered', 'delivered', 'delivered']);
    expect(tapPerTest.maxInUse).toBe(1);
  });

  it('defers with 4.7.0 when no slot frees up within waitMs', async () => {
    const before = tap.connections;
    const limits = { default: { maxConnections: 1 }, waitMs: 50 };
    const d = make({ redis: client(), limits });
    const [first, second] = await Promise.all([
      d.deliver(makeJob(['a@limited.test']), storedMessage(SIMPLE_MESSAGE)),
      d.deliver(makeJob(['b@limited.test']), storedMessage(SIMPLE_MESSAGE)),
    ]);
    const results = [first?.recipients[0], second?.recipients[0]];
    expect(results.filter((r) => r?.result === 'delivered')).toHaveLength(1);
    expect(results.find((r) => r?.result === 'deferred')).toMatchObject({
      reply: { code: 451, enhanced: '4.7.0' },
    });
    expect(tap.connections - before).toBe(1);
  });
});

describe('per-destination rate', () => {
  it('spaces messages to a domain by messageRate', async () => {
    const d = make({
      limits: { domains: { 'limited.test': { messageRate: { limit: 1, per: 300 } } }, waitMs: 5000 },
    });
    const started = Date.now();
    const reports = await Promise.all(
      [0, 1, 2].map((i) => d.deliver(makeJob([`r${i}@limited.test`]), storedMessage(SIMPLE_MESSAGE))),
    );
    expect(reports.map((r) => r.recipients[0]?.result)).toEqual(['delivered', 'delivered', 'delivered']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
  });

  it('defers with 4.7.0 when the rate would make the job wait past waitMs', async () => {
    const d = make({
      limits: { domains: { 'limited.test': { messageRate: { limit: 1, per: 60_000 } } }, waitMs: 100 },
    });
    const first = await d.deliver(makeJob(['a@limited.test']), storedMessage(SIMPLE_MESSAGE));
    const second = await d.deliver(makeJob(['b@limited.test']), storedMessage(SIMPLE_MESSAGE));
    expect(first.recipients[0]?.result).toBe('delivered');
    expect(second.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.0' } });
  });
});

describe('a Redis outage', () => {
  it('lets mail out unthrottled (the default limiter fails open) and logs the outage once', async () => {
    const ownRedis = await startRedis();
    cleanups.push(() => ownRedis.stop());
    const records: LogRecord[] = [];
    const limits = {
      domains: { 'limited.test': { maxConnections: 1, messageRate: { limit: 1, per: 60_000 } } },
      waitMs: 100,
    };
    const ownClient = client(ownRedis.url);
    // Its reconnect failures after the kill are expected; the limiter reports the outage itself.
    ownClient.on('error', () => {});
    // Once Redis is gone this client only reconnects in vain: drop it before the server's cleanup.
    cleanups.push(async () => ownClient.disconnect());
    const d = make({ redis: ownClient, limits, logger: memoryLogger(records) });
    const first = await d.deliver(makeJob(['a@limited.test']), storedMessage(SIMPLE_MESSAGE));
    const held = await d.deliver(makeJob(['b@limited.test']), storedMessage(SIMPLE_MESSAGE));
    expect(first.recipients[0]?.result).toBe('delivered');
    expect(held.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.0' } });

    await ownRedis.kill();
    const during = await Promise.all(
      ['c', 'd', 'e'].map((r) => d.deliver(makeJob([`${r}@limited.test`]), storedMessage(SIMPLE_MESSAGE))),
    );
    expect(during.map((r) => r.recipients[0]?.result)).toEqual(['delivered', 'delivered', 'delivered']);
    const outage = records.filter((r) => r.message?.includes('store unreachable'));
    expect(outage).toHaveLength(1);
    expect(outage[0]).toMatchObject({ level: 'error', fields: { failMode: 'open', component: 'throttle' } });
  });
});

describe('the limiter as a Throttle', () => {
  it('shares one GCRA rate between nodes', async () => {
    const prefix = `t${Date.now()}:`;
    const a = limiterOn(client(), { prefix });
    const b = limiterOn(client(), { prefix });
    const rate = { limit: 2, per: 1000 };
    expect((await a.take('msg:x', rate)).allowed).toBe(true);
    expect((await b.take('msg:x', rate)).allowed).toBe(true);
    const third = await a.take('msg:x', rate);
    expect(third).toMatchObject({ allowed: false, degraded: false });
    expect(third.retryAfterMs).toBeGreaterThan(0);
    expect(third.retryAfterMs).toBeLessThanOrEqual(500);
    expect((await b.take('msg:other', rate)).allowed).toBe(true);
  });

  it('gives a dead node’s slot back after the lease TTL, and keeps a live one by renewing it', async () => {
    const prefix = `l${Date.now()}:`;
    const doomedClient = client();
    const doomed = limiterOn(doomedClient, { prefix, leaseTtlMs: 300 });
    const live = limiterOn(client(), { prefix, leaseTtlMs: 300 });
    const other = limiterOn(client(), { prefix, leaseTtlMs: 300 });

    const held = await live.acquire('conn:live', 1);
    expect(held).toMatchObject({ acquired: true, degraded: false });
    expect(await doomed.acquire('conn:dead', 1)).toMatchObject({ acquired: true, degraded: false });
    // The node dies: its connection goes, so nothing renews or releases its lease.
    doomedClient.disconnect();
    expect(await other.acquire('conn:dead', 1)).toMatchObject({ acquired: false, degraded: false });

    await new Promise((resolve) => setTimeout(resolve, 700));
    const taken = await other.acquire('conn:dead', 1);
    expect(taken).toMatchObject({ acquired: true, degraded: false });
    // The live lease was renewed all along: still held.
    expect(await other.acquire('conn:live', 1)).toMatchObject({ acquired: false, degraded: false });
    if (held.acquired) await held.release();
    expect(await other.acquire('conn:live', 1)).toMatchObject({ acquired: true, degraded: false });
  });

  it('counts slots in process and releases each only once', async () => {
    const t: Throttle = limiterOn(undefined);
    const first = await t.acquire('k', 1);
    expect((await t.acquire('k', 1)).acquired).toBe(false);
    if (!first.acquired) throw new Error('expected a slot');
    await first.release();
    await first.release();
    const second = await t.acquire('k', 2);
    const third = await t.acquire('k', 2);
    expect([second.acquired, third.acquired]).toEqual([true, true]);
    expect((await t.acquire('k', 2)).acquired).toBe(false);
  });
});

describe('limits are checked at start-up', () => {
  it('refuses a limit the limiter cannot count, naming the field', () => {
    expect(() =>
      createDeliverer({
        hostname: 'out.tern.test',
        limits: { domains: { 'a.test': { messageRate: { limit: 10, per: 0.5 } } } },
      }),
    ).toThrow(/delivery\.limits\.domains\["a\.test"\]\.messageRate/);
    expect(() =>
      createDeliverer({ hostname: 'out.tern.test', limits: { default: { maxConnections: 0 } } }),
    ).toThrow(/delivery\.limits\.default\.maxConnections/);
  });
});
