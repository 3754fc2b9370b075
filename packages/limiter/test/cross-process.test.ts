// Two real processes on one Redis: this test's and a `node` child running the same limiter code.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startRedis, type TestRedis } from '@tern/testkit';
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest';
import { closeAll, redisLimiter, uniquePrefix } from './helpers.js';

const LOADER = fileURLToPath(new URL('./fixtures/ts-loader.mjs', import.meta.url));
const CHILD = fileURLToPath(new URL('./fixtures/limiter-child.ts', import.meta.url));

let redis: TestRedis;
const children: ChildProcess[] = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await closeAll();
});
afterAll(async () => {
  await redis?.stop();
});

/** Starts the child; resolves with it and an iterator over its JSON output lines. */
function child(args: string[]): {
  process: ChildProcess;
  lines: AsyncIterator<string>;
  stderr: () => string;
} {
  const proc = spawn(process.execPath, ['--import', LOADER, CHILD, redis.url, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let stderr = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  return { process: proc, lines, stderr: () => stderr };
}

async function nextJson(c: ReturnType<typeof child>): Promise<Record<string, unknown>> {
  const line = await c.lines.next();
  if (line.done) throw new Error(`child ended without output: ${c.stderr()}`);
  return JSON.parse(line.value) as Record<string, unknown>;
}

test('a child process and this one share one rate limit', async () => {
  // The child is told its key without the prefix; both use the default prefix on this private Redis.
  const key = `xproc:${uniquePrefix()}`;
  const here = redisLimiter(redis.url);
  const rate = { limit: 5, per: '1h' };
  for (let i = 0; i < 3; i++) expect((await here.check(key, rate)).allowed).toBe(true);

  const c = child(['take', key, '5', '1h', '4']);
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await nextJson(c));
  // 3 taken here, so the child gets the last 2 of 5 and is refused after that.
  expect(results.map((r) => r.allowed)).toEqual([true, true, false, false]);
  expect(results.map((r) => r.remaining)).toEqual([1, 0, 0, 0]);
  expect(results.every((r) => r.degraded === false)).toBe(true);
  expect((await here.check(key, rate)).allowed).toBe(false);
});

test('a lease held by a process that is killed (no release, no close hook) expires by its TTL', async () => {
  const key = `xlease:${uniquePrefix()}`;
  const ttl = 1000;
  const c = child(['hold', key, '1', String(ttl)]);
  expect(await nextJson(c)).toEqual({ acquired: true, active: 1 });

  const here = redisLimiter(redis.url);
  // Alive, the child renews its lease: still held after more than one TTL.
  await sleep(ttl + 300);
  expect(await here.acquire(key, 1)).toMatchObject({ acquired: false, active: 1 });

  const exited = new Promise((resolve) => c.process.once('exit', resolve));
  c.process.kill('SIGKILL');
  await exited;
  const killedAt = Date.now();
  expect(await here.acquire(key, 1)).toMatchObject({ acquired: false, active: 1 });
  // The child renewed at most one TTL before it was killed, so within one TTL the slot is back.
  let acquired = false;
  while (!acquired && Date.now() - killedAt < ttl + 1000) {
    acquired = (await here.acquire(key, 1)).acquired;
    if (!acquired) await sleep(25);
  }
  const elapsed = Date.now() - killedAt;
  expect(acquired).toBe(true);
  expect(elapsed).toBeLessThanOrEqual(ttl + 300);
});
