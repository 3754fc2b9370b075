// The TlsStore of both backends against the same expectations: policies cached with an expiry and
// kept across a reopen (a restart), claims that only one node gets, and TLS-RPT counters per domain
// and day with a cap on distinct failure detail rows.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbeddedQueue } from '../src/embedded/index.js';
import { SCHEMA_VERSION } from '../src/embedded/store.js';
import type { QueueBackend, TlsStore } from '../src/index.js';
import { openRedisQueue } from '../src/redis/index.js';
import { testMessage } from './redis-fixtures/deliveries.js';

let redis: TestRedis;
const dirs: string[] = [];

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
});

afterAll(async () => {
  await redis?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Backend {
  /** Opens the same store again each call (another node for Redis, a restart for embedded). */
  open(): Promise<QueueBackend & { tlsStore: TlsStore }>;
}

function embedded(): Backend {
  const dir = mkdtempSync(join(tmpdir(), 'tern-tls-store-'));
  dirs.push(dir);
  return { open: async () => openEmbeddedQueue({ path: join(dir, 'queue.db') }) };
}

function redisBackend(): Backend {
  const prefix = `t${randomBytes(4).toString('hex')}`;
  return { open: () => openRedisQueue({ url: redis.url, prefix }) };
}

const policy = (domain: string, type = 'sts'): string =>
  JSON.stringify({ 'policy-type': type, 'policy-domain': domain });

for (const [name, make] of [
  ['embedded', embedded],
  ['redis', redisBackend],
] as const) {
  describe(`${name} TlsStore`, () => {
    it('keeps a cached policy across a reopen until its expiry, then forgets it', async () => {
      const backend = make();
      let queue = await backend.open();
      await queue.tlsStore.set('mta-sts:a.test', { id: 'x1', policy: { mode: 'enforce' } }, 1500);
      await queue.tlsStore.set('mta-sts:gone.test', { id: 'x' }, 0);
      await queue.close();
      queue = await backend.open();
      expect(await queue.tlsStore.get('mta-sts:a.test')).toEqual({ id: 'x1', policy: { mode: 'enforce' } });
      expect(await queue.tlsStore.get('mta-sts:gone.test')).toBeUndefined();
      await waitFor(async () => (await queue.tlsStore.get('mta-sts:a.test')) === undefined, 5000);
      await queue.close();
    });

    it('gives a claim to one node only, until it is released or expires', async () => {
      const backend = make();
      const queue = await backend.open();
      const { tlsStore } = queue;
      expect(await tlsStore.claim('tlsrpt:2026-11-29:a.test', 'node-1', 60_000)).toBe(true);
      expect(await tlsStore.claim('tlsrpt:2026-11-29:a.test', 'node-2', 60_000)).toBe(false);
      await tlsStore.release('tlsrpt:2026-11-29:a.test', 'node-2');
      expect(await tlsStore.claim('tlsrpt:2026-11-29:a.test', 'node-2', 60_000)).toBe(false);
      await tlsStore.release('tlsrpt:2026-11-29:a.test', 'node-1');
      expect(await tlsStore.claim('tlsrpt:2026-11-29:a.test', 'node-2', 300)).toBe(true);
      await waitFor(() => tlsStore.claim('tlsrpt:2026-11-29:a.test', 'node-3', 60_000), 5000);
      await queue.close();
    });

    it('counts outcomes per domain and day, with at most maxDetails detail rows', async () => {
      const backend = make();
      const queue = await backend.open();
      const { tlsStore } = queue;
      const day = '2026-11-29';
      const count = (domain: string, success: boolean, detail?: string, p = policy(domain)) =>
        tlsStore.countTlsOutcome({
          day,
          domain,
          policy: p,
          success,
          maxDetails: 3,
          ...(detail ? { detail } : {}),
        });
      for (let i = 0; i < 5; i++) await count('a.test', true);
      await count('a.test', false, '{"result-type":"starttls-not-supported"}');
      await count('a.test', false, '{"result-type":"starttls-not-supported"}');
      await count('a.test', false, '{"result-type":"certificate-expired"}');
      await count(
        'a.test',
        false,
        '{"result-type":"validation-failure"}',
        policy('a.test', 'no-policy-found'),
      );
      // Past the cap: counted in the summary, no new row; an existing row still counts.
      await count('a.test', false, '{"result-type":"certificate-not-trusted"}');
      await count('a.test', false, '{"result-type":"certificate-expired"}');
      await count('b.test', false, '{"result-type":"dnssec-invalid"}', policy('b.test', 'tlsa'));
      await tlsStore.countTlsOutcome({
        day: '2026-11-30',
        domain: 'c.test',
        policy: policy('c.test'),
        success: true,
        maxDetails: 3,
      });

      expect(await tlsStore.tlsDomains(day)).toEqual(['a.test', 'b.test']);
      expect(await tlsStore.tlsDomains('2026-11-28')).toEqual([]);
      const counts = await tlsStore.tlsCounts(day, 'a.test');
      expect(counts.policies).toEqual([
        {
          policy: policy('a.test', 'no-policy-found'),
          successes: 0,
          failures: 1,
          details: [{ detail: '{"result-type":"validation-failure"}', count: 1 }],
        },
        {
          policy: policy('a.test'),
          successes: 5,
          failures: 5,
          details: [
            { detail: '{"result-type":"certificate-expired"}', count: 2 },
            { detail: '{"result-type":"starttls-not-supported"}', count: 2 },
          ],
        },
      ]);
      expect((await tlsStore.tlsCounts(day, 'nobody.test')).policies).toEqual([]);
      await expect(tlsStore.tlsCounts("2026-11-29' OR 1=1", 'a.test')).rejects.toThrow(/YYYY-MM-DD/);
      await queue.close();
    });
  });
}

describe('embedded store migration', () => {
  it('adds the TLS tables to a version 3 store and keeps its mail', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-tls-migrate-'));
    dirs.push(dir);
    const path = join(dir, 'queue.db');
    const first = openEmbeddedQueue({ path });
    const queued = await first.enqueue(testMessage('a@x.test', ['b@y.test'], 'before the upgrade'));
    await first.close();
    // Make it a version 3 store, as the previous Tern left it.
    const raw = new Database(path);
    raw.exec(
      'DROP TABLE kv_cache; DROP TABLE tls_report_counts; DROP TABLE tls_report_details; PRAGMA user_version = 3;',
    );
    raw.close();
    const reopened = openEmbeddedQueue({ path });
    expect((await reopened.readMessage(queued))?.toString()).toContain('Subject: before the upgrade');
    await reopened.tlsStore.set('k', 1, 60_000);
    expect(await reopened.tlsStore.get('k')).toBe(1);
    await reopened.close();
    const check = new Database(path, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    check.close();
  });
});
