// The daily TLS-RPT run inside a real `tern start`: yesterday's outcomes are in the embedded store
// (recorded by an earlier run), the policy domain's `_smtp._tls` record on a test DNS server names a
// mailto: and an https: rua; tern mails the report through its own queue to the receiving server
// of that address (read back with Python's email package) and POSTs it to a test HTTPS server.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { StoreTlsReportSink } from '@tern/delivery';
import { openEmbeddedQueue } from '@tern/queue';
import {
  makeCertificateAuthority,
  run,
  type SmtpSink,
  startDnsServer,
  startSmtpSink,
  type TestDns,
  waitFor,
} from '@tern/testkit';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTern, stopAllTern } from './tern-process.js';

const schema = JSON.parse(
  (await import('node:fs')).readFileSync(
    resolve(import.meta.dirname, '../../../packages/delivery/test/fixtures/rfc8460-report.schema.json'),
    'utf8',
  ),
);
const parser = resolve(import.meta.dirname, '../../../packages/delivery/test/fixtures/parse-tlsrpt-mail.py');
const ca = makeCertificateAuthority('TLS-RPT e2e CA');

let dns: TestDns;
let sink: SmtpSink;
let https: Server;
const posts: { contentType: string; body: Buffer }[] = [];

beforeAll(async () => {
  dns = await startDnsServer();
  sink = await startSmtpSink({ hostname: 'mx.reports.test' });
  const cert = ca.issue(['localhost']);
  https = createServer({ key: cert.key, cert: cert.chain }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (c: Buffer) => chunks.push(c));
    request.on('end', () => {
      posts.push({ contentType: request.headers['content-type'] ?? '', body: Buffer.concat(chunks) });
      response.writeHead(200).end();
    });
  });
  await new Promise<void>((done) => https.listen(0, '127.0.0.1', done));
  dns.set('reports.test', { MX: [{ exchange: 'mx.reports.test', priority: 10 }] });
  dns.set('mx.reports.test', { A: ['127.0.0.1'] });
  dns.set('_smtp._tls.partner.test', {
    TXT: [
      `v=TLSRPTv1; rua=mailto:tls-reports@reports.test,https://localhost:${(https.address() as AddressInfo).port}/tlsrpt`,
    ],
  });
});

afterAll(async () => {
  await stopAllTern();
  await new Promise((done) => https?.close(done));
  await Promise.all([sink?.stop(), dns?.stop()]);
});

describe('the daily TLS-RPT run', () => {
  test("sends yesterday's report by mail through the queue and by HTTPS POST", async () => {
    const dir = mkdtempSync(join(import.meta.dirname, '.tmp-tern-'));
    writeFileSync(join(dir, 'ca.pem'), ca.cert);
    // Yesterday's outcomes, as an earlier run of tern counted them in its store.
    const yesterday = Date.now() - 86_400_000;
    const store = openEmbeddedQueue({ path: join(dir, 'queue.db') });
    const recorder = new StoreTlsReportSink(store.tlsStore);
    const base = {
      at: yesterday,
      policyDomain: 'partner.test',
      policyType: 'sts' as const,
      policyStrings: ['version: STSv1', 'mode: enforce', 'mx: mx.partner.test', 'max_age: 86400'],
      mxHosts: ['mx.partner.test'],
      receivingMxHostname: 'mx.partner.test',
      receivingIp: '192.0.2.25',
    };
    for (let i = 0; i < 4; i++) recorder.record({ ...base, result: 'success' });
    recorder.record({ ...base, result: 'certificate-expired', detail: 'certificate has expired' });
    await recorder.flush();
    await store.close();

    const tern = await startTern(
      {
        log: { level: 'debug' },
        queue: { backend: 'embedded', path: 'queue.db' },
        delivery: {
          port: sink.port,
          dns: { servers: [dns.server], timeoutMs: 2000 },
          tlsReports: {
            organizationName: 'Tern e2e',
            contactInfo: 'mailto:postmaster@tern.test',
            from: 'tls-reports@tern.test',
            sendAt: '00:00',
            ca: 'ca.pem',
            checkIntervalMs: 200,
          },
        },
      },
      { dir },
    );
    const [mail] = await sink.waitFor(1, 20_000);
    expect(mail?.rcptTo).toEqual(['tls-reports@reports.test']);
    expect(mail?.mailFrom).toBe('tls-reports@tern.test');
    await waitFor(() => posts.length > 0, 10_000);
    expect(posts[0]?.contentType).toBe('application/tlsrpt+gzip');
    const posted = JSON.parse(gunzipSync(posts[0]?.body ?? Buffer.alloc(0)).toString('utf8'));

    const file = join(dir, 'received.eml');
    writeFileSync(file, mail?.raw ?? Buffer.alloc(0));
    const parsed = await run('python3', [parser, file]);
    expect(parsed.status, parsed.stderr).toBe(0);
    const message = JSON.parse(parsed.stdout);
    expect(message).toMatchObject({
      tls_report_domain: 'partner.test',
      tls_report_submitter: 'tern.test',
      content_type: 'multipart/report',
      report_type: 'tlsrpt',
      defects: [],
    });
    expect(message.subject).toMatch(/^Report Domain: partner\.test Submitter: tern\.test Report-ID: <.+>$/);
    expect(message.report).toEqual(posted);
    const ajv = new Ajv({ strict: true });
    (addFormats as unknown as (a: Ajv) => void)(ajv);
    const validate = ajv.compile(schema);
    expect(validate(posted), JSON.stringify(validate.errors)).toBe(true);
    expect(posted.policies[0].summary).toEqual({
      'total-successful-session-count': 4,
      'total-failure-session-count': 1,
    });
    expect(posted['date-range']['start-datetime']).toBe(
      `${new Date(yesterday).toISOString().slice(0, 10)}T00:00:00Z`,
    );
    // Once: the schedule's next runs find the claim and send nothing more.
    await waitFor(() => /"elsewhere":1[^\n]*TLS reports checked/.test(tern.output()), 10_000);
    expect(sink.messages).toHaveLength(1);
    expect(posts).toHaveLength(1);
  });
});
