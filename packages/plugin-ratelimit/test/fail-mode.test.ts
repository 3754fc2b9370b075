// Redis killed mid-test under the plugin: fail-closed answers 451 4.3.0 / 421 4.3.0, the outage is
// logged once, its end once. (The limiter's own fail modes are tested in @tern/limiter.)
import type { LogRecord } from '@tern/plugin-api/testing';
import { testPlugins } from '@tern/plugin-api/testing';
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
