// The Redis backend's TlsStore, under `<prefix>:tls:`: cached values and claims as strings with a
// PX expiry (SET ... PX, SET ... NX PX), and per domain and day two hashes of counters plus the
// day's set of domains, all expiring TLS_COUNTS_RETENTION_DAYS after the day.
import type { RedisClient } from '@tern/redis';
import {
  checkDay,
  type JsonValue,
  TLS_COUNTS_RETENTION_DAYS,
  type TlsDayCounts,
  type TlsOutcomeCount,
  type TlsStore,
} from '../tls-store.js';

/** Key names under `<prefix>:tls:`; exported for tests that look inside. */
export function tlsKeys(prefix: string): {
  value(key: string): string;
  domains(day: string): string;
  counts(day: string, domain: string): string;
  details(day: string, domain: string): string;
} {
  const base = `${prefix}:tls`;
  return {
    value: (key) => `${base}:kv:${key}`,
    domains: (day) => `${base}:rpt:${day}`,
    // Fields: `s <policy>` and `f <policy>` (successes, failures).
    counts: (day, domain) => `${base}:rpt:${day}:${domain}:n`,
    // Fields: `<policy>\n<detail>`.
    details: (day, domain) => `${base}:rpt:${day}:${domain}:d`,
  };
}

// Counts one outcome, and a failure's detail row unless the domain-day has `cap` rows already.
// KEYS: counts hash, details hash, domains set. ARGV: count field, detail field ('' for none), cap,
// domain, expiry (unix ms).
const COUNT_LUA = `
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[2] ~= '' then
  if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 or redis.call('HLEN', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  end
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[3], ARGV[5])
return 1
`;

// Deletes a claim only if its owner still holds it. KEYS: the claim. ARGV: owner.
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export class RedisTlsStore implements TlsStore {
  readonly #client: RedisClient;
  readonly #keys: ReturnType<typeof tlsKeys>;

  constructor(client: RedisClient, prefix: string) {
    this.#client = client;
    this.#keys = tlsKeys(prefix);
  }

  async get(key: string): Promise<JsonValue | undefined> {
    const text = await this.#client.get(this.#keys.value(key));
    return text === null ? undefined : (JSON.parse(text) as JsonValue);
  }

  async set(key: string, value: JsonValue, ttlMs: number): Promise<void> {
    if (ttlMs <= 0) {
      await this.#client.del(this.#keys.value(key));
      return;
    }
    await this.#client.set(this.#keys.value(key), JSON.stringify(value), 'PX', Math.ceil(ttlMs));
  }

  async claim(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const done = await this.#client.set(this.#keys.value(key), owner, 'PX', Math.ceil(ttlMs), 'NX');
    return done === 'OK';
  }

  async release(key: string, owner: string): Promise<void> {
    await this.#client.eval(RELEASE_LUA, 1, this.#keys.value(key), owner);
  }

  async countTlsOutcome(count: TlsOutcomeCount): Promise<void> {
    checkDay(count.day);
    const expiresAt = Date.parse(`${count.day}T00:00:00Z`) + (TLS_COUNTS_RETENTION_DAYS + 1) * 86_400_000;
    await this.#client.eval(
      COUNT_LUA,
      3,
      this.#keys.counts(count.day, count.domain),
      this.#keys.details(count.day, count.domain),
      this.#keys.domains(count.day),
      `${count.success ? 's' : 'f'} ${count.policy}`,
      count.success || count.detail === undefined ? '' : `${count.policy}\n${count.detail}`,
      String(count.maxDetails),
      count.domain,
      String(expiresAt),
    );
  }

  async tlsCounts(day: string, domain: string): Promise<TlsDayCounts> {
    checkDay(day);
    const [counts, details] = await Promise.all([
      this.#client.hgetall(this.#keys.counts(day, domain)),
      this.#client.hgetall(this.#keys.details(day, domain)),
    ]);
    const policies = new Map<string, { successes: number; failures: number }>();
    for (const [field, value] of Object.entries(counts)) {
      const policy = field.slice(2);
      const entry = policies.get(policy) ?? { successes: 0, failures: 0 };
      if (field.startsWith('s ')) entry.successes += Number(value);
      else entry.failures += Number(value);
      policies.set(policy, entry);
    }
    const rows = Object.entries(details).map(([field, count]) => {
      const cut = field.indexOf('\n');
      return { policy: field.slice(0, cut), detail: field.slice(cut + 1), count: Number(count) };
    });
    return {
      policies: [...policies.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([policy, n]) => ({
          policy,
          ...n,
          details: rows
            .filter((r) => r.policy === policy)
            .sort((a, b) => (a.detail < b.detail ? -1 : a.detail > b.detail ? 1 : 0))
            .map(({ detail, count }) => ({ detail, count })),
        })),
    };
  }

  async tlsDomains(day: string): Promise<string[]> {
    checkDay(day);
    return (await this.#client.smembers(this.#keys.domains(day))).sort();
  }
}
