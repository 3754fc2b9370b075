// The cluster-wide limiter against a real, private redis-server: exact limits, recovery, several
// limiter instances (separate connections) sharing one count, one script call per decision, leases.
import { setTimeout as sleep } from 'node:timers/promises';
import { startRedis, type TestRedis } from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { RATE_SCRIPT } from '../src/redis-scripts.js';
import { RedisStore } from '../src/redis-store.js';
import { adminConnection, closeAll, commandCalls, redisLimiter, toClose, uniquePrefix } from './helpers.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterEach(closeAll);
afterAll(async () => {
  await redis?.stop();
});

describe('rates in Redis', () => {
  test('N pass, N+1 is refused, one more passes after retryAfterMs, the burst is back after the window', async () => {
    const limiter = redisLimiter(redis.url, { prefix: uniquePrefix() });
    const rate = { limit: 3, per: '1s' };
    const started = Date.now();
    for (const remaining of [2, 1, 0]) {
      expect(await limiter.check('k', rate)).toEqual({
        allowed: true,
        retryAfterMs: 0,
        remaining,
        degraded: false,
      });
    }
    const refused = await limiter.check('k', rate);
    expect(refused).toMatchObject({ allowed: false, remaining: 0, degraded: false });
    // GCRA: one unit drains every 1000/3 ms, so the wait is at most 334 ms, less what already passed.
    expect(refused.retryAfterMs).toBeLessThanOrEqual(334);
    expect(refused.retryAfterMs).toBeGreaterThanOrEqual(334 - (Date.now() - started) - 1);

    await sleep(refused.retryAfterMs);
    expect((await limiter.check('k', rate)).allowed).toBe(true);
    expect((await limiter.check('k', rate)).allowed).toBe(false);

    await sleep(1000);
    for (let i = 0; i < 3; i++) expect((await limiter.check('k', rate)).allowed).toBe(true);
    expect((await limiter.check('k', rate)).allowed).toBe(false);
  });

  test('two limiter instances with their own connections enforce one limit', async () => {
    const prefix = uniquePrefix();
    const a = redisLimiter(redis.url, { prefix });
    const b = redisLimiter(redis.url, { prefix });
    const rate = { limit: 5, per: '1h' };
    const taken = [];
    for (let i = 0; i < 5; i++) taken.push(await (i % 2 === 0 ? a : b).check('shared', rate));
    expect(taken.map((r) => r.allowed)).toEqual([true, true, true, true, true]);
    expect(taken.map((r) => r.remaining)).toEqual([4, 3, 2, 1, 0]);
    expect((await a.check('shared', rate)).allowed).toBe(false);
    expect((await b.check('shared', rate)).allowed).toBe(false);
  });

  test('a burst of concurrent checks from two instances lets exactly the limit through', async () => {
    const prefix = uniquePrefix();
    const a = redisLimiter(redis.url, { prefix });
    const b = redisLimiter(redis.url, { prefix });
    const rate = { limit: 10, per: '1h' };
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).check('burst', rate)),
    );
    expect(results.filter((r) => r.allowed)).toHaveLength(10);
    expect(results.every((r) => !r.degraded)).toBe(true);
  });

  test('costs, peeks and all-or-nothing batches behave as in memory', async () => {
    const limiter = redisLimiter(redis.url, { prefix: uniquePrefix() });
    const bytes = { limit: 1000, per: '1h' };
    expect(await limiter.check('b', bytes, 600)).toMatchObject({ allowed: true, remaining: 400 });
    expect(await limiter.check('b', bytes, 1001)).toMatchObject({
      allowed: false,
      retryAfterMs: Number.POSITIVE_INFINITY,
    });
    expect(await limiter.peek('b', bytes, 400)).toMatchObject({ allowed: true, remaining: 0 });
    expect(await limiter.peek('b', bytes, 400)).toMatchObject({ allowed: true, remaining: 0 });
    const batch = await limiter.checkAll([
      { key: 'other', rate: bytes, cost: 10 },
      { key: 'b', rate: bytes, cost: 401 },
    ]);
    expect(batch.map((r) => r.allowed)).toEqual([true, false]);
    expect((await limiter.peek('other', bytes, 1)).remaining).toBe(999);
  });

  test('one EVALSHA per decision, a bucket key with a TTL of one drain, and EVAL after SCRIPT FLUSH', async () => {
    const prefix = uniquePrefix();
    const limiter = redisLimiter(redis.url, { prefix });
    const admin = adminConnection(redis.url);
    await limiter.check('warm', { limit: 1, per: '1s' });
    await admin.config('RESETSTAT');
    await limiter.checkAll([
      { key: 'x', rate: { limit: 10, per: '10s' } },
      { key: 'y', rate: { limit: 10, per: '1m' } },
      { key: 'z', rate: { limit: 10, per: '1h' } },
    ]);
    await limiter.check('w', { limit: 10, per: '10s' }, 2);
    expect(await commandCalls(admin, 'evalsha')).toBe(2);
    expect(await commandCalls(admin, 'eval')).toBe(0);

    // Two units of a 10-per-10s bucket drain in 2 s.
    const key = `${prefix}rate:10000:w`;
    expect(await admin.hgetall(key)).toMatchObject({ l: '20000' });
    const ttl = await admin.pttl(key);
    expect(ttl).toBeGreaterThan(1500);
    expect(ttl).toBeLessThanOrEqual(2001);

    await admin.script('FLUSH');
    expect(await admin.script('EXISTS', RATE_SCRIPT.sha)).toEqual([0]);
    expect(await limiter.check('x', { limit: 10, per: '10s' })).toMatchObject({
      allowed: true,
      degraded: false,
    });
    expect(await admin.script('EXISTS', RATE_SCRIPT.sha)).toEqual([1]);
    expect(await commandCalls(admin, 'eval')).toBe(1);
  });
});

