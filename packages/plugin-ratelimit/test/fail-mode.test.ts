// Redis killed mid-test: fail-open allows, fail-closed refuses (451 4.3.0 / 421 4.3.0); either way
// the outage is logged once, its end once, and limits hold again afterwards.
import type { LogRecord } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { rateLimit } from '../src/index.js';
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

test('fail-closed through the plugin: 421 4.3.0 at connect, 451 4.3.0 at MAIL FROM, logged once', async () => {
  const records: LogRecord[] = [];
  const limiter = redisLimiter(redis.url, {
    failMode: 'closed',
    records,
    prefix: uniquePrefix(),
    timeoutMs: 500,
  });
  const plugin = rateLimit({
    limiter,
    rules: [
      { key: 'ip', count: 'connections', limit: 10 },
      { key: 'ip', count: 'messages', limit: 100, per: '1h' },
    ],
  });
  const before = testPlugins(plugin);
  expect((await before.connect()).kind).toBe('continue');
  expect((await before.mailFrom('a@example.test')).kind).toBe('continue');

  await redis.kill();
  // The session that was open keeps going, but its next command is refused.
  expect(await before.mailFrom('a@example.test')).toEqual({
    kind: 'tempfail',
    reply: { code: 451, enhanced: '4.3.0', text: 'Temporary local problem, please try again later' },
  });
  await before.close();
  for (let i = 0; i < 5; i++) {
    const session = testPlugins(plugin);
    expect(await session.connect()).toMatchObject({
      kind: 'disconnect',
      reply: { code: 421, enhanced: '4.3.0' },
    });
    await session.close();
  }
  expect(outageLines(records)).toHaveLength(1);
  expect(outageLines(records)[0]).toMatchObject({ level: 'error', fields: { failMode: 'closed' } });

  await redis.restart();
  await waitFor(async () => (await testPlugins(plugin).connect()).kind === 'continue', 10_000, 100);
  expect(recoveryLines(records)).toHaveLength(1);
  expect(outageLines(records)).toHaveLength(1);
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
