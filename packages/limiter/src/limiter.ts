// The limiter: rate checks (GCRA) and concurrency leases over Redis (cluster-wide) or memory
// (one process), with a timeout on every call and the configured fail mode when Redis is down.
// One implementation for inbound limits (@tern/plugin-ratelimit) and outbound throttles
// (@tern/delivery), so both count the same way and share one set of Lua scripts.
import { randomUUID } from 'node:crypto';
import { type Duration, type Logger, parseDuration, withTimeout } from '@tern/plugin-api';
import {
  isCluster,
  isClusterConnection,
  isRedisClient,
  keyBase,
  type RedisClient,
  type RedisConnection,
} from '@tern/redis';
import { MemoryStore } from './memory-store.js';
import { RedisStore } from './redis-store.js';
import type { LimiterStore, StoreRateItem } from './store.js';

/** `limit` units per `per` (e.g. `{ limit: 100, per: '1h' }`). */
export interface Rate {
  readonly limit: number;
  readonly per: Duration;
}

export interface RateResult {
  readonly allowed: boolean;
  /** How long until this request would be allowed: 0 when allowed, Infinity when it never can be. */
  readonly retryAfterMs: number;
  /** Whole units left in the window after this request (0 when unknown). */
  readonly remaining: number;
  /** The store could not be asked: `allowed` is the fail mode, not a count. */
  readonly degraded: boolean;
}

export interface RateRequest {
  readonly key: string;
  readonly rate: Rate;
  /** Units this request takes (default 1): 1 per message, the size for bytes. */
  readonly cost?: number;
  /** Decide without taking anything. */
  readonly peek?: boolean;
}

export interface LeaseRequest {
  readonly key: string;
  readonly limit: number;
}

/** A concurrency slot: held until `release()`, or until its TTL runs out when the holder dies. */
export type LeaseResult =
  | {
      readonly acquired: true;
      /** Leases held under the key(s) now, this one included (0 when degraded). */
      readonly active: readonly number[];
      readonly degraded: boolean;
      /** Gives the slot back. Safe to call more than once. */
      release(): Promise<void>;
    }
  | { readonly acquired: false; readonly active: readonly number[]; readonly degraded: boolean };

/**
 * The two calls a per-destination throttle needs (@tern/delivery's `Throttle` seam). Keys are the
 * caller's: use a namespace of your own, e.g. `out:conn:<mx host>` and `out:msg:<domain>`.
 */
export interface Throttle {
  /** Takes one of `limit` concurrent slots under `key`; `{ acquired: false }` when all are held. */
  acquire(key: string, limit: number): Promise<SingleLeaseResult>;
  /** Takes one unit of `rate` under `key`; when refused, wait `retryAfterMs` and ask again. */
  take(key: string, rate: Rate): Promise<RateResult>;
}

/** The name @tern/plugin-ratelimit published first; kept so its users' imports still compile. */
export type DeliveryThrottle = Throttle;

export type SingleLeaseResult =
  | { readonly acquired: true; readonly active: number; readonly degraded: boolean; release(): Promise<void> }
  | { readonly acquired: false; readonly active: number; readonly degraded: boolean };

export type FailMode = 'open' | 'closed';

export interface LimiterOptions {
  /**
   * Where Redis is (a URL, Sentinels, Cluster nodes) or an ioredis client to share: cluster-wide
   * limits. Left out: in-process limits.
   */
  readonly redis?: RedisClient | RedisConnection | string | undefined;
  /** Prefix of every Redis key (default `tern:rl:`; on a Redis Cluster in a hash tag, `{tern:rl}:`). */
  readonly prefix?: string;
  /** What to answer when Redis cannot be asked: allow (`open`) or refuse (`closed`). */
  readonly failMode: FailMode;
  readonly logger: Logger;
  /** Longest wait for Redis per call before the fail mode applies (default 1000 ms). */
  readonly timeoutMs?: number;
  /** A lease not renewed for this long is gone: how soon a dead node's slots return (default 60 s). */
  readonly leaseTtlMs?: number;
  /** The in-process store's clock (tests); Redis always uses its own TIME. */
  readonly now?: () => number;
}

export interface Limiter extends Throttle {
  readonly backend: 'redis' | 'memory';
  readonly failMode: FailMode;
  /** Takes `cost` units of `rate` under `key` if they fit. */
  check(key: string, rate: Rate, cost?: number): Promise<RateResult>;
  /** Whether `cost` units would fit now, taking nothing. */
  peek(key: string, rate: Rate, cost?: number): Promise<RateResult>;
  /** Decides all requests in one atomic step; takes nothing unless every one is allowed. */
  checkAll(requests: readonly RateRequest[]): Promise<RateResult[]>;
  /** Takes a slot under every key, or none (one atomic step). */
  acquireAll(requests: readonly LeaseRequest[]): Promise<LeaseResult>;
  /** True while Redis is unreachable (after a failed call, until one succeeds). */
  readonly unavailable: boolean;
  /** Releases held leases and closes the connection the limiter opened itself. */
  close(): Promise<void>;
}

