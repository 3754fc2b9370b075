// Idempotency keys on both backends: one request claims a key, its retries get its queue id, a
// different request under the same key is told so, and a claim that is never completed lapses.
// On Redis, two nodes racing for one key: exactly one wins.

import { waitFor } from '@tern/testkit';
import { describe, expect, it } from 'vitest';
import type { IdempotencyStore } from '../src/idempotency.js';
import { storeFixtures } from './store-fixtures.js';

const { embedded, onRedis } = storeFixtures();

describe.each([
  [
    'embedded',
    async (): Promise<[IdempotencyStore, IdempotencyStore]> => {
      const q = embedded();
      return [q.idempotency, q.idempotency];
    },
  ],
  [
    'redis, two nodes',
    async (): Promise<[IdempotencyStore, IdempotencyStore]> => {
      const a = await onRedis();
      return [a.idempotency, (await onRedis(a.prefix)).idempotency];
    },
  ],
])('idempotency keys: %s', (_name, open) => {
  it('the first request claims the key; a retry gets its queue id, another request a mismatch', async () => {
    const [a, b] = await open();
    expect(await a.claim('key1', 'fp1', 60_000)).toEqual({ state: 'new' });
    expect(await b.claim('key1', 'fp1', 60_000)).toEqual({ state: 'pending' });
    await a.complete('key1', 'fp1', 'Q1', 3_600_000);
    expect(await b.claim('key1', 'fp1', 60_000)).toEqual({ state: 'done', queueId: 'Q1' });
    expect(await b.claim('key1', 'fp2', 60_000)).toEqual({ state: 'mismatch' });
    // A completed key is not released by a late release.
    await a.release('key1');
    expect(await b.claim('key1', 'fp1', 60_000)).toEqual({ state: 'done', queueId: 'Q1' });
  });

  it('a released claim, or one never completed, lets the next request try again', async () => {
    const [a, b] = await open();
    expect(await a.claim('key2', 'fp', 60_000)).toEqual({ state: 'new' });
    await a.release('key2');
    expect(await b.claim('key2', 'fp', 300)).toEqual({ state: 'new' });
    // The node that claimed it "crashed": after the pending time the key is free again.
    await waitFor(async () => (await a.claim('key2', 'fp', 60_000)).state === 'new', 5000);
  });

  it('a completed key is forgotten after its window', async () => {
    const [a, b] = await open();
    expect(await a.claim('key3', 'fp', 60_000)).toEqual({ state: 'new' });
    await a.complete('key3', 'fp', 'Q3', 300);
    expect(await b.claim('key3', 'fp', 60_000)).toEqual({ state: 'done', queueId: 'Q3' });
    await waitFor(async () => (await b.claim('key3', 'other', 60_000)).state === 'new', 5000);
  });

  it('of many requests racing for one key, exactly one claims it', async () => {
    const [a, b] = await open();
    const claims = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).claim('race', 'fp', 60_000)),
    );
    expect(claims.filter((c) => c.state === 'new')).toHaveLength(1);
    expect(claims.filter((c) => c.state === 'pending')).toHaveLength(19);
  });
});
