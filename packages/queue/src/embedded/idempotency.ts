// Idempotency keys in the embedded store: one row per key, claimed in one transaction.
import type Database from 'better-sqlite3';
import { claimOf, type IdempotencyClaim, type IdempotencyStore, idempotencyValue } from '../idempotency.js';

interface Row {
  fingerprint: string;
  queue_id: string | null;
  expires_at: number;
}

/** Expired keys are deleted at most this often. */
const PURGE_EVERY_MS = 60_000;

export class EmbeddedIdempotency implements IdempotencyStore {
  readonly #db: Database.Database;
  readonly #read: Database.Statement;
  readonly #write: Database.Statement;
  readonly #delete: Database.Statement;
  readonly #purge: Database.Statement;
  #purgedAt = 0;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#read = db.prepare('SELECT fingerprint, queue_id, expires_at FROM idempotency_keys WHERE key = ?');
    this.#write = db.prepare(
      `INSERT INTO idempotency_keys (key, fingerprint, queue_id, expires_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, queue_id = excluded.queue_id,
         expires_at = excluded.expires_at`,
    );
    this.#delete = db.prepare('DELETE FROM idempotency_keys WHERE key = ? AND queue_id IS NULL');
    this.#purge = db.prepare('DELETE FROM idempotency_keys WHERE expires_at <= ?');
  }

  async claim(key: string, fingerprint: string, pendingMs: number): Promise<IdempotencyClaim> {
    const now = Date.now();
    if (now - this.#purgedAt >= PURGE_EVERY_MS) {
      this.#purgedAt = now;
      this.#purge.run(now);
    }
    return this.#db.transaction((): IdempotencyClaim => {
      const row = this.#read.get(key) as Row | undefined;
      if (row !== undefined && row.expires_at > now) {
        return claimOf(idempotencyValue(row.fingerprint, row.queue_id ?? undefined), fingerprint);
      }
      this.#write.run(key, fingerprint, null, now + pendingMs);
      return { state: 'new' };
    })();
  }

  async complete(key: string, fingerprint: string, queueId: string, windowMs: number): Promise<void> {
    this.#write.run(key, fingerprint, queueId, Date.now() + windowMs);
  }

  async release(key: string): Promise<void> {
    this.#delete.run(key);
  }
}
