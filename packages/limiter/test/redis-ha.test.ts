// The limiter on a Redis Cluster (multi-key scripts stay in one slot through the prefix's hash
// tag) and on a Sentinel-managed primary (it follows a failover by itself).
import { memoryLogger } from '@tern/plugin-api/testing';
import { startRedisCluster, startRedisSentinel, waitFor } from '@tern/testkit';
import { afterEach, describe, expect, test } from 'vitest';
import { createLimiter } from '../src/index.js';
import { closeAll, toClose } from './helpers.js';

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  await closeAll();
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

describe('the limiter on Redis Cluster and Sentinel', () => {
  test('on a Cluster, decisions over keys of many names are one script in one slot', async () => {
    const cluster = await startRedisCluster();
    stops.push(cluster.stop);
    const limiter = createLimiter({
      redis: { cluster: cluster.nodes },
      failMode: 'closed',
      logger: memoryLogger(),
    });
    toClose.push(limiter);
    const rate = { limit: 2, per: '1m' } as const;
    const keys = ['alpha', 'beta', 'gamma', 'delta'];
    for (let i = 0; i < 2; i++) {
      const results = await limiter.checkAll(keys.map((key) => ({ key, rate })));
      expect(results.every((r) => r.allowed && !r.degraded)).toBe(true);
    }
    expect((await limiter.checkAll(keys.map((key) => ({ key, rate })))).map((r) => r.allowed)).toEqual(
      keys.map(() => false),
    );
    const lease = await limiter.acquireAll(keys.map((key) => ({ key, limit: 1 })));
    expect(lease.acquired).toBe(true);
  }, 60_000);

  test('on Sentinel, counts go on through a failover to the new primary', async () => {
    const set = await startRedisSentinel();
    stops.push(set.stop);
    const limiter = createLimiter({
      redis: { sentinels: set.sentinels, name: set.name },
      failMode: 'closed',
      logger: memoryLogger(),
    });
    toClose.push(limiter);
    const rate = { limit: 1000, per: '1h' } as const;
    expect((await limiter.check('k', rate)).allowed).toBe(true);
    await set.failover();
    await waitFor(async () => {
      const result = await limiter.check('k', rate);
      return result.allowed && !result.degraded;
    }, 30_000);
  }, 90_000);
});
