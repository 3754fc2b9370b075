// checkRedisSafety against a real redis-server whose settings the test changes at run time.
import { startRedis, type TestRedis } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRedisSafety } from '../src/redis/index.js';

let redis: TestRedis;
let admin: Redis;

beforeAll(async () => {
  redis = await startRedis({ appendonly: true, appendfsync: 'everysec', maxmemoryPolicy: 'noeviction' });
  admin = new Redis(redis.url);
});

afterAll(async () => {
  admin.disconnect();
  await redis?.stop();
});

async function withConfig(settings: Record<string, string>, check: () => Promise<void>): Promise<void> {
  const before: Record<string, string> = {};
  for (const name of Object.keys(settings)) {
    const [, value] = (await admin.config('GET', name)) as [string, string];
    before[name] = value;
  }
  try {
    for (const [name, value] of Object.entries(settings)) await admin.config('SET', name, value);
    await check();
  } finally {
    for (const [name, value] of Object.entries(before)) await admin.config('SET', name, value);
  }
}

describe('checkRedisSafety', () => {
  it('has nothing to say about AOF everysec with noeviction', async () => {
    expect(await checkRedisSafety(admin)).toEqual([]);
  });

  it('warns that an evicting policy may drop queued mail', async () => {
    await withConfig({ 'maxmemory-policy': 'allkeys-lru' }, async () => {
      expect(await checkRedisSafety(admin)).toEqual([
        'maxmemory-policy is allkeys-lru: Redis may evict queued mail; set noeviction',
      ]);
    });
  });

  it('warns when there is no AOF, and when the kernel decides when to fsync', async () => {
    await withConfig({ appendonly: 'no', save: '' }, async () => {
      const warnings = await checkRedisSafety(admin);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/^appendonly is no: .*no snapshots.*set appendonly yes/);
    });
    await withConfig({ appendfsync: 'no' }, async () => {
      expect(await checkRedisSafety(admin)).toEqual([
        expect.stringMatching(/^appendfsync is no: .*everysec/),
      ]);
    });
  });

  it('does not fail when CONFIG is denied, and says what to check by hand', async () => {
    await admin.call('ACL', 'SETUSER', 'mta', 'on', '>secret', '~*', '&*', '+@all', '-config');
    const limited = new Redis({ host: redis.host, port: redis.port, username: 'mta', password: 'secret' });
    try {
      const warnings = await checkRedisSafety(limited);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/could not read the Redis settings .*NOPERM.*noeviction/);
    } finally {
      limited.disconnect();
    }
  });
});