export const DEFAULT_PREFIX = 'tern:rl:';
export const DEFAULT_TIMEOUT_MS = 1000;
export const DEFAULT_LEASE_TTL_MS = 60_000;
const RENEW_BATCH = 500;

/** Creates a limiter: cluster-wide over Redis when `redis` is given, in-process otherwise. */
export function createLimiter(options: LimiterOptions): Limiter {
  if (options.failMode !== 'open' && options.failMode !== 'closed') {
    throw new TypeError(
      `createLimiter: failMode must be 'open' or 'closed', got ${String(options.failMode)}`,
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    throw new TypeError(`createLimiter: timeoutMs must be a positive integer, got ${String(timeoutMs)}`);
  }
  if (!Number.isSafeInteger(leaseTtlMs) || leaseTtlMs < 100) {
    throw new TypeError(
      `createLimiter: leaseTtlMs must be an integer of at least 100, got ${String(leaseTtlMs)}`,
    );
  }
  const store =
    options.redis === undefined
      ? new MemoryStore(options.now)
      : new RedisStore(options.redis, { connectWaitMs: timeoutMs });
  // One decision may touch several keys in one script: on a Cluster they must share a slot.
  const cluster =
    options.redis !== undefined &&
    (isRedisClient(options.redis) ? isCluster(options.redis) : isClusterConnection(options.redis));
  return new StoreLimiter(store, {
    prefix: keyBase(options.prefix ?? DEFAULT_PREFIX, cluster),
    failMode: options.failMode,
    logger: options.logger,
    timeoutMs,
    leaseTtlMs,
  });
}

interface HeldLease {
  readonly keys: readonly string[];
}

class StoreLimiter implements Limiter {
  readonly backend: 'redis' | 'memory';
  readonly failMode: FailMode;
  readonly #store: LimiterStore;
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #leaseTtlMs: number;
  readonly #held = new Map<string, HeldLease>();
  #renewTimer: NodeJS.Timeout | undefined;
  #outage: { since: number; failedCalls: number } | undefined;

  constructor(
    store: LimiterStore,
    options: { prefix: string; failMode: FailMode; logger: Logger; timeoutMs: number; leaseTtlMs: number },
  ) {
    this.#store = store;
    this.backend = store.kind;
    this.failMode = options.failMode;
    this.#prefix = options.prefix;
    this.#log = options.logger;
    this.#timeoutMs = options.timeoutMs;
    this.#leaseTtlMs = options.leaseTtlMs;
  }

  get unavailable(): boolean {
    return this.#outage !== undefined;
  }

  async check(key: string, rate: Rate, cost = 1): Promise<RateResult> {
    return (await this.checkAll([{ key, rate, cost }]))[0]!;
  }

  async peek(key: string, rate: Rate, cost = 1): Promise<RateResult> {
    return (await this.checkAll([{ key, rate, cost, peek: true }]))[0]!;
  }

  take(key: string, rate: Rate): Promise<RateResult> {
    return this.check(key, rate, 1);
  }

  async checkAll(requests: readonly RateRequest[]): Promise<RateResult[]> {
    if (requests.length === 0) return [];
    const items = requests.map((r, i) => this.#rateItem(r, i));
    try {
      const outcomes = await this.#call(this.#store.rate(items));
      this.#recovered();
      return outcomes.map((o) => ({ ...o, degraded: false }));
    } catch (error) {
      this.#failed(error);
      const allowed = this.failMode === 'open';
      return requests.map(() => ({ allowed, retryAfterMs: 0, remaining: 0, degraded: true }));
    }
  }

  async acquire(key: string, limit: number): Promise<SingleLeaseResult> {
    const result = await this.acquireAll([{ key, limit }]);
    const active = result.active[0] ?? 0;
    return result.acquired
      ? { acquired: true, active, degraded: result.degraded, release: result.release }
      : { acquired: false, active, degraded: result.degraded };
  }

  async acquireAll(requests: readonly LeaseRequest[]): Promise<LeaseResult> {
    if (requests.length === 0) {
      return { acquired: true, active: [], degraded: false, release: async () => {} };
    }
    const items = requests.map((r, i) => {
      checkLimit(r.limit, `acquire: requests[${i}].limit`);
      return { key: `${this.#prefix}lease:${r.key}`, limit: r.limit };
    });
    const id = randomUUID();
    try {
      const outcome = await this.#call(this.#store.acquire(items, id, this.#leaseTtlMs));
      this.#recovered();
      if (!outcome.acquired) return { acquired: false, active: outcome.active, degraded: false };
      const keys = items.map((i) => i.key);
      this.#held.set(id, { keys });
      this.#scheduleRenewal();
      return { acquired: true, active: outcome.active, degraded: false, release: () => this.#release(id) };
    } catch (error) {
      // A call that timed out may still have taken the slot in Redis; it is never renewed, so
      // its TTL gives it back.
      this.#failed(error);
      const active = requests.map(() => 0);
      return this.failMode === 'open'
        ? { acquired: true, active, degraded: true, release: async () => {} }
        : { acquired: false, active, degraded: true };
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#renewTimer);
    this.#renewTimer = undefined;
    await Promise.all([...this.#held.keys()].map((id) => this.#release(id)));
    await this.#store.close();
  }

  async #release(id: string): Promise<void> {
    const lease = this.#held.get(id);
    if (!lease) return;
    this.#held.delete(id);
    if (this.#held.size === 0) {
      clearInterval(this.#renewTimer);
      this.#renewTimer = undefined;
    }
    try {
      await this.#call(this.#store.release(lease.keys, id));
      this.#recovered();
    } catch (error) {
      // Not renewed from now on, so the lease expires by its TTL.
      this.#failed(error);
    }
  }

  #scheduleRenewal(): void {
    if (this.#renewTimer) return;
    // Three chances to renew within one TTL, so one slow or failed round does not lose the lease.
    this.#renewTimer = setInterval(() => void this.#renew(), Math.max(50, Math.floor(this.#leaseTtlMs / 3)));
    this.#renewTimer.unref();
  }

  async #renew(): Promise<void> {
    const leases = [...this.#held].flatMap(([id, lease]) => lease.keys.map((key) => ({ key, id })));
    if (leases.length === 0) return;
    try {
      let lost = 0;
      // In slices, so thousands of open connections never hold Redis in one long script.
      for (let i = 0; i < leases.length; i += RENEW_BATCH) {
        lost += await this.#call(this.#store.renew(leases.slice(i, i + RENEW_BATCH), this.#leaseTtlMs));
      }
      this.#recovered();
      if (lost > 0) {
        this.#log.warn(
          { lost, leaseTtlMs: this.#leaseTtlMs },
          'rate limits: some held leases had already expired (Redis unreachable for longer than the lease TTL?); those connections are no longer counted',
        );
      }
    } catch (error) {
      this.#failed(error);
    }
  }

  #rateItem(request: RateRequest, index: number): StoreRateItem {
    const where = `requests[${index}]`;
    checkLimit(request.rate.limit, `${where}.rate.limit`);
    const periodMs = parseDuration(request.rate.per, { positive: true, whole: true });
    if (periodMs === undefined) {
      throw new TypeError(`${where}.rate.per: not a duration: ${String(request.rate.per)} (use e.g. '1h')`);
    }
    const cost = request.cost ?? 1;
    if (!Number.isSafeInteger(cost) || cost < 0) {
      throw new TypeError(`${where}.cost: must be a whole number of at least 0, got ${String(cost)}`);
    }
    return {
      // The window is part of the key: a bucket's level is measured in units of its window.
      key: `${this.#prefix}rate:${periodMs}:${request.key}`,
      limit: request.rate.limit,
      periodMs,
      cost,
      peek: request.peek === true,
    };
  }

  #call<T>(promise: Promise<T>): Promise<T> {
    return withTimeout(promise, this.#timeoutMs, 'no answer from the rate-limit store');
  }

  /** Logs the start of an outage once; later failures of the same outage are only counted. */
  #failed(error: unknown): void {
    if (this.#outage) {
      this.#outage.failedCalls++;
      return;
    }
    this.#outage = { since: Date.now(), failedCalls: 1 };
    this.#log.error(
      { err: error instanceof Error ? error.message : String(error), failMode: this.failMode },
      this.failMode === 'open'
        ? 'rate limits: store unreachable, failing open (limits are not enforced until it is back)'
        : // Neutral wording: the SMTP plugin answers 451 4.3.0, delivery defers; each caller says how.
          'rate limits: store unreachable, failing closed (limited requests are refused until it is back)',
    );
  }

  #recovered(): void {
    if (!this.#outage) return;
    const { since, failedCalls } = this.#outage;
    this.#outage = undefined;
    this.#log.info(
      { downMs: Date.now() - since, failedCalls, failMode: this.failMode },
      'rate limits: store reachable again, limits enforced',
    );
  }
}

function checkLimit(limit: number, where: string): void {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new TypeError(`${where}: must be a whole number of at least 1, got ${String(limit)}`);
  }
}
