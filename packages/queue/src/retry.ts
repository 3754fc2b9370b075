// Shared by every backend (Redis and embedded): when to try a deferred delivery again and when
// to give up (RFC 5321 §4.5.4.1: retry on a schedule, never hot-loop, give up after days).

import type { Duration } from '@tern/plugin-api';
import { checkQueueOptions, retrySchema } from './schema.js';

export interface RetryScheduleOptions {
  /**
   * Waits after the 1st, 2nd, ... failed attempt; the last one repeats. Default
   * 5m, 10m, 20m, 40m, 1h, 2h, then every 4h. Ignored when `exponential` is set.
   */
  readonly intervals?: readonly Duration[];
  /** Instead of a list: `initial`, multiplied by `factor` after each attempt, capped at `max`. */
  readonly exponential?: { readonly initial: Duration; readonly factor?: number; readonly max: Duration };
  /** How long after acceptance a message is given up and bounced as expired (default 5 days). */
  readonly maxAge?: Duration;
  /**
   * When a still-deferred message gets its one "still trying" notice (Postfix's delay_warning_time):
   * to recipients whose NOTIFY asked for DELAY (RFC 3461) after this long (default 4h); set here, also
   * to recipients that gave no NOTIFY. NOTIFY=NEVER or without DELAY never get one.
   */
  readonly delayNoticeAfter?: Duration;
  /**
   * The shortest wait between two attempts of one job, whatever the intervals or a plugin say
   * (default 1 s): a misconfiguration must not turn into a hot loop against a remote server.
   */
  readonly minInterval?: Duration;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export const DEFAULT_RETRY_INTERVALS: readonly number[] = [
  5 * MINUTE,
  10 * MINUTE,
  20 * MINUTE,
  40 * MINUTE,
  HOUR,
  2 * HOUR,
  4 * HOUR,
];
export const DEFAULT_MAX_AGE_MS = 5 * DAY;
/** When a recipient that asked for delay notices (NOTIFY=DELAY) gets one, unless configured. */
export const DEFAULT_DELAY_NOTICE_AFTER_MS = 4 * HOUR;
/** No schedule may go below this, so even a test configuration cannot hot-loop. */
export const MIN_RETRY_INTERVAL_MS = SECOND;

/** The retry policy for deferred recipients: how long to wait after each failed attempt, and when to give up. */
export class RetrySchedule {
  readonly maxAgeMs: number;
  readonly minIntervalMs: number;
  readonly delayNoticeAfterMs: number;
  /** Recipients without NOTIFY get delay notices too (delayNoticeAfter was configured). */
  readonly delayNoticeUnrequested: boolean;
  readonly #intervals: readonly number[] | undefined;
  readonly #exponential: { initial: number; factor: number; max: number } | undefined;

  constructor(options: RetryScheduleOptions = {}) {
    const checked = checkQueueOptions(retrySchema, options, 'retry');
    this.minIntervalMs = Math.max(MIN_RETRY_INTERVAL_MS, checked.minInterval ?? 0);
    this.maxAgeMs = checked.maxAge ?? DEFAULT_MAX_AGE_MS;
    this.delayNoticeUnrequested = options.delayNoticeAfter !== undefined;
    this.delayNoticeAfterMs = checked.delayNoticeAfter ?? DEFAULT_DELAY_NOTICE_AFTER_MS;
    if (checked.exponential) {
      const { initial, factor = 2, max } = checked.exponential;
      this.#exponential = { initial, factor, max };
    } else {
      this.#intervals = checked.intervals ?? DEFAULT_RETRY_INTERVALS;
    }
  }

  /** How long to wait after the `attempts`-th failed attempt (1 = the first), never below the minimum interval. */
  delayAfter(attempts: number): number {
    const n = Math.max(1, Math.floor(attempts));
    let wait: number;
    if (this.#exponential) {
      const { initial, factor, max } = this.#exponential;
      wait = Math.min(max, initial * factor ** (n - 1));
    } else {
      const list = this.#intervals as readonly number[];
      wait = list[Math.min(n, list.length) - 1] as number;
    }
    return Math.max(this.minIntervalMs, wait);
  }

  /** When a message accepted at `createdAt` is given up. */
  expiresAt(createdAt: number | Date): Date {
    return new Date(toMs(createdAt) + this.maxAgeMs);
  }

  /**
   * When to try again after `attempts` attempts (counting the one that just failed), or
   * `'expired'` when the message has outlived `maxAge`. The last retry is pulled in to the
   * moment of expiry, so a message is bounced close to `maxAge` rather than one long interval later.
   */
  nextAttemptAt(
    attempts: number,
    createdAt: number | Date,
    now: number | Date = Date.now(),
  ): Date | 'expired' {
    const nowMs = toMs(now);
    const expiry = toMs(createdAt) + this.maxAgeMs;
    if (nowMs >= expiry) return 'expired';
    return new Date(
      Math.min(nowMs + this.delayAfter(attempts), Math.max(expiry, nowMs + this.minIntervalMs)),
    );
  }

  /** Moves a time (from a plugin's advice, say) to no earlier than `now` + the minimum interval. */
  clamp(at: Date, now: number | Date = Date.now()): Date {
    const earliest = toMs(now) + this.minIntervalMs;
    return at.getTime() < earliest ? new Date(earliest) : at;
  }

  /** Whether a message accepted at `createdAt` has waited long enough for a delay notice. */
  delayNoticeDue(createdAt: number | Date, now: number | Date = Date.now()): boolean {
    return toMs(now) - toMs(createdAt) >= this.delayNoticeAfterMs;
  }
}

function toMs(t: number | Date): number {
  return typeof t === 'number' ? t : t.getTime();
}
