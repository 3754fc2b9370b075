// DANE (RFC 7672) end to end: zones signed and served by a private nsd, validated by a private
// unbound the deliverer trusts, receiving sinks with matching and mismatching certificates, and an
// attacker in the middle who strips STARTTLS. Every downgrade defers; nothing goes out in clear.
import { createHash, X509Certificate } from 'node:crypto';
import type { Envelope } from '@tern/plugin-api';
import {
  makeCertificate,
  makeCertificateAuthority,
  type SmtpSink,
  startSignedZones,
  startSmtpSink,
  startValidatingResolver,
  type TestAuthority,
  type TestResolver,
  type TlsaRecordData,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions, MemoryTlsReportSink } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

const ee = makeCertificate(['some.other.name.test']);
const ca = makeCertificateAuthority('DANE test TA');
const taLeaf = ca.issue(['mx.ta.dane.test']);

let authority: TestAuthority;
let resolver: TestResolver;
let port: number;
/** 127.0.0.1: the DANE-EE server; 127.0.0.2: the DANE-TA server (CA chain); ::1: the EE server over IPv6. */
let eeSink: SmtpSink;
let taSink: SmtpSink;
let v6Sink: SmtpSink;
/** 127.0.0.4: an attacker in front of the EE server who removes STARTTLS from the EHLO reply. */
let stripper: WireTap;
const deliverers: Deliverer[] = [];

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

const spki = (pem: string): Buffer =>
  new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }) as Buffer;
const der = (pem: string): Buffer => new X509Certificate(pem).raw;

const eeSpkiSha256: TlsaRecordData = { usage: 3, selector: 1, matchingType: 1, data: sha256(spki(ee.cert)) };

/** A domain whose one MX host has these records (in the signed zone dane.test). */
function mxWith(label: string, address: { A?: string[]; AAAA?: string[] }, tlsa?: TlsaRecordData[]) {
  const host = `mx.${label}.dane.test`;
  return {
    [`${label}.dane.test`]: { MX: [{ exchange: host, priority: 10 }] },
    [host]: address,
    ...(tlsa ? { [`_${port}._tcp.${host}`]: { TLSA: tlsa } } : {}),
  };
}

beforeAll(async () => {
  // REQUIRETLS is offered, but only a REQUIRETLS message uses it.
  eeSink = await startSmtpSink({ tls: ee, offerREQUIRETLS: true });
  port = eeSink.port;
  taSink = await startSmtpSink({ tls: { key: taLeaf.key, cert: taLeaf.chain }, host: '127.0.0.2', port });
  v6Sink = await startSmtpSink({ tls: ee, host: '::1', port });
  stripper = await startWireTap({
    upstreamPort: port,
    host: '127.0.0.4',
    port,
    // As seen in the wild: the keyword overwritten, so the reply keeps its shape.
    rewriteServer: (text) => text.replace(/^250([- ])STARTTLS\r\n/m, '250$1XXXXXXXA\r\n'),
  });
  const local = { A: ['127.0.0.1'] };
  authority = await startSignedZones([
    {
      name: 'dane.test',
      records: {
        ...mxWith('ok', local, [eeSpkiSha256]),
        ...mxWith('cert', local, [{ usage: 3, selector: 0, matchingType: 1, data: sha256(der(ee.cert)) }]),
        ...mxWith('sha512', local, [
          {
            usage: 3,
            selector: 1,
            matchingType: 2,
            data: createHash('sha512').update(spki(ee.cert)).digest('hex'),
          },
        ]),
        ...mxWith('ta', { A: ['127.0.0.2'] }, [
          { usage: 2, selector: 0, matchingType: 1, data: sha256(der(ca.cert)) },
        ]),
        ...mxWith('tabad', { A: ['127.0.0.2'] }, [
          { usage: 2, selector: 0, matchingType: 1, data: sha256(der(ca.cert)) },
        ]),
        ...mxWith('mismatch', local, [{ ...eeSpkiSha256, data: 'ab'.repeat(32) }]),
        ...mxWith('stripped', { A: ['127.0.0.4'] }, [eeSpkiSha256]),
        ...mxWith('bogus', local, [eeSpkiSha256]),
        ...mxWith('unusable', local, [{ usage: 1, selector: 1, matchingType: 1, data: 'cd'.repeat(32) }]),
        ...mxWith('unusablestripped', { A: ['127.0.0.4'] }, [
          { usage: 0, selector: 0, matchingType: 1, data: 'cd'.repeat(32) },
        ]),
        ...mxWith('notlsa', local),
        // IPv4 refuses (nothing listens on 127.0.0.5), IPv6 answers.
        ...mxWith('v6', { A: ['127.0.0.5'], AAAA: ['::1'] }, [eeSpkiSha256]),
      },
      bogus: [{ name: `_${port}._tcp.mx.bogus.dane.test`, type: 'TLSA' }],
    },
    {
      name: 'insecure.test',
      signed: false,
      records: {
        // An unsigned domain whose MX is a host with secure TLSA records (a hosting provider's).
        'hosted.insecure.test': { MX: [{ exchange: 'mx.ok.dane.test', priority: 10 }] },
        // TLSA records in an unsigned zone prove nothing: no DANE.
        'plain.insecure.test': { MX: [{ exchange: 'mx.plain.insecure.test', priority: 10 }] },
        'mx.plain.insecure.test': { A: ['127.0.0.1'] },
        [`_${port}._tcp.mx.plain.insecure.test`]: { TLSA: [{ ...eeSpkiSha256, data: 'ef'.repeat(32) }] },
      },
    },
  ]);
  resolver = await startValidatingResolver(authority);
}, 30_000);

