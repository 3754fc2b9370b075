// Opens the embedded queue's SQLite file for one process only, with the settings that make a
// committed enqueue survive a crash or a power cut, and creates or checks its schema.
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { TernError } from '@tern/plugin-api';
import type Database from 'better-sqlite3';
import { driver } from '../drivers.js';
import {
  EmbeddedStoreLockedError,
  EmbeddedStoreOpenError,
  EmbeddedStoreSchemaError,
  type StoreOwner,
} from './errors.js';

/** The schema this code writes; a store with a higher `user_version` was made by a newer Tern. */
export const SCHEMA_VERSION = 8;

const SCHEMA = `
CREATE TABLE messages (
  queue_id    TEXT PRIMARY KEY,
  envelope    TEXT NOT NULL,            -- Envelope as JSON, as accepted
  body        BLOB NOT NULL,            -- the whole message: headers, empty line, body
  size        INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,         -- ms since epoch; the retry lifetime counts from here
  message_id  TEXT,
  source      TEXT,                     -- IncomingMessage.source as JSON
  is_bounce   INTEGER NOT NULL DEFAULT 0 -- a notice we generated: never bounced itself
) STRICT;
CREATE INDEX messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE jobs (
  id              TEXT PRIMARY KEY,
  queue_id        TEXT NOT NULL REFERENCES messages (queue_id) ON DELETE CASCADE,
  domain          TEXT NOT NULL,
  recipients      TEXT NOT NULL,        -- RecipientState[] as JSON, delivered and failed ones kept
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  state           TEXT NOT NULL CHECK (state IN ('scheduled', 'active', 'held', 'done')),
  hold_requested  INTEGER NOT NULL DEFAULT 0, -- held while active: goes to 'held' instead of 'scheduled'
  delay_notified  INTEGER NOT NULL DEFAULT 0,
  lease_owner     TEXT,
  lease_until     INTEGER,
  updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX jobs_sched ON jobs (state, domain, next_attempt_at);
CREATE INDEX jobs_queue_id ON jobs (queue_id);
`;

// Version 2: operator operations and message timelines. A timeline outlives its message (no
// foreign key to messages) until `expires_at`, set when the message is finished.
const SCHEMA_2 = `
ALTER TABLE jobs ADD COLUMN next_hop TEXT;  -- an operator's reroute of this job (NextHop JSON)
ALTER TABLE messages ADD COLUMN hold_reason TEXT;  -- quarantined on arrival by a queue hook, until released

CREATE TABLE timelines (
  queue_id    TEXT PRIMARY KEY,
  message_id  TEXT,                       -- Message-ID without angle brackets, for lookups
  expires_at  INTEGER                     -- NULL while the message is queued
) STRICT;
CREATE INDEX timelines_message_id ON timelines (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX timelines_expires ON timelines (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE timeline_events (
  seq       INTEGER PRIMARY KEY,
  queue_id  TEXT NOT NULL REFERENCES timelines (queue_id) ON DELETE CASCADE,
  event     TEXT NOT NULL                 -- TimelineEvent as JSON
) STRICT;
CREATE INDEX timeline_events_queue_id ON timeline_events (queue_id, seq);

CREATE TABLE destinations (
  domain           TEXT PRIMARY KEY,
  suspended_until  INTEGER,               -- no delivery to this domain before then
  next_hop         TEXT                   -- an operator's reroute of every job of this domain
) STRICT;
`;

// Version 3: bodies too large to hold in memory are stored in slices (`body_parts`), written in
// transactions of their own before the one that makes the message and its jobs visible. A crash
// between leaves parts without a message: the queue removes them when it opens the store.
const SCHEMA_3 = `
ALTER TABLE messages ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;  -- >0: body in body_parts, messages.body empty
ALTER TABLE messages ADD COLUMN eight_bit INTEGER;  -- 1: some byte has the high bit set; NULL: intake did not say

CREATE TABLE body_parts (
  queue_id  TEXT NOT NULL,    -- no foreign key: parts are written before their message row
  seq       INTEGER NOT NULL, -- 0, 1, ...: the order of the slices
  data      BLOB NOT NULL,
  PRIMARY KEY (queue_id, seq)
) STRICT;

-- One place removes a message's parts, whichever path deletes the message.
CREATE TRIGGER messages_delete_parts AFTER DELETE ON messages WHEN old.parts > 0
BEGIN
  DELETE FROM body_parts WHERE queue_id = old.queue_id;
END;

-- One row the queue rewrites to find out whether the store takes writes again after a failure.
CREATE TABLE store_probe (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  at  INTEGER NOT NULL
) STRICT;
`;

