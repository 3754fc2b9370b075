// The embedded backend against real crashes: a second node process is killed with SIGKILL
// right after it acknowledged mail, or in the middle of a delivery, or while it holds the store.
import { memoryLogger } from '@tern/plugin-api/testing';
import { waitFor } from '@tern/testkit';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { type EmbeddedQueue, EmbeddedStoreLockedError, openEmbeddedQueue } from '../src/embedded/index.js';
import { scriptedDeliver } from './embedded-fixtures/deliver.js';
import { storePaths, testMessage } from './embedded-fixtures/messages.js';
import { type Child, spawnChild } from './embedded-fixtures/process.js';

const children: Child[] = [];
const queues: EmbeddedQueue[] = [];

const paths = storePaths();
const store = paths.next;

function child(args: string[]): Child {
  const c = spawnChild(args);
  children.push(c);
  return c;
}

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill()));
  await Promise.all(queues.splice(0).map((q) => q.close()));
  paths.cleanup();
});

describe('embedded queue: crashes', () => {
  it('keeps every acknowledged message when the process is killed right after, and delivers it after restart', async () => {
    const path = store();
    const writer = child(['enqueue', path, '2000']);
    // Kill while the child is still enqueueing: the ids it printed were acknowledged.
    await writer.line(/^queued /);
    await writer.line(/^queued /);
    await waitFor(() => writer.lines.length >= 5, 15_000, 1);
    await writer.kill();
    expect(writer.lines).not.toContain('done');
    const acknowledged = writer.lines.filter((l) => l.startsWith('queued ')).map((l) => l.slice(7));
    expect(acknowledged.length).toBeGreaterThanOrEqual(5);

    const q = openEmbeddedQueue({ path });
    queues.push(q);
    for (const [i, id] of acknowledged.entries()) {
      const body = await q.readMessage(id);
      expect(body?.toString()).toContain(`Subject: crash test ${i}\r\n`);
    }
    const { deliver, calls } = scriptedDeliver();
    await q.startWorker(deliver);
    await waitFor(async () => (await q.summary()).totals.total === 0, 10_000);
    const delivered = new Set(calls.map((c) => c.job.queueId));
    for (const id of acknowledged) expect(delivered.has(id)).toBe(true);
  });

  it('runs a job again when the process died during its delivery', async () => {
    const path = store();
    const first = openEmbeddedQueue({ path });
    const id = await first.enqueue(testMessage({ to: ['a@dest.test'] }));
    await first.close();

    const worker = child(['hang', path]);
    expect(await worker.line(/^delivering /)).toBe(`delivering ${id}`);
    await worker.kill();

    const logger = memoryLogger();
    const q = openEmbeddedQueue({ path, logger });
    queues.push(q);
    const job = (await q.inspect(id))?.jobs[0];
    expect(job?.state).toBe('scheduled');
    expect(job?.attempts).toBe(0);
    expect(logger.records.some((r) => r.level === 'warn' && r.fields.jobs === 1)).toBe(true);
    const { deliver, calls } = scriptedDeliver();
    await q.startWorker(deliver);
    await waitFor(async () => (await q.inspect(id)) === null);
    expect(calls.map((c) => c.job.queueId)).toEqual([id]);
  });

  it('leaves nothing visible when killed between the slices of a large body and its commit, and nothing behind after reopen', async () => {
    const path = store();
    const writer = child(['upload', path]);
    await writer.line(/^stalled$/);
    await writer.kill();

    // The slices written before the kill are on disk, and no message owns them.
    const raw = new Database(path);
    const count = (table: string): number =>
      (raw.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    expect(count('body_parts')).toBe(32); // 8 MiB in 256 KiB slices
    expect(count('messages') + count('jobs')).toBe(0);
    raw.close();

    const logger = memoryLogger();
    const q = openEmbeddedQueue({ path, logger });
    queues.push(q);
    expect((await q.summary()).totals.total).toBe(0);
    expect(logger.records.some((r) => r.fields.parts === 32)).toBe(true);
    await q.close();
    const after = new Database(path, { readonly: true });
    expect((after.prepare('SELECT count(*) AS n FROM body_parts').get() as { n: number }).n).toBe(0);
    after.close();
  });

  it('refuses a second process, naming the store and the holder, and opens once the holder is killed', async () => {
    const path = store();
    const holder = child(['hold', path]);
    await holder.line(/^ready /);

    let error: unknown;
    try {
      openEmbeddedQueue({ path });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EmbeddedStoreLockedError);
    expect((error as Error).message).toContain(`embedded queue ${path} is in use by process ${holder.pid}`);
    expect((error as EmbeddedStoreLockedError).owner?.pid).toBe(holder.pid);

    // kill -9 leaves the owner file behind, but the lock went with the process.
    await holder.kill();
    const q = openEmbeddedQueue({ path });
    queues.push(q);
    expect(await q.enqueue(testMessage())).toMatch(/^[0-9A-Z]+$/);
  });

  it('refuses another process while this one holds the store', async () => {
    const path = store();
    const q = openEmbeddedQueue({ path });
    queues.push(q);
    const other = child(['open', path]);
    const line = await other.line(/^(opened|refused)/);
    expect(line).toContain(`refused embedded queue ${path} is in use by process ${process.pid} `);
    expect(line).toMatch(/only one process may use an embedded queue/);
  });
});
