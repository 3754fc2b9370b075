// The one duration grammar: the union of what the limiter's windows, the queue's retry schedule,
// the config and the CLI accepted before they shared it.
import { describe, expect, test } from 'vitest';
import { durationMs, durationSchema, formatWait, parseDuration } from '../src/index.js';

const HOUR = 3_600_000;

describe('durations', () => {
  test.each([
    ['30s', 30_000],
    ['250ms', 250],
    ['5m', 300_000],
    ['10 min', 600_000],
    ['1h', HOUR],
    ['1.5h', 1.5 * HOUR],
    ['2 hours', 2 * HOUR],
    ['1d', 86_400_000],
    ['7 days', 604_800_000],
    [' 5M ', 300_000],
    ['0s', 0],
    [1500, 1500],
    [0, 0],
    [1.5, 1.5],
  ])('%j is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(durationMs(text)).toBe(ms);
  });

  test.each([
    '',
    '1',
    'h',
    '1w',
    '-5m',
    '5 fortnights',
    -1,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    null,
    {},
  ])('%j is not a duration', (value) => {
    expect(parseDuration(value)).toBeUndefined();
  });

  test('rules: a window is above 0 and whole milliseconds', () => {
    const window = { positive: true, whole: true };
    expect(parseDuration('1.5s', window)).toBe(1500);
    expect(parseDuration('0s', window)).toBeUndefined();
    expect(parseDuration(0, window)).toBeUndefined();
    expect(parseDuration(1.5, window)).toBeUndefined();
    expect(parseDuration('0.5ms', window)).toBeUndefined();
    expect(parseDuration(0, { positive: false })).toBe(0);
    // Command lines and environment variables: bare digits are milliseconds there, and only there.
    expect(parseDuration('1500', { digitsAreMs: true })).toBe(1500);
    expect(parseDuration('1500')).toBeUndefined();
    expect(parseDuration('2m', { digitsAreMs: true })).toBe(120_000);
  });

  test('a bad duration names the field and how to write one', () => {
    expect(() => durationMs('5 fortnights' as never, 'retry.maxAge')).toThrow(
      `retry.maxAge: "5 fortnights" is not a duration: milliseconds, or a string like '30s', '5m', '4h', '5d'`,
    );
    expect(() => durationMs(0, 'timeout', { positive: true })).toThrow(
      'timeout: 0 is not a duration above 0',
    );
  });

  test('the schema reads a duration into milliseconds, or says what is wrong', () => {
    const schema = durationSchema({ positive: true });
    expect(schema.parse('2m')).toBe(120_000);
    expect(schema.parse(5)).toBe(5);
    const result = schema.safeParse('soon');
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toBe(
      `"soon" is not a duration above 0: milliseconds, or a string like '30s', '5m', '4h', '5d'`,
    );
    expect(schema.safeParse(true).success).toBe(false);
  });

  test('waits are rounded up the way a person reads them', () => {
    expect(formatWait(1)).toBe('1 s');
    expect(formatWait(36_001)).toBe('37 s');
    expect(formatWait(119_000)).toBe('119 s');
    expect(formatWait(120_000)).toBe('2 min');
    expect(formatWait(1_800_000)).toBe('30 min');
    expect(formatWait(3 * HOUR)).toBe('3 h');
    expect(formatWait(3 * 86_400_000)).toBe('3 d');
    expect(formatWait(Number.POSITIVE_INFINITY)).toBe('a while');
  });
});
