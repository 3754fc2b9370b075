// The embedded backend with real SQLite files: storage, scheduling, retries, bounces,
// partial results, holds, per-domain limits and exclusive use within one process.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { definePlugin } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import { waitFor } from '@tern/testkit';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { QueuedJob, QueueFilter } from '../src/contract.js';
import {
  type EmbeddedQueue,
  EmbeddedStoreLockedError,
  EmbeddedStoreSchemaError,
  openEmbeddedQueue,
} from '../src/embedded/index.js';
import { SCHEMA_VERSION } from '../src/embedded/store.js';
import { QueueUnavailableError } from '../src/errors.js';
import { gatedDeliver, reportAll, scriptedDeliver } from './embedded-fixtures/deliver.js';
import { storePaths, testMessage } from './embedded-fixtures/messages.js';

const DAY = 24 * 3600_000;
const open: EmbeddedQueue[] = [];

/** The jobs still queued (any state but done), as operators list them. */
async function unfinished(q: EmbeddedQueue, filter: QueueFilter = {}): Promise<readonly QueuedJob[]> {
  return (await q.listJobs(filter)).jobs;
}

const paths = storePaths();
const store = paths.next;

function queueAt(
  path: string,
  options: Partial<Parameters<typeof openEmbeddedQueue>[0]> = {},
): EmbeddedQueue {
  const q = openEmbeddedQueue({ path, ...options });
  open.push(q);
  return q;
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((q) => q.close()));
  paths.cleanup();
});

