// Outbound TLS end to end through a real `tern start`: a test DNS server publishes MX and
// `_mta-sts` records, an HTTPS policy server (its certificate from a test CA the config trusts)
// serves `mode: enforce` policies, and two receiving servers answer: one with a valid certificate,
// one that offers no STARTTLS (what a STARTTLS-stripping attacker shows). The attacker never gets
// the message; it stays deferred with the reason in its timeline. The outcomes are counted for
// TLS-RPT in the queue's store and survive a restart: `tern tls-report show` prints them.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  freePort,
  type MtaStsServer,
  makeCertificateAuthority,
  run,
  type SmtpSink,
  startDnsServer,
  startMtaStsServer,
  startSmtpSink,
  type TestDns,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { attemptsOf, sendThrough } from './outbound-tls-helpers.js';
import { startTern, stopAllTern, type TernProcess } from './tern-process.js';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const ca = makeCertificateAuthority('Outbound TLS e2e CA');
const TOKEN = 'e2e-outbound-tls-token-0123456789';
const schema = JSON.parse(
  readFileSync(
    resolve(import.meta.dirname, '../../../packages/delivery/test/fixtures/rfc8460-report.schema.json'),
    'utf8',
  ),
);

let dns: TestDns;
let policies: MtaStsServer;
let good: SmtpSink;
let attacker: SmtpSink;
let tern: TernProcess;
let adminUrl: string;
let configFile: string;

function policy(mx: string): string {
  return ['version: STSv1', 'mode: enforce', `mx: ${mx}`, 'max_age: 86400', ''].join('\r\n');
}

beforeAll(async () => {
  const mx = ca.issue(['mx.sts.test', 'mx.stripped.test']);
  good = await startSmtpSink({ tls: { key: mx.key, cert: mx.chain }, hostname: 'mx.sts.test' });
  // The same port on another loopback address, without STARTTLS.
  attacker = await startSmtpSink({ host: '127.0.0.4', port: good.port, hostname: 'mx.stripped.test' });
  const web = ca.issue(['mta-sts.sts.test', 'mta-sts.stripped.test']);
  policies = await startMtaStsServer({ tls: { key: web.key, cert: web.chain } });
  dns = await startDnsServer();
  for (const [domain, address] of [
    ['sts.test', '127.0.0.1'],
    ['stripped.test', '127.0.0.4'],
  ] as const) {
    dns.set(domain, { MX: [{ exchange: `mx.${domain}`, priority: 10 }] });
    dns.set(`mx.${domain}`, { A: [address] });
    dns.set(`_mta-sts.${domain}`, { TXT: ['v=STSv1; id=e2e1;'] });
    dns.set(`mta-sts.${domain}`, { A: ['127.0.0.1'] });
    dns.set(`_smtp._tls.${domain}`, { TXT: [`v=TLSRPTv1; rua=mailto:tls-reports@${domain}`] });
    policies.set(domain, policy(`mx.${domain}`));
  }
  // The config names ca.pem beside it: the CA of both the MX certificates and the policy host.
  const ternDir = mkdtempSync(join(import.meta.dirname, '.tmp-tern-'));
  writeFileSync(join(ternDir, 'ca.pem'), ca.cert);
  const adminPort = await freePort();
  adminUrl = `http://127.0.0.1:${adminPort}`;
  tern = await startTern(
    {
      queue: { backend: 'embedded', path: 'queue.db', retry: { intervals: ['2s'], maxAge: '1h' } },
      delivery: {
        port: good.port,
        dns: { servers: [dns.server], timeoutMs: 2000 },
        tls: { ca: 'ca.pem' },
        mtaSts: { ca: 'ca.pem', port: policies.port, timeoutMs: 5000 },
        tlsReports: { organizationName: 'Tern e2e', contactInfo: 'mailto:postmaster@tern.test' },
        timeouts: { connectMs: 3000, greetingMs: 3000, commandMs: 3000 },
      },
      admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN },
    },
    { dir: ternDir },
  );
  configFile = join(tern.dir, 'tern.config.json');
}, 60_000);

afterAll(async () => {
  await stopAllTern();
  await Promise.all([good?.stop(), attacker?.stop(), policies?.stop(), dns?.stop()]);
});

const attempts = (queueId: string) => attemptsOf(adminUrl, TOKEN, queueId);
const send = (to: string) => sendThrough(tern, to);

