import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_AGE_MS, MIN_RETRY_INTERVAL_MS, RetrySchedule } from '../src/retry.js';

const MIN = 60_000;
const HOUR = 60 * MIN;

describe('RetrySchedule', () => {
  it('defaults to 5m, 10m, 20m, 40m, 1h, 2h, then every 4h, for 5 days', () => {
    const schedule = new RetrySchedule();
    const waits = [1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => schedule.delayAfter(n));
    expect(waits).toEqual([
      5 * MIN,
      10 * MIN,
      20 * MIN,
      40 * MIN,
      HOUR,
      2 * HOUR,
      4 * HOUR,
      4 * HOUR,
      4 * HOUR,
    ]);
    expect(schedule.maxAgeMs).toBe(5 * 24 * HOUR);
    expect(DEFAULT_MAX_AGE_MS).toBe(5 * 24 * HOUR);
    // Delay notices after 4h, to recipients that asked with NOTIFY=DELAY only.
    expect(schedule.delayNoticeAfterMs).toBe(4 * HOUR);
    expect(schedule.delayNoticeUnrequested).toBe(false);
  });

  it('schedules from now and counts the lifetime from acceptance', () => {
    const schedule = new RetrySchedule();
    const created = Date.UTC(2025, 0, 1);
    const now = created + 30 * MIN;
    expect(schedule.nextAttemptAt(2, created, now)).toEqual(new Date(now + 10 * MIN));
    expect(schedule.nextAttemptAt(9, created, created + 5 * 24 * HOUR)).toBe('expired');
  });

  it('pulls the last retry in to the moment of expiry', () => {
    const schedule = new RetrySchedule({ intervals: ['4h'], maxAge: '5h' });
    const created = 0;
    expect(schedule.nextAttemptAt(1, created, 4 * HOUR)).toEqual(new Date(5 * HOUR));
    expect(schedule.nextAttemptAt(2, created, 5 * HOUR)).toBe('expired');
  });

  it('takes intervals in seconds for tests, and never goes below the minimum interval', () => {
    const schedule = new RetrySchedule({ intervals: ['2s', 0, 100], maxAge: '10s' });
    expect(schedule.delayAfter(1)).toBe(2000);
    expect(schedule.delayAfter(2)).toBe(MIN_RETRY_INTERVAL_MS);
    expect(schedule.delayAfter(3)).toBe(MIN_RETRY_INTERVAL_MS);
    // Near expiry the next attempt is still at least the minimum interval away.
    expect(schedule.nextAttemptAt(3, 0, 9_900)).toEqual(new Date(9_900 + MIN_RETRY_INTERVAL_MS));
    expect(schedule.clamp(new Date(0), 5000)).toEqual(new Date(5000 + MIN_RETRY_INTERVAL_MS));
    expect(schedule.clamp(new Date(60_000), 5000)).toEqual(new Date(60_000));
  });

  it('grows exponentially up to a cap', () => {
    const schedule = new RetrySchedule({ exponential: { initial: '1m', factor: 3, max: '1h' } });
    expect([1, 2, 3, 4, 5].map((n) => schedule.delayAfter(n))).toEqual([
      MIN,
      3 * MIN,
      9 * MIN,
      27 * MIN,
      HOUR,
    ]);
  });

  it('tells when a delay notice is due', () => {
    const schedule = new RetrySchedule({ delayNoticeAfter: '2h' });
    expect(schedule.delayNoticeDue(0, 1 * HOUR)).toBe(false);
    expect(schedule.delayNoticeDue(0, 2 * HOUR)).toBe(true);
    expect(schedule.delayNoticeUnrequested).toBe(true);
    expect(new RetrySchedule().delayNoticeDue(0, 3 * HOUR)).toBe(false);
    expect(new RetrySchedule().delayNoticeDue(0, 4 * HOUR)).toBe(true);
  });

  it('names the field of a bad value', () => {
    expect(() => new RetrySchedule({ intervals: [] })).toThrow(/retry\.intervals/);
    // biome-ignore lint/suspicious/noExplicitAny: a config file can hold anything
    expect(() => new RetrySchedule({ intervals: ['5 fortnights' as any] })).toThrow(/retry\.intervals\[0\]/);
    expect(() => new RetrySchedule({ maxAge: -1 })).toThrow(/retry\.maxAge/);
    expect(() => new RetrySchedule({ exponential: { initial: '1m', factor: 0.5, max: '1h' } })).toThrow(
      /factor/,
    );
  });
});
