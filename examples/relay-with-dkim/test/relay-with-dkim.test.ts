// The relay-with-dkim example as its README runs it: keygen, publish, check, relay, verify with an
// independent verifier (dkimpy) against the test DNS server.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  freePort,
  run,
  type SmtpSink,
  startDnsServer,
  startSmtpSink,
  type TestDns,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = resolve(import.meta.dirname, '../../..');
const cli = join(root, 'apps/mta/dist/cli.js');
const config = resolve(import.meta.dirname, '../tern.config.js');
const verifier = join(root, 'packages/plugin-dkim/test/verify_dkim.py');
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-'));
let dns: TestDns;
let sink: SmtpSink;
let tern: ChildProcess | undefined;

beforeAll(async () => {
  dns = await startDnsServer({
    'example.net': { MX: [{ exchange: 'mx.example.net', priority: 10 }] },
    'mx.example.net': { A: ['127.0.0.1'] },
  });
  sink = await startSmtpSink({ hostname: 'mx.example.net' });
});
afterAll(async () => {
  tern?.kill('SIGKILL');
  await Promise.all([dns?.stop(), sink?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('relay-with-dkim example', () => {
  test(
    'keygen, publish, check, relay by MX, and both signatures verify with dkimpy',
    { timeout: 60_000 },
    async () => {
      const keys = join(dir, 'keys');
      mkdirSync(keys);
      for (const [selector, type] of [
        ['rsa2026', 'rsa'],
        ['ed2026', 'ed25519'],
      ] as const) {
        const key = join(keys, `${selector}.example.com.pem`);
        const gen = await run(process.execPath, [
          cli,
          'dkim',
          'keygen',
          '--domain',
          'example.com',
          '--selector',
          selector,
          '--type',
          type,
          '--out',
          key,
        ]);
        expect(gen.status, gen.output).toBe(0);
        // Zone-file form: the value as quoted strings of at most 255 characters each.
        const [, name, strings] = /(\S+)\. IN TXT (.+)/.exec(gen.stdout) ?? [];
        const value = [...(strings ?? '').matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
        dns.set(name!, { TXT: [value] });
      }
      // Checked the way the README says: against the keys the example's config signs with.
      for (const selector of ['rsa2026', 'ed2026']) {
        const check = await run(
          process.execPath,
          [
            cli,
            'dkim',
            'check',
            '--config',
            config,
            '--domain',
            'example.com',
            '--selector',
            selector,
            '--dns',
            dns.server,
          ],
          { env: { TERN_DKIM_KEYS: keys } },
        );
        expect(check.output).toContain(`${selector}._domainkey.example.com: ok, DNS publishes this key`);
      }
      const unknown = await run(
        process.execPath,
        [
          cli,
          'dkim',
          'check',
          '--config',
          config,
          '--domain',
          'example.com',
          '--selector',
          'nope',
          '--dns',
          dns.server,
        ],
        { env: { TERN_DKIM_KEYS: keys } },
      );
      expect(unknown.status).toBe(2);
      expect(unknown.stderr).toContain('no DKIM key for selector nope of example.com');

      const port = await freePort();
      let output = '';
      tern = spawn(process.execPath, [cli, 'start', '--config', config], {
        env: {
          ...process.env,
          TERN_PORT: String(port),
          TERN_DATA: join(dir, 'data'),
          TERN_DKIM_KEYS: keys,
          TERN_DNS: dns.server,
          TERN_MX_PORT: String(sink.port),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      tern.stderr?.on('data', (c) => {
        output += c;
      });
      await waitFor(() => output.includes('listening:'), 20_000);
      expect(output).toContain('plugins: dkim');

      const sent = await run('swaks', [
        '--server',
        `127.0.0.1:${port}`,
        '--from',
        'app@example.com',
        '--h-From',
        'App <app@example.com>',
        '--to',
        'someone@example.net',
        '--h-Subject',
        'signed twice',
        '--body',
        'Hello from the relay.\n.leading dot line\n',
      ]);
      expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
      await waitFor(() => sink.messages.length === 1, 15_000);
      const raw = sink.messages[0]!.raw;
      const signatures = raw.toString().match(/^DKIM-Signature:.*$/gm) ?? [];
      expect(signatures.length).toBe(2);
      expect(raw.toString()).toMatch(
        /^DKIM-Signature: v=1; a=rsa-sha256;[\s\S]*?c=relaxed\/relaxed;[\s\S]*?d=example\.com;[\s\S]*?s=rsa2026;/m,
      );
      expect(raw.toString()).toMatch(/^DKIM-Signature: v=1; a=ed25519-sha256;[\s\S]*?s=ed2026;/m);

      const verified = await run('/usr/bin/python3', [verifier, '127.0.0.1', String(dns.port)], {
        input: raw,
      });
      expect(verified.status, verified.output).toBe(0);
      const results = JSON.parse(verified.stdout.trim().split('\n').at(-1)!) as {
        signatures: { valid: boolean; selector: string }[];
      };
      expect(results.signatures.map((r) => [r.selector, r.valid]).sort()).toEqual([
        ['ed2026', true],
        ['rsa2026', true],
      ]);

      // A changed body no longer verifies: the check above can fail.
      const tampered = Buffer.from(
        raw.toString('latin1').replace('Hello from the relay.', 'Hello from a forger.'),
        'latin1',
      );
      const broken = await run('/usr/bin/python3', [verifier, '127.0.0.1', String(dns.port)], {
        input: tampered,
      });
      const brokenResults = JSON.parse(broken.stdout.trim().split('\n').at(-1)!) as {
        signatures: { valid: boolean }[];
      };
      expect(brokenResults.signatures.map((r) => r.valid)).toEqual([false, false]);
    },
  );
});
