// Per-destination limits: how many deliveries may be in flight at once and how many messages per
// second may go to one domain or host. `Throttle` is the seam; the counting is @tern/limiter's (the
// same limiter the inbound rate-limit plugin uses), in this process or cluster-wide in Redis.
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
 * Where per-destination limits are counted: only what `admit` needs, so any limiter from
 * @tern/limiter fits as it is (the default is one), and so does a custom implementation.
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

/**
 * Either a held slot (possibly none needed), or the key whose limit held us too long with when it
 * has room again and its pace: the queue keeps the job waiting on that, not as an attempt.
 */
export type Admission =
  | { readonly ok: true; release(): Promise<void> }
  | {
      readonly ok: false;
      readonly key: string;
      readonly retryAfterMs: number;
      readonly spacingMs: number;
      readonly burst: number;
    };

/**
 * A concurrency limit says no "until" (a slot frees when a delivery ends): look again after this
 * long, letting jobs through at `maxConnections` per this window meanwhile.
 */
export const CONNECTION_RETRY_MS = 100;

const NOTHING_HELD = async (): Promise<void> => {};

/**
 * Waits up to `waitMs` (0: not at all) for a slot under `conn:<key>` and a rate unit under
 * `msg:<key>`. Polls the slot with a growing back-off (25 ms to 250 ms) and sleeps as long as the
 * rate asks. Gives up early when the rate's wait would pass the deadline, giving back any slot taken.
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
      if (left <= 0) {
        const slots = limit.maxConnections;
        return {
          ok: false,
          key,
          retryAfterMs: CONNECTION_RETRY_MS,
          spacingMs: Math.ceil(CONNECTION_RETRY_MS / slots),
          burst: slots,
        };
      }
      await sleep(Math.min(backoff, left));
      backoff = Math.min(backoff * 2, 250);
    }
  }
  const rate = limit.messageRate;
  if (rate !== undefined) {
    for (;;) {
      const result = await throttle.take(`msg:${key}`, rate);
      if (result.allowed) break;
      if (Date.now() + result.retryAfterMs > deadline) {
        await release();
        // A store that refuses without a wait (fail-closed) still gets a pause, not a hot loop.
        const retryAfterMs = Math.max(10, result.retryAfterMs);
        return { ok: false, key, retryAfterMs, spacingMs: rate.per / rate.limit, burst: rate.limit };
      }
      // A refusal without a wait (a store in fail-closed mode) must not become a busy loop.
      await sleep(Math.max(10, result.retryAfterMs));
    }
  }
  return { ok: true, release };
}