// Version 4: outbound TLS state shared by restarts (EmbeddedTlsStore): cached MTA-STS policies and
// report claims with their expiry, and the TLS-RPT (RFC 8460) counters per policy domain and day.
const SCHEMA_4 = `
CREATE TABLE IF NOT EXISTS kv_cache (
  key         TEXT PRIMARY KEY,
  value       TEXT NOT NULL,              -- JSON
  expires_at  INTEGER NOT NULL            -- ms since epoch; an expired row is never read
) STRICT;

CREATE TABLE IF NOT EXISTS tls_report_counts (
  day        TEXT NOT NULL,               -- UTC YYYY-MM-DD
  domain     TEXT NOT NULL,               -- the policy domain
  policy     TEXT NOT NULL,               -- the RFC 8460 policy object as JSON
  successes  INTEGER NOT NULL,
  failures   INTEGER NOT NULL,
  PRIMARY KEY (day, domain, policy)
) STRICT;

CREATE TABLE IF NOT EXISTS tls_report_details (
  day     TEXT NOT NULL,
  domain  TEXT NOT NULL,
  policy  TEXT NOT NULL,
  detail  TEXT NOT NULL,                  -- one failure-details entry without its count, as JSON
  count   INTEGER NOT NULL,
  PRIMARY KEY (day, domain, policy, detail)
) STRICT;
`;

// Version 5: suppression lists (see ../suppression.ts), one row per scope and recipient; and the
// idempotency keys of HTTP injection (see ../idempotency.ts).
const SCHEMA_5 = `
CREATE TABLE IF NOT EXISTS suppressions (
  scope       TEXT NOT NULL,     -- a sender domain, or * for every sender
  address     TEXT NOT NULL,     -- the recipient, lower-cased
  source      TEXT NOT NULL,     -- bounce, complaint, manual, import
  reason      TEXT NOT NULL,
  category    TEXT,              -- bounces: the bounce category
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER,           -- NULL: until removed
  queue_id    TEXT,
  PRIMARY KEY (scope, address)
) STRICT;
CREATE INDEX IF NOT EXISTS suppressions_address ON suppressions (address);
CREATE INDEX IF NOT EXISTS suppressions_created ON suppressions (created_at);
CREATE INDEX IF NOT EXISTS suppressions_expiry ON suppressions (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS idempotency_keys (
  key          TEXT PRIMARY KEY,
  fingerprint  TEXT NOT NULL,      -- what the first request asked for
  queue_id     TEXT,               -- NULL while that request is being handled
  expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
`;

// Version 6: the webhook outbox (see ../webhook-outbox.ts): events waiting per endpoint, in the
// order written, and each endpoint's back-off, last outcome and lease.
const SCHEMA_6 = `
CREATE TABLE IF NOT EXISTS webhook_events (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order events are posted in
  endpoint    TEXT NOT NULL,
  created_at  INTEGER NOT NULL,                   -- ms; the event expires maxAge after this
  payload     TEXT NOT NULL                       -- the event as JSON
) STRICT;
CREATE INDEX IF NOT EXISTS webhook_events_endpoint ON webhook_events (endpoint, seq);

CREATE TABLE IF NOT EXISTS webhook_endpoints (
  endpoint         TEXT PRIMARY KEY,
  attempts         INTEGER NOT NULL DEFAULT 0,  -- failed posts since the last success
  next_attempt_at  INTEGER NOT NULL DEFAULT 0,
  last_success_at  INTEGER,
  last_failure_at  INTEGER,
  last_error       TEXT,
  lease_owner      TEXT,
  lease_until      INTEGER
) STRICT;
`;

