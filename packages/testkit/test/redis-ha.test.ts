import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  startRedisCluster,
  startRedisSentinel,
  type TestRedisCluster,
  type TestRedisSentinel,
} from '../src/index.js';

describe('startRedisSentinel', () => {
  let set: TestRedisSentinel | undefined;
  afterAll(async () => set?.stop());

  it('replicates, and after kill -9 of the primary the Sentinels promote the replica', async () => {
    set = await startRedisSentinel();
    const before = await set.primary();
    const client = new Redis({ sentinels: set.sentinels, name: set.name, lazyConnect: true });
    client.on('error', () => {});
    await client.connect();
    await client.set('k', 'v');
    expect(await client.wait(1, 2000)).toBe(1);
    const { from, to, ms } = await set.failover();
    expect(from).toBe(before);
    expect(to).not.toBe(before);
    expect(ms).toBeLessThan(15_000);
    const after = new Redis(to.url);
    expect(await after.get('k')).toBe('v');
    expect(await after.call('ROLE')).toContain('master');
    after.disconnect();
    client.disconnect();
  }, 60_000);
});

describe('startRedisCluster', () => {
  let cluster: TestRedisCluster | undefined;
  afterAll(async () => cluster?.stop());

  it('starts three primaries that share every slot', async () => {
    cluster = await startRedisCluster();
    const client = new Redis.Cluster(cluster.nodes);
    client.on('error', () => {});
    for (let i = 0; i < 30; i++) await client.set(`key-${i}`, String(i));
    expect(await client.get('key-7')).toBe('7');
    expect(client.nodes('master')).toHaveLength(3);
    const slots = (await client.cluster('SLOTS')) as unknown[];
    expect(slots).toHaveLength(3);
    await client.quit();
  }, 60_000);
});
