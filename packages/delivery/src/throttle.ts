// Per-destination limits: how many deliveries may be in flight at once and how many messages per
// second may go to one domain or host. `Throttle` is the seam: in-process here, cluster-wide in
// redis-throttle.ts, or whatever a rate-limit plugin provides.
import { setTimeout as sleep } from 'node:timers/promises';

/** A concurrency slot: held until `release()` (idempotent), or taken by someone else. */
export type ThrottleLeaseResult =
  | { readonly acquired: true; release(): Promise<void> }
  | { readonly acquired: false };

/** `limit` messages per `per` milliseconds (GCRA: up to `limit` back to back, then evenly spaced). */
export interface ThrottleRate {
  readonly limit: number;
  readonly per: number;
}

export interface ThrottleRateResult {
  readonly allowed: boolean;
  /** 0 when allowed; otherwise how long until it would be (Infinity: never). */
  readonly retryAfterMs: number;
}

/**
 * Where per-destination limits are counted. Shaped so that @tern/plugin-ratelimit's limiter (its
 * `DeliveryThrottle`) fits as it is; `MemoryThrottle` and `RedisThrottle` are the built-in ones.
 * Implementations that share slots across processes must let a dead holder's slots expire.
 */
export interface Throttle {
  /** Takes one of `limit` concurrent slots under `key`. */
  acquire(key: string, limit: number): Promise<ThrottleLeaseResult>;
  /** Takes one unit of `rate` under `key` when it fits now. */
  take(key: string, rate: ThrottleRate): Promise<ThrottleRateResult>;
}

/** The limits of one destination. Unset means unlimited. */
export interface DestinationLimit {
  /** Deliveries in flight at once (connections in use; idle pooled connections do not count). */
  readonly maxConnections?: number;
  /** Messages per window, e.g. `{ limit: 10, per: 1000 }` for 10 a second (in bursts of up to 10). */
  readonly messageRate?: ThrottleRate;
}

/** Throttle in this process only: right for one node, or when no Redis is configured. */
export class MemoryThrottle implements Throttle {
  readonly #slots = new Map<string, number>();
  readonly #tat = new Map<string, number>();

  async acquire(key: string, limit: number): Promise<ThrottleLeaseResult> {
    const held = this.#slots.get(key) ?? 0;
    if (held >= limit) return { acquired: false };
    this.#slots.set(key, held + 1);
    let released = false;
    return {
      acquired: true,
      release: async (): Promise<void> => {
        if (released) return;
        released = true;
        const now = (this.#slots.get(key) ?? 1) - 1;
        if (now <= 0) this.#slots.delete(key);
        else this.#slots.set(key, now);
      },
    };
  }

  async take(key: string, rate: ThrottleRate): Promise<ThrottleRateResult> {
    const now = Date.now();
    const { emission, tolerance } = gcraParameters(rate);
    const tat = Math.max(this.#tat.get(key) ?? now, now);
    const wait = tat - now - tolerance;
    if (wait > 0) return { allowed: false, retryAfterMs: Math.ceil(wait) };
    this.#tat.set(key, tat + emission);
    return { allowed: true, retryAfterMs: 0 };
  }
}

/** GCRA in milliseconds: one message per `emission`, with `tolerance` allowing `limit` back to back. */
export function gcraParameters(rate: ThrottleRate): { emission: number; tolerance: number } {
  if (!(rate.limit >= 1) || !(rate.per > 0)) {
    throw new RangeError(`messageRate must have limit >= 1 and per > 0 (ms), got ${JSON.stringify(rate)}`);
  }
  const emission = rate.per / Math.floor(rate.limit);
  return { emission, tolerance: rate.per - emission };
}

/** Either a held slot (possibly none needed) or the key whose limit held us too long. */
export type Admission =
  | { readonly ok: true; release(): Promise<void> }
  | { readonly ok: false; readonly key: string };

const NOTHING_HELD = async (): Promise<void> => {};

/**
 * Waits up to `waitMs` for a slot under `conn:<key>` and a rate unit under `msg:<key>`. Polls the slot
 * with a growing back-off (25 ms to 250 ms) and sleeps as long as the rate asks. Gives up early when the
 * rate's wait would pass the deadline, giving back any slot taken.
 */
export async function admit(
  throttle: Throttle,
  key: string,
  limit: DestinationLimit,
  waitMs: number,
): Promise<Admission> {
  const deadline = Date.now() + waitMs;
  let release = NOTHING_HELD;
  if (limit.maxConnections !== undefined) {
    let backoff = 25;
    for (;;) {
      const lease = await throttle.acquire(`conn:${key}`, limit.maxConnections);
      if (lease.acquired) {
        release = () => lease.release();
        break;
      }
      const left = deadline - Date.now();
      if (left <= 0) return { ok: false, key };
      await sleep(Math.min(backoff, left));
      backoff = Math.min(backoff * 2, 250);
    }
  }
  if (limit.messageRate !== undefined) {
    for (;;) {
      const result = await throttle.take(`msg:${key}`, limit.messageRate);
      if (result.allowed) break;
      if (Date.now() + result.retryAfterMs > deadline) {
        await release();
        return { ok: false, key };
      }
      // A refusal without a wait (a store in fail-closed mode) must not become a busy loop.
      await sleep(Math.max(10, result.retryAfterMs));
    }
  }
  return { ok: true, release };
}