// Version 7: a timeline is one row. Its events are JSON lines appended to `timelines.events`, so
// an event costs bytes in a row the commit writes anyway, not a row and an index entry of its own
// (`timeline_events` is folded in and dropped). Every message has a timeline row with its
// Message-ID, so lookups by Message-ID need no index on `messages` (one index less per enqueue
// and per delivered message): messages queued before timelines existed get an empty one here.
function migrateTo7(db: Database.Database): void {
  const has = (sql: string): boolean => db.prepare(sql).get() !== undefined;
  if (!has("SELECT 1 FROM pragma_table_info('timelines') WHERE name = 'events'")) {
    db.exec("ALTER TABLE timelines ADD COLUMN events TEXT NOT NULL DEFAULT ''"); // one JSON event per line, oldest first
  }
  if (has("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'timeline_events'")) {
    db.exec(`
      UPDATE timelines SET events = events || coalesce(
        (SELECT group_concat(event || char(10), '' ORDER BY seq) FROM timeline_events e
         WHERE e.queue_id = timelines.queue_id),
        '');
      DROP TABLE timeline_events;`);
  }
  db.exec(`
    INSERT OR IGNORE INTO timelines (queue_id, message_id)
      SELECT queue_id, CASE WHEN message_id IS NOT NULL THEN trim(rtrim(ltrim(trim(message_id), '<'), '>')) END
      FROM messages;
    DROP INDEX IF EXISTS messages_message_id;`);
}

// Version 8: fewer index pages per message. Every commit writes each page it touches to the WAL
// whole, and a delivered message inserts and deletes its job row once each, so every index on
// `jobs` cost a page per commit. Now:
// - `jobs_due` and `jobs_sched` hold only 'scheduled' jobs (partial indexes): a job an enqueue
//   claims goes 'active' at once and is deleted after its attempt, never touching them;
// - no `jobs_queue_id`: a job id is `<queue id>@<domain>` (plan.ts), so the primary key's index
//   finds a message's jobs as the id range (`<queue id>@`, `<queue id>A`) (see JOBS_OF). The
//   foreign key that needed that index goes too (a table rebuild: SQLite cannot drop one); a
//   trigger deletes a message's jobs with it, as the cascade did.
// - timelines are found by Message-ID through `message_key`, a 32-bit hash of it (messageKey),
//   instead of an index on the Message-ID itself: a new Message-ID lands at a random place in that
//   index, so its leaf is one more page per message in any commit; integer keys make the index
//   four times denser, so those inserts split pages (two pages and a parent more) far less often.
// - no `timelines_expires`: pruning reads the queue ids received before the retention instead
//   (see EmbeddedOperations.prune), so a finished message writes no index page for its expiry.
// Runs inside the open transaction (all or nothing) and from any earlier shape of `jobs`.
const JOB_COLUMNS_8 = `id, queue_id, domain, recipients, attempts, next_attempt_at, state, hold_requested,
  delay_notified, lease_owner, lease_until, updated_at, next_hop`;

function migrateTo8(db: Database.Database): void {
  const hasKey = db.prepare("SELECT 1 FROM pragma_table_info('timelines') WHERE name = 'message_key'").get();
  if (hasKey === undefined) db.exec('ALTER TABLE timelines ADD COLUMN message_key INTEGER');
  const setKey = db.prepare('UPDATE timelines SET message_key = ? WHERE rowid = ?');
  const rows = db
    .prepare('SELECT rowid AS id, message_id AS messageId FROM timelines WHERE message_id IS NOT NULL')
    .all() as { id: number; messageId: string }[];
  for (const row of rows) setKey.run(messageKey(row.messageId), row.id);
  db.exec(`
    DROP INDEX IF EXISTS timelines_message_id;
    DROP INDEX IF EXISTS timelines_expires;
    CREATE INDEX IF NOT EXISTS timelines_message_key ON timelines (message_key) WHERE message_key IS NOT NULL;
    DROP TRIGGER IF EXISTS messages_delete_jobs;
    DROP TABLE IF EXISTS jobs_v8;
    CREATE TABLE jobs_v8 (
      id              TEXT PRIMARY KEY,     -- <queue id>@<domain>: the message's jobs are one id range
      queue_id        TEXT NOT NULL,        -- deleted with its message by messages_delete_jobs
      domain          TEXT NOT NULL,
      recipients      TEXT NOT NULL,        -- RecipientState[] as JSON, delivered and failed ones kept
      attempts        INTEGER NOT NULL DEFAULT 0,
      next_attempt_at INTEGER NOT NULL,
      state           TEXT NOT NULL CHECK (state IN ('scheduled', 'active', 'held', 'done')),
      hold_requested  INTEGER NOT NULL DEFAULT 0, -- held while active: goes to 'held' instead of 'scheduled'
      delay_notified  INTEGER NOT NULL DEFAULT 0,
      lease_owner     TEXT,
      lease_until     INTEGER,
      updated_at      INTEGER NOT NULL,
      next_hop        TEXT                  -- an operator's reroute of this job (NextHop JSON)
    ) STRICT;
    INSERT INTO jobs_v8 (${JOB_COLUMNS_8}) SELECT ${JOB_COLUMNS_8} FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v8 RENAME TO jobs;
    CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE state = 'scheduled';
    CREATE INDEX jobs_sched ON jobs (domain, next_attempt_at) WHERE state = 'scheduled';
    CREATE TRIGGER messages_delete_jobs AFTER DELETE ON messages
    BEGIN
      DELETE FROM jobs WHERE id > old.queue_id || '@' AND id < old.queue_id || 'A';
    END;`);
}

