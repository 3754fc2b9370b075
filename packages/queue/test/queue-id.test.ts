// Queue ids: time-ordered, then random bits drawn from a pool that is refilled as it runs out.
import { describe, expect, it } from 'vitest';
import { newQueueId } from '../src/plan.js';

describe('newQueueId', () => {
  it('is 9 base-36 time digits and 12 random hex digits, upper case', () => {
    const now = Date.UTC(2026, 11, 2, 4, 30);
    const id = newQueueId(now);
    expect(id).toMatch(/^[0-9A-Z]{9}[0-9A-F]{12}$/);
    expect(Number.parseInt(id.slice(0, 9), 36)).toBe(now);
  });

  it('sorts by time and never repeats across many pool refills', () => {
    const ids = Array.from({ length: 5000 }, (_, i) => newQueueId(1_000_000 + i));
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids.map((id) => id.slice(9))).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
  });
});
