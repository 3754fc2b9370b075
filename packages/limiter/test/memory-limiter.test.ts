// The in-process limiter on a clock the test moves, so every boundary is checked to the millisecond.
import { memoryLogger } from '@tern/plugin-api/testing';
import { afterEach, describe, expect, test } from 'vitest';
import { createLimiter, type Limiter } from '../src/index.js';

let now = 1_000_000;
const limiters: Limiter[] = [];
function limiter(leaseTtlMs?: number): Limiter {
  const made = createLimiter({
    failMode: 'closed',
    logger: memoryLogger(),
    now: () => now,
    ...(leaseTtlMs ? { leaseTtlMs } : {}),
  });
  limiters.push(made);
  return made;
}
afterEach(async () => {
  await Promise.all(limiters.splice(0).map((l) => l.close()));
});

describe('GCRA in memory', () => {
  test('a burst of N passes, N+1 is refused, and one more is allowed each 1/N of the window', async () => {
    now = 1_000_000;
    const l = limiter();
    const rate = { limit: 3, per: '1s' };
    expect((await l.check('k', rate)).remaining).toBe(2);
    expect((await l.check('k', rate)).remaining).toBe(1);
    expect(await l.check('k', rate)).toEqual({
      allowed: true,
      retryAfterMs: 0,
      remaining: 0,
      degraded: false,
    });
    // One unit drains every 333.3 ms: the fourth is refused until 334 ms have passed.
    expect(await l.check('k', rate)).toEqual({
      allowed: false,
      retryAfterMs: 334,
      remaining: 0,
      degraded: false,
    });
    now += 333;
    expect(await l.check('k', rate)).toMatchObject({ allowed: false, retryAfterMs: 1 });
    now += 1;
    expect(await l.check('k', rate)).toMatchObject({ allowed: true, remaining: 0 });
    expect((await l.check('k', rate)).allowed).toBe(false);
    // A full window after the last one, the whole burst is back.
    now += 1000;
    for (let i = 0; i < 3; i++) expect((await l.check('k', rate)).allowed).toBe(true);
    expect((await l.check('k', rate)).allowed).toBe(false);
  });

  test('refused requests take nothing; peeks take nothing', async () => {
    now = 5_000_000;
    const l = limiter();
    const rate = { limit: 2, per: '1m' };
    await l.check('k', rate);
    await l.check('k', rate);
    for (let i = 0; i < 10; i++) await l.check('k', rate);
    now += 30_000;
    expect(await l.peek('k', rate)).toMatchObject({ allowed: true, remaining: 0 });
    expect(await l.peek('k', rate)).toMatchObject({ allowed: true, remaining: 0 });
    expect((await l.check('k', rate)).allowed).toBe(true);
    expect(await l.peek('k', rate)).toMatchObject({ allowed: false, retryAfterMs: 30_000 });
  });

  test('costs: bytes against a byte budget, and a cost above the whole limit never passes', async () => {
    now = 9_000_000;
    const l = limiter();
    const rate = { limit: 1000, per: '10s' };
    expect(await l.check('b', rate, 600)).toMatchObject({ allowed: true, remaining: 400 });
    // 200 bytes over: 200 bytes drain in 2 s.
    expect(await l.check('b', rate, 600)).toMatchObject({
      allowed: false,
      retryAfterMs: 2000,
      remaining: 400,
    });
    expect(await l.check('b', rate, 1001)).toMatchObject({
      allowed: false,
      retryAfterMs: Number.POSITIVE_INFINITY,
    });
    expect(await l.check('b', rate, 400)).toMatchObject({ allowed: true, remaining: 0 });
  });

  test('checkAll is all or nothing', async () => {
    now = 12_000_000;
    const l = limiter();
    const small = { limit: 1, per: '1h' };
    const big = { limit: 10, per: '1h' };
    await l.check('full', small);
    const results = await l.checkAll([
      { key: 'free', rate: big },
      { key: 'full', rate: small },
    ]);
    expect(results.map((r) => r.allowed)).toEqual([true, false]);
    expect((await l.peek('free', big)).remaining).toBe(9);
  });

  test('keys and windows are separate buckets', async () => {
    now = 15_000_000;
    const l = limiter();
    await l.check('a', { limit: 1, per: '1m' });
    expect((await l.check('a', { limit: 1, per: '1m' })).allowed).toBe(false);
    expect((await l.check('b', { limit: 1, per: '1m' })).allowed).toBe(true);
    expect((await l.check('a', { limit: 1, per: '1h' })).allowed).toBe(true);
  });

  test('leases: limit held at once, released on release, expired when not renewed', async () => {
    now = 20_000_000;
    const l = limiter(1000);
    const first = await l.acquire('c', 2);
    const second = await l.acquire('c', 2);
    expect(first).toMatchObject({ acquired: true, active: 1 });
    expect(second).toMatchObject({ acquired: true, active: 2 });
    expect(await l.acquire('c', 2)).toMatchObject({ acquired: false, active: 2 });
    if (!first.acquired) throw new Error('unreachable');
    await first.release();
    await first.release();
    expect(await l.acquire('c', 2)).toMatchObject({ acquired: true, active: 2 });
    // Nobody renews at the test's clock (the renewal timer runs on real time): past the TTL they are gone.
    now += 1000;
    expect(await l.acquire('c', 2)).toMatchObject({ acquired: true, active: 1 });
  });

  test('bad arguments are caller bugs, not fail-mode answers', async () => {
    const l = limiter();
    await expect(l.check('k', { limit: 0, per: '1m' })).rejects.toThrow(/limit/);
    await expect(l.check('k', { limit: 1, per: '1 fortnight' })).rejects.toThrow(/per/);
    await expect(l.check('k', { limit: 1, per: '1m' }, -1)).rejects.toThrow(/cost/);
    await expect(l.acquire('k', 0)).rejects.toThrow(/limit/);
    expect(() => createLimiter({ failMode: 'maybe' as 'open', logger: memoryLogger() })).toThrow(/failMode/);
  });
});