afterAll(async () => {
  for (const d of deliverers) await d.close();
  await Promise.all([eeSink?.stop(), taSink?.stop(), v6Sink?.stop(), stripper?.stop()]);
  await resolver?.stop();
  await authority?.stop();
});

function make(extra: Partial<DelivererOptions> = {}): { deliverer: Deliverer; reports: MemoryTlsReportSink } {
  const reports = new MemoryTlsReportSink();
  const deliverer = createDeliverer({
    hostname: 'out.tern.test',
    port,
    dns: { servers: [resolver.server], dnssec: true, timeoutMs: 2000, tries: 1 },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    // Each test sees its own connections, not a session a previous test left in the pool.
    pool: { maxMessagesPerConnection: 1 },
    tlsReports: reports,
    ...extra,
  });
  deliverers.push(deliverer);
  return { deliverer, reports };
}

async function deliverTo(
  domain: string,
  extra: Partial<DelivererOptions> = {},
  envelope: Partial<Envelope> = {},
) {
  const { deliverer, reports } = make(extra);
  const subject = `dane ${domain} ${Math.random()}`;
  const message = SIMPLE_MESSAGE.replace('Subject: test', `Subject: ${subject}`);
  const report = await deliverer.deliver(makeJob([`rcpt@${domain}`], envelope), storedMessage(message));
  const received = [eeSink, taSink, v6Sink]
    .flatMap((s) => s.messages)
    .filter((m) => m.headers.includes(subject));
  return { report, reports, received };
}

describe('DANE-EE and DANE-TA', () => {
  it('delivers when the certificate matches a DANE-EE SPKI SHA-256 record (name and issuer do not matter)', async () => {
    const { report, reports, received } = await deliverTo('ok.dane.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ policy: 'dane', applied: 'dane', tls: true, validated: true });
    expect(report.tls?.protocol).toMatch(/^TLSv1\.[23]$/);
    expect(received[0]?.secure).toBe(true);
    expect(received[0]?.servername).toBe('mx.ok.dane.test');
    expect(reports.outcomes).toMatchObject([
      {
        policyDomain: 'ok.dane.test',
        policyType: 'tlsa',
        policyStrings: [`3 1 1 ${eeSpkiSha256.data}`],
        result: 'success',
        receivingMxHostname: 'mx.ok.dane.test',
        receivingIp: '127.0.0.1',
        sendingMtaIp: '127.0.0.1',
      },
    ]);
  });

  it('matches full-certificate (3 0 1) and SHA-512 (3 1 2) records', async () => {
    for (const domain of ['cert.dane.test', 'sha512.dane.test']) {
      const { report } = await deliverTo(domain);
      expect(report.recipients[0]?.result, domain).toBe('delivered');
      expect(report.tls?.validated, domain).toBe(true);
    }
  });

  it('delivers when the chain leads to a DANE-TA anchor and the leaf names the MX host', async () => {
    const { report, received } = await deliverTo('ta.dane.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ applied: 'dane', validated: true });
    expect(received).toHaveLength(1);
  });

  it('defers when a DANE-TA chain is right but the certificate names another host', async () => {
    const { report, reports, received } = await deliverTo('tabad.dane.test');
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.5' },
    });
    expect(report.recipients[0]?.reply.text).toContain('names none of mx.tabad.dane.test');
    expect(received).toHaveLength(0);
    expect(reports.outcomes[0]?.result).toBe('certificate-host-mismatch');
  });

  it('defers, never delivering, when the certificate matches no TLSA record', async () => {
    const { report, reports, received } = await deliverTo('mismatch.dane.test');
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.5' },
    });
    expect(report.recipients[0]?.reply.text).toMatch(/matches none of the 1 usable TLSA record/);
    expect(report.tls).toMatchObject({ policy: 'dane', applied: 'dane', tls: false, validated: false });
    expect(received).toHaveLength(0);
    expect(reports.outcomes).toMatchObject([{ policyType: 'tlsa', result: 'tlsa-invalid' }]);
  });
});

