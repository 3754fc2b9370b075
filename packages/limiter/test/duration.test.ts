import { describe, expect, test } from 'vitest';
import { durationMs, formatWait } from '../src/duration.js';

describe('durations', () => {
  test.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['10 min', 600_000],
    ['1h', 3_600_000],
    ['2 hours', 7_200_000],
    ['1d', 86_400_000],
    ['7 days', 604_800_000],
    [1500, 1500],
  ])('%s is %d ms', (text, ms) => {
    expect(durationMs(text)).toBe(ms);
  });

  test.each(['', '1', 'h', '1w', '-5m', '1.5h', 0, -1, 1.5, null, '0s'])('%s is not a window', (text) => {
    expect(durationMs(text)).toBeUndefined();
  });

  test('waits are rounded up the way a person reads them', () => {
    expect(formatWait(1)).toBe('1 s');
    expect(formatWait(36_001)).toBe('37 s');
    expect(formatWait(119_000)).toBe('119 s');
    expect(formatWait(120_000)).toBe('2 min');
    expect(formatWait(1_800_000)).toBe('30 min');
    expect(formatWait(3 * 3_600_000)).toBe('3 h');
    expect(formatWait(3 * 86_400_000)).toBe('3 d');
    expect(formatWait(Number.POSITIVE_INFINITY)).toBe('a while');
  });
});
