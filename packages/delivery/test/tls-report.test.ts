// TLS-RPT (RFC 8460) reports from a day of mixed outcomes: counted in the real queue stores,
// built into the JSON report and validated against a JSON Schema written from RFC 8460 §4, sent
// to the domain's rua from its `_smtp._tls` TXT record on a test DNS server: mailto: through the
// queue (the message read back by Python's email package), https: by POST to a server with a test
// CA. Two nodes on one Redis send each domain-day once.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { openEmbeddedQueue, openRedisQueue, type QueueBackend, type TlsStore } from '@tern/queue';
import {
  makeCertificateAuthority,
  run,
  startDnsServer,
  startRedis,
  type TestDns,
  type TestRedis,
} from '@tern/testkit';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MxResolver,
  parseTlsRptRecord,
  StoreTlsReportSink,
  type TlsPolicyOutcome,
  TlsReportSender,
} from '../src/index.js';

const schema = JSON.parse(
  readFileSync(join(import.meta.dirname, 'fixtures/rfc8460-report.schema.json'), 'utf8'),
);
const ajv = new Ajv({ allErrors: true, strict: true });
(addFormats as unknown as (a: Ajv) => void)(ajv);
const validateReport = ajv.compile(schema);

const ca = makeCertificateAuthority('TLS-RPT receiver CA');
const DAY = '2026-11-29';
/** The next day, past the default send time (01:00 UTC). */
const NEXT_DAY_2AM = Date.parse('2026-11-30T02:00:00Z');
const at = Date.parse(`${DAY}T12:00:00Z`);

let dns: TestDns;
let redis: TestRedis;
let https: Server;
let httpsPort: number;
const posts: { path: string; contentType: string; body: Buffer }[] = [];
const dirs: string[] = [];
const queues: QueueBackend[] = [];

beforeAll(async () => {
  dns = await startDnsServer();
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  const cert = ca.issue(['localhost']);
  https = createServer({ key: cert.key, cert: cert.chain }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (c: Buffer) => chunks.push(c));
    request.on('end', () => {
      posts.push({
        path: request.url ?? '',
        contentType: request.headers['content-type'] ?? '',
        body: Buffer.concat(chunks),
      });
      response.writeHead(request.url === '/broken' ? 500 : 201).end();
    });
  });
  await new Promise<void>((done) => https.listen(0, '127.0.0.1', done));
  httpsPort = (https.address() as AddressInfo).port;
});

