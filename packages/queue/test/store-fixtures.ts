// Both backends for tests of what lives in the queue's store beside the mail (suppression lists,
// idempotency keys): a private redis-server for the file, embedded stores in temp folders, and
// every queue opened closed after each test.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedis, type TestRedis } from '@tern/testkit';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { type EmbeddedQueue, openEmbeddedQueue } from '../src/embedded/index.js';
import { openRedisQueue, type RedisQueue, type RedisQueueOptions } from '../src/redis/redis-queue.js';

export interface StoreFixtures {
  /** A new embedded store's path. */
  storePath(): string;
  /** Opens an embedded queue (a new store unless `path` is given). */
  embedded(path?: string): EmbeddedQueue;
  /** Opens a Redis queue (a new prefix unless `prefix` is given: the same one is another node). */
  onRedis(prefix?: string, options?: Partial<RedisQueueOptions>): Promise<RedisQueue>;
  /** Forgets the last queue opened (the test closed it itself). */
  closed(): void;
}

/** Call at the top of a test file: registers the hooks that start and clean up. */
export function storeFixtures(): StoreFixtures {
  let redis: TestRedis | undefined;
  const dirs: string[] = [];
  const opened: (EmbeddedQueue | RedisQueue)[] = [];
  beforeAll(async () => {
    redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((q) => q.close()));
  });
  afterAll(async () => {
    await redis?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  const storePath = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-store-'));
    dirs.push(dir);
    return join(dir, 'queue.db');
  };
  return {
    storePath,
    embedded(path = storePath()) {
      const q = openEmbeddedQueue({ path, pollIntervalMs: 200 });
      opened.push(q);
      return q;
    },
    async onRedis(prefix = `s${randomBytes(4).toString('hex')}`, options = {}) {
      const q = await openRedisQueue({ url: (redis as TestRedis).url, prefix, ...options });
      opened.push(q);
      return q;
    },
    closed() {
      opened.pop();
    },
  };
}
