// Stores on a file system that fills up while deliveries run, for real: a small tmpfs (this needs
// root, as here and in CI) under the embedded store or under Redis' append-only file, a receiving
// SMTP server, the queue's worker delivering to it over SMTP. Every acknowledged message must be
// delivered once space is back, without a restart, and the queue must say that it could not
// write, and when it could again.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import { type SmtpSink, startRedis, startSmtpSink, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import type { QueueBackend } from '../src/contract.js';
import { openEmbeddedQueue } from '../src/embedded/index.js';
import { QueueUnavailableError } from '../src/errors.js';
import { openRedisQueue } from '../src/redis/index.js';
import { bigIncoming, MIB, stallingSource } from './body-fixtures.js';
import { testMessage } from './embedded-fixtures/messages.js';
import { smtpDeliver } from './smtp-deliver.js';

const mounted: string[] = [];
const made: string[] = [];
const queues: QueueBackend[] = [];
const sinks: SmtpSink[] = [];

afterAll(async () => {
  for (const q of queues.splice(0)) await q.close();
  for (const sink of sinks.splice(0)) await sink.stop();
  for (const dir of [...mounted]) unmount(dir);
  for (const dir of made) rmdirSync(dir);
});

/** Mounts a tmpfs of `size` on `dir`; unmounted in afterAll at the latest. */
function mountTmpfs(dir: string, size: string): void {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  } catch (error) {
    throw new Error(
      `full-disk test: could not mount a tmpfs on ${dir} (${(error as Error).message.trim()}); ` +
        'it needs root (uid 0), as in CI',
    );
  }
  mounted.push(dir);
}

function unmount(dir: string): void {
  const at = mounted.indexOf(dir);
  if (at === -1) return;
  execFileSync('umount', [dir]);
  mounted.splice(at, 1);
}