/**
 * The key `timelines.message_key` indexes a (normalised) Message-ID by: its 32-bit FNV-1a hash
 * over UTF-16 code units. Stored, so it must never change; lookups compare the Message-ID too.
 */
export function messageKey(messageId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < messageId.length; i++) {
    hash = Math.imul(hash ^ messageId.charCodeAt(i), 0x01000193);
  }
  return hash >>> 0;
}

/**
 * The jobs of one message, as a range of the primary key (schema 8): bind `jobsOf(queueId)`.
 * Queue ids hold no '@', so exactly the ids `<queue id>@...` lie between the two bounds.
 */
export const JOBS_OF = 'id > ? AND id < ?';

/** The bounds of JOBS_OF for one message. */
export function jobsOf(queueId: string): [string, string] {
  return [`${queueId}@`, `${queueId}A`];
}

/** The sidecar file that names the holder. Informative only: the lock itself is SQLite's. */
export function ownerFileOf(path: string): string {
  return `${path}.owner`;
}

function readOwner(path: string): StoreOwner | undefined {
  try {
    const parsed = JSON.parse(readFileSync(ownerFileOf(path), 'utf8')) as Partial<StoreOwner>;
    if (typeof parsed.pid !== 'number') return undefined;
    return {
      pid: parsed.pid,
      host: String(parsed.host ?? '?'),
      startedAt: String(parsed.startedAt ?? '?'),
      command: String(parsed.command ?? '?'),
    };
  } catch {
    return undefined;
  }
}

/** SQLite result codes that mean a statement of ours is wrong, not that the store cannot write. */
const STATEMENT_FAULTS = new Set(['SQLITE_ERROR', 'SQLITE_CONSTRAINT', 'SQLITE_MISMATCH', 'SQLITE_RANGE']);

/**
 * The store refused a write for a reason of its own (full disk, I/O error, read-only file, lost
 * lock...), as opposed to a bug in a statement: the write can work again later as it is.
 */
export function isStoreFailure(error: unknown): boolean {
  if (!(error instanceof driver('better-sqlite3').SqliteError)) return false;
  return !STATEMENT_FAULTS.has(primaryCode(error.code) ?? error.code);
}

/** The store refused a write for lack of space on its file system. */
export function isOutOfSpace(error: unknown): boolean {
  return error instanceof driver('better-sqlite3').SqliteError && primaryCode(error.code) === 'SQLITE_FULL';
}

/** `SQLITE_IOERR_WRITE` → `SQLITE_IOERR`: extended codes add a suffix to the primary one. */
function primaryCode(code: string): string | undefined {
  return /^SQLITE_[A-Z]+/.exec(code)?.[0];
}

function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}

/**
 * Opens (creating when missing) the store at `path` and takes it for this process.
 *
 * Exclusion is SQLite's `locking_mode=EXCLUSIVE`: after the first write transaction the
 * connection keeps an exclusive POSIX lock on the file until it closes. The kernel drops that
 * lock when the process dies, even by SIGKILL, so a crashed MTA never leaves a stale lock, and a
 * recycled pid can never fool it (as it could a pid file). The `.owner` file beside the store
 * only lets the refused process say who holds it.
 */
