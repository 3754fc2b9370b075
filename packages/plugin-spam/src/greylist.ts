// Greylisting (after postgrey): a new (client network, sender, recipient) triplet is deferred with
// 451 until it retries after the delay. Redis makes the decision atomic and shared by every tern
// process; the in-process store is the single-node fallback.
import { createHash } from 'node:crypto';
import { networkOf } from '@tern/plugin-api';
import { isRedisClient, openRedis, type RedisClient, type RedisConnection } from '@tern/redis';

export type GreylistOutcome =
  /** First attempt: remembered, deferred. */
  | 'new'
  /** Retried before the delay passed: deferred again. */
  | 'early'
  /** Retried after the delay: passes from now on. */
  | 'passed'
  /** Already passed earlier: let through, lifetime renewed. */
  | 'known';

export interface GreylistVerdict {
  readonly outcome: GreylistOutcome;
  /** Seconds until a retry would pass (0 when it passes now). */
  readonly retryInSeconds: number;
}

export interface GreylistTimes {
  readonly delayMs: number;
  readonly retryWindowMs: number;
  readonly lifetimeMs: number;
}

export interface GreylistStore {
  /** Whether every tern process sees the same triplets (Redis) or only this one (memory). */
  readonly shared: boolean;
  check(key: string, times: GreylistTimes): Promise<GreylistVerdict>;
  close(): Promise<void>;
}

const OUTCOMES: readonly GreylistOutcome[] = ['new', 'early', 'passed', 'known'];

/**
 * One atomic step per attempt. The clock is Redis's own (TIME), so processes on hosts whose clocks
 * disagree still agree on how long a triplet has waited.
 * KEYS[1] triplet; ARGV delay, retry window, lifetime (ms). Returns { outcome index, retry in ms }.
 */
const CHECK_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delay = tonumber(ARGV[1])
local first = redis.call('HGET', KEYS[1], 'first')
if not first then
  redis.call('HSET', KEYS[1], 'first', now, 'attempts', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {0, delay}
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if redis.call('HEXISTS', KEYS[1], 'passed') == 1 then
  redis.call('HSET', KEYS[1], 'last', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {3, 0}
end
local waited = now - tonumber(first)
if waited >= delay then
  redis.call('HSET', KEYS[1], 'passed', now, 'last', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {2, 0}
end
return {1, delay - waited}
`;
const CHECK_SHA = createHash('sha1').update(CHECK_SCRIPT).digest('hex');

/** Greylisting triplets in Redis. Owns (and closes) the connection only when it opened it. */
export class RedisGreylistStore implements GreylistStore {
  readonly shared = true;
  readonly #client: RedisClient;
  readonly #owned: boolean;

  constructor(redis: RedisClient | RedisConnection | string) {
    if (!isRedisClient(redis)) {
      this.#client = openRedis(redis, {
        lazyConnect: true,
        // Greylisting fails open: a Redis outage must cost one quick error, not a stuck RCPT.
        maxRetriesPerRequest: 1,
        connectTimeout: 2000,
        commandTimeout: 2000,
      });
      // ioredis reports connection trouble as events; each failed check is logged by the caller.
      this.#client.on('error', () => {});
      this.#owned = true;
    } else {
      this.#client = redis;
      this.#owned = false;
    }
  }

  async check(key: string, times: GreylistTimes): Promise<GreylistVerdict> {
    const args = [String(times.delayMs), String(times.retryWindowMs), String(times.lifetimeMs)];
    let reply: unknown;
    try {
      reply = await this.#client.evalsha(CHECK_SHA, 1, key, ...args);
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
      reply = await this.#client.eval(CHECK_SCRIPT, 1, key, ...args);
    }
    const [index, retryMs] = reply as [number, number];
    const outcome = OUTCOMES[index];
    if (outcome === undefined) throw new Error(`greylist script returned ${JSON.stringify(reply)}`);
    return { outcome, retryInSeconds: Math.ceil(retryMs / 1000) };
  }

  async close(): Promise<void> {
    if (!this.#owned) return;
    try {
      await this.#client.quit();
    } catch {
      this.#client.disconnect();
    }
  }
}

interface MemoryEntry {
  first: number;
  passed: boolean;
  expires: number;
}

/** Greylisting triplets in this process's memory: for one node, or when no Redis is configured. */
export class MemoryGreylistStore implements GreylistStore {
  readonly shared = false;
  readonly #entries = new Map<string, MemoryEntry>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(maxEntries: number, now: () => number = Date.now) {
    this.#maxEntries = maxEntries;
    this.#now = now;
  }

  get size(): number {
    return this.#entries.size;
  }

  async check(key: string, times: GreylistTimes): Promise<GreylistVerdict> {
    const now = this.#now();
    let entry = this.#entries.get(key);
    if (entry && entry.expires <= now) {
      this.#entries.delete(key);
      entry = undefined;
    }
    if (!entry) {
      this.#store(key, { first: now, passed: false, expires: now + times.retryWindowMs });
      return { outcome: 'new', retryInSeconds: Math.ceil(times.delayMs / 1000) };
    }
    if (entry.passed) {
      this.#store(key, { ...entry, expires: now + times.lifetimeMs });
      return { outcome: 'known', retryInSeconds: 0 };
    }
    const waited = now - entry.first;
    if (waited >= times.delayMs) {
      this.#store(key, { ...entry, passed: true, expires: now + times.lifetimeMs });
      return { outcome: 'passed', retryInSeconds: 0 };
    }
    return { outcome: 'early', retryInSeconds: Math.ceil((times.delayMs - waited) / 1000) };
  }

  async close(): Promise<void> {
    this.#entries.clear();
  }

  /** Re-inserts so the Map's order is least recently used first, then trims to the limit. */
  #store(key: string, entry: MemoryEntry): void {
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    if (this.#entries.size <= this.#maxEntries) return;
    const now = this.#now();
    for (const [k, e] of this.#entries) if (e.expires <= now) this.#entries.delete(k);
    for (const k of this.#entries.keys()) {
      if (this.#entries.size <= this.#maxEntries) break;
      this.#entries.delete(k);
    }
  }
}

/**
 * The sender as greylisting compares it. Lower-cased; BATV tags (`prvs=tag=user@`) removed and
 * digit runs in the local part folded (as postgrey does), because bounce-address tagging and
 * VERP give every retry a new sender and such mail would otherwise never pass.
 */
export function normalizeSender(sender: string): string {
  if (sender === '') return '<>';
  const lower = sender.toLowerCase();
  const at = lower.lastIndexOf('@');
  if (at === -1) return lower;
  const local = lower
    .slice(0, at)
    .replace(/^(?:prvs|msprvs\d*|btv1)=[^=]+=/, '')
    .replace(/\d+/g, '#');
  return `${local}@${lower.slice(at + 1)}`;
}

/** The Redis key (or map key) of a triplet: `<prefix><network>|<sender>|<recipient>`. */
export function tripletKey(
  prefix: string,
  ip: string,
  sender: string,
  recipient: string,
  ipv4Prefix: number,
  ipv6Prefix: number,
): string {
  const network = networkOf(ip, ipv4Prefix, ipv6Prefix);
  if (network === undefined) throw new TypeError(`not an IP address: ${ip}`);
  return `${prefix}${network}|${normalizeSender(sender)}|${recipient.toLowerCase()}`;
}
