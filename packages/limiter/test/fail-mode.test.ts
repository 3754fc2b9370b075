// Redis killed mid-test: fail-open allows, fail-closed refuses; either way the outage is logged
// once, its end once, and limits hold again afterwards. (What the SMTP plugin answers while failing
// closed is tested in @tern/plugin-ratelimit.)
import type { LogRecord } from '@tern/plugin-api/testing';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { closeAll, redisLimiter, uniquePrefix } from './helpers.js';

let redis: TestRedis;
beforeEach(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  await closeAll();
  await redis?.stop();
});

const outageLines = (records: LogRecord[]): LogRecord[] =>
  records.filter((r) => r.message?.includes('store unreachable'));
const recoveryLines = (records: LogRecord[]): LogRecord[] =>
  records.filter((r) => r.message?.includes('reachable again'));

test('fail-open: allowed while Redis is down, logged once, enforced again after it is back', async () => {
  const records: LogRecord[] = [];
  const limiter = redisLimiter(redis.url, {
    failMode: 'open',
    records,
    prefix: uniquePrefix(),
    timeoutMs: 500,
  });
  const rate = { limit: 2, per: '1h' };
  expect((await limiter.check('k', rate)).degraded).toBe(false);
  expect((await limiter.check('k', rate)).allowed).toBe(true);
  expect((await limiter.check('k', rate)).allowed).toBe(false);

  await redis.kill();
  const during = [];
  for (let i = 0; i < 20; i++) during.push(await limiter.check('k', rate));
  expect(during.every((r) => r.allowed && r.degraded)).toBe(true);
  expect((await limiter.acquire('c', 1)).acquired).toBe(true);
  expect(limiter.unavailable).toBe(true);
  expect(outageLines(records)).toHaveLength(1);
  expect(outageLines(records)[0]).toMatchObject({ level: 'error', fields: { failMode: 'open' } });
  expect(recoveryLines(records)).toHaveLength(0);

  // Data is gone with the crash (no AOF): the counter starts again, and is enforced.
  await redis.restart();
  await waitFor(async () => !(await limiter.check('k', rate)).degraded, 10_000, 100);
  expect(limiter.unavailable).toBe(false);
  expect((await limiter.check('k', rate)).allowed).toBe(true);
  expect(await limiter.check('k', rate)).toMatchObject({ allowed: false, degraded: false });
  expect(outageLines(records)).toHaveLength(1);
  expect(recoveryLines(records)).toHaveLength(1);
  expect(recoveryLines(records)[0]?.fields.failedCalls).toBeGreaterThanOrEqual(21);
});

test('a limiter started while Redis is down fails in its mode at once, and recovers when Redis comes up', async () => {
  await redis.kill();
  const records: LogRecord[] = [];
  const limiter = redisLimiter(redis.url, {
    failMode: 'closed',
    records,
    prefix: uniquePrefix(),
    timeoutMs: 300,
  });
  const started = Date.now();
  expect(await limiter.check('k', { limit: 1, per: '1m' })).toMatchObject({ allowed: false, degraded: true });
  // Only the first call waits for the first connection; later ones do not stall.
  expect(await limiter.check('k', { limit: 1, per: '1m' })).toMatchObject({ allowed: false, degraded: true });
  expect(Date.now() - started).toBeLessThan(1000);
  await redis.restart();
  await waitFor(async () => !(await limiter.check('k', { limit: 1, per: '1m' })).degraded, 10_000, 100);
  expect(outageLines(records)).toHaveLength(1);
  expect(recoveryLines(records)).toHaveLength(1);
});
