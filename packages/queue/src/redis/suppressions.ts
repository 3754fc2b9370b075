// The suppression list on Redis, shared by every node: one hash of entries keyed `scope address`
// (JSON values) and a sorted set of expiry times, both under the reserved `<prefix>:ops:` space.
import type { RedisClient } from '@tern/redis';
import {
  isActiveSuppression,
  parseSuppression,
  type Suppression,
  type SuppressionPage,
  type SuppressionQuery,
  type SuppressionStore,
  suppressionPageSize,
} from '../suppression.js';

/** Expired entries are deleted at most this often by one node, this many at a time. */
const PURGE_EVERY_MS = 60_000;
const PURGE_BATCH = 500;
/** Hash fields read per HSCAN step while listing. */
const SCAN_COUNT = 200;

/** The keys of the list under `prefix`. */
export function suppressionKeys(prefix: string): { entries: string; expiry: string } {
  return { entries: `${prefix}:ops:sup`, expiry: `${prefix}:ops:sup:exp` };
}

/** Scopes and addresses hold no spaces (they are checked), so one space joins them unambiguously. */
function field(scope: string, address: string): string {
  return `${scope} ${address.toLowerCase()}`;
}

/** HSCAN's MATCH is a glob: a search means the text itself. */
function globText(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

export class RedisSuppressions implements SuppressionStore {
  readonly #client: RedisClient;
  readonly #keys: { entries: string; expiry: string };
  #purgedAt = 0;

  constructor(client: RedisClient, prefix: string) {
    this.#client = client;
    this.#keys = suppressionKeys(prefix);
  }

  async add(entries: readonly Suppression[]): Promise<number> {
    if (entries.length === 0) return 0;
    const now = Date.now();
    await this.#purgeExpired(now);
    const fields = entries.map((e) => field(e.scope, e.address));
    // A live entry keeps the time it was first suppressed; a second writer racing this one at most
    // moves that time by the length of the race.
    const existing = await this.#client.hmget(this.#keys.entries, ...fields);
    const multi = this.#client.multi();
    entries.forEach((e, i) => {
      const before = existing[i] ? parseSuppression(existing[i] as string) : undefined;
      const createdAt = before && isActiveSuppression(before, now) ? before.createdAt : e.createdAt;
      multi.hset(this.#keys.entries, fields[i] as string, JSON.stringify({ ...e, createdAt }));
      if (e.expiresAt === undefined) multi.zrem(this.#keys.expiry, fields[i] as string);
      else multi.zadd(this.#keys.expiry, e.expiresAt, fields[i] as string);
    });
    const results = await multi.exec();
    const failed = results?.find(([error]) => error !== null);
    if (failed) throw failed[0];
    return entries.length;
  }

  async find(address: string, scopes: readonly string[], now = Date.now()): Promise<Suppression | undefined> {
    if (scopes.length === 0) return undefined;
    const values = await this.#client.hmget(this.#keys.entries, ...scopes.map((s) => field(s, address)));
    for (const value of values) {
      const entry = value ? parseSuppression(value) : undefined;
      if (entry && isActiveSuppression(entry, now)) return entry;
    }
    return undefined;
  }

  async remove(scope: string, address: string): Promise<boolean> {
    const key = field(scope, address);
    const [[, removed] = [null, 0]] =
      (await this.#client.multi().hdel(this.#keys.entries, key).zrem(this.#keys.expiry, key).exec()) ?? [];
    return removed === 1;
  }

  /** Pages follow Redis' HSCAN: about `limit` entries each, in no particular order. */
  async list(query: SuppressionQuery = {}): Promise<SuppressionPage> {
    const limit = suppressionPageSize(query.limit);
    const now = Date.now();
    const match = `${query.scope === undefined ? '*' : `${globText(query.scope)} `}*${
      query.search === undefined ? '' : `${globText(query.search.toLowerCase())}*`
    }`;
    let cursor = query.cursor ?? '0';
    if (!/^\d+$/.test(cursor)) throw new RangeError(`cursor: ${cursor} is not one tern gave`);
    const entries: Suppression[] = [];
    do {
      const [next, flat] = await this.#client.hscan(
        this.#keys.entries,
        cursor,
        'MATCH',
        match,
        'COUNT',
        SCAN_COUNT,
      );
      cursor = next;
      for (let i = 1; i < flat.length; i += 2) {
        const entry = parseSuppression(flat[i] as string);
        if (entry && isActiveSuppression(entry, now)) entries.push(entry);
      }
    } while (cursor !== '0' && entries.length < limit);
    entries.sort((a, b) => b.createdAt - a.createdAt);
    return cursor === '0' ? { entries } : { entries, next: cursor };
  }

  async count(): Promise<number> {
    return this.#client.hlen(this.#keys.entries);
  }

  async #purgeExpired(now: number): Promise<void> {
    if (now - this.#purgedAt < PURGE_EVERY_MS) return;
    this.#purgedAt = now;
    const due = await this.#client.zrangebyscore(this.#keys.expiry, '-inf', now, 'LIMIT', 0, PURGE_BATCH);
    if (due.length === 0) return;
    await this.#client
      .multi()
      .hdel(this.#keys.entries, ...due)
      .zrem(this.#keys.expiry, ...due)
      .exec();
  }
}
