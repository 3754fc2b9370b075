// The suppression list in the embedded store: one table, keyed by scope and recipient.

import type { BounceCategory } from '@tern/plugin-api';
import type Database from 'better-sqlite3';
import {
  isActiveSuppression,
  type Suppression,
  type SuppressionPage,
  type SuppressionQuery,
  type SuppressionSource,
  type SuppressionStore,
  suppressionPageSize,
} from '../suppression.js';

interface Row {
  scope: string;
  address: string;
  source: string;
  reason: string;
  category: string | null;
  created_at: number;
  expires_at: number | null;
  queue_id: string | null;
}

/** Expired entries are deleted at most this often. */
const PURGE_EVERY_MS = 60_000;

function entryOf(row: Row): Suppression {
  return {
    scope: row.scope,
    address: row.address,
    source: row.source as SuppressionSource,
    reason: row.reason,
    ...(row.category === null ? {} : { category: row.category as BounceCategory }),
    createdAt: row.created_at,
    ...(row.expires_at === null ? {} : { expiresAt: row.expires_at }),
    ...(row.queue_id === null ? {} : { queueId: row.queue_id }),
  };
}

/** `%` and `_` are LIKE's wildcards; a search means the text itself. */
function likeText(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export class EmbeddedSuppressions implements SuppressionStore {
  readonly #db: Database.Database;
  readonly #upsert: Database.Statement;
  readonly #lookup: Database.Statement;
  readonly #delete: Database.Statement;
  readonly #purge: Database.Statement;
  #purgedAt = 0;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#upsert = db.prepare(`
      INSERT INTO suppressions (scope, address, source, reason, category, created_at, expires_at, queue_id)
      VALUES (@scope, @address, @source, @reason, @category, @created_at, @expires_at, @queue_id)
      ON CONFLICT (scope, address) DO UPDATE SET
        source = excluded.source, reason = excluded.reason, category = excluded.category,
        expires_at = excluded.expires_at, queue_id = excluded.queue_id,
        -- an entry that had expired starts again; a live one keeps the time it was first suppressed
        created_at = CASE WHEN suppressions.expires_at IS NOT NULL AND suppressions.expires_at <= @now
                          THEN excluded.created_at ELSE suppressions.created_at END`);
    this.#lookup = db.prepare(
      'SELECT * FROM suppressions WHERE address = ? AND scope = ? AND (expires_at IS NULL OR expires_at > ?)',
    );
    this.#delete = db.prepare('DELETE FROM suppressions WHERE scope = ? AND address = ?');
    this.#purge = db.prepare('DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= ?');
  }

  async add(entries: readonly Suppression[]): Promise<number> {
    const now = Date.now();
    this.#purgeExpired(now);
    this.#db.transaction(() => {
      for (const e of entries) {
        this.#upsert.run({
          scope: e.scope,
          address: e.address,
          source: e.source,
          reason: e.reason,
          category: e.category ?? null,
          created_at: e.createdAt,
          expires_at: e.expiresAt ?? null,
          queue_id: e.queueId ?? null,
          now,
        });
      }
    })();
    return entries.length;
  }

  async find(address: string, scopes: readonly string[], now = Date.now()): Promise<Suppression | undefined> {
    for (const scope of scopes) {
      const row = this.#lookup.get(address.toLowerCase(), scope, now) as Row | undefined;
      if (row !== undefined) return entryOf(row);
    }
    return undefined;
  }

  async remove(scope: string, address: string): Promise<boolean> {
    return this.#delete.run(scope, address.toLowerCase()).changes > 0;
  }

  async list(query: SuppressionQuery = {}): Promise<SuppressionPage> {
    const limit = suppressionPageSize(query.limit);
    const now = Date.now();
    const offset = query.cursor === undefined ? 0 : Number(query.cursor);
    if (!Number.isInteger(offset) || offset < 0)
      throw new RangeError(`cursor: ${query.cursor} is not one tern gave`);
    const where = ['(expires_at IS NULL OR expires_at > @now)'];
    if (query.scope !== undefined) where.push('scope = @scope');
    if (query.search !== undefined) where.push("address LIKE @search ESCAPE '\\'");
    const rows = this.#db
      .prepare(
        `SELECT * FROM suppressions WHERE ${where.join(' AND ')}
         ORDER BY created_at DESC, scope, address LIMIT @limit OFFSET @offset`,
      )
      .all({
        now,
        limit: limit + 1,
        offset,
        ...(query.scope === undefined ? {} : { scope: query.scope }),
        ...(query.search === undefined ? {} : { search: likeText(query.search.toLowerCase()) }),
      }) as Row[];
    const entries = rows
      .slice(0, limit)
      .map(entryOf)
      .filter((e) => isActiveSuppression(e, now));
    return rows.length > limit ? { entries, next: String(offset + limit) } : { entries };
  }

  async count(): Promise<number> {
    return (this.#db.prepare('SELECT count(*) AS n FROM suppressions').get() as { n: number }).n;
  }

  #purgeExpired(now: number): void {
    if (now - this.#purgedAt < PURGE_EVERY_MS) return;
    this.#purgedAt = now;
    this.#purge.run(now);
  }
}
