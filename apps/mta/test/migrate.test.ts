// Moving from the embedded queue to Redis as the README says: stop tern, `tern queue export`,
// `tern queue import` into a Redis config, start tern on Redis; the mail is delivered.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { run, type SmtpSink, startRedis, startSmtpSink, swaks, type TestRedis } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { queuedId, startTern, stopAllTern } from './tern-process.js';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const work = mkdtempSync(join(import.meta.dirname, '.tmp-migrate-'));
let redis: TestRedis;
let sink: SmtpSink;

beforeAll(async () => {
  redis = await startRedis({ appendonly: true });
  sink = await startSmtpSink();
});
afterAll(async () => {
  await stopAllTern();
  await Promise.all([redis?.stop(), sink?.stop()]);
  rmSync(work, { recursive: true, force: true });
});

describe('embedded to Redis', () => {
  test(
    'export from a stopped embedded tern, import into Redis, delivered from there',
    { timeout: 60_000 },
    async () => {
      const common = {
        localDomains: ['tern.test'],
        trustedNetworks: ['127.0.0.1/32'],
        delivery: {
          routes: { 'dest.test': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } },
        },
      };
      const embedded = await startTern(
        { ...common, queue: { backend: 'embedded', path: 'queue.db' } },
        { args: ['--no-worker'] },
      );
      const ids = [];
      for (const to of ['one@dest.test', 'two@dest.test']) {
        ids.push(queuedId((await swaks(embedded.port, ['--from', 'app@sender.test', '--to', to])).output));
      }
      expect(ids.every(Boolean)).toBe(true);
      const embeddedConfig = join(embedded.dir, 'tern.config.json');

      // While tern runs, the store is in use: export refuses and says why.
      const busy = await run(process.execPath, [
        cli,
        'queue',
        'export',
        '--config',
        embeddedConfig,
        '--out',
        join(work, 'busy.jsonl'),
      ]);
      expect(busy.status).not.toBe(0);
      expect(busy.stderr).toMatch(/queue\.db/);
      expect(await embedded.stop()).toBe(0);

      const file = join(work, 'queue.jsonl');
      const exported = await run(process.execPath, [
        cli,
        'queue',
        'export',
        '--config',
        embeddedConfig,
        '--out',
        file,
      ]);
      expect(exported.status, exported.output).toBe(0);
      expect(JSON.parse(exported.stdout)).toMatchObject({ messages: 2 });
      expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);

      const redisConfig = join(work, 'redis.config.json');
      writeFileSync(
        redisConfig,
        JSON.stringify({
          ...common,
          listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
          queue: { backend: 'redis', url: redis.url, prefix: 'moved' },
        }),
      );
      const imported = await run(process.execPath, [
        cli,
        'queue',
        'import',
        '--config',
        redisConfig,
        '--in',
        file,
      ]);
      expect(imported.status, imported.output).toBe(0);
      expect(sink.messages).toHaveLength(0);

      await startTern({}, { configFile: redisConfig, dir: work });
      await sink.waitFor(2, 15_000);
      expect(sink.messages.map((m) => m.rcptTo[0]).sort()).toEqual(['one@dest.test', 'two@dest.test']);
    },
  );
});
