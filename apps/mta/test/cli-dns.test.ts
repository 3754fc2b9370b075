// tern dns DOMAIN --config FILE against the testkit DNS server: a zone with some records right,
// some wrong and some missing gets a pass or a fail for each; publishing what tern prints fixes it.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { run, startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-dns-'));
const tern = (args: string[]) => run(process.execPath, [cli, ...args], { timeoutMs: 30_000 });
let dns: TestDns;
let file: string;

/** The zone-file lines of tern's output (comments aside), as [owner, type, joined data]. */
function records(stdout: string): [string, string, string][] {
  return stdout
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith(';'))
    .map((line) => {
      const [, owner, type, data] = /^(\S+)\. IN (\S+) (.+)$/.exec(line) ?? [];
      const value =
        type === 'TXT' ? [...(data ?? '').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]).join('') : data;
      return [owner as string, type as string, value as string];
    });
}

/**
 * The TXT record tern dkim keygen printed, joined. The key goes to keys/SELECTOR.example.test.TYPE.pem
 * beside the config: keygen makes the keys folder, which does not exist before the first key.
 */
async function keygen(selector: string, type = 'rsa'): Promise<string> {
  const out = `${join(dir, 'keys')}/`;
  const gen = await tern([
    'dkim',
    'keygen',
    '--domain',
    'example.test',
    '--selector',
    selector,
    '--type',
    type,
    '--out',
    out,
  ]);
  expect(gen.status, gen.stderr).toBe(0);
  expect(existsSync(join(dir, 'keys', `${selector}.example.test.${type}.pem`))).toBe(true);
  return records(gen.stdout)[0]?.[2] as string;
}

const published: Record<string, string> = {};

beforeAll(async () => {
  dns = await startDnsServer();
  published.good = await keygen('good');
  published.wrong = await keygen('wrong', 'ed25519');
  published.absent = await keygen('absent');
  published.stranger = await keygen('stranger', 'ed25519');
  // Key files relative to the config's folder, while tern runs from another one (the test's).
  file = join(dir, 'tern.config.js');
  writeFileSync(
    file,
    `import { dkim } from '@tern/plugin-dkim';
export default {
  hostname: 'mx.example.test',
  listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
  localDomains: ['example.test'],
  queue: { backend: 'embedded', path: 'queue.db' },
  delivery: { dns: { servers: ['${dns.server}'] } },
  plugins: [
    dkim({
      domains: {
        'example.test': [
          { selector: 'good', keyFile: 'keys/good.example.test.rsa.pem' },
          { selector: 'wrong', keyFile: './keys/wrong.example.test.ed25519.pem' },
          { selector: 'absent', keyFile: 'keys/absent.example.test.rsa.pem' },
        ],
      },
    }),
  ],
};
`,
  );
});
afterAll(async () => {
  await dns?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('tern dns', () => {
  test('checks each record: right ones pass, wrong ones fail, absent ones are missing', async () => {
    dns.set('example.test', {
      MX: [{ exchange: 'mx.example.test', priority: 10 }],
      TXT: ['v=spf1 ip4:192.0.2.99 -all', 'google-site-verification=abc'],
    });
    dns.set('mx.example.test', { A: ['192.0.2.10'] });
    dns.set('good._domainkey.example.test', { TXT: [published.good as string] });
    dns.set('wrong._domainkey.example.test', { TXT: [published.stranger as string] });

    const result = await tern(['dns', 'example.test', '--config', file, '--dns', dns.server]);
    const out = result.stdout;
    expect(out).toContain(`; checked against ${dns.server}`);
    expect(out).toContain('; MX pass: DNS lists mx.example.test\nexample.test. IN MX 10 mx.example.test.\n');
    expect(out).toContain(
      '; SPF FAIL: "v=spf1 ip4:192.0.2.99 -all" gives fail for 192.0.2.10 (mx.example.test): let mx.example.test send, e.g. with a:mx.example.test\n' +
        'example.test. IN TXT "v=spf1 a:mx.example.test -all"\n',
    );
    expect(out).toContain(
      '; DKIM pass: DNS publishes the key selector good signs with\ngood._domainkey.example.test. IN TXT',
    );
    expect(out).toMatch(
      /; DKIM FAIL: the published key differs from the configured key; .*\nwrong\._domainkey\.example\.test\. IN TXT "v=DKIM1; k=ed25519; p=/,
    );
    expect(out).toMatch(
      /; DKIM MISSING: no TXT record at absent\._domainkey\.example\.test\nabsent\._domainkey/,
    );
    expect(out).toContain(
      '; DMARC MISSING: no DMARC record (v=DMARC1) at _dmarc.example.test\n' +
        '_dmarc.example.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.test"\n',
    );
    expect(out).toContain(
      '; 2 of 6 records pass: publish the ones marked MISSING, correct the ones marked FAIL',
    );
    expect(result.status).toBe(1);

    // Every DKIM record is printed as DNS needs it: strings of at most 255 characters.
    for (const line of out.split('\n').filter((l) => l.includes('IN TXT'))) {
      for (const [, string] of line.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
        expect((string as string).length).toBeLessThanOrEqual(255);
      }
    }

    // Publishing exactly what tern printed makes every check pass, asked through the config's
    // delivery.dns servers this time.
    const printed = records(out);
    for (const owner of new Set(printed.map(([name]) => name))) {
      const mine = printed.filter(([name]) => name === owner);
      dns.set(owner, {
        ...(owner === 'example.test' ? { MX: [{ exchange: 'mx.example.test', priority: 10 }] } : {}),
        TXT: mine.filter(([, type]) => type === 'TXT').map(([, , value]) => value),
      });
    }
    const fixed = await tern(['dns', 'example.test', '--config', file]);
    expect(fixed.stdout).toContain('; all 6 records pass');
    expect(fixed.stdout).not.toMatch(/FAIL|MISSING/);
    expect(fixed.status).toBe(0);
  });

  test('a domain the config only sends for needs no MX; a failed lookup is a FAIL, not a pass', async () => {
    dns.servfail('other.test');
    dns.servfail('_dmarc.other.test');
    const result = await tern(['dns', 'other.test', '--config', file, '--dns', dns.server]);
    expect(result.stdout).toContain('; no mx listener receives for other.test');
    expect(result.stdout).not.toContain('IN MX');
    expect(result.stdout).toContain('; SPF FAIL: lookup failed: ESERVFAIL');
    expect(result.stdout).toContain('; DKIM MISSING: the config signs no mail from other.test');
    expect(result.stdout).toContain('; DMARC FAIL: lookup failed: ESERVFAIL');
    expect(result.status).toBe(1);
  });

  test('a bad domain or --dns is a usage error', async () => {
    expect((await tern(['dns', 'not a domain', '--config', file])).status).toBe(2);
    const bad = await tern(['dns', 'example.test', '--config', file, '--dns', 'nowhere']);
    expect(bad.stderr).toContain('--dns:');
    expect(bad.status).toBe(2);
  });
});
