// Operator operations and timelines on the embedded backend (the shared suite), plus what only
// the embedded store has: a version 1 store upgraded in place, and timelines pruned after their
// retention.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type EmbeddedQueue, openEmbeddedQueue } from '../src/embedded/index.js';
import { describeQueueOperations } from './ops-suite.js';
import { testMessage } from './redis-fixtures/deliveries.js';

const dirs: string[] = [];
const opened: EmbeddedQueue[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((q) => q.close()));
});

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function path(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tern-ops-'));
  dirs.push(dir);
  return join(dir, 'queue.db');
}

function open(file = path(), options: { timelineRetentionMs?: number } = {}): EmbeddedQueue {
  const q = openEmbeddedQueue({ path: file, pollIntervalMs: 200, ...options });
  opened.push(q);
  return q;
}

describeQueueOperations('embedded', async () => open());

describe('EmbeddedQueue operations: store specifics', () => {
  it('upgrades a version 1 store in place: its mail stays, found by Message-ID, and gains timelines', async () => {
    const file = path();
    const q = open(file);
    const old = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Old'));
    await q.close();
    opened.pop();
    // Make it a store as version 1 wrote it.
    const raw = new Database(file);
    raw.exec(`DROP TABLE suppressions; DROP TABLE idempotency_keys; DROP TRIGGER messages_delete_parts; DROP TABLE body_parts; DROP TABLE store_probe;
      ALTER TABLE messages DROP COLUMN parts; ALTER TABLE messages DROP COLUMN eight_bit;
      DROP TABLE timelines; DROP TABLE destinations;
      CREATE INDEX messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;
      ALTER TABLE jobs DROP COLUMN next_hop; ALTER TABLE messages DROP COLUMN hold_reason;
      PRAGMA user_version = 1;`);
    raw.close();

    const upgraded = open(file);
    expect((await upgraded.details(old))?.jobs.map((j) => j.domain)).toEqual(['x.test']);
    expect(await upgraded.findByMessageId('<Old@src.test>')).toEqual([old]);
    expect((await upgraded.summary()).totals.total).toBe(1);
    const fresh = await upgraded.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'New'));
    expect((await upgraded.details(fresh))?.timeline[0]?.type).toBe('received');
  });

  it('forgets a finished message once its timeline retention is over', async () => {
    const q = open(path(), { timelineRetentionMs: 50 });
    const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Short'));
    await q.remove(id);
    expect((await q.details(id))?.state).toBe('finished');
    await sleep(100);
    // Pruning runs at most once a minute; a fresh store object prunes on its first look. With the
    // same retention: pruning looks only at messages received before it (schema 8).
    await q.close();
    opened.pop();
    const again = open(q.location, { timelineRetentionMs: 50 });
    expect(await again.details(id)).toBeNull();
    expect(await again.findByMessageId('Short@src.test')).toEqual([]);
  });
});
