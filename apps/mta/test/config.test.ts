import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { run as runAsync } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { ConfigError, loadConfig, validateConfig } from '../src/config.js';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const problems = (input: unknown): string[] => {
  try {
    validateConfig(input, '/tmp');
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  return [];
};

describe('config validation names the field and the fix', () => {
  test('a minimal MX config is valid and gets defaults', () => {
    const config = validateConfig({ listeners: [{ kind: 'mx' }], localDomains: ['Example.COM'] }, '/tmp');
    expect(config.localDomains).toEqual(['example.com']);
    expect(config.listeners[0]?.host).toBeUndefined(); // core binds :: (dual-stack)
    expect(config.trustedNetworks).toEqual(['127.0.0.1/32', '::1/128']);
  });

  test('listener deadlines and stress limits are listener options', () => {
    const timeouts = { command: 30_000, session: 600_000, stress: { socket: 5000, command: 5000 } };
    const config = validateConfig(
      { listeners: [{ kind: 'mx', limits: { stressThreshold: 0.5, timeouts } }], localDomains: ['a.test'] },
      '/tmp',
    );
    expect(config.listeners[0]?.limits).toEqual({ stressThreshold: 0.5, timeouts });
  });

  test('intake spool, long lines and the hostile-peer limits of delivery are config keys', () => {
    const config = validateConfig(
      {
        listeners: [{ kind: 'mx', longLines: 'wrap' }],
        localDomains: ['a.test'],
        intake: { spoolDir: false, memoryBudget: 32 << 20, memoryPerMessage: 1 << 20 },
        delivery: {
          dns: { servers: ['127.0.0.1'], maxMxHosts: 3 },
          replyLimits: { maxLines: 50, maxBytes: 16_384 },
          maxHeaderBytes: 65_536,
          timeouts: { dataMinRate: 1024 },
        },
      },
      '/tmp',
    );
    expect(config.listeners[0]?.longLines).toBe('wrap');
    expect(config.intake).toEqual({ spoolDir: false, memoryBudget: 32 << 20, memoryPerMessage: 1 << 20 });
    expect(config.delivery?.replyLimits).toEqual({ maxLines: 50, maxBytes: 16_384 });
    expect(
      problems({ listeners: [{ kind: 'mx', longLines: 'fold' }], localDomains: ['a.test'] }).join('\n'),
    ).toMatch(/config\.listeners\[0\]\.longLines: .*reject.*wrap/);
    expect(
      problems({
        listeners: [{ kind: 'mx' }],
        localDomains: ['a.test'],
        delivery: { replyLimits: { maxLines: 0 } },
      }).join('\n'),
    ).toMatch(/config\.delivery\.replyLimits\.maxLines/);
  });

  test.each([
    [{ listeners: [] }, 'config.listeners: at least one listener'],
    [
      { listeners: [{ kind: 'mx', limits: { stressThreshold: 80 } }], localDomains: ['a.test'] },
      'config.listeners[0].limits.stressThreshold: must be a share of maxConnections above 0 and at most 1, got 80',
    ],
    [
      {
        listeners: [{ kind: 'mx', limits: { timeouts: { stress: { idle: 5 } } } }],
        localDomains: ['a.test'],
      },
      'config.listeners[0].limits.timeouts.stress: unknown key "idle"',
    ],
    [
      { listeners: [{ kind: 'mx', port: 70000 }], localDomains: ['a.test'] },
      'config.listeners[0].port: must be a port from 0 to 65535, got 70000',
    ],
    [
      { listeners: [{ kind: 'pop3' }] },
      `config.listeners[0].kind: must be one of 'mx' (port 25), 'submission' (587) or 'smtps' (465), got "pop3"`,
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], listenres: 1 },
      'config: unknown key "listenres": remove it or check its spelling',
    ],
    [
      { listeners: [{ kind: 'mx' }], trustedNetworks: [] },
      'config.listeners[0].localDomains: this mx listener would refuse every recipient',
    ],
    [
      { listeners: [{ kind: 'submission' }] },
      'config.listeners[0].tls: a submission listener takes passwords, so it needs a certificate',
    ],
    [
      { listeners: [{ kind: 'smtps', tls: { key: 'nope.pem', cert: 'nope.pem' } }] },
      'config.listeners[0].tls.key: file not found: nope.pem',
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], trustedNetworks: ['10.0.0.0/x'] },
      'config.trustedNetworks[0]: prefix length must be 0 to 32: "10.0.0.0/x" (write a network in CIDR form',
    ],
    [
      {
        listeners: [{ kind: 'mx' }],
        localDomains: ['a.test'],
        queue: { backend: 'redis', url: 'localhost:6379' },
      },
      'config.queue.url: a Redis URL like redis://127.0.0.1:6379',
    ],
    [
      {
        listeners: [{ kind: 'mx' }],
        localDomains: ['a.test'],
        queue: { backend: 'redis', url: 'redis://a', redis: { cluster: [{ host: 'b', port: 7000 }] } },
      },
      'config.queue.url: give either url (one Redis server) or redis ({ sentinels, name } or { cluster }), exactly one',
    ],
    [
      {
        listeners: [{ kind: 'mx' }],
        localDomains: ['a.test'],
        queue: { backend: 'redis', redis: { sentinels: [{ host: 'a', port: 26379 }] } },
      },
      'config.queue.redis',
    ],
    [
      {
        listeners: [
          { kind: 'mx', port: 2525 },
          { kind: 'mx', port: 2525 },
        ],
        localDomains: ['a.test'],
      },
      'config.listeners[1].port: [::]:2525 is already used by listeners[0]',
    ],
    [
      {
        listeners: [{ kind: 'mx' }],
        localDomains: ['a.test'],
        bounces: {
          rules: [
            { category: 'quota', code: 550 },
            { category: 'quota', enhanced: '5.1' },
          ],
        },
      },
      'config.bounces.rules[1].enhanced: an enhanced code like 5.1.1, with x for any part',
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], bounces: { rules: [{ category: 'hard' }] } },
      'config.bounces.rules[0].category: one of bad-mailbox, inactive, quota',
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], suppression: { categories: ['hard'] } },
      'config.suppression.categories[0]:',
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], suppression: { expireAfter: 'a month' } },
      'config.suppression.expireAfter: "a month" is not a duration above 0',
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], suppression: { tagScopes: ['news letter'] } },
      'config.suppression.tagScopes[0]: a tag of letters, digits, _ . - (at most 64), as in X-Tern-Tag',
    ],
    [
      { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], metrics: { tags: 'newsletter' } },
      'config.metrics.tags:',
    ],
    [
      {
        listeners: [{ kind: 'mx' }],
        localDomains: ['a.test'],
        metrics: { tags: Array.from({ length: 101 }, (_, i) => `t${i}`) },
      },
      'config.metrics.tags: at most 100 tags',
    ],
    [
      { listeners: [{ kind: 'mx' }], bounces: { returnPath: { domain: 'bounce.a.test' } } },
      'config.bounces.returnPath: give exactly one of secret and secretFile',
    ],
    [
      { listeners: [{ kind: 'mx' }], bounces: { returnPath: { domain: 'bounce.a.test', secret: 'short' } } },
      'config.bounces.returnPath.secret: at least 16 characters',
    ],
  ])('%j', (input, expected) => {
    expect(problems(input).join('\n')).toContain(expected);
  });
});

