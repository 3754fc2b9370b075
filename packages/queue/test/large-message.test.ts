// Large messages on every backend: a body intake spooled to disk goes into the store in slices
// and comes out to delivery as a stream of slices, so memory stays far below the message size;
// small messages keep their single write.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { type ByteSource, memorySource } from '@tern/plugin-api/host';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BODY_SLICE_BYTES, INLINE_BODY_LIMIT } from '../src/body.js';
import type { QueueBackend } from '../src/contract.js';
import { openEmbeddedQueue } from '../src/embedded/index.js';
import { QueueUnavailableError } from '../src/errors.js';
import { openRedisQueue, type RedisQueue, redisKeys } from '../src/redis/index.js';
import {
  bigIncoming,
  fileSource,
  hashingDeliver,
  MIB,
  memorySampler,
  writeBigMessage,
} from './body-fixtures.js';

let redis: TestRedis;
let admin: Redis;
const dirs: string[] = [];
const opened: QueueBackend[] = [];

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  admin = new Redis(redis.url);
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((q) => q.close()));
});

afterAll(async () => {
  admin?.disconnect();
  await redis?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tern-large-'));
  dirs.push(dir);
  return dir;
}

const backends = {
  embedded: async (): Promise<QueueBackend> => openEmbeddedQueue({ path: join(tempDir(), 'queue.db') }),
  redis: async (): Promise<QueueBackend> =>
    openRedisQueue({ url: redis.url, prefix: `l${randomBytes(4).toString('hex')}` }),
};

async function open(kind: keyof typeof backends): Promise<QueueBackend> {
  const q = await backends[kind]();
  opened.push(q);
  return q;
}

/** The chunk sizes a stored message comes back in. */
async function chunkSizes(stream: Readable | null): Promise<number[]> {
  const sizes: number[] = [];
  for await (const chunk of stream ?? Readable.from([])) sizes.push((chunk as Buffer).length);
  return sizes;
}

/** A spooled message whose stream fails after `before` bytes (a spool file that cannot be read). */
function failingSource(size: number, before: number): ByteSource {
  async function* bytes(): AsyncGenerator<Buffer> {
    for (let given = 0; given < before; given += 64 * 1024) yield Buffer.alloc(64 * 1024, 'y');
    throw new Error('EIO: the spool file could not be read');
  }
  return { size, stream: () => Readable.from(bytes(), { objectMode: false }), chunks: () => undefined };
}

describe.each(Object.keys(backends) as (keyof typeof backends)[])('large messages: %s', (kind) => {
  it('stores a 50 MiB spooled message in slices and delivers it as a stream, in far less memory than its size', async () => {
    const big = await writeBigMessage(tempDir(), 50 * MIB);
    const q = await open(kind);
    const { deliver, seen } = hashingDeliver();

    const memory = memorySampler(true);
    const id = await q.enqueue(bigIncoming(fileSource(big.path, big.size), { eightBit: true }));
    await q.startWorker(deliver);
    await waitFor(async () => seen.length === 1 && (await q.inspect(id)) === null, 60_000);
    const peak = memory.stop();

    const delivered = seen[0];
    expect(delivered?.sha256).toBe(big.sha256);
    expect(delivered?.bytes).toBe(big.size);
    expect(delivered?.largestChunk).toBeLessThanOrEqual(BODY_SLICE_BYTES);
    // What intake said about the message reaches delivery with the job.
    expect(delivered?.job.size).toBe(big.size);
    expect(delivered?.job.eightBit).toBe(true);
    console.info(
      `${kind}, 50 MiB enqueued and delivered: peak held in buffers +${(peak.arrayBuffers / MIB).toFixed(1)} MiB, ` +
        `rss +${(peak.rss / MIB).toFixed(1)} MiB (after collections)`,
    );
    // Before: the whole body was held on enqueue (readAll) and again on delivery (one BLOB/GET),
    // each a Buffer counted here. Now a few slices at a time: the file stream's buffer, a slice
    // (Redis: five for its window of four, plus ioredis' reply buffer pool, one per process, which
    // grows with the square root of the bytes read in a row and is cut back when idle). The
    // process's size is only printed: SQLite's page cache (16 MB as better-sqlite3 builds it)
    // fills with body pages, and malloc keeps what it had, whatever the message size.
    expect(peak.arrayBuffers).toBeLessThan((kind === 'redis' ? 24 : 8) * MIB);
  }, 120_000);

  it('takes twenty 25 MiB messages at once while delivering them, within half the process budget', async () => {
    const big = await writeBigMessage(tempDir(), 25 * MIB);
    const q = await open(kind);
    const { deliver, seen } = hashingDeliver();
    await q.startWorker(deliver, { concurrency: 20 });

    // Real growth, garbage included: what the process would need from the machine.
    const memory = memorySampler();
    await Promise.all(
      Array.from({ length: 20 }, () => q.enqueue(bigIncoming(fileSource(big.path, big.size)))),
    );
    await waitFor(() => seen.length === 20, 120_000);
    const peak = memory.stop();

    expect(seen.every((s) => s.sha256 === big.sha256)).toBe(true);
    console.info(
      `${kind}, 20 x 25 MiB enqueued and delivered at once: peak rss +${(peak.rss / MIB).toFixed(1)} MiB, ` +
        `arrayBuffers +${(peak.arrayBuffers / MIB).toFixed(1)} MiB (garbage included)`,
    );
    // The goal is 300 MB above baseline for the whole process (intake, queue, delivery)
    // with 500 MiB in flight; before, the queue alone held all of it, twice.
    expect(peak.rss).toBeLessThan(150 * MIB);
  }, 180_000);

  it('streams a stored message to operators with openMessage, and keeps readMessage', async () => {
    const q = await open(kind);
    const large = Array.from({ length: 12 }, (_, i) => randomBytes(256 * 1024 + i));
    const largeId = await q.enqueue(bigIncoming(memorySource(large), { eightBit: false }));
    const small = [Buffer.from('Subject: small\r\n\r\n'), Buffer.from('Hello.\r\n')];
    const smallId = await q.enqueue(bigIncoming(memorySource(small)));

    // Above the inline limit even in memory: stored and read back in slices.
    expect(Buffer.concat(large).length).toBeGreaterThan(INLINE_BODY_LIMIT);
    const sizes = await chunkSizes(await q.openMessage(largeId));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(BODY_SLICE_BYTES);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(Buffer.concat(large).length);
    expect((await q.readMessage(largeId))?.equals(Buffer.concat(large))).toBe(true);
    expect((await q.readMessage(smallId))?.equals(Buffer.concat(small))).toBe(true);
    expect(await q.openMessage('NOSUCHMESSAGE')).toBeNull();

    const { deliver, seen } = hashingDeliver();
    await q.startWorker(deliver);
    await waitFor(() => seen.length === 2, 10_000);
    const byId = new Map(seen.map((s) => [s.job.queueId, s.job]));
    expect(byId.get(largeId)).toMatchObject({ size: Buffer.concat(large).length, eightBit: false });
    // Intake did not say: delivery must find out itself.
    expect(byId.get(smallId)?.eightBit).toBeUndefined();
    await waitFor(async () => (await q.openMessage(largeId)) === null, 5000);
  });

  it('refuses with 451 a spooled message whose body cannot be read, and keeps nothing of it', async () => {
    const q = await open(kind);
    await expect(q.enqueue(bigIncoming(failingSource(8 * MIB, 3 * MIB)))).rejects.toBeInstanceOf(
      QueueUnavailableError,
    );
    // The store itself is fine: a reading error of the source says nothing about it.
    expect(q.health().writable).toBe(true);
    await expect(
      q.enqueue(bigIncoming({ ...memorySource([Buffer.alloc(2 * MIB, 'z')]), size: 3 * MIB })),
    ).rejects.toThrow(/gave 2097152 bytes, not the 3145728/);
    await assertNothingStored(q);
  });
});

/** No message and no slice is left in the store. */
async function assertNothingStored(q: QueueBackend): Promise<void> {
  if (q.kind === 'redis') {
    const prefix = (q as RedisQueue).prefix;
    await waitFor(async () => (await admin.keys(`${prefix}:msg:*`)).length === 0, 2000);
    return;
  }
  const path = q.location;
  await q.close();
  opened.splice(opened.indexOf(q), 1);
  const db = new Database(path, { readonly: true });
  const left = db.prepare('SELECT (SELECT count(*) FROM body_parts) + (SELECT count(*) FROM messages) AS n');
  expect((left.get() as { n: number }).n).toBe(0);
  db.close();
}

describe('large messages on Redis', () => {
  it('writes the body under an expiring key until the commit, which makes it permanent', async () => {
    const q = (await open('redis')) as RedisQueue;
    const watcher = new Redis(redis.url);
    try {
      // Subscribe only once the ready check is done: a SUBSCRIBE queued before it turns the
      // connection into subscriber mode, the ready check's INFO is refused and no event arrives.
      if (watcher.status !== 'ready') await new Promise((resolve) => watcher.once('ready', resolve));
      // Watch keyspace events for the upload key's TTL being set and the rename.
      await admin.config('SET', 'notify-keyspace-events', 'Eg$');
      const events: string[] = [];
      await watcher.psubscribe(`__keyevent@0__:*`);
      watcher.on('pmessage', (_pattern, channel, key) => {
        if (key.startsWith(`${q.prefix}:msg:`)) events.push(`${channel.split(':').at(-1)} ${key}`);
      });
      const big = await writeBigMessage(tempDir(), 2 * MIB);
      const id = await q.enqueue(bigIncoming(fileSource(big.path, big.size)));
      const keys = redisKeys(q.prefix, id);
      await waitFor(() => events.some((e) => e.startsWith('rename_to ')), 2000);
      expect(events).toContain(`set ${keys.upload}`);
      expect(events).toContain(`expire ${keys.upload}`);
      expect(events).toContain(`rename_to ${keys.body}`);
      expect(await admin.pttl(keys.body)).toBe(-1);
      expect(await admin.exists(keys.upload)).toBe(0);
      expect(await admin.strlen(keys.body)).toBe(big.size);
    } finally {
      watcher.disconnect();
      await admin.config('SET', 'notify-keyspace-events', '');
    }
  });
});
