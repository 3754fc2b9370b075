// The Redis backend: each decision is one EVALSHA (EVAL when the server lost its script cache,
// after a restart or SCRIPT FLUSH). Keys and arithmetic are in redis-scripts.ts.
import { within } from '@tern/plugin-api';
import { isRedisClient, openRedis, type RedisClient, type RedisConnection } from '@tern/redis';
import { ACQUIRE_SCRIPT, type LuaScript, RATE_SCRIPT, RENEW_SCRIPT } from './redis-scripts.js';
import type {
  LimiterStore,
  StoreLeaseItem,
  StoreLeaseOutcome,
  StoreRateItem,
  StoreRateOutcome,
} from './store.js';

/** Thrown when Redis is not connected; the limiter turns it into the configured fail mode. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
}

export interface RedisStoreOptions {
  /** How long a call made before the first connection may wait for it. */
  readonly connectWaitMs: number;
}

export class RedisStore implements LimiterStore {
  readonly kind = 'redis';
  readonly #redis: RedisClient;
  /** We made the connection, so we close it. A caller's connection stays theirs. */
  readonly #owned: boolean;
  readonly #connectWaitMs: number;
  #wasReady = false;
  #firstReady: Promise<void>;
  #gaveUpWaiting = false;

  constructor(redis: RedisClient | RedisConnection | string, options: RedisStoreOptions) {
    this.#connectWaitMs = options.connectWaitMs;
    if (!isRedisClient(redis)) {
      this.#owned = true;
      this.#redis = openRedis(redis, {
        // Fail at once while disconnected instead of queueing: a queued check would answer late,
        // and replaying stale increments after a reconnect would count mail twice.
        enableOfflineQueue: false,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 0,
        connectTimeout: 2000,
        // Keep trying forever, never slower than once a second, so recovery is noticed quickly.
        retryStrategy: (times) => Math.min(times * 100, 1000),
      });
      // The limiter logs outages once; without a listener ioredis prints every reconnect failure.
      this.#redis.on('error', () => {});
    } else {
      this.#owned = false;
      this.#redis = redis;
    }
    this.#wasReady = this.#redis.status === 'ready';
    this.#firstReady = new Promise((resolve) => {
      if (this.#wasReady) return resolve();
      this.#redis.once('ready', () => resolve());
    });
    this.#redis.on('ready', () => {
      this.#wasReady = true;
    });
  }

  /** The connection in use (tests and the admin API may want its status). */
  get connection(): RedisClient {
    return this.#redis;
  }

  async rate(items: readonly StoreRateItem[]): Promise<StoreRateOutcome[]> {
    const args: (string | number)[] = [];
    for (const item of items) args.push(item.limit, item.periodMs, item.cost, item.peek ? 1 : 0);
    const reply = (await this.#run(
      RATE_SCRIPT,
      items.map((i) => i.key),
      args,
    )) as [number, number, number][];
    return reply.map(([allowed, retry, remaining]) => ({
      allowed: allowed === 1,
      retryAfterMs: retry < 0 ? Number.POSITIVE_INFINITY : retry,
      remaining,
    }));
  }

  async acquire(items: readonly StoreLeaseItem[], id: string, ttlMs: number): Promise<StoreLeaseOutcome> {
    const [acquired, active] = (await this.#run(
      ACQUIRE_SCRIPT,
      items.map((i) => i.key),
      [id, ttlMs, ...items.map((i) => i.limit)],
    )) as [number, number[]];
    return { acquired: acquired === 1, active };
  }

  async renew(leases: readonly { key: string; id: string }[], ttlMs: number): Promise<number> {
    if (leases.length === 0) return 0;
    return (await this.#run(
      RENEW_SCRIPT,
      leases.map((l) => l.key),
      [ttlMs, ...leases.map((l) => l.id)],
    )) as number;
  }

  async release(keys: readonly string[], id: string): Promise<void> {
    await this.#usable();
    const pipeline = this.#redis.pipeline();
    for (const key of keys) pipeline.zrem(key, id);
    const results = (await pipeline.exec()) ?? [];
    const failed = results.find(([error]) => error);
    if (failed) throw failed[0];
  }

  async close(): Promise<void> {
    if (!this.#owned) return;
    if (this.#redis.status === 'ready') {
      await this.#redis.quit().catch(() => this.#redis.disconnect());
    } else {
      this.#redis.disconnect();
    }
  }

  async #run(
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    await this.#usable();
    try {
      return await this.#redis.evalsha(script.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
      // EVAL also caches the script, so the next call is an EVALSHA again.
      return await this.#redis.eval(script.source, keys.length, ...keys, ...args);
    }
  }

  /**
   * Resolves when a command can be sent now. Only calls made before the first connection wait
   * (once, up to connectWaitMs); during an outage every call fails at once, so mail is answered
   * in the configured fail mode without each SMTP command stalling.
   */
  async #usable(): Promise<void> {
    const status = this.#redis.status;
    if (status === 'ready') return;
    if (this.#wasReady || this.#gaveUpWaiting || status === 'end') {
      throw new StoreUnavailableError(`Redis connection is ${status}`);
    }
    if (status === 'wait') this.#redis.connect().catch(() => {});
    await within(this.#firstReady, this.#connectWaitMs, { unref: true });
    if (this.#redis.status !== 'ready') {
      this.#gaveUpWaiting = true;
      throw new StoreUnavailableError(
        `Redis connection is ${this.#redis.status} after ${this.#connectWaitMs} ms`,
      );
    }
  }
}