describe('embedded queue: storage', () => {
  it('stores body and envelope, one job per recipient domain, and keeps them across a reopen', async () => {
    const path = store();
    const q = queueAt(path);
    const message = testMessage({ to: ['a@one.test', 'b@ONE.test', 'c@two.test'] });
    const id = await q.enqueue({ ...message, messageId: '<m1@origin.test>' });
    expect(id).toMatch(/^[0-9A-Z]{21}$/);
    await q.close();

    const again = queueAt(path);
    expect(await again.readMessage(id)).toEqual(Buffer.concat(message.content.chunks() ?? []));
    const record = await again.inspect(id);
    expect(record?.envelope).toEqual(message.envelope);
    expect(record?.messageId).toBe('<m1@origin.test>');
    expect(record?.jobs.map((j) => [j.domain, j.state, j.recipients.map((r) => r.address)])).toEqual([
      ['one.test', 'scheduled', ['a@one.test', 'b@ONE.test']],
      ['two.test', 'scheduled', ['c@two.test']],
    ]);
    expect(await again.inspect('NOSUCHID')).toBeNull();
  });

  it('commits concurrent enqueues together and acknowledges each only once it is stored', async () => {
    const path = store();
    const q = queueAt(path);
    const ids = await Promise.all(
      Array.from({ length: 300 }, (_, i) => q.enqueue(testMessage({ subject: `n${i}` }))),
    );
    expect(new Set(ids).size).toBe(300);
    // Read the file with a separate connection after close: what was acknowledged is on disk.
    await q.close();
    const db = new Database(path, { readonly: true });
    const count = db.prepare('SELECT count(*) AS n FROM messages').get() as { n: number };
    db.close();
    expect(count.n).toBe(300);
  });

  it('runs the store with WAL, synchronous=FULL and an exclusive lock', async () => {
    const q = queueAt(store());
    expect(q.storeSettings()).toEqual({ journalMode: 'wal', synchronous: 'full', lockingMode: 'exclusive' });
  });

  it('creates a store with 512-byte pages (every commit writes its pages whole to the WAL)', async () => {
    const path = store();
    await queueAt(path).close();
    const db = new Database(path, { readonly: true });
    expect(db.pragma('page_size', { simple: true })).toBe(512);
    db.close();
  });

  it('writes the outcome of an attempt that finished just before close, with its timeline entry', async () => {
    const path = store();
    const q = queueAt(path);
    const id = await q.enqueue(testMessage());
    const { deliver, calls } = scriptedDeliver();
    await q.startWorker(deliver);
    await waitFor(() => calls.length === 1);
    // Outcomes are written in batches: close must not leave this one behind.
    await q.close();
    const again = queueAt(path);
    expect(await again.readMessage(id)).toBeNull();
    const details = await again.details(id);
    expect(details?.timeline.map((e) => e.type)).toEqual(['received', 'attempt']);
  });

  it('rejects a message without recipients and a closed queue', async () => {
    const q = queueAt(store());
    const empty = testMessage({ to: [] });
    await expect(q.enqueue(empty)).rejects.toThrow(/no recipients/);
    await q.close();
    await expect(q.enqueue(testMessage())).rejects.toThrow(QueueUnavailableError);
    await expect(q.enqueue(testMessage())).rejects.toThrow(/closed/);
  });

  it('refuses a second open of the same store and names the holder', () => {
    const path = store();
    queueAt(path);
    let error: unknown;
    try {
      openEmbeddedQueue({ path });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EmbeddedStoreLockedError);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toContain(`process ${process.pid}`);
    expect((error as EmbeddedStoreLockedError).code).toBe('TERN_ERR_QUEUE_STORE_LOCKED');
  });

  it('refuses bad options by name before touching the store', () => {
    const path = store();
    expect(() => openEmbeddedQueue({ path, maxActivePerDomain: 0 })).toThrow(
      'queue.embedded.maxActivePerDomain: must be a whole number of at least 1, got 0',
    );
    expect(() => openEmbeddedQueue({ path, pollIntervalMs: 1.5 })).toThrow(/queue\.embedded\.pollIntervalMs/);
    expect(existsSync(path)).toBe(false);
  });

  it('refuses an SQLite file that is not a Tern queue, and a store from a newer schema', async () => {
    const other = store();
    const db = new Database(other);
    db.exec('CREATE TABLE notes (x)');
    db.close();
    expect(() => openEmbeddedQueue({ path: other })).toThrow(EmbeddedStoreSchemaError);

    const newer = store();
    await queueAt(newer).close();
    const raw = new Database(newer);
    raw.pragma('user_version = 99');
    raw.close();
    expect(() => openEmbeddedQueue({ path: newer })).toThrow(/newer Tern/);
  });

  it('upgrades a version 2 store in place: its inline bodies stay, large ones are sliced from then on', async () => {
    const path = store();
    const old = testMessage({ subject: 'before the upgrade' });
    const q = queueAt(path);
    const oldId = await q.enqueue(old);
    await q.close();
    // Make it a store as version 2 wrote it.
    const raw = new Database(path);
    raw.exec(`DROP TABLE suppressions; DROP TABLE idempotency_keys; DROP TRIGGER messages_delete_parts; DROP TABLE body_parts; DROP TABLE store_probe;
      ALTER TABLE messages DROP COLUMN parts; ALTER TABLE messages DROP COLUMN eight_bit;
      PRAGMA user_version = 2;`);
    raw.close();

    const upgraded = queueAt(path);
    expect(await upgraded.readMessage(oldId)).toEqual(Buffer.concat(old.content.chunks() ?? []));
    const large = testMessage({ bodySize: 2 * 1024 * 1024 });
    const largeId = await upgraded.enqueue(large);
    expect((await upgraded.readMessage(largeId))?.equals(Buffer.concat(large.content.chunks() ?? []))).toBe(
      true,
    );
    const { deliver, calls } = scriptedDeliver();
    await upgraded.startWorker(deliver);
    await waitFor(async () => (await upgraded.summary()).totals.total === 0);
    expect(calls.map((c) => c.job.queueId).sort()).toEqual([oldId, largeId].sort());
    expect(calls.find((c) => c.job.queueId === oldId)?.message).toContain('Subject: before the upgrade');
  });

  it('upgrades a version 6 store in place: each timeline becomes one row, found by Message-ID as before', async () => {
    const path = store();
    const q = queueAt(path);
    const doneId = await q.enqueue({ ...testMessage({ to: ['a@one.test'] }), messageId: '<done@src.test>' });
    await q.startWorker(scriptedDeliver().deliver);
    await waitFor(async () => (await q.details(doneId))?.state === 'finished');
    await q.close();
    const idle = queueAt(path);
    const queuedId = await idle.enqueue({
      ...testMessage({ to: ['b@two.test'] }),
      messageId: '<queued@src.test>',
    });
    await idle.hold(queuedId);
    const before = [(await idle.details(doneId))?.timeline, (await idle.details(queuedId))?.timeline];
    expect(before[0]?.map((e) => e.type)).toEqual(['received', 'attempt']);
    expect(before[1]?.map((e) => e.type)).toEqual(['received', 'operator']);
    await idle.close();
    // Make it a store as version 6 wrote it: a row per event, an index on messages.message_id.
    const raw = new Database(path);
    const rows = raw.prepare('SELECT queue_id, events FROM timelines').all() as {
      queue_id: string;
      events: string;
    }[];
    raw.exec(`CREATE TABLE timeline_events (seq INTEGER PRIMARY KEY,
        queue_id TEXT NOT NULL REFERENCES timelines (queue_id) ON DELETE CASCADE, event TEXT NOT NULL) STRICT;
      CREATE INDEX timeline_events_queue_id ON timeline_events (queue_id, seq);
      CREATE INDEX messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;`);
    const insert = raw.prepare('INSERT INTO timeline_events (queue_id, event) VALUES (?, ?)');
    for (const row of rows.reverse()) {
      for (const line of row.events.split('\n').filter((l) => l !== '')) insert.run(row.queue_id, line);
    }
    raw.exec('ALTER TABLE timelines DROP COLUMN events; PRAGMA user_version = 6;');
    raw.close();

    const upgraded = queueAt(path);
    expect((await upgraded.details(doneId))?.timeline).toEqual(before[0]);
    expect((await upgraded.details(queuedId))?.timeline).toEqual(before[1]);
    expect(await upgraded.findByMessageId('<done@src.test>')).toEqual([doneId]);
    expect(await upgraded.findByMessageId('queued@src.test')).toEqual([queuedId]);
    await upgraded.release(queuedId);
    await upgraded.startWorker(scriptedDeliver().deliver);
    await waitFor(async () => (await upgraded.details(queuedId))?.state === 'finished');
    expect((await upgraded.details(queuedId))?.timeline.map((e) => e.type)).toEqual([
      'received',
      'operator',
      'operator',
      'attempt',
    ]);
    await upgraded.close();
    const check = new Database(path, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    const names = check.prepare(
      "SELECT name FROM sqlite_master WHERE name IN ('timeline_events', 'messages_message_id')",
    );
    expect(names.all()).toEqual([]);
    check.close();
  });

  it('upgrades a version 7 store in place: its jobs keep their state and go with their message', async () => {
    const path = store();
    const q = queueAt(path);
    const heldId = await q.enqueue(testMessage({ to: ['a@one.test', 'b@two.test'] }));
    await q.hold(heldId);
    const waitingId = await q.enqueue(testMessage({ to: ['c@three.test'] }));
    await q.close();
    // Make it a store as version 7 wrote it: a foreign key from jobs to messages, an index on
    // jobs.queue_id, due indexes over every state.
    const raw = new Database(path);
    raw.exec(`DROP TRIGGER messages_delete_jobs;
      CREATE TABLE jobs_v7 (
        id TEXT PRIMARY KEY, queue_id TEXT NOT NULL REFERENCES messages (queue_id) ON DELETE CASCADE,
        domain TEXT NOT NULL, recipients TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('scheduled', 'active', 'held', 'done')),
        hold_requested INTEGER NOT NULL DEFAULT 0, delay_notified INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT, lease_until INTEGER, updated_at INTEGER NOT NULL, next_hop TEXT) STRICT;
      INSERT INTO jobs_v7 SELECT * FROM jobs;
      DROP TABLE jobs;
      ALTER TABLE jobs_v7 RENAME TO jobs;
      CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
      CREATE INDEX jobs_sched ON jobs (state, domain, next_attempt_at);
      CREATE INDEX jobs_queue_id ON jobs (queue_id);
      PRAGMA user_version = 7;`);
    raw.close();

    const upgraded = queueAt(path);
    expect((await upgraded.details(heldId))?.jobs.map((j) => j.state)).toEqual(['held', 'held']);
    expect((await upgraded.details(waitingId))?.jobs.map((j) => j.state)).toEqual(['scheduled']);
    expect(await upgraded.remove(heldId)).toBe(true);
    const { deliver, calls } = scriptedDeliver();
    await upgraded.startWorker(deliver);
    await waitFor(async () => (await upgraded.summary()).totals.total === 0);
    expect(calls.map((c) => c.job.queueId)).toEqual([waitingId]);
    await upgraded.close();
    const check = new Database(path, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(check.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(0);
    expect(check.prepare("SELECT name FROM sqlite_master WHERE name = 'jobs_queue_id'").all()).toEqual([]);
    expect(check.pragma('foreign_key_list(jobs)')).toEqual([]);
    check.close();
  });

  it('refuses a file that is not SQLite at all, naming it, without touching it', () => {
    const path = store();
    const content = 'not a database\n'.repeat(100);
    writeFileSync(path, content);
    expect(() => openEmbeddedQueue({ path })).toThrow(`embedded queue ${path}: file is not a database`);
    expect(readFileSync(path, 'utf8')).toBe(content);
  });
});

describe('embedded queue: delivery', () => {
  it('claims a job in its enqueue commit when a delivery slot is free, never more than the slots', async () => {
    const q = queueAt(store(), { maxActivePerDomain: 1 });
    const { deliver, started, open: go } = gatedDeliver('delivered');
    await q.startWorker(deliver, { concurrency: 2 });
    const ids = await Promise.all(
      ['a@one.test', 'b@two.test', 'c@three.test'].map((to) => q.enqueue(testMessage({ to: [to] }))),
    );
    // Active as soon as the enqueue is acknowledged: no lease of its own before the attempt.
    const states = await Promise.all(ids.map(async (id) => (await q.inspect(id))?.jobs[0]?.state));
    expect(states).toEqual(['active', 'active', 'scheduled']);
    await waitFor(() => started.length === 2);
    expect(started.map((j) => j.queueId)).toEqual(ids.slice(0, 2));
    go();
    await waitFor(async () => (await q.summary()).totals.total === 0);
    expect(started.map((j) => j.queueId)).toEqual(ids);
  });

  it('a hold or a remove right after its enqueue acts on the claimed job already in flight', async () => {
    const q = queueAt(store());
    // A job claimed by its enqueue starts while that enqueue's fsync runs, so by the time the
    // enqueue resolves its attempt is under way: the operator's write acts as on any job in flight.
    const { deliver, calls } = scriptedDeliver((address) =>
      address === 'c@three.test' ? 'delivered' : 'deferred',
    );
    await q.startWorker(deliver, { concurrency: 4 });
    const held = await q.enqueue(testMessage({ to: ['a@one.test'] }));
    expect(await q.hold(held)).toBe(1);
    const removed = await q.enqueue(testMessage({ to: ['b@two.test'] }));
    expect(await q.remove(removed)).toBe(true);
    // The held job's attempt deferred: it waits as 'held', not 'scheduled'; the removed one is gone
    // and its outcome changed nothing; a later message is delivered (the slots were freed).
    await waitFor(async () => (await q.inspect(held))?.jobs[0]?.state === 'held');
    expect(await q.inspect(removed)).toBeNull();
    const later = await q.enqueue(testMessage({ to: ['c@three.test'] }));
    await waitFor(async () => (await q.inspect(later)) === null);
    expect(calls.map((c) => c.job.queueId)).toEqual([held, removed, later]);
    expect(await q.inspect(removed)).toBeNull();
  });

  it('delivers, then removes the body and the jobs', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver();
    const message = testMessage({ to: ['a@one.test', 'b@two.test'] });
    const id = await q.enqueue(message);
    await q.startWorker(deliver, { concurrency: 2 });
    await waitFor(async () => (await q.inspect(id)) === null);
    expect(calls.map((c) => c.job.domain).sort()).toEqual(['one.test', 'two.test']);
    expect(calls[0]?.message).toBe(Buffer.concat(message.content.chunks() ?? []).toString());
    expect(calls[0]?.job.attempts).toBe(0);
    expect(await q.readMessage(id)).toBeNull();
  });

  it('retries a deferred recipient on the schedule, then delivers it', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver((_a, _j, c) => (c.length === 1 ? 'deferred' : 'delivered'));
    const id = await q.enqueue(testMessage());
    await q.startWorker(deliver, { retry: { intervals: ['1s'] } });
    await waitFor(() => calls.length === 1);
    await waitFor(async () => (await q.inspect(id))?.jobs[0]?.attempts === 1);
    const waiting = await q.inspect(id);
    const job = waiting?.jobs[0];
    expect(job?.state).toBe('scheduled');
    expect(job?.recipients[0]?.lastReply?.code).toBe(451);
    expect(job?.nextAttemptAt).toBeGreaterThanOrEqual((calls[0]?.at ?? 0) + 1000);
    expect(job?.nextAttemptAt).toBeLessThan((calls[0]?.at ?? 0) + 2000);

    await waitFor(async () => (await q.inspect(id)) === null, 5000);
    expect(calls).toHaveLength(2);
    const gap = (calls[1]?.at ?? 0) - (calls[0]?.at ?? 0);
    expect(gap).toBeGreaterThanOrEqual(990);
    expect(gap).toBeLessThan(3000); // generous: a loaded 2-core machine schedules late, never early
    expect(calls[1]?.job.attempts).toBe(1);
  });

  it('bounces an expired message to its sender with an RFC 3464 report', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver((address) =>
      address === 'sender@origin.test' ? 'delivered' : 'deferred',
    );
    const id = await q.enqueue(testMessage({ receivedAt: Date.now() - 6 * DAY }));
    await q.startWorker(deliver, { retry: { maxAge: '5d' }, hostname: 'mta.origin.test' });
    await waitFor(() => calls.length === 2);
    const bounce = calls[1];
    expect(bounce?.job.envelope.mailFrom).toBe('');
    expect(bounce?.job.isBounce).toBe(true);
    expect(bounce?.job.recipients.map((r) => r.address)).toEqual(['sender@origin.test']);
    expect(bounce?.message).toContain('Final-Recipient: rfc822; rcpt@dest.test');
    expect(bounce?.message).toContain('Action: failed');
    expect(bounce?.message).toContain('Status: 5.4.7');
    expect(bounce?.message).toContain('Reporting-MTA: dns; mta.origin.test');
    await waitFor(async () => (await unfinished(q)).length === 0);
    expect(await q.inspect(id)).toBeNull();
  });

  it('splits a partial result: the delivered recipient is never sent again, the failed one is bounced once', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver((address, _job, c) => {
      if (address === 'ok@dest.test') return 'delivered';
      if (address === 'gone@dest.test') return 'failed';
      if (address === 'later@dest.test') return c.length < 2 ? 'deferred' : 'delivered';
      return 'delivered'; // the bounce to the sender
    });
    const id = await q.enqueue(testMessage({ to: ['ok@dest.test', 'gone@dest.test', 'later@dest.test'] }));
    await q.startWorker(deliver, { concurrency: 1, retry: { intervals: ['1s'] } });
    await waitFor(async () => (await q.inspect(id)) === null, 5000);
    await waitFor(async () => (await unfinished(q)).length === 0);

    const original = calls.filter((c) => c.job.queueId === id);
    expect(original.map((c) => c.job.recipients.map((r) => r.address))).toEqual([
      ['ok@dest.test', 'gone@dest.test', 'later@dest.test'],
      ['later@dest.test'],
    ]);
    const bounces = calls.filter((c) => c.job.isBounce);
    expect(bounces).toHaveLength(1);
    expect(bounces[0]?.message).toContain('Final-Recipient: rfc822; gone@dest.test');
    expect(bounces[0]?.message).not.toContain('ok@dest.test>:');
    expect(bounces[0]?.message).not.toContain('Final-Recipient: rfc822; later@dest.test');
  });

  it('shows settled recipients while others wait', async () => {
    const q = queueAt(store());
    const { deliver } = scriptedDeliver((address) => (address === 'ok@dest.test' ? 'delivered' : 'deferred'));
    const id = await q.enqueue(testMessage({ to: ['ok@dest.test', 'wait@dest.test'] }));
    await q.startWorker(deliver, { retry: { intervals: ['1h'] } });
    await waitFor(async () => (await q.inspect(id))?.jobs[0]?.attempts === 1);
    const job = (await q.inspect(id))?.jobs[0];
    expect(job?.recipients.map((r) => [r.address, r.status])).toEqual([
      ['ok@dest.test', 'delivered'],
      ['wait@dest.test', 'pending'],
    ]);
    expect(job?.recipients[0]?.remoteMta).toBe('mx.dest.test[127.0.0.1]:2525');
  });

  it('sends one delay notice for a message that waits long, then delivers it', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver((_address, job) => {
      if (job.isBounce) return 'delivered';
      return calls.filter((c) => !c.job.isBounce).length < 3 ? 'deferred' : 'delivered';
    });
    const id = await q.enqueue(testMessage({ receivedAt: Date.now() - 2 * 3600_000 }));
    await q.startWorker(deliver, { retry: { intervals: ['1s'], delayNoticeAfter: '1h' } });
    await waitFor(async () => (await q.inspect(id)) === null, 8000);
    await waitFor(async () => (await unfinished(q)).length === 0);
    expect(calls.filter((c) => c.job.queueId === id)).toHaveLength(3);
    const notices = calls.filter((c) => c.job.isBounce);
    expect(notices).toHaveLength(1);
    expect(notices[0]?.message).toContain('Action: delayed');
    expect(notices[0]?.job.recipients.map((r) => r.address)).toEqual(['sender@origin.test']);
  });

  it('lets plugins move a retry and suppress a bounce', async () => {
    const q = queueAt(store());
    const later = new Date(Date.now() + 3600_000);
    const plugins = new PluginHost([
      definePlugin({
        name: 'advice',
        deferred: () => ({ retryAt: later }),
        bounced: () => ({ suppress: true }),
      }),
    ]);
    const { deliver, calls } = scriptedDeliver((address) =>
      address === 'gone@dest.test' ? 'failed' : 'deferred',
    );
    const id = await q.enqueue(testMessage({ to: ['gone@dest.test', 'wait@dest.test'] }));
    await q.startWorker(deliver, { plugins });
    await waitFor(async () => (await q.inspect(id))?.jobs[0]?.attempts === 1);
    await sleep(200);
    expect((await q.inspect(id))?.jobs[0]?.nextAttemptAt).toBe(later.getTime());
    expect(calls).toHaveLength(1);
    expect(await unfinished(q)).toHaveLength(1);
  });

  it('never bounces a bounce: a failing notice is logged and dropped', async () => {
    const logger = memoryLogger();
    const q = queueAt(store(), { logger });
    const { deliver, calls } = scriptedDeliver(() => 'failed');
    await q.enqueue(testMessage({ to: ['gone@dest.test'] }));
    await q.startWorker(deliver);
    await waitFor(async () => calls.length === 2 && (await unfinished(q)).length === 0);
    await sleep(200);
    expect(calls).toHaveLength(2);
    expect(calls[1]?.job.isBounce).toBe(true);
    expect(
      logger.records.some(
        (r) => r.level === 'warn' && /bounce .*could not be delivered; dropped/.test(r.message ?? ''),
      ),
    ).toBe(true);
  });

  it('never bounces mail from the null sender', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver(() => 'failed');
    const id = await q.enqueue(testMessage({ from: '' }));
    await q.startWorker(deliver);
    await waitFor(async () => (await q.inspect(id)) === null);
    await sleep(200);
    expect(calls).toHaveLength(1);
    expect(await unfinished(q)).toEqual([]);
  });

  it('treats a throwing delivery as a temporary failure of every recipient', async () => {
    const q = queueAt(store());
    const id = await q.enqueue(testMessage({ to: ['a@dest.test', 'b@dest.test'] }));
    let attempts = 0;
    await q.startWorker(
      async () => {
        attempts++;
        throw new Error('boom');
      },
      { retry: { intervals: ['1h'] } },
    );
    await waitFor(async () => (await q.inspect(id))?.jobs[0]?.attempts === 1);
    const job = (await q.inspect(id))?.jobs[0];
    expect(job?.state).toBe('scheduled');
    expect(job?.recipients.map((r) => [r.status, r.lastReply?.code])).toEqual([
      ['pending', 451],
      ['pending', 451],
    ]);
    expect(attempts).toBe(1);
  });

  it('keeps to the per-domain limit without holding up other domains', async () => {
    const q = queueAt(store(), { maxActivePerDomain: 2 });
    let active = 0;
    let peak = 0;
    const order: string[] = [];
    await Promise.all([
      ...Array.from({ length: 6 }, () => q.enqueue(testMessage({ to: ['r@busy.test'] }))),
      q.enqueue(testMessage({ to: ['r@quiet.test'] })),
    ]);
    await q.startWorker(
      async (job) => {
        order.push(job.domain);
        if (job.domain === 'busy.test') {
          active++;
          peak = Math.max(peak, active);
          await sleep(100);
          active--;
        }
        return reportAll(job, 'delivered');
      },
      { concurrency: 10 },
    );
    await waitFor(async () => (await unfinished(q)).length === 0, 5000);
    expect(peak).toBe(2);
    // The quiet domain went out in the first round, not after the busy domain's backlog.
    expect(order.indexOf('quiet.test')).toBeLessThan(3);
  });
  it('defers a job whose step fails, logs why, and goes on with the others', async () => {
    const path = store();
    const first = openEmbeddedQueue({ path });
    const broken = await first.enqueue(testMessage({ to: ['a@broken.test'] }));
    const fine = await first.enqueue(testMessage({ to: ['b@fine.test'] }));
    await first.close();
    const raw = new Database(path);
    raw.prepare("UPDATE jobs SET recipients = 'not json' WHERE queue_id = ?").run(broken);
    raw.close();

    const logger = memoryLogger();
    const q = queueAt(path, { logger });
    const { deliver, calls } = scriptedDeliver();
    await q.startWorker(deliver, { retry: { intervals: ['1h'] } });
    await waitFor(async () => (await q.inspect(fine)) === null);
    const failed = (): LogRecord | undefined =>
      logger.records.find((r) => r.message === 'delivery step failed; deferring the job');
    await waitFor(() => failed() !== undefined);
    expect(failed()?.fields.queueId).toBe(broken);
    expect(calls.map((c) => c.job.queueId)).toEqual([fine]);
    await q.close();

    const after = new Database(path, { readonly: true });
    const row = after
      .prepare('SELECT state, attempts, next_attempt_at AS at FROM jobs WHERE queue_id = ?')
      .get(broken) as {
      state: string;
      attempts: number;
      at: number;
    };
    after.close();
    expect(row.state).toBe('scheduled');
    expect(row.attempts).toBe(1);
    expect(row.at).toBeGreaterThan(Date.now() + 3500_000);
  });

  it('finds another domain behind a backlog longer than its look-ahead of a domain at its limit', async () => {
    const q = queueAt(store(), { maxActivePerDomain: 1 });
    const old = Date.now() - 60_000;
    // 300 due jobs for one domain, all older than the single job of another domain.
    await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        q.enqueue(testMessage({ to: ['r@busy.test'], receivedAt: old + i })),
      ),
    );
    await q.enqueue(testMessage({ to: ['r@quiet.test'] }));
    const gated = gatedDeliver('delivered');
    await q.startWorker(gated.deliver, { concurrency: 3 });
    await waitFor(() => gated.started.length === 2);
    await sleep(100);
    expect(gated.started.map((j) => j.domain).sort()).toEqual(['busy.test', 'quiet.test']);
    expect(gated.started.find((j) => j.domain === 'busy.test')?.createdAt).toBe(old);
    gated.open();
    await waitFor(async () => (await unfinished(q, { limit: 1000 })).length === 0, 10_000);
    expect(gated.started).toHaveLength(301);
    expect(q.storeSettings().synchronous).toBe('full');
  });
});

