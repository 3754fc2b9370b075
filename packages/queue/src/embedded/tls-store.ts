// The embedded backend's TlsStore: three tables of the queue's SQLite file (schema version 4).
import type Database from 'better-sqlite3';
import {
  checkDay,
  dayBefore,
  type JsonValue,
  TLS_COUNTS_RETENTION_DAYS,
  type TlsDayCounts,
  type TlsOutcomeCount,
  type TlsStore,
} from '../tls-store.js';

/** How often old days are removed (at most), so counting stays one small write. */
const PRUNE_EVERY_MS = 3600_000;

export class EmbeddedTlsStore implements TlsStore {
  readonly #db: Database.Database;
  readonly #now: () => number;
  #prunedAt = 0;

  constructor(db: Database.Database, now: () => number = Date.now) {
    this.#db = db;
    this.#now = now;
  }

  async get(key: string): Promise<JsonValue | undefined> {
    const row = this.#db
      .prepare('SELECT value FROM kv_cache WHERE key = ? AND expires_at > ?')
      .get(key, this.#now()) as { value: string } | undefined;
    return row ? (JSON.parse(row.value) as JsonValue) : undefined;
  }

  async set(key: string, value: JsonValue, ttlMs: number): Promise<void> {
    if (ttlMs <= 0) {
      this.#db.prepare('DELETE FROM kv_cache WHERE key = ?').run(key);
      return;
    }
    this.#relaxed(() => {
      this.#db
        .prepare('INSERT OR REPLACE INTO kv_cache (key, value, expires_at) VALUES (?, ?, ?)')
        .run(key, JSON.stringify(value), this.#now() + ttlMs);
    });
    this.#prune();
  }

  async claim(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const now = this.#now();
    return this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM kv_cache WHERE key = ? AND expires_at <= ?').run(key, now);
      const inserted = this.#db
        .prepare('INSERT OR IGNORE INTO kv_cache (key, value, expires_at) VALUES (?, ?, ?)')
        .run(key, JSON.stringify(owner), now + ttlMs);
      return inserted.changes === 1;
    })();
  }

  async release(key: string, owner: string): Promise<void> {
    this.#db.prepare('DELETE FROM kv_cache WHERE key = ? AND value = ?').run(key, JSON.stringify(owner));
  }

  async countTlsOutcome(count: TlsOutcomeCount): Promise<void> {
    checkDay(count.day);
    const { day, domain, policy, detail } = count;
    this.#relaxed(() => {
      this.#db
        .prepare(
          `INSERT INTO tls_report_counts (day, domain, policy, successes, failures) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (day, domain, policy) DO UPDATE SET
             successes = successes + excluded.successes, failures = failures + excluded.failures`,
        )
        .run(day, domain, policy, count.success ? 1 : 0, count.success ? 0 : 1);
      if (count.success || detail === undefined) return;
      const bumped = this.#db
        .prepare(
          'UPDATE tls_report_details SET count = count + 1 WHERE day = ? AND domain = ? AND policy = ? AND detail = ?',
        )
        .run(day, domain, policy, detail);
      if (bumped.changes > 0) return;
      const rows = this.#db
        .prepare('SELECT count(*) AS n FROM tls_report_details WHERE day = ? AND domain = ?')
        .get(day, domain) as { n: number };
      if (rows.n >= count.maxDetails) return;
      this.#db
        .prepare('INSERT INTO tls_report_details (day, domain, policy, detail, count) VALUES (?, ?, ?, ?, 1)')
        .run(day, domain, policy, detail);
    });
    this.#prune();
  }

  /**
   * A write without its own fsync, as the queue's bookkeeping: a counter or a cached policy lost
   * to a power cut costs a report line or a fetch, never mail, and the next enqueue's fsync makes
   * it durable anyway (the WAL is append-only).
   */
  #relaxed(write: () => void): void {
    this.#db.pragma('synchronous = NORMAL');
    try {
      this.#db.transaction(write)();
    } finally {
      this.#db.pragma('synchronous = FULL');
    }
  }

  async tlsCounts(day: string, domain: string): Promise<TlsDayCounts> {
    checkDay(day);
    const policies = this.#db
      .prepare(
        'SELECT policy, successes, failures FROM tls_report_counts WHERE day = ? AND domain = ? ORDER BY policy',
      )
      .all(day, domain) as { policy: string; successes: number; failures: number }[];
    const details = this.#db
      .prepare(
        'SELECT policy, detail, count FROM tls_report_details WHERE day = ? AND domain = ? ORDER BY policy, detail',
      )
      .all(day, domain) as { policy: string; detail: string; count: number }[];
    return {
      policies: policies.map((p) => ({
        ...p,
        details: details.filter((d) => d.policy === p.policy).map(({ detail, count }) => ({ detail, count })),
      })),
    };
  }

  async tlsDomains(day: string): Promise<string[]> {
    checkDay(day);
    const rows = this.#db
      .prepare('SELECT DISTINCT domain FROM tls_report_counts WHERE day = ? ORDER BY domain')
      .all(day) as { domain: string }[];
    return rows.map((r) => r.domain);
  }

  /** Removes expired cache entries and days past retention, at most once an hour. */
  #prune(): void {
    const now = this.#now();
    if (now - this.#prunedAt < PRUNE_EVERY_MS) return;
    this.#prunedAt = now;
    const oldest = dayBefore(new Date(now).toISOString().slice(0, 10), TLS_COUNTS_RETENTION_DAYS);
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM kv_cache WHERE expires_at <= ?').run(now);
      this.#db.prepare('DELETE FROM tls_report_counts WHERE day < ?').run(oldest);
      this.#db.prepare('DELETE FROM tls_report_details WHERE day < ?').run(oldest);
    })();
  }
}