afterAll(async () => {
  await Promise.all(queues.map((q) => q.close()));
  await new Promise((done) => https?.close(done));
  await dns?.stop();
  await redis?.stop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const STS_LINES = ['version: STSv1', 'mode: enforce', 'mx: mx.a.test', 'max_age: 86400'];
const TLSA = ['3 1 1 8f8b7e6c5f0a9d8e7f6a5b4c3d2e1f00112233445566778899aabbccddeeff00'];

/** One outcome of policy domain `a.test` (the day's mix is built from these). */
function outcome(extra: Partial<TlsPolicyOutcome>): TlsPolicyOutcome {
  if (extra.policyType === 'tlsa') {
    const { mxHosts: _none, ...dane } = outcome({ ...extra, policyType: 'sts' });
    return { ...dane, policyType: 'tlsa' };
  }
  return {
    at,
    policyDomain: 'a.test',
    policyType: 'sts',
    policyStrings: STS_LINES,
    mxHosts: ['mx.a.test'],
    result: 'success',
    receivingMxHostname: 'mx.a.test',
    receivingIp: '192.0.2.25',
    sendingMtaIp: '198.51.100.7',
    ...extra,
  };
}

/** The day of mixed outcomes: successes, a policy fetch error, a certificate mismatch, a stripped STARTTLS, DANE failures. */
const MIXED: readonly TlsPolicyOutcome[] = [
  outcome({}),
  outcome({}),
  outcome({}),
  outcome({
    result: 'certificate-host-mismatch',
    detail: 'certificate (DNS:evil.test) does not name mx.a.test',
  }),
  outcome({ result: 'starttls-not-supported', detail: 'the server does not offer STARTTLS' }),
  outcome({ result: 'starttls-not-supported', detail: 'the server does not offer STARTTLS' }),
  {
    at,
    policyDomain: 'a.test',
    policyType: 'sts',
    policyStrings: [],
    result: 'sts-policy-fetch-error',
    detail: 'https://mta-sts.a.test/.well-known/mta-sts.txt: answered HTTP 404',
  },
  outcome({ policyType: 'tlsa', policyStrings: TLSA }),
  outcome({
    policyType: 'tlsa',
    policyStrings: TLSA,
    result: 'tlsa-invalid',
    detail: 'no TLSA record matches the certificate chain',
  }),
  { at, policyDomain: 'b.test', policyType: 'no-policy-found', policyStrings: [], result: 'success' },
  // Another day: not in this day's report.
  outcome({ at: at + 86_400_000 }),
];

function sender(
  store: TlsStore,
  queue: QueueBackend,
  extra: Partial<ConstructorParameters<typeof TlsReportSender>[0]> = {},
): TlsReportSender {
  return new TlsReportSender({
    store,
    resolver: new MxResolver({ servers: [dns.server] }),
    enqueue: (message) => queue.enqueue(message),
    hostname: 'mta.sender.test',
    organizationName: 'Sender Test Org',
    contactInfo: 'mailto:postmaster@sender.test',
    ca: ca.cert,
    now: () => NEXT_DAY_2AM,
    ...extra,
  });
}

async function record(store: TlsStore, outcomes: readonly TlsPolicyOutcome[]): Promise<void> {
  const sink = new StoreTlsReportSink(store);
  for (const o of outcomes) sink.record(o);
  await sink.flush();
}

describe('TLS-RPT record (RFC 8460 §3)', () => {
  it('takes the rua URIs of the one v=TLSRPTv1 record', () => {
    expect(parseTlsRptRecord(['v=TLSRPTv1; rua=mailto:a@b.test, https://r.test/x'])).toEqual({
      ok: true,
      rua: ['mailto:a@b.test', 'https://r.test/x'],
    });
    expect(parseTlsRptRecord(['v=spf1 -all'])).toMatchObject({ ok: false });
    expect(parseTlsRptRecord(['v=TLSRPTv1; rua=a', 'v=TLSRPTv1; rua=b'])).toMatchObject({ ok: false });
    expect(parseTlsRptRecord(['v=TLSRPTv1; rua=ftp://x.test/'])).toMatchObject({
      ok: false,
      reason: 'no rua with a mailto: or https: URI',
    });
  });
});

describe('a day of mixed outcomes', () => {
  it('builds a report that validates against the RFC 8460 schema and sends it to mailto: and https:', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-tlsrpt-'));
    dirs.push(dir);
    const queue = openEmbeddedQueue({ path: join(dir, 'queue.db') });
    queues.push(queue);
    dns.set('_smtp._tls.a.test', {
      TXT: [`v=TLSRPTv1; rua=mailto:tls-reports@a.test,https://localhost:${httpsPort}/tlsrpt`],
    });
    await record(queue.tlsStore, MIXED);

    const tlsrpt = sender(queue.tlsStore, queue);
    const prepared = await tlsrpt.prepare('a.test', DAY);
    const valid = validateReport(prepared.report);
    expect(validateReport.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
    expect(prepared.report).toMatchObject({
      'organization-name': 'Sender Test Org',
      'date-range': { 'start-datetime': `${DAY}T00:00:00Z`, 'end-datetime': `${DAY}T23:59:59Z` },
      'contact-info': 'mailto:postmaster@sender.test',
    });
    const byType = (type: string, strings: readonly string[]) =>
      prepared.report.policies.find(
        (p) => p.policy['policy-type'] === type && p.policy['policy-string'].length === strings.length,
      );
    expect(byType('sts', STS_LINES)).toEqual({
      policy: {
        'policy-type': 'sts',
        'policy-string': STS_LINES,
        'policy-domain': 'a.test',
        'mx-host': ['mx.a.test'],
      },
      summary: { 'total-successful-session-count': 3, 'total-failure-session-count': 3 },
      'failure-details': expect.arrayContaining([
        {
          'result-type': 'certificate-host-mismatch',
          'sending-mta-ip': '198.51.100.7',
          'receiving-mx-hostname': 'mx.a.test',
          'receiving-ip': '192.0.2.25',
          'failed-session-count': 1,
          'additional-information': 'certificate (DNS:evil.test) does not name mx.a.test',
        },
        expect.objectContaining({ 'result-type': 'starttls-not-supported', 'failed-session-count': 2 }),
      ]),
    });
    expect(byType('sts', [])).toMatchObject({
      summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 1 },
      'failure-details': [{ 'result-type': 'sts-policy-fetch-error', 'failed-session-count': 1 }],
    });
    expect(byType('tlsa', TLSA)).toMatchObject({
      summary: { 'total-successful-session-count': 1, 'total-failure-session-count': 1 },
      'failure-details': [{ 'result-type': 'tlsa-invalid', 'failed-session-count': 1 }],
    });
    expect(prepared.report.policies).toHaveLength(3);
    expect(prepared.filename).toBe(
      `mta.sender.test!a.test!${at / 1000 - 12 * 3600}!${at / 1000 + 12 * 3600 - 1}.json.gz`,
    );

    // b.test publishes no _smtp._tls record: nothing is sent for it.
    const deliveries = await tlsrpt.sendDue();
    expect(deliveries.map((d) => [d.domain, d.status])).toEqual([
      ['a.test', 'sent'],
      ['b.test', 'no-rua'],
    ]);
    const [mailed, posted] = deliveries[0]?.results ?? [];
    expect(mailed).toMatchObject({ uri: 'mailto:tls-reports@a.test', ok: true });
    expect(posted).toEqual({ uri: `https://localhost:${httpsPort}/tlsrpt`, ok: true, detail: 'HTTP 201' });

    const post = posts.find((p) => p.path === '/tlsrpt');
    expect(post?.contentType).toBe('application/tlsrpt+gzip');
    const postedReport = JSON.parse(gunzipSync(post?.body ?? Buffer.alloc(0)).toString('utf8'));
    expect(validateReport(postedReport)).toBe(true);
    expect(postedReport).toEqual(JSON.parse(JSON.stringify(prepared.report)));

    // The mailed report, as an independent parser reads it.
    const queueId = /queued as (\S+)/.exec(mailed?.detail ?? '')?.[1] ?? '';
    const raw = await queue.readMessage(queueId);
    const file = join(dir, 'report.eml');
    writeFileSync(file, raw ?? Buffer.alloc(0));
    const parsed = await run('python3', [join(import.meta.dirname, 'fixtures/parse-tlsrpt-mail.py'), file]);
    expect(parsed.status, parsed.stderr).toBe(0);
    const mail = JSON.parse(parsed.stdout);
    expect(mail).toMatchObject({
      subject: `Report Domain: a.test Submitter: mta.sender.test Report-ID: <${prepared.report['report-id']}>`,
      to: 'tls-reports@a.test',
      tls_report_domain: 'a.test',
      tls_report_submitter: 'mta.sender.test',
      content_type: 'multipart/report',
      report_type: 'tlsrpt',
      defects: [],
      parts: [
        { content_type: 'text/plain', filename: null, disposition: null },
        { content_type: 'application/tlsrpt+gzip', filename: prepared.filename, disposition: 'attachment' },
      ],
    });
    expect(mail.report).toEqual(postedReport);

    // Sent once: the next runs of the schedule find the claim.
    expect((await tlsrpt.sendDue()).map((d) => d.status)).toEqual(['claimed-elsewhere', 'claimed-elsewhere']);
  });

  it('sends each domain-day from one node only when several run the schedule at once', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const nodes = await Promise.all([1, 2, 3].map(() => openRedisQueue({ url: redis.url, prefix })));
    queues.push(...nodes);
    dns.set('_smtp._tls.c.test', { TXT: [`v=TLSRPTv1; rua=https://localhost:${httpsPort}/c`] });
    dns.set('_smtp._tls.d.test', { TXT: [`v=TLSRPTv1; rua=https://localhost:${httpsPort}/d`] });
    await record(nodes[0]!.tlsStore, [
      outcome({ policyDomain: 'c.test' }),
      outcome({ policyDomain: 'd.test', result: 'starttls-not-supported' }),
    ]);
    const results = await Promise.all(nodes.map((node) => sender(node.tlsStore, node).sendDay(DAY)));
    const sent = results.flat().filter((d) => d.status === 'sent');
    expect(sent.map((d) => d.domain).sort()).toEqual(['c.test', 'd.test']);
    expect(posts.filter((p) => p.path === '/c')).toHaveLength(1);
    expect(posts.filter((p) => p.path === '/d')).toHaveLength(1);
  });

  it('tries a report again later when no rua took it', async () => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const node = await openRedisQueue({ url: redis.url, prefix });
    queues.push(node);
    dns.set('_smtp._tls.e.test', { TXT: [`v=TLSRPTv1; rua=https://localhost:${httpsPort}/broken`] });
    await record(node.tlsStore, [outcome({ policyDomain: 'e.test' })]);
    let now = NEXT_DAY_2AM;
    const tlsrpt = sender(node.tlsStore, node, { now: () => now });
    expect(await tlsrpt.sendDay(DAY)).toEqual([
      {
        domain: 'e.test',
        status: 'failed',
        results: [{ uri: `https://localhost:${httpsPort}/broken`, ok: false, detail: 'HTTP 500' }],
      },
    ]);
    expect((await tlsrpt.sendDay(DAY))[0]?.status).toBe('claimed-elsewhere');
    expect(posts.filter((p) => p.path === '/broken')).toHaveLength(1);
    // Before sendAt only the day before yesterday is due; after it, yesterday too.
    now = Date.parse('2026-11-30T00:30:00Z');
    expect(tlsrpt.dueDays()).toEqual(['2026-11-28']);
    now = NEXT_DAY_2AM;
    expect(tlsrpt.dueDays()).toEqual(['2026-11-29', '2026-11-28']);
  });
});
