// DANE end to end through a real `tern start`: zones signed and served by nsd, a validating unbound
// named in `delivery.dns.dnssec`, a receiving server whose certificate matches its TLSA record, one
// whose certificate does not, and one that offers no STARTTLS (a stripping attacker). Only the
// matching one receives mail; the others' messages stay deferred with the reason in the timeline.
import { createHash, X509Certificate } from 'node:crypto';
import { join, resolve } from 'node:path';
import {
  freePort,
  makeCertificate,
  run,
  type SmtpSink,
  startSignedZones,
  startSmtpSink,
  startValidatingResolver,
  type TestAuthority,
  type TestResolver,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { attemptsOf, sendThrough } from './outbound-tls-helpers.js';
import { startTern, stopAllTern, type TernProcess } from './tern-process.js';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const TOKEN = 'e2e-dane-admin-token-0123456789';
const ee = makeCertificate(['mx.ok.dane.test']);
const spkiSha256 = createHash('sha256')
  .update(new X509Certificate(ee.cert).publicKey.export({ type: 'spki', format: 'der' }) as Buffer)
  .digest('hex');

let authority: TestAuthority;
let resolver: TestResolver;
let good: SmtpSink;
let attacker: SmtpSink;
let tern: TernProcess;
let adminUrl: string;

beforeAll(async () => {
  good = await startSmtpSink({ tls: ee, hostname: 'mx.ok.dane.test' });
  const port = good.port;
  attacker = await startSmtpSink({ host: '127.0.0.4', port, hostname: 'mx.stripped.dane.test' });
  const tlsa = (host: string, data: string) => ({
    [`_${port}._tcp.${host}`]: { TLSA: [{ usage: 3, selector: 1, matchingType: 1, data }] },
  });
  authority = await startSignedZones([
    {
      name: 'dane.test',
      records: {
        'ok.dane.test': { MX: [{ exchange: 'mx.ok.dane.test', priority: 10 }] },
        'mx.ok.dane.test': { A: ['127.0.0.1'] },
        ...tlsa('mx.ok.dane.test', spkiSha256),
        'mismatch.dane.test': { MX: [{ exchange: 'mx.mismatch.dane.test', priority: 10 }] },
        'mx.mismatch.dane.test': { A: ['127.0.0.1'] },
        ...tlsa('mx.mismatch.dane.test', 'ab'.repeat(32)),
        'stripped.dane.test': { MX: [{ exchange: 'mx.stripped.dane.test', priority: 10 }] },
        'mx.stripped.dane.test': { A: ['127.0.0.4'] },
        ...tlsa('mx.stripped.dane.test', spkiSha256),
      },
    },
  ]);
  resolver = await startValidatingResolver(authority);
  const adminPort = await freePort();
  adminUrl = `http://127.0.0.1:${adminPort}`;
  tern = await startTern({
    queue: { backend: 'embedded', path: 'queue.db', retry: { intervals: ['2s'], maxAge: '1h' } },
    delivery: {
      port,
      // The validating resolver itself: DANE is on, and the default level is dane.
      dns: { dnssec: [resolver.server], timeoutMs: 3000 },
      tlsReports: { organizationName: 'Tern e2e', contactInfo: 'mailto:postmaster@tern.test' },
      timeouts: { connectMs: 3000, greetingMs: 3000, commandMs: 3000 },
    },
    admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN },
  });
}, 60_000);

afterAll(async () => {
  await stopAllTern();
  await Promise.all([good?.stop(), attacker?.stop()]);
  await resolver?.stop();
  await authority?.stop();
});

const attempts = (queueId: string) => attemptsOf(adminUrl, TOKEN, queueId);
const send = (to: string) => sendThrough(tern, to);

describe('DANE through tern start', () => {
  test('the server matching its TLSA record receives the message, authenticated by DANE', async () => {
    const id = await send('user@ok.dane.test');
    const [message] = await good.waitFor(1, 20_000);
    expect(message?.secure).toBe(true);
    await waitFor(async () => (await attempts(id)).length > 0, 10_000);
    expect((await attempts(id))[0]?.tls).toMatchObject({
      policy: 'dane',
      applied: 'dane',
      tls: true,
      validated: true,
    });
  });

  test('a certificate that matches no TLSA record, and a stripped STARTTLS, defer: nothing is sent', async () => {
    const mismatch = await send('user@mismatch.dane.test');
    const stripped = await send('user@stripped.dane.test');
    await waitFor(
      async () => (await attempts(mismatch)).length >= 1 && (await attempts(stripped)).length >= 1,
      20_000,
    );
    const [badCert] = await attempts(mismatch);
    expect(badCert?.recipients[0]).toMatchObject({ result: 'deferred' });
    expect(badCert?.tls).toMatchObject({ policy: 'dane', applied: 'dane', validated: false });
    expect(badCert?.tls?.reason).toMatch(/TLSA/);
    const [noTls] = await attempts(stripped);
    expect(noTls?.recipients[0]).toMatchObject({ result: 'deferred' });
    expect(noTls?.recipients[0]?.text).toMatch(/STARTTLS/i);
    expect(noTls?.tls).toMatchObject({ policy: 'dane', applied: 'dane', tls: false, validated: false });
    // Only the ok domain's message reached the good server; the attacker got none.
    expect(good.messages.map((m) => m.rcptTo)).toEqual([['user@ok.dane.test']]);
    expect(attacker.connections).toBeGreaterThan(0);
    expect(attacker.messages).toEqual([]);

    // TLS-RPT counts the DANE failures under the TLSA policy.
    expect(await tern.stop()).toBe(0);
    const show = await run(
      process.execPath,
      [
        cli,
        'tls-report',
        'show',
        'mismatch.dane.test',
        '--config',
        join(tern.dir, 'tern.config.json'),
        '--date',
        'today',
      ],
      { timeoutMs: 30_000 },
    );
    expect(show.status, show.stderr).toBe(0);
    const report = JSON.parse(show.stdout);
    expect(report.policies[0].policy).toEqual({
      'policy-type': 'tlsa',
      'policy-string': [`3 1 1 ${'ab'.repeat(32)}`],
      'policy-domain': 'mismatch.dane.test',
    });
    expect(report.policies[0]['failure-details'][0]).toMatchObject({
      'result-type': 'tlsa-invalid',
      'receiving-mx-hostname': 'mx.mismatch.dane.test',
    });
  });
});
