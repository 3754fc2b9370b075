// MTA-STS (RFC 8461) end to end: TXT records on the test DNS server, policies over HTTPS from a
// server whose certificate chains to a test CA the deliverer trusts, receiving sinks with trusted,
// untrusted and expired certificates, an attacker stripping STARTTLS, and the real embedded queue
// bouncing a message that an enforce policy kept from going out.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memorySource } from '@tern/plugin-api/host';
import { openEmbeddedQueue, openRedisQueue, type RedisQueue } from '@tern/queue';
import {
  type MtaStsServer,
  makeCertificateAuthority,
  type SmtpSink,
  startDnsServer,
  startMtaStsServer,
  startRedis,
  startSmtpSink,
  type TestDns,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDeliverer,
  type Deliverer,
  type DelivererOptions,
  MemoryPolicyStore,
  MemoryTlsReportSink,
  type PolicyStore,
} from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

const ca = makeCertificateAuthority('Web PKI test CA');
const otherCa = makeCertificateAuthority('A CA nobody trusts');
const DOMAINS = [
  'sts',
  'evil',
  'untrusted',
  'expired',
  'stripped',
  'testing',
  'cache',
  'shared',
  'shared-embedded',
  'shared-redis',
  'bounce',
];

let dns: TestDns;
let policies: MtaStsServer;
let port: number;
/** 127.0.0.1: trusted certificate for every mx.<x>.test; .2: untrusted; .3: expired; .4: STARTTLS stripped. */
let good: SmtpSink;
let untrusted: SmtpSink;
let expired: SmtpSink;
let stripper: WireTap;
const deliverers: Deliverer[] = [];
/** For the shared-cache tests: a Redis, a folder for embedded stores, and what they opened. */
let redis: TestRedis;
const tmp = mkdtempSync(join(tmpdir(), 'tern-mta-sts-shared-'));
const closers: (() => Promise<void>)[] = [];

