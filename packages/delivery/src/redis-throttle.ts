// Cluster-wide throttles in Redis: concurrency as leases in a sorted set scored by expiry (a dead
// node's slots come back when its leases expire), rate as GCRA. Redis's own clock (TIME) is the only
// clock, so nodes with skewed clocks still agree.
import { randomUUID } from 'node:crypto';
import type { Logger } from '@tern/plugin-api';
import { silentLogger } from '@tern/plugin-api';
import type { Redis } from 'ioredis';
import {
  gcraParameters,
  type Throttle,
  type ThrottleLeaseResult,
  type ThrottleRate,
  type ThrottleRateResult,
} from './throttle.js';

const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// KEYS[1] lease set; ARGV max, ttlMs, lease id. 1 = taken, 0 = full.
const ACQUIRE = `${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1`;

// KEYS[1] lease set; ARGV ttlMs, lease id. 1 = renewed, 0 = the lease had expired and is gone.
const RENEW = `${NOW_MS}
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1`;

// KEYS[1] theoretical arrival time; ARGV emission ms, tolerance ms. 0 = go, else ms to wait.
const GCRA = `${NOW_MS}
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0 then return math.ceil(wait) end
local next = tat + emission
redis.call('SET', KEYS[1], tostring(next), 'PX', math.ceil(next - now) + 1000)
return 0`;

export interface RedisThrottleOptions {
  /** Key prefix (default `tern:throttle:`). */
  readonly prefix?: string;
  /** A slot not renewed for this long is free again: how soon a dead node's slots return (default 60 000 ms). */
  readonly leaseTtlMs?: number;
  readonly logger?: Logger;
}

/** A Throttle shared by every node that uses the same Redis. The caller owns (and closes) the client. */
export class RedisThrottle implements Throttle {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #log: Logger;
  readonly #ttlMs: number;

  constructor(redis: Redis, options: RedisThrottleOptions = {}) {
    this.#redis = redis;
    this.#prefix = options.prefix ?? 'tern:throttle:';
    this.#log = options.logger ?? silentLogger;
    this.#ttlMs = options.leaseTtlMs ?? 60_000;
  }

  async acquire(key: string, limit: number): Promise<ThrottleLeaseResult> {
    const setKey = `${this.#prefix}${key}`;
    const id = randomUUID();
    const ttlMs = this.#ttlMs;
    const taken = await this.#redis.eval(ACQUIRE, 1, setKey, limit, ttlMs, id);
    if (taken !== 1) return { acquired: false };
    // Renew well before expiry so a long DATA phase keeps its slot; a dead process stops renewing.
    const renewal = setInterval(
      () => {
        this.#redis.eval(RENEW, 1, setKey, ttlMs, id).then(
          (ok) => {
            if (ok !== 1) this.#log.warn({ key }, 'throttle lease expired before renewal');
          },
          (error: unknown) => this.#log.warn({ key, err: error }, 'throttle lease renewal failed'),
        );
      },
      Math.max(50, Math.floor(ttlMs / 3)),
    );
    renewal.unref();
    let released = false;
    return {
      acquired: true,
      release: async (): Promise<void> => {
        if (released) return;
        released = true;
        clearInterval(renewal);
        await this.#redis.zrem(setKey, id);
      },
    };
  }

  async take(key: string, rate: ThrottleRate): Promise<ThrottleRateResult> {
    const { emission, tolerance } = gcraParameters(rate);
    const wait = Number(await this.#redis.eval(GCRA, 1, `${this.#prefix}${key}`, emission, tolerance));
    return wait > 0 ? { allowed: false, retryAfterMs: wait } : { allowed: true, retryAfterMs: 0 };
  }
}
