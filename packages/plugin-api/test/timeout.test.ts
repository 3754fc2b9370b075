// The one timeout helper: work races a timer that is always cleared.
import { describe, expect, test } from 'vitest';
import { TIMED_OUT, TimeoutError, within, withTimeout } from '../src/index.js';

const never = new Promise<never>(() => {});

describe('deadlines', () => {
  test('work that finishes in time gives its value, and throws pass through', async () => {
    expect(await within(Promise.resolve(7), 1000)).toBe(7);
    expect(await within(() => 8, 1000)).toBe(8);
    await expect(
      within(() => {
        throw new Error('sync throw');
      }, 1000),
    ).rejects.toThrow('sync throw');
    expect(await withTimeout(async () => 'done', 1000, 'slow')).toBe('done');
  });

  test('work past its deadline resolves to TIMED_OUT, or rejects naming the wait', async () => {
    expect(await within(never, 10)).toBe(TIMED_OUT);
    const error = await withTimeout(never, 10, 'no answer from the store').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).message).toBe('no answer from the store (10 ms)');
    expect((error as TimeoutError).ms).toBe(10);
    await expect(withTimeout(never, 10, () => new RangeError('own error'))).rejects.toThrow(RangeError);
  });

  test('the timer is cleared once the work settles, so it keeps nothing alive', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    await within(Promise.resolve(1), 60_000);
    await within(Promise.reject(new Error('x')), 60_000).catch(() => {});
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBe(before);
  });
});
