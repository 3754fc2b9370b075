// The per-destination gate both backends use once a limit refused a job of a domain.
import { describe, expect, it } from 'vitest';
import { DestinationPacer } from '../src/pacing.js';

const RATE = { key: 'domain:a.test', retryAfterMs: 100, spacingMs: 20, burst: 50 };

describe('DestinationPacer', () => {
  it('leaves a domain no limit refused alone', () => {
    const pacer = new DestinationPacer({ random: () => 0 });
    expect(pacer.room('a.test', 0)).toBe(Number.POSITIVE_INFINITY);
    expect(pacer.reserve('a.test', 0)).toBeUndefined();
  });

  it('closes a refused domain until the limit has room, then lets jobs through at its pace', () => {
    const pacer = new DestinationPacer({ random: () => 0 });
    pacer.refused('a.test', RATE, 1000);
    expect(pacer.room('a.test', 1099)).toBe(0);
    expect(pacer.room('b.test', 1099)).toBe(Number.POSITIVE_INFINITY);
    expect(pacer.room('a.test', 1100)).toBe(1);
    expect(pacer.room('a.test', 1160)).toBe(4);
    pacer.started('a.test', 4, 1160);
    expect(pacer.room('a.test', 1160)).toBe(0);
    expect(pacer.room('a.test', 1180)).toBe(1);
    expect(pacer.nextOpening(1170)).toBe(1180);
  });

  it('hands a backlog its own slots one spacing apart, so it comes back at the pace', () => {
    const pacer = new DestinationPacer({ random: () => 0 });
    pacer.refused('a.test', RATE, 0);
    const slots = Array.from({ length: 5 }, () => pacer.reserve('a.test', 10));
    expect(slots).toEqual([100, 120, 140, 160, 180]);
    // A job back at its slot may go.
    expect(pacer.reserve('a.test', 100)).toBeUndefined();
  });

  it('adds jitter to a refusal so jobs refused together spread out', () => {
    const pacer = new DestinationPacer({ random: () => 0.999 });
    pacer.refused('a.test', RATE, 0);
    expect(pacer.room('a.test', 100)).toBe(0);
    expect(pacer.room('a.test', 120)).toBe(1);
  });

  it('forgets a pace after a quiet period, so the domain may burst again', () => {
    const pacer = new DestinationPacer({ quietMs: 1000, random: () => 0 });
    pacer.refused('a.test', RATE, 0);
    expect(pacer.room('a.test', 500)).toBe(21);
    expect(pacer.room('a.test', 1500)).toBe(Number.POSITIVE_INFINITY);
    expect(pacer.snapshot(1500)).toEqual([]);
  });
});