describe('MTA-STS enforce through tern start', () => {
  test('a server with a valid certificate receives the message over validated TLS', async () => {
    const id = await send('user@sts.test');
    const [message] = await good.waitFor(1, 20_000);
    expect(message?.rcptTo).toEqual(['user@sts.test']);
    expect(message?.secure).toBe(true);
    await waitFor(async () => (await attempts(id)).length > 0, 10_000);
    const [attempt] = await attempts(id);
    expect(attempt?.recipients[0]?.result).toBe('delivered');
    expect(attempt?.tls).toMatchObject({
      policy: 'mta-sts',
      applied: 'mta-sts-enforce',
      tls: true,
      validated: true,
    });
  });

  test('a server without STARTTLS (a stripping attacker) never receives it: deferred, with the reason', async () => {
    const id = await send('user@stripped.test');
    // Two attempts, each refused before any mail is sent.
    await waitFor(async () => (await attempts(id)).length >= 2, 20_000);
    const [first] = await attempts(id);
    expect(first?.recipients[0]).toMatchObject({ address: 'user@stripped.test', result: 'deferred' });
    expect(first?.recipients[0]?.code).toBeGreaterThanOrEqual(400);
    expect(first?.recipients[0]?.code).toBeLessThan(500);
    expect(first?.recipients[0]?.text).toMatch(/STARTTLS/i);
    expect(first?.tls).toMatchObject({
      policy: 'mta-sts',
      applied: 'mta-sts-enforce',
      tls: false,
      validated: false,
    });
    expect(first?.tls?.reason).toMatch(/STARTTLS/i);
    // tern queue inspect shows the policy and why nothing was sent.
    const inspect = await run(process.execPath, [cli, 'queue', 'inspect', id, '--config', configFile], {
      timeoutMs: 30_000,
    });
    expect(inspect.status, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(
      /attempt 1 to stripped\.test .*user@stripped\.test deferred .*; TLS policy mta-sts as mta-sts-enforce: no TLS: .*STARTTLS/,
    );
    // The attacker was connected to, and got no message.
    expect(attacker.connections).toBeGreaterThan(0);
    expect(attacker.messages).toEqual([]);
  });

  test('the outcomes are counted for TLS-RPT and kept across a restart', async () => {
    const show = (domain: string) =>
      run(process.execPath, [cli, 'tls-report', 'show', domain, '--config', configFile, '--date', 'today'], {
        timeoutMs: 30_000,
      });
    // While tern runs it holds the embedded store: the command asks its admin API.
    const live = await show('stripped.test');
    expect(live.status, live.stderr).toBe(0);
    expect(await tern.stop()).toBe(0);
    const stripped = await show('stripped.test');
    expect(stripped.status, stripped.stderr).toBe(0);
    expect(stripped.stderr).toContain('would be sent to mailto:tls-reports@stripped.test');
    const report = JSON.parse(stripped.stdout);
    expect(report.policies).toEqual([
      expect.objectContaining({
        policy: {
          'policy-type': 'sts',
          'policy-string': policy('mx.stripped.test').trim().split('\r\n'),
          'policy-domain': 'stripped.test',
          'mx-host': ['mx.stripped.test'],
        },
        summary: expect.objectContaining({ 'total-successful-session-count': 0 }),
        'failure-details': [
          expect.objectContaining({
            'result-type': 'starttls-not-supported',
            'receiving-mx-hostname': 'mx.stripped.test',
            'receiving-ip': '127.0.0.4',
          }),
        ],
      }),
    ]);
    expect(report.policies[0].summary['total-failure-session-count']).toBeGreaterThanOrEqual(2);
    // The same report from the store itself after the stop (retries may have added failures since).
    const before = JSON.parse(live.stdout);
    expect(before.policies.map((p: { policy: unknown }) => p.policy)).toEqual([report.policies[0].policy]);
    expect(before.policies[0]['failure-details'][0]['result-type']).toBe('starttls-not-supported');
    expect(before.policies[0].summary['total-failure-session-count']).toBeLessThanOrEqual(
      report.policies[0].summary['total-failure-session-count'],
    );
    const sts = JSON.parse((await show('sts.test')).stdout);
    expect(sts.policies[0].summary).toEqual({
      'total-successful-session-count': 1,
      'total-failure-session-count': 0,
    });
    // Both validate against the RFC 8460 schema (checked by an independent validator: ajv).
    const { Ajv } = await import('ajv');
    const addFormats = (await import('ajv-formats')).default as unknown as (a: unknown) => void;
    const ajv = new Ajv({ strict: true });
    addFormats(ajv);
    const validate = ajv.compile(schema);
    expect(validate(report), JSON.stringify(validate.errors)).toBe(true);
    expect(validate(sts), JSON.stringify(validate.errors)).toBe(true);
  });
});