function policy(mode: 'enforce' | 'testing' | 'none', mx: string[], maxAge = 86400): string {
  return ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`, ''].join(
    '\r\n',
  );
}

/** A recipient domain with one MX at `address`, an `_mta-sts` TXT with `id`, and its policy host. */
function stsDomain(domain: string, address: string, id = '1'): void {
  dns.set(domain, { MX: [{ exchange: `mx.${domain}`, priority: 10 }] });
  dns.set(`mx.${domain}`, { A: [address] });
  dns.set(`_mta-sts.${domain}`, { TXT: [`v=STSv1; id=${id};`] });
  dns.set(`mta-sts.${domain}`, { A: ['127.0.0.1'] });
}

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  const mxNames = [
    ...DOMAINS.map((d) => `mx.${d}.test`),
    'mx.plain.test',
    'mx.origin.test',
    'mx.bad-cert.test',
  ];
  good = await startSmtpSink({ tls: chainOf(ca.issue(mxNames)) });
  port = good.port;
  untrusted = await startSmtpSink({ tls: chainOf(otherCa.issue(mxNames)), host: '127.0.0.2', port });
  expired = await startSmtpSink({
    tls: chainOf(ca.issue(mxNames, { expired: true })),
    host: '127.0.0.3',
    port,
  });
  stripper = await startWireTap({
    upstreamPort: port,
    host: '127.0.0.4',
    port,
    rewriteServer: (text) => text.replace(/^250([- ])STARTTLS\r\n/m, '250$1XXXXXXXA\r\n'),
  });
  const policyHosts = [...DOMAINS, 'missing', 'redirect', 'invalid', 'plain'].map((d) => `mta-sts.${d}.test`);
  policies = await startMtaStsServer({ tls: chainOf(ca.issue(policyHosts)) });
  dns = await startDnsServer({});
  stsDomain('sts.test', '127.0.0.1');
  stsDomain('evil.test', '127.0.0.1');
  stsDomain('untrusted.test', '127.0.0.2');
  stsDomain('expired.test', '127.0.0.3');
  stsDomain('stripped.test', '127.0.0.4');
  stsDomain('testing.test', '127.0.0.2');
  for (const name of ['sts', 'untrusted', 'expired', 'stripped']) {
    policies.set(`${name}.test`, policy('enforce', [`mx.${name}.test`]));
  }
  // The MX of evil.test (an attacker's answer) is not what its policy lists.
  policies.set('evil.test', policy('enforce', ['mx.good.evil.test', '*.backup.evil.test']));
  policies.set('testing.test', policy('testing', ['mx.testing.test']));
  // Fetch problems: 404, a redirect, garbage, a certificate for another name.
  stsDomain('missing.test', '127.0.0.1');
  stsDomain('redirect.test', '127.0.0.1');
  policies.set('redirect.test', { body: '', status: 301, location: 'https://elsewhere.test/' });
  stsDomain('invalid.test', '127.0.0.1');
  policies.set('invalid.test', 'version: STSv1\r\nmode: strict\r\nmax_age: 10\r\n');
  stsDomain('bad-cert.test', '127.0.0.1');
  policies.set('bad-cert.test', policy('enforce', ['mx.bad-cert.test']));
  stsDomain('origin.test', '127.0.0.1');
  dns.remove('_mta-sts.origin.test');
}, 30_000);

afterAll(async () => {
  for (const d of deliverers) await d.close();
  for (const close of closers) await close();
  await redis?.stop();
  rmSync(tmp, { recursive: true, force: true });
  await Promise.all([good?.stop(), untrusted?.stop(), expired?.stop(), stripper?.stop(), policies?.stop()]);
  await dns?.stop();
});

function chainOf(issued: { key: string; chain: string }): { key: string; cert: string } {
  return { key: issued.key, cert: issued.chain };
}

function make(extra: Partial<DelivererOptions> = {}): { deliverer: Deliverer; reports: MemoryTlsReportSink } {
  const reports = new MemoryTlsReportSink();
  const deliverer = createDeliverer({
    hostname: 'out.tern.test',
    port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    tls: { ca: ca.cert },
    mtaSts: { port: policies.port, timeoutMs: 2000 },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    pool: { maxMessagesPerConnection: 1 },
    tlsReports: reports,
    ...extra,
  });
  deliverers.push(deliverer);
  return { deliverer, reports };
}

async function deliverTo(domain: string, via = make()) {
  const subject = `sts ${domain} ${Math.random()}`;
  const message = SIMPLE_MESSAGE.replace('Subject: test', `Subject: ${subject}`);
  const report = await via.deliverer.deliver(makeJob([`rcpt@${domain}`]), storedMessage(message));
  const received = [good, untrusted, expired]
    .flatMap((s) => s.messages)
    .filter((m) => m.headers.includes(subject));
  return { report, reports: via.reports, received };
}

describe('enforce', () => {
  it('delivers over TLS verified against the MX name when the MX is in the policy', async () => {
    const { report, reports, received } = await deliverTo('sts.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({
      policy: 'mta-sts',
      applied: 'mta-sts-enforce',
      tls: true,
      validated: true,
    });
    expect(received[0]?.secure).toBe(true);
    expect(policies.requests.at(-1)).toEqual({
      host: 'mta-sts.sts.test',
      path: '/.well-known/mta-sts.txt',
      servername: 'mta-sts.sts.test',
    });
    expect(reports.outcomes).toMatchObject([
      {
        policyDomain: 'sts.test',
        policyType: 'sts',
        policyStrings: ['version: STSv1', 'mode: enforce', 'mx: mx.sts.test', 'max_age: 86400'],
        mxHosts: ['mx.sts.test'],
        result: 'success',
      },
    ]);
  });

  it('defers, without connecting, when the MX host is not listed in the policy', async () => {
    const connections = good.connections;
    const { report, reports, received } = await deliverTo('evil.test');
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.5' },
    });
    expect(report.recipients[0]?.reply.text).toBe(
      'MTA-STS policy of evil.test (mode enforce) does not list MX host mx.evil.test (mx: mx.good.evil.test, *.backup.evil.test)',
    );
    expect(report.tls).toMatchObject({ policy: 'mta-sts', applied: 'mta-sts-enforce', tls: false });
    expect(received).toHaveLength(0);
    expect(good.connections).toBe(connections);
    expect(reports.outcomes).toMatchObject([{ policyType: 'sts', result: 'validation-failure' }]);
  });

  it('defers when the certificate does not chain to a trusted CA', async () => {
    const { report, reports, received } = await deliverTo('untrusted.test');
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(received).toHaveLength(0);
    expect(reports.outcomes).toMatchObject([{ result: 'certificate-not-trusted', receivingIp: '127.0.0.2' }]);
  });

  it('defers when the certificate has expired', async () => {
    const { report, reports, received } = await deliverTo('expired.test');
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(report.recipients[0]?.reply.text).toContain('certificate has expired');
    expect(received).toHaveLength(0);
    expect(reports.outcomes).toMatchObject([{ result: 'certificate-expired' }]);
  });

  it('defers when an attacker strips STARTTLS, and sends nothing in clear', async () => {
    const { report, reports } = await deliverTo('stripped.test');
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.10' } });
    expect(stripper.connections).toBeGreaterThan(0);
    expect(stripper.clientText()).not.toMatch(/MAIL FROM/i);
    expect(reports.outcomes).toMatchObject([{ result: 'starttls-not-supported' }]);
  });

  it('defers when the certificate names another host', async () => {
    // The policy allows any host below sts.test; the MX is one, but the certificate does not name it.
    dns.set('sts.test', { MX: [{ exchange: 'other.sts.test', priority: 10 }] });
    dns.set('other.sts.test', { A: ['127.0.0.1'] });
    policies.set('sts.test', policy('enforce', ['*.sts.test']));
    dns.set('_mta-sts.sts.test', { TXT: ['v=STSv1; id=2;'] });
    try {
      const { report, reports, received } = await deliverTo('sts.test');
      expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
      expect(report.recipients[0]?.reply.text).toContain('does not name other.sts.test');
      expect(received).toHaveLength(0);
      expect(reports.outcomes).toMatchObject([{ result: 'certificate-host-mismatch' }]);
    } finally {
      stsDomain('sts.test', '127.0.0.1', '3');
      policies.set('sts.test', policy('enforce', ['mx.sts.test']));
    }
  });
});

describe('testing mode', () => {
  it('delivers despite a certificate that would fail, and records the failure', async () => {
    const { report, reports, received } = await deliverTo('testing.test');
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(received[0]?.secure).toBe(true);
    expect(report.tls).toMatchObject({ applied: 'mta-sts-testing', tls: true, validated: false });
    expect(report.tls?.reason).toMatch(/not accepted/);
    expect(reports.outcomes).toMatchObject([{ policyType: 'sts', result: 'certificate-not-trusted' }]);
  });
});

describe('policy fetch', () => {
  it.each([
    ['missing.test', 'sts-policy-fetch-error', /HTTP 404/],
    ['redirect.test', 'sts-policy-fetch-error', /redirects are not followed/],
    ['invalid.test', 'sts-policy-invalid', /mode "strict"/],
    ['bad-cert.test', 'sts-webpki-invalid', /mta-sts\.bad-cert\.test/],
  ])('%s: records %s and, with no cached policy, delivers as without one', async (domain, result, detail) => {
    const { report, reports } = await deliverTo(domain);
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ policy: 'mta-sts', applied: 'may' });
    expect(reports.outcomes[0]).toMatchObject({ policyDomain: domain, policyType: 'sts', result });
    expect(reports.outcomes[0]?.detail).toMatch(detail);
  });

  it('caches the policy for max_age, fetches again when the id changes, and keeps it when a fetch fails', async () => {
    stsDomain('cache.test', '127.0.0.1', 'a1');
    policies.set('cache.test', policy('enforce', ['mx.cache.test']));
    const via = make();
    const fetches = (): number => policies.requests.filter((r) => r.host === 'mta-sts.cache.test').length;

    expect((await deliverTo('cache.test', via)).report.recipients[0]?.result).toBe('delivered');
    expect(fetches()).toBe(1);
    // Same id: the cached policy serves, the server is not asked (it would now fail).
    policies.set('cache.test', { body: 'gone', status: 500 });
    expect((await deliverTo('cache.test', via)).report.tls?.applied).toBe('mta-sts-enforce');
    expect(fetches()).toBe(1);
    // A new id: fetched again; the new policy no longer lists the MX, so delivery defers.
    dns.set('_mta-sts.cache.test', { TXT: ['v=STSv1; id=a2'] });
    policies.set('cache.test', policy('enforce', ['mx2.cache.test']));
    const moved = await deliverTo('cache.test', via);
    expect(fetches()).toBe(2);
    expect(moved.report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    // Another id, but the fetch fails: the cached (a2) policy stays in force (RFC 8461 §5.1).
    dns.set('_mta-sts.cache.test', { TXT: ['v=STSv1; id=a3'] });
    policies.set('cache.test', { body: '', status: 503 });
    const failed = await deliverTo('cache.test', via);
    expect(fetches()).toBe(3);
    expect(failed.report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(failed.reports.outcomes.map((o) => o.result)).toContain('sts-policy-fetch-error');
    // The TXT record gone: the cached policy still applies until it expires.
    dns.remove('_mta-sts.cache.test');
    expect((await deliverTo('cache.test', via)).report.recipients[0]?.result).toBe('deferred');
  });

  /** Two nodes' stores over one cache: this process's memory, the embedded store reopened (a restart), two Redis connections. */
  const sharedStores: [string, () => Promise<[PolicyStore, () => Promise<PolicyStore>]>][] = [
    [
      'shared',
      async () => {
        const store = new MemoryPolicyStore();
        return [store, async () => store];
      },
    ],
    [
      'shared-embedded',
      async () => {
        const path = join(tmp, 'queue.db');
        const first = openEmbeddedQueue({ path });
        return [
          first.tlsStore,
          async () => {
            await first.close();
            const restarted = openEmbeddedQueue({ path });
            closers.push(() => restarted.close());
            return restarted.tlsStore;
          },
        ];
      },
    ],
    [
      'shared-redis',
      async () => {
        const prefix = `t${randomBytes(4).toString('hex')}`;
        const [one, two] = await Promise.all([1, 2].map(() => openRedisQueue({ url: redis.url, prefix })));
        closers.push(
          () => (one as RedisQueue).close(),
          () => (two as RedisQueue).close(),
        );
        return [(one as RedisQueue).tlsStore, async () => (two as RedisQueue).tlsStore];
      },
    ],
  ];

  it.each(
    sharedStores,
  )('shares cached policies through the store (%s): another node, or the next start, uses them', async (label, stores) => {
    const domain = `${label}.test`;
    stsDomain(domain, '127.0.0.1', 's1');
    policies.set(domain, policy('enforce', [`mx.${domain}`]));
    const [store, other] = await stores();
    const fetches = (): number => policies.requests.filter((r) => r.host === `mta-sts.${domain}`).length;
    await deliverTo(domain, make({ mtaSts: { port: policies.port, store } }));
    expect(fetches()).toBe(1);
    // The policy host is down now: the other node enforces the cached policy without asking it.
    policies.set(domain, { body: '', status: 500 });
    const second = await deliverTo(domain, make({ mtaSts: { port: policies.port, store: await other() } }));
    expect(fetches()).toBe(1);
    expect(second.report.tls).toMatchObject({ applied: 'mta-sts-enforce', validated: true });
  });

  it('does nothing of MTA-STS when turned off', async () => {
    const { report } = await deliverTo('evil.test', make({ mtaSts: false }));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.tls).toMatchObject({ policy: 'mta-sts', applied: 'may' });
  });
});

describe('policy table levels', () => {
  it('secure: verified TLS naming the recipient domain or a name below it', async () => {
    dns.set('plain.test', { MX: [{ exchange: 'mx.plain.test', priority: 10 }] });
    dns.set('mx.plain.test', { A: ['127.0.0.1'] });
    const ok = await deliverTo('plain.test', make({ tlsPolicy: { 'plain.test': 'secure' } }));
    expect(ok.report.recipients[0]?.result).toBe('delivered');
    expect(ok.report.tls).toMatchObject({ policy: 'secure', applied: 'secure', tls: true, validated: true });
    const wrong = await deliverTo(
      'plain.test',
      make({ tlsPolicy: { 'plain.test': { level: 'verify', match: ['mx.somewhere-else.test'] } } }),
    );
    expect(wrong.report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(wrong.received).toHaveLength(0);
  });

  it('encrypt: TLS required, the certificate not checked; none: plain text', async () => {
    dns.set('plain.test', { MX: [{ exchange: 'mx.plain.test', priority: 10 }] });
    dns.set('mx.plain.test', { A: ['127.0.0.2'] });
    const encrypted = await deliverTo('plain.test', make({ tlsPolicy: { 'plain.test': 'encrypt' } }));
    expect(encrypted.report.recipients[0]?.result).toBe('delivered');
    expect(encrypted.received[0]?.secure).toBe(true);
    expect(encrypted.report.tls).toMatchObject({ applied: 'encrypt', tls: true, validated: false });
    const clear = await deliverTo('plain.test', make({ tlsPolicy: { 'plain.test': 'none' } }));
    expect(clear.received[0]?.secure).toBe(false);
    expect(clear.report.tls).toMatchObject({ policy: 'none', applied: 'none', tls: false });
  });
});

describe('with the queue', () => {
  it('bounces at expiry with the reason the policy kept the mail back', async () => {
    stsDomain('bounce.test', '127.0.0.1');
    policies.set('bounce.test', policy('enforce', ['mx.elsewhere.bounce.test']));
    const dir = mkdtempSync(join(tmpdir(), 'tern-mta-sts-'));
    const queue = openEmbeddedQueue({ path: join(dir, 'queue.db'), pollIntervalMs: 100 });
    const { deliverer } = make();
    try {
      await queue.startWorker(deliverer.deliver, {
        hostname: 'out.tern.test',
        retry: { intervals: ['1s'], maxAge: '1500ms' },
      });
      const before = good.messages.length;
      await queue.enqueue({
        envelope: { mailFrom: 'sender@origin.test', recipients: [{ address: 'rcpt@bounce.test' }] },
        content: memorySource([Buffer.from(SIMPLE_MESSAGE)]),
        receivedAt: Date.now(),
      });
      await waitFor(
        () => good.messages.slice(before).some((m) => m.rcptTo.includes('sender@origin.test')),
        15_000,
      );
      const bounce = good.messages.slice(before).find((m) => m.rcptTo.includes('sender@origin.test'));
      expect(good.messages.slice(before).some((m) => m.rcptTo.includes('rcpt@bounce.test'))).toBe(false);
      const text = bounce?.raw.toString('utf8') ?? '';
      expect(text).toMatch(
        /Diagnostic-Code: smtp; 451 4\.7\.5 MTA-STS policy of bounce\.test \(mode enforce\) does not list MX\s+host mx\.bounce\.test/,
      );
    } finally {
      await queue.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);
});
