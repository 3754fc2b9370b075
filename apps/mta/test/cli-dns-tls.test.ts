// tern dns with the outbound TLS keys: the MTA-STS record and policy file and the TLS-RPT record
// to publish for a domain this config receives (from `publish`), checked against a test DNS
// server and a test HTTPS policy host (the file fetched as a sender would: DNS, certificate), and
// the TLS policy table with the level mail to the domain goes out under.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  type MtaStsServer,
  makeCertificateAuthority,
  run,
  startDnsServer,
  startMtaStsServer,
  type TestDns,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-dns-tls-'));
const tern = (args: string[]) => run(process.execPath, [cli, ...args], { timeoutMs: 30_000 });
let dns: TestDns;
let policies: MtaStsServer;
let file: string;

beforeAll(async () => {
  dns = await startDnsServer();
  const ca = makeCertificateAuthority('MTA-STS test CA');
  const issued = ca.issue(['mta-sts.example.test']);
  policies = await startMtaStsServer({ tls: { key: issued.key, cert: issued.chain } });
  writeFileSync(join(dir, 'ca.pem'), ca.cert);
  file = join(dir, 'tern.config.json');
  writeFileSync(
    file,
    JSON.stringify({
      hostname: 'mx.example.test',
      listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
      localDomains: ['example.test'],
      queue: { backend: 'embedded', path: 'queue.db' },
      delivery: {
        dns: { servers: [dns.server] },
        mtaSts: { ca: 'ca.pem', port: policies.port },
        tlsPolicy: { 'bank.test': 'verify', '.partner.test': { level: 'secure', match: ['nexthop'] } },
      },
      publish: {
        mtaSts: { mode: 'enforce', maxAge: 86400 },
        tlsRpt: { rua: ['mailto:tls-reports@example.test', 'https://reports.example.test/tlsrpt'] },
      },
    }),
  );
});

afterAll(async () => {
  await dns?.stop();
  await policies?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('tern dns: MTA-STS, TLS-RPT and the TLS policy table', () => {
  test('prints the records and the policy file, and passes once they are published', async () => {
    const result = await tern(['dns', 'example.test', '--config', file]);
    const out = result.stdout;
    const id = /_mta-sts\.example\.test\. IN TXT "v=STSv1; id=([a-f0-9]{20})"/.exec(out)?.[1];
    expect(id, out).toBeDefined();
    expect(out).toContain('; MTA-STS MISSING: no MTA-STS record (v=STSv1) at _mta-sts.example.test');
    expect(out).toContain(
      '; https://mta-sts.example.test/.well-known/mta-sts.txt (Content-Type: text/plain):\n' +
        ';   version: STSv1\n;   mode: enforce\n;   mx: mx.example.test\n;   max_age: 86400\n',
    );
    expect(out).toContain(
      '; TLS-RPT MISSING: no TLS-RPT record (v=TLSRPTv1) at _smtp._tls.example.test\n' +
        '_smtp._tls.example.test. IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@example.test,https://reports.example.test/tlsrpt"\n',
    );
    expect(out).toContain(
      '; outbound TLS to example.test: mta-sts, from the default; MTA-STS on, DANE off (no validating resolver: set delivery.dns.dnssec)',
    );
    expect(out).toContain(
      '; TLS policy table (delivery.tlsPolicy): 2 entries, default mta-sts\n' +
        ';   bank.test verify\n;   .partner.test secure (certificate names: nexthop)\n',
    );
    expect(result.status).toBe(1);

    // A stale id is a FAIL (senders would keep their cached policy); the right one passes.
    dns.set('_mta-sts.example.test', { TXT: ['v=STSv1; id=old1'] });
    dns.set('_smtp._tls.example.test', { TXT: ['v=TLSRPTv1; rua=mailto:tls-reports@example.test'] });
    const stale = await tern(['dns', 'example.test', '--config', file]);
    expect(stale.stdout).toContain(
      '; MTA-STS FAIL: "v=STSv1; id=old1" has id=old1, not the id of this policy',
    );
    expect(stale.stdout).toContain(
      '; TLS-RPT FAIL: "v=TLSRPTv1; rua=mailto:tls-reports@example.test" does not send reports to https://reports.example.test/tlsrpt',
    );
    dns.set('_mta-sts.example.test', { TXT: [`v=STSv1; id=${id}`] });
    dns.set('_smtp._tls.example.test', {
      TXT: ['v=TLSRPTv1; rua=mailto:tls-reports@example.test,https://reports.example.test/tlsrpt'],
    });
    // The record is right but the policy host does not resolve yet: enforcing senders find nothing.
    const unserved = await tern(['dns', 'example.test', '--config', file]);
    expect(unserved.stdout).toContain(
      `; MTA-STS FAIL: "v=STSv1; id=${id}" is published, but the policy file is not served right (mta-sts.example.test does not resolve`,
    );
    expect(unserved.stdout).toContain('; TLS-RPT pass:');
    expect(unserved.status).toBe(1);
    // Served, but another policy (testing mode, another MX): named field by field.
    dns.set('mta-sts.example.test', { A: ['127.0.0.1'] });
    policies.set(
      'example.test',
      'version: STSv1\r\nmode: testing\r\nmx: mx.other.test\r\nmax_age: 86400\r\n',
    );
    const other = await tern(['dns', 'example.test', '--config', file]);
    expect(other.stdout).toContain(
      `; MTA-STS FAIL: "v=STSv1; id=${id}" is published, but https://mta-sts.example.test/.well-known/mta-sts.txt serves another policy: mode: testing (this config: enforce); mx: mx.other.test (this config: mx.example.test)`,
    );
    expect(other.status).toBe(1);
    // A 404 is a fetch problem with the URL in it.
    policies.remove('example.test');
    const missing = await tern(['dns', 'example.test', '--config', file]);
    expect(missing.stdout).toMatch(
      /; MTA-STS FAIL: .*policy file is not served right \(https:\/\/mta-sts\.example\.test:\d+\/\.well-known\/mta-sts\.txt: answered HTTP 404\)/,
    );
    // The file tern dns prints, served as printed: pass.
    policies.set(
      'example.test',
      'version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n',
    );
    const fixed = await tern(['dns', 'example.test', '--config', file]);
    expect(fixed.stdout).toContain(
      `; MTA-STS pass: "v=STSv1; id=${id}", and https://mta-sts.example.test/.well-known/mta-sts.txt serves this policy`,
    );
    expect(fixed.stdout).toContain('; TLS-RPT pass:');
    expect(policies.requests.at(-1)).toMatchObject({
      host: 'mta-sts.example.test',
      servername: 'mta-sts.example.test',
    });
  });

  test('shows which table entry applies to a domain', async () => {
    const result = await tern(['dns', 'www.partner.test', '--config', file]);
    expect(result.stdout).toContain(
      '; outbound TLS to www.partner.test: secure (certificate names: nexthop), from delivery.tlsPolicy[".partner.test"]',
    );
    // Not a domain this config receives: no MTA-STS or TLS-RPT records for it.
    expect(result.stdout).not.toContain('_mta-sts.');
  });
});