export function openStore(path: string): Database.Database {
  const file = resolve(path);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  // Queued mail is private: create the file 0600 before SQLite does (its -wal file copies the mode).
  closeSync(openSync(file, 'a', 0o600));

  // timeout 0: a store held by another process is refused at once, not after a wait.
  // Loaded here, not at import: the embedded queue is the only user of the native addon.
  const Sqlite = driver('better-sqlite3');
  let db: Database.Database;
  try {
    db = new Sqlite(file, { timeout: 0 });
  } catch (error) {
    throw new EmbeddedStoreOpenError(file, error);
  }
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // Every commit writes each page it touches to the WAL whole, and a message touches about twenty
    // (its row and body, its job, their indexes, its timeline): 512-byte pages instead of SQLite's
    // 4 KiB cut the bytes written per 2 KiB message about fourfold with one session, and keep them
    // as low as 1 KiB pages do with twenty (bench/queue-io.js, packages/queue/README.md). Takes
    // effect only when the file is created; an existing store keeps its page size.
    db.pragma('page_size = 512');
    // WAL: a commit appends to one file and fsyncs it once; readers never block the writer.
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new EmbeddedStoreSchemaError(file, `cannot use WAL journal mode (got ${mode})`);
    // FULL: the WAL is fsynced at every commit, so an acknowledged enqueue survives power loss.
    // NORMAL (the usual WAL pairing) syncs only at checkpoints and may lose the last commits.
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    // Bodies pass through the WAL; truncate it after checkpoints instead of keeping its peak size.
    db.pragma('journal_size_limit = 67108864');
    // Checkpoint at 16000 pages (8 MiB at 512 bytes), not 1000: a page rewritten often (an index's,
    // the queue's few live rows') is copied to the database once per checkpoint, not once per MiB.
    db.pragma('wal_autocheckpoint = 16000');
    // SQLite's own default page cache, 2 MiB, not better-sqlite3's 16 MiB: a commit that touched a
    // page past the end of the database (SQLite does, now and then) ends by walking every slot of
    // the cache's hash table, and at 512-byte pages 16 MiB is 21 000 pages in 32 768 slots, which
    // cost about 4 % of the queue's CPU on the event loop (perf, bench/queue-io.js). The pages a
    // steady flow of mail touches (the tail of each table and index) fit in 2 MiB many times over.
    db.pragma('cache_size = -2000');
    // The first write transaction takes the exclusive lock that is then held until close.
    db.exec('BEGIN IMMEDIATE');
    migrate(db, file);
    db.exec('COMMIT');
  } catch (error) {
    if (db.inTransaction) db.exec('ROLLBACK');
    db.close();
    if (isBusy(error)) throw new EmbeddedStoreLockedError(file, readOwner(file), error);
    if (error instanceof TernError) throw error;
    throw new EmbeddedStoreOpenError(file, error);
  }

  const owner: StoreOwner = {
    pid: process.pid,
    host: hostname(),
    startedAt: new Date().toISOString(),
    command: process.argv.slice(1, 3).join(' ') || process.argv0,
  };
  writeFileSync(ownerFileOf(file), `${JSON.stringify(owner)}\n`, { mode: 0o600 });
  return db;
}

/** Closes the store and removes the owner file (the lock goes with the connection). */
export function closeStore(db: Database.Database): void {
  const file = db.name;
  db.close();
  rmSync(ownerFileOf(file), { force: true });
}

function migrate(db: Database.Database, file: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version === SCHEMA_VERSION) return;
  if (version >= 1 && version < SCHEMA_VERSION) {
    // An older store: its queued mail stays as it is (no timeline before 2, bodies inline before 3,
    // no TLS state before 4, no suppression list or idempotency keys before 5, no webhooks before 6,
    // a row per timeline event before 7, an index and a foreign key more on jobs before 8).
    if (version < 2) db.exec(SCHEMA_2);
    if (version < 3) db.exec(SCHEMA_3);
    if (version < 4) db.exec(SCHEMA_4);
    if (version < 5) db.exec(SCHEMA_5);
    if (version < 6) db.exec(SCHEMA_6);
    if (version < 7) migrateTo7(db);
    migrateTo8(db);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    return;
  }
  if (version > SCHEMA_VERSION) {
    throw new EmbeddedStoreSchemaError(
      file,
      `schema version ${version} was written by a newer Tern (this one knows ${SCHEMA_VERSION}); upgrade Tern`,
    );
  }
  const tables = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'").get() as {
    n: number;
  };
  if (tables.n > 0) {
    throw new EmbeddedStoreSchemaError(file, 'the file is an SQLite database but not a Tern queue');
  }
  db.exec(SCHEMA);
  db.exec(SCHEMA_2);
  db.exec(SCHEMA_3);
  db.exec(SCHEMA_4);
  db.exec(SCHEMA_5);
  db.exec(SCHEMA_6);
  migrateTo7(db);
  migrateTo8(db);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
}