describe('downgrades defer', () => {
  it('defers when an attacker strips STARTTLS from a host with TLSA records, and sends nothing in clear', async () => {
    const before = stripper.connections;
    const { report, reports, received } = await deliverTo('stripped.dane.test');
    expect(stripper.connections).toBeGreaterThan(before);
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.10' },
    });
    expect(received).toHaveLength(0);
    expect(stripper.clientText()).not.toMatch(/MAIL FROM/i);
    expect(reports.outcomes).toMatchObject([{ result: 'starttls-not-supported', receivingIp: '127.0.0.4' }]);
  });

  it('defers when the TLSA answer is bogus (DNSSEC validation fails), without connecting', async () => {
    const connections = eeSink.connections;
    const { report, reports, received } = await deliverTo('bogus.dane.test');
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.5' },
    });
    expect(report.recipients[0]?.reply.text).toMatch(
      /TLSA lookup for mx\.bogus\.dane\.test failed \(ESERVFAIL\)/,
    );
    expect(received).toHaveLength(0);
    expect(eeSink.connections).toBe(connections);
    expect(reports.outcomes).toMatchObject([{ policyType: 'tlsa', result: 'dnssec-invalid' }]);
  });

  it('requires TLS, without authentication, when every TLSA record is unusable for SMTP', async () => {
    const ok = await deliverTo('unusable.dane.test');
    expect(ok.report.recipients[0]?.result).toBe('delivered');
    expect(ok.received[0]?.secure).toBe(true);
    expect(ok.report.tls).toMatchObject({ applied: 'encrypt', tls: true, validated: false });
    const stripped = await deliverTo('unusablestripped.dane.test');
    expect(stripped.report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { enhanced: '4.7.10' },
    });
    expect(stripped.received).toHaveLength(0);
  });
});

describe('when DANE does not apply', () => {
  it('falls back to opportunistic TLS when the host securely has no TLSA records', async () => {
    const { report, reports } = await deliverTo('notlsa.dane.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ policy: 'dane', applied: 'may', tls: true, validated: false });
    expect(reports.outcomes).toMatchObject([{ policyType: 'no-policy-found', result: 'success' }]);
  });

  it('ignores TLSA records from an unsigned zone', async () => {
    const { report } = await deliverTo('plain.insecure.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ applied: 'may', validated: false });
  });

  it('uses the TLSA records of a secure MX host found through an unsigned MX, saying what that proves', async () => {
    const { report } = await deliverTo('hosted.insecure.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ applied: 'dane', validated: true });
    expect(report.tls?.reason).toMatch(/MX RRset of hosted\.insecure\.test is not DNSSEC-signed/);
  });

  it('defers under dane-only when the host has no TLSA records', async () => {
    const { report, reports, received } = await deliverTo('notlsa.dane.test', {
      tlsPolicy: { 'notlsa.dane.test': 'dane-only' },
    });
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(report.tls).toMatchObject({ policy: 'dane-only', tls: false });
    expect(received).toHaveLength(0);
    expect(reports.outcomes).toMatchObject([{ result: 'dane-required' }]);
  });

  it('lets the policy table turn DANE off for a domain', async () => {
    const { report } = await deliverTo('mismatch.dane.test', { tlsPolicy: { '.dane.test': 'may' } });
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ policy: 'may', applied: 'may' });
  });
});

describe('IPv6', () => {
  it('reaches a DANE host over AAAA when its IPv4 address refuses', async () => {
    const { report, received } = await deliverTo('v6.dane.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`mx.v6.dane.test[::1]:${port}`);
    expect(report.tls).toMatchObject({ applied: 'dane', validated: true });
    expect(received.map((m) => m.sessionId).length).toBe(1);
    expect(v6Sink.messages.some((m) => m.headers.includes('mx') || m.secure)).toBe(true);
  });
});

describe('REQUIRETLS over DANE (RFC 8689 section 4.2.1)', () => {
  it('delivers a REQUIRETLS message to a DANE-authenticated host under a signed MX answer, flag passed on', async () => {
    const { report, received } = await deliverTo('ok.dane.test', {}, { requireTls: true });
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ applied: 'dane', validated: true });
    expect(received[0]?.mailArgs.REQUIRETLS).toBe(true);
  });

  it('fails it with 5.7.10 when the MX answer is unsigned, though the MX host itself has DANE', async () => {
    const { report, received } = await deliverTo('hosted.insecure.test', {}, { requireTls: true });
    expect(report.recipients[0]).toMatchObject({
      result: 'failed',
      reply: { code: 550, enhanced: '5.7.10' },
    });
    expect(received).toHaveLength(0);
    // The same host takes a message without REQUIRETLS.
    expect((await deliverTo('hosted.insecure.test')).report.recipients[0]?.result).toBe('delivered');
  });

  it('fails it with 5.7.10 when the host has no TLSA records and the domain no MTA-STS policy', async () => {
    const { report, received } = await deliverTo('notlsa.dane.test', {}, { requireTls: true });
    expect(report.recipients[0]).toMatchObject({ result: 'failed', reply: { enhanced: '5.7.10' } });
    expect(received).toHaveLength(0);
  });
});
