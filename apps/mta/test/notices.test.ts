// Mail tern writes itself goes through the global plugins' queue hooks, so the DKIM plugin signs
// it: a real `tern start` with dkim() configured bounces a message refused by a real receiving
// server and sends yesterday's TLS-RPT report by mail; both arrive at the receiving server signed,
// and dkimpy (an independent verifier) finds each signature valid with the key in a test DNS server.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { StoreTlsReportSink } from '@tern/delivery';
import { openEmbeddedQueue } from '@tern/queue';
import {
  freePort,
  run,
  type SmtpSink,
  startDnsServer,
  startSmtpSink,
  swaks,
  type TestDns,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTern, stopAllTern } from './tern-process.js';

const VERIFY = resolve(import.meta.dirname, '../../../packages/plugin-dkim/test/verify_dkim.py');

let dns: TestDns;
let sink: SmtpSink;

beforeAll(async () => {
  dns = await startDnsServer();
  sink = await startSmtpSink({
    hostname: 'mx.sender.test',
    rcptReply: (address) =>
      address.startsWith('gone') ? { code: 550, message: '5.1.1 No such user' } : undefined,
  });
  for (const domain of ['sender.test', 'remote.test', 'reports.test'])
    dns.set(domain, { MX: [{ exchange: `mx.${domain}`, priority: 10 }] });
  for (const domain of ['sender.test', 'remote.test', 'reports.test'])
    dns.set(`mx.${domain}`, { A: ['127.0.0.1'] });
  dns.set('_smtp._tls.partner.test', { TXT: ['v=TLSRPTv1; rua=mailto:tls@reports.test'] });
});

afterAll(async () => {
  await stopAllTern();
  await Promise.all([sink?.stop(), dns?.stop()]);
});

/** dkimpy's verdict on every DKIM-Signature of `raw`, keys from the test DNS server. */
async function dkimpy(raw: Buffer): Promise<{ valid: boolean; domain: string; selector: string }[]> {
  const result = await run('/usr/bin/python3', [VERIFY, dns.host, String(dns.port)], { input: raw });
  expect(result.status, result.stderr).toBe(0);
  return JSON.parse(result.stdout).signatures;
}

describe('notices through the queue hooks', () => {
  test('bounces and TLS reports leave DKIM-signed by the configured key', async () => {
    const dir = mkdtempSync(join(import.meta.dirname, '.tmp-tern-'));
    // The operator's key for tern.test; the host is mx.tern.test, so the parent domain's key signs.
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'tern.test.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const p = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    dns.set('s1._domainkey.tern.test', { TXT: [`v=DKIM1; k=rsa; p=${p}`] });

    // Yesterday's outcomes for partner.test, as an earlier run counted them.
    const store = openEmbeddedQueue({ path: join(dir, 'queue.db') });
    const recorder = new StoreTlsReportSink(store.tlsStore);
    recorder.record({
      at: Date.now() - 86_400_000,
      policyDomain: 'partner.test',
      policyType: 'sts',
      policyStrings: ['version: STSv1', 'mode: enforce', 'mx: mx.partner.test', 'max_age: 86400'],
      mxHosts: ['mx.partner.test'],
      receivingMxHostname: 'mx.partner.test',
      receivingIp: '192.0.2.25',
      result: 'success',
    });
    await recorder.flush();
    await store.close();

    const port = await freePort();
    const configFile = join(dir, 'tern.config.js');
    writeFileSync(
      configFile,
      `import { dkim } from '@tern/plugin-dkim';
export default {
  hostname: 'mx.tern.test',
  log: { level: 'debug' },
  listeners: [{ kind: 'mx', host: '127.0.0.1', port: ${port} }],
  trustedNetworks: ['127.0.0.1/32'],
  queue: { backend: 'embedded', path: 'queue.db' },
  delivery: {
    port: ${sink.port},
    dns: { servers: ['${dns.server}'], timeoutMs: 2000 },
    tlsReports: {
      organizationName: 'Tern notices test',
      contactInfo: 'mailto:postmaster@tern.test',
      from: 'tls-reports@tern.test',
      sendAt: '00:00',
      checkIntervalMs: 200,
    },
  },
  plugins: [dkim({ matchParentDomain: true, domains: { 'tern.test': { selector: 's1', keyFile: 'tern.test.pem' } } })],
};
`,
    );
    await startTern({}, { dir, configFile });
    const sent = await swaks(port, [
      '--from',
      'alice@sender.test',
      '--to',
      'gone@remote.test',
      '--header',
      'Subject: will bounce',
      '--body',
      'This one is refused at RCPT.',
    ]);
    expect(sent.stdout).toMatch(/<- {2}250 2\.0\.0 queued as/);

    const mail = await sink.waitFor(2, 20_000);
    const bounce = mail.find((m) => m.mailFrom === '' && m.rcptTo[0] === 'alice@sender.test');
    const report = mail.find((m) => m.rcptTo[0] === 'tls@reports.test');
    expect(bounce?.raw.toString('latin1')).toMatch(
      /^From: Mail Delivery System <MAILER-DAEMON@mx\.tern\.test>/m,
    );
    expect(report?.mailFrom).toBe('tls-reports@tern.test');
    for (const signed of [bounce, report]) {
      const results = await dkimpy(signed?.raw ?? Buffer.alloc(0));
      expect(results).toEqual([
        expect.objectContaining({ valid: true, domain: 'tern.test', selector: 's1' }),
      ]);
    }
  });
});