/** Fills the file system of `dir` with one file until it refuses more; returns the file. */
function fillDisk(dir: string): string {
  const file = join(dir, 'filler');
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(16 * 1024, 0xff);
  try {
    for (;;) {
      try {
        writeSync(fd, block);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw error;
      }
    }
    // Whatever is left is smaller than a block: take it too.
    for (let size = block.length / 2; size >= 512; size /= 2) {
      try {
        writeSync(fd, block, 0, size);
      } catch {}
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

function subjectOf(headers: string): string {
  return /^Subject: (.*)$/m.exec(headers)?.[1]?.trim() ?? '';
}

/** A receiving server that defers the odd messages (`m1`, `m3`, ...) while `deferOdd()` says so. */
async function nextHop(deferOdd: () => boolean): Promise<{ sink: SmtpSink; tried: string[] }> {
  const tried: string[] = [];
  const sink = await startSmtpSink({
    dataReply: (msg) => {
      const subject = subjectOf(msg.headers);
      tried.push(subject);
      return deferOdd() && Number(subject.slice(1)) % 2 === 1
        ? { code: 451, message: '4.3.1 Try again later' }
        : undefined;
    },
  });
  sinks.push(sink);
  return { sink, tried };
}

/** A gate every delivery waits at until the test opens it; `started` counts the attempts waiting. */
function gated(): {
  wait: () => Promise<void>;
  open: () => void;
  started: () => number;
  opened: Promise<void>;
} {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  let started = 0;
  return {
    wait: async () => {
      started++;
      await opened;
    },
    open,
    started: () => started,
    opened,
  };
}

/** The log line a store says it cannot write with: once per change. */
function saidCannotWrite(records: readonly LogRecord[]): LogRecord[] {
  return records.filter((r) => r.level === 'error' && /cannot write/.test(r.message ?? ''));
}

/**
 * Watches `q`'s health, enqueues `count` messages (`m0`, `m1`, ...) and starts its worker towards
 * `sink` with every attempt waiting at a gate; resolves once all of them wait there.
 */
async function busy(
  q: QueueBackend,
  count: number,
  sink: SmtpSink,
): Promise<{ changes: boolean[]; acknowledged: string[]; gate: ReturnType<typeof gated> }> {
  queues.push(q);
  const changes: boolean[] = [];
  q.onHealthChange((health) => changes.push(health.writable));
  const acknowledged: string[] = [];
  for (let i = 0; i < count; i++) {
    await q.enqueue(testMessage({ subject: `m${i}`, to: [`r${i}@dest.test`] }));
    acknowledged.push(`m${i}`);
  }
  const gate = gated();
  await q.startWorker(smtpDeliver(sink.port, gate.wait), {
    concurrency: count,
    retry: { intervals: ['1s'], maxAge: '1h' },
  });
  await waitFor(() => gate.started() === count, 10_000);
  return { changes, acknowledged, gate };
}

describe('embedded queue: a full disk while deliveries run', () => {
  it('delivers every acknowledged message once space is back, without a restart, and says so', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-full-disk-'));
    made.push(dir);
    mountTmpfs(dir, '8m');
    let full = false;
    // While the disk is full, odd messages are deferred by the next hop and even ones delivered:
    // both outcomes then fail to be written.
    const { sink, tried } = await nextHop(() => full);
    const logger = memoryLogger();
    const q = openEmbeddedQueue({ path: join(dir, 'queue.db'), pollIntervalMs: 200, logger });
    // Every attempt waits at the gate until the disk is full.
    const { changes, acknowledged, gate } = await busy(q, 20, sink);
    // A large message arrives meanwhile: its first 2 MiB are written, the rest comes after the fill.
    let halfWritten = false;
    const halfway = (): void => {
      halfWritten = true;
    };
    const large = q.enqueue(bigIncoming(stallingSource(4 * MIB, 2 * MIB, halfway, gate.opened)));
    await waitFor(() => halfWritten, 10_000);

    const filler = fillDisk(dir);
    full = true;
    // New mail is refused at once with the error intake answers 451 for, and the queue says why.
    const refusedAt = Date.now();
    await expect(q.enqueue(testMessage({ subject: 'refused' }))).rejects.toBeInstanceOf(
      QueueUnavailableError,
    );
    expect(Date.now() - refusedAt).toBeLessThan(1000);
    expect(q.health()).toMatchObject({ writable: false, lastError: expect.stringMatching(/full/i) });
    expect(changes).toEqual([false]);
    expect(saidCannotWrite(logger.records)).toHaveLength(1);

    // The attempts reach the next hop, and their outcomes cannot be written. The large message
    // cannot be finished either: refused, with its slices left behind (not even a delete works).
    gate.open();
    await expect(large).rejects.toBeInstanceOf(QueueUnavailableError);
    await waitFor(() => tried.length === 20, 10_000);
    const unrecorded = (): Set<unknown> =>
      new Set(
        logger.records
          .filter((r) => (r.level === 'warn' || r.level === 'error') && r.fields.jobId !== undefined)
          .map((r) => r.fields.jobId),
      );
    await waitFor(() => unrecorded().size === 20, 10_000);
    expect(q.health().writable).toBe(false);

    // Space comes back: every acknowledged message is delivered (the ones delivered while the
    // disk was full may arrive twice), nothing is left in the queue, and health says so.
    rmSync(filler);
    full = false;
    await waitFor(async () => (await q.summary()).totals.total === 0, 30_000, 100);
    const accepted = new Set(sink.messages.map((m) => subjectOf(m.headers)));
    for (const subject of acknowledged) expect(accepted.has(subject)).toBe(true);
    expect(accepted.has('refused')).toBe(false);
    expect(changes).toEqual([false, true]);
    expect(q.health()).toMatchObject({ writable: true, lastError: expect.stringMatching(/full/i) });
    expect(saidCannotWrite(logger.records)).toHaveLength(1);
    expect(logger.records.some((r) => /can write again/.test(r.message ?? ''))).toBe(true);
    expect(logger.records.find((r) => r.fields.parts !== undefined)?.fields.parts).toBe(8);

    // And new mail is taken and delivered again.
    const after = await q.enqueue(testMessage({ subject: 'after', to: ['late@dest.test'] }));
    await waitFor(async () => (await q.inspect(after)) === null, 10_000);
    expect(sink.messages.some((m) => subjectOf(m.headers) === 'after')).toBe(true);
  }, 90_000);
});

describe('Redis queue: its disk fills up', () => {
  it('refuses new mail, says so once, and delivers every acknowledged message once space is back', async () => {
    // Redis with its append-only file on a small tmpfs: a full disk makes it refuse writes (MISCONF).
    const redis = await startRedis({ appendonly: true, maxmemoryPolicy: 'noeviction' });
    await redis.kill();
    mountTmpfs(redis.dir, '16m');
    await redis.restart();
    try {
      let full = false;
      const { sink, tried } = await nextHop(() => full);
      const logger = memoryLogger();
      const q = await openRedisQueue({
        url: redis.url,
        prefix: 'full',
        probeIntervalMs: 200,
        lockDurationMs: 4000,
        stalledIntervalMs: 1000,
        logger,
      });
      const { changes, acknowledged, gate } = await busy(q, 10, sink);

      const filler = fillDisk(redis.dir);
      full = true;
      // Redis may answer a write or two from memory before its append-only file fails to grow,
      // then refuses: what it acknowledged counts as acknowledged.
      for (let i = 10; q.health().writable; i++) {
        expect(i).toBeLessThan(100);
        const refusedAt = Date.now();
        const outcome = await q
          .enqueue(testMessage({ subject: `m${i}`, to: [`r${i}@dest.test`] }))
          .catch((error: unknown) => error);
        if (typeof outcome === 'string') {
          acknowledged.push(`m${i}`);
        } else {
          expect(outcome).toBeInstanceOf(QueueUnavailableError);
          expect(Date.now() - refusedAt).toBeLessThan(1000);
        }
      }
      expect(q.health()).toMatchObject({ writable: false, lastError: expect.stringMatching(/^MISCONF/) });
      expect(changes).toEqual([false]);

      // The attempts reach the next hop; Redis refuses to record them.
      gate.open();
      await waitFor(() => tried.length >= 10, 10_000);

      rmSync(filler);
      full = false;
      await waitFor(() => q.health().writable, 10_000);
      await waitFor(async () => (await q.summary()).totals.total === 0, 30_000, 100);
      const accepted = new Set(sink.messages.map((m) => subjectOf(m.headers)));
      for (const subject of acknowledged) expect(accepted.has(subject)).toBe(true);
      expect(changes).toEqual([false, true]);
      expect(saidCannotWrite(logger.records)).toHaveLength(1);
    } finally {
      for (const q of queues.splice(0)) await q.close();
      await redis.kill();
      unmount(redis.dir);
      await redis.stop();
    }
  }, 90_000);
});