describe('embedded queue: operator actions', () => {
  it('holds a message until it is released', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver();
    const id = await q.enqueue(testMessage({ to: ['a@one.test', 'b@two.test'] }));
    expect(await q.hold(id)).toBe(2);
    await q.startWorker(deliver);
    await sleep(300);
    expect(calls).toHaveLength(0);
    expect((await unfinished(q, { state: 'held' })).map((e) => e.domain).sort()).toEqual([
      'one.test',
      'two.test',
    ]);
    expect(await unfinished(q, { state: 'held', domain: 'TWO.test' })).toHaveLength(1);
    expect(await unfinished(q, { state: 'scheduled' })).toHaveLength(0);

    expect(await q.release(id)).toBe(2);
    await waitFor(async () => (await q.inspect(id)) === null);
    expect(calls).toHaveLength(2);
  });

  it('holds a job that is in flight once its attempt ends, and keeps the hold across a restart', async () => {
    const path = store();
    const q = queueAt(path);
    const id = await q.enqueue(testMessage());
    const gated = gatedDeliver('deferred');
    await q.startWorker(gated.deliver, { retry: { intervals: ['1s'] } });
    await waitFor(() => gated.started.length === 1);
    expect((await q.inspect(id))?.jobs[0]?.state).toBe('active');
    expect(await q.hold(id)).toBe(1);
    gated.open();
    await waitFor(async () => (await q.inspect(id))?.jobs[0]?.state === 'held');
    await sleep(1300); // past the 1 s retry: still held
    expect((await q.inspect(id))?.jobs[0]?.attempts).toBe(1);
    expect(gated.started).toHaveLength(1);
    await q.close();

    const again = queueAt(path);
    expect((await again.inspect(id))?.jobs[0]?.state).toBe('held');
  });

  it('retries now on demand', async () => {
    const q = queueAt(store());
    const { deliver, calls } = scriptedDeliver((_a, _j, c) => (c.length === 1 ? 'deferred' : 'delivered'));
    const id = await q.enqueue(testMessage());
    await q.startWorker(deliver, { retry: { intervals: ['1h'] } });
    await waitFor(async () => (await q.inspect(id))?.jobs[0]?.attempts === 1);
    expect(await q.retryNow(id)).toBe(1);
    await waitFor(async () => (await q.inspect(id)) === null);
    expect(calls).toHaveLength(2);
  });

  it('removes a message without a bounce, also while it is in flight', async () => {
    const q = queueAt(store());
    const id = await q.enqueue(testMessage());
    const waiting = await q.enqueue(testMessage({ to: ['x@other.test'] }));
    expect(await q.hold(waiting)).toBe(1);
    const gated = gatedDeliver('failed');
    await q.startWorker(gated.deliver);
    await waitFor(() => gated.started.length === 1);
    expect(await q.remove(id)).toBe(true);
    expect(await q.remove(waiting)).toBe(true);
    expect(await q.remove('NOSUCHID')).toBe(false);
    gated.open();
    await sleep(300);
    expect(gated.started.map((j) => j.queueId)).toEqual([id]);
    expect(await unfinished(q)).toEqual([]);
    expect(await q.inspect(id)).toBeNull();
  });
});