describe('leases in Redis', () => {
  test('a concurrency limit shared by two instances; release frees the slot', async () => {
    const prefix = uniquePrefix();
    const a = redisLimiter(redis.url, { prefix });
    const b = redisLimiter(redis.url, { prefix });
    const first = await a.acquire('conn', 2);
    const second = await b.acquire('conn', 2);
    expect(first).toMatchObject({ acquired: true, active: 1 });
    expect(second).toMatchObject({ acquired: true, active: 2 });
    expect(await a.acquire('conn', 2)).toMatchObject({ acquired: false, active: 2, degraded: false });
    if (!second.acquired) throw new Error('unreachable');
    await second.release();
    expect(await a.acquire('conn', 2)).toMatchObject({ acquired: true, active: 2 });
  });

  test('acquireAll takes every slot or none', async () => {
    const limiter = redisLimiter(redis.url, { prefix: uniquePrefix() });
    await limiter.acquire('full', 1);
    expect(
      await limiter.acquireAll([
        { key: 'free', limit: 5 },
        { key: 'full', limit: 1 },
      ]),
    ).toMatchObject({ acquired: false, active: [0, 1] });
    expect(await limiter.acquire('free', 5)).toMatchObject({ acquired: true, active: 1 });
  });

  test('a live holder keeps its lease past the TTL by renewing it', async () => {
    const prefix = uniquePrefix();
    const holder = redisLimiter(redis.url, { prefix, leaseTtlMs: 600 });
    const other = redisLimiter(redis.url, { prefix, leaseTtlMs: 600 });
    const lease = await holder.acquire('long', 1);
    expect(lease.acquired).toBe(true);
    await sleep(1500);
    expect(await other.acquire('long', 1)).toMatchObject({ acquired: false, active: 1 });
    if (!lease.acquired) throw new Error('unreachable');
    await lease.release();
    expect((await other.acquire('long', 1)).acquired).toBe(true);
  });

  test('a lease nobody renews is gone after its TTL (a node that stopped talking to Redis)', async () => {
    const prefix = uniquePrefix();
    // The bare store takes a lease as a limiter would, but nothing renews it: a node that died.
    const deadNode = new RedisStore(redis.url, { connectWaitMs: 2000 });
    toClose.push(deadNode);
    const taken = Date.now();
    expect(
      await deadNode.acquire([{ key: `${prefix}lease:gone`, limit: 1 }], 'dead-node-lease', 1000),
    ).toEqual({
      acquired: true,
      active: [1],
    });
    const other = redisLimiter(redis.url, { prefix });
    expect(await other.acquire('gone', 1)).toMatchObject({ acquired: false, active: 1 });
    await sleep(Math.max(0, taken + 1000 - Date.now()) + 20);
    expect(await other.acquire('gone', 1)).toMatchObject({ acquired: true, active: 1 });
  });
});