describe('tern check-config and tern start exit non-zero on a bad config', () => {
  // Inside the repository, so config files resolve @tern/* from its node_modules as a user's would.
  const dir = mkdtempSync(join(import.meta.dirname, '.tmp-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const bad = join(dir, 'bad.config.js');
  writeFileSync(
    bad,
    "export default { listeners: [{ kind: 'mx', port: 'twenty-five' }], localDomains: ['a.test'] };\n",
  );
  const good = join(dir, 'good.config.ts');
  writeFileSync(
    good,
    "import { defineConfig } from '@tern/mta';\nexport default defineConfig({ listeners: [{ kind: 'mx', port: 2525 }], localDomains: ['a.test'] as string[] });\n",
  );

  test('check-config reports the field and exits 78', () => {
    const run = spawnSync(process.execPath, [cli, 'check-config', bad], { encoding: 'utf8' });
    expect(run.status).toBe(78);
    expect(run.stderr).toContain('config.listeners[0].port:');
    expect(run.stdout).toBe('');
  });

  test('start refuses the same config before binding anything', () => {
    const run = spawnSync(process.execPath, [cli, 'start', '--config', bad], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(run.status).toBe(78);
    expect(run.stderr).toContain('config.listeners[0].port:');
  });

  test('a TypeScript config with defineConfig loads', async () => {
    const config = await loadConfig(good);
    expect(config.listeners[0]?.port).toBe(2525);
    const run = spawnSync(process.execPath, [cli, 'check-config', good], { encoding: 'utf8' });
    expect(run.stdout).toContain('valid (1 listener(s), 0 plugin(s))');
    expect(run.status).toBe(0);
  });

  test('a missing file and a plugin option error are named', () => {
    const missing = spawnSync(process.execPath, [cli, 'check-config', join(dir, 'absent.js')], {
      encoding: 'utf8',
    });
    expect(missing.status).toBe(78);
    expect(missing.stderr).toContain('file not found');
    const plugin = join(dir, 'plugin.config.js');
    writeFileSync(
      plugin,
      "import { dkim } from '@tern/plugin-dkim';\nexport default { listeners: [{ kind: 'mx' }], localDomains: ['a.test'], plugins: [dkim({ domains: { 'a.test': { selector: 's1', keyFile: './no-such-key.pem' } } })] };\n",
    );
    const run = spawnSync(process.execPath, [cli, 'check-config', plugin], { encoding: 'utf8' });
    expect(run.status).toBe(78);
    expect(run.stderr).toMatch(/plugin dkim: option domains\["a\.test"\]\.keyFile: cannot read key file/);
  });

  test('a port already in use is named with the fix, without a stack trace', async () => {
    const busy = createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    const port = (busy.address() as AddressInfo).port;
    const file = join(dir, 'busy.config.json');
    writeFileSync(
      file,
      JSON.stringify({
        listeners: [{ kind: 'mx', host: '127.0.0.1', port }],
        localDomains: ['a.test'],
        queue: { backend: 'embedded', path: join(dir, 'busy.db') },
      }),
    );
    const run = await runAsync(process.execPath, [cli, 'start', '--config', file]);
    busy.close();
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(
      `cannot listen on 127.0.0.1:${port}: EADDRINUSE (another process listens there`,
    );
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });
});
