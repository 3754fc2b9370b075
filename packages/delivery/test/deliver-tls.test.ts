// STARTTLS, implicit-TLS-free policies and AUTH end to end against real sinks with self-signed certificates.
import { memoryLogger } from '@tern/plugin-api/testing';
import { makeCertificate, type SmtpSink, startDnsServer, startSmtpSink, type TestDns } from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

const cert = makeCertificate(['mx.secure.test']);
const otherCert = makeCertificate(['somebody.else.test']);

let dns: TestDns;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  dns = await startDnsServer({
    'secure.test': { MX: [{ exchange: 'mx.secure.test', priority: 10 }] },
    'mx.secure.test': { A: ['127.0.0.1'] },
    'relay.test': { A: ['127.0.0.1'] },
    'tapped.test': { MX: [{ exchange: 'mx.secure.test', priority: 10 }] },
  });
});

afterAll(async () => {
  await dns.stop();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function sink(options: Parameters<typeof startSmtpSink>[0]): Promise<SmtpSink> {
  const s = await startSmtpSink(options);
  cleanups.push(() => s.stop());
  return s;
}

/** A middlebox in front of `s` as the MX's address: lets STARTTLS through, then garbles the handshake. */
async function brokenMiddlebox(s: SmtpSink): Promise<WireTap> {
  const tap = await startWireTap({
    upstreamPort: s.port,
    host: '127.0.0.2',
    port: s.port,
    breakStartTls: true,
  });
  cleanups.push(() => tap.stop());
  dns.set('mx.secure.test', { A: ['127.0.0.2'] });
  cleanups.push(async () => dns.set('mx.secure.test', { A: ['127.0.0.1'] }));
  return tap;
}

function make(port: number, extra: Partial<DelivererOptions> = {}): Deliverer {
  const d = createDeliverer({
    hostname: 'out.tern.test',
    port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    ...extra,
  });
  cleanups.push(() => d.close());
  return d;
}

describe('STARTTLS', () => {
  it('upgrades opportunistically to a self-signed server, with the MX name as SNI', async () => {
    const s = await sink({ tls: cert });
    const d = make(s.port);
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    const [msg] = await s.waitFor(1);
    expect(msg?.secure).toBe(true);
    expect(msg?.servername).toBe('mx.secure.test');
  });

  it('stays in plain text with opportunistic TLS when the server offers none', async () => {
    const s = await sink({});
    const d = make(s.port);
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect((await s.waitFor(1))[0]?.secure).toBe(false);
  });

  it('reports the TLS protocol and cipher, the server used, and where the time went', async () => {
    const s = await sink({ tls: cert });
    // A server slow to greet: its 300 ms belong to session set-up, not to the transfer.
    const slow = await startWireTap({
      upstreamPort: s.port,
      host: '127.0.0.2',
      port: 0,
      greetingDelayMs: 300,
    });
    cleanups.push(() => slow.stop());
    dns.set('mx.secure.test', { A: ['127.0.0.2'] });
    cleanups.push(async () => dns.set('mx.secure.test', { A: ['127.0.0.1'] }));
    const d = make(slow.port);
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`mx.secure.test[127.0.0.2]:${slow.port}`);
    expect(report.tls).toMatchObject({
      tls: true,
      protocol: 'TLSv1.3',
      cipher: expect.stringMatching(/^TLS_/),
    });
    expect(report.connectMs).toBeGreaterThanOrEqual(300);
    expect(report.transferMs).toBeGreaterThan(0);
    expect(report.transferMs).toBeLessThan(300);

    // The pooled connection carries the next message: no greeting to wait for this time.
    const again = await d.deliver(makeJob(['b@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(slow.connections).toBe(1);
    expect(again.tls).toEqual(report.tls);
    expect(again.connectMs).toBeLessThan(300);
  });

  it('reports no TLS for a plain-text session', async () => {
    const s = await sink({});
    const report = await make(s.port).deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`mx.secure.test[127.0.0.1]:${s.port}`);
    expect(report.tls).toMatchObject({ tls: false });
    expect(report.tls).not.toHaveProperty('protocol');
    expect(report.transferMs).toBeGreaterThan(0);
  });

  it("never starts TLS with mode 'none'", async () => {
    const s = await sink({ tls: cert });
    const d = make(s.port, { tls: { mode: 'none' } });
    await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect((await s.waitFor(1))[0]?.secure).toBe(false);
  });

  it("defers with 4.7.5 under 'require' when the certificate is not trusted", async () => {
    const s = await sink({ tls: cert });
    const d = make(s.port, { tls: { mode: 'require' } });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.5' },
    });
    expect(report.recipients[0]?.reply.text).toMatch(/self[- ]signed/i);
    expect(s.messages).toHaveLength(0);
  });

  it("delivers under 'require' when the certificate chains to the configured CA and names the MX", async () => {
    const s = await sink({ tls: cert });
    const d = make(s.port, { tls: { mode: 'require', ca: cert.cert } });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    const [msg] = await s.waitFor(1);
    expect(msg?.secure).toBe(true);
    expect(msg?.servername).toBe('mx.secure.test');
  });

  it("defers under 'require' when a trusted certificate names another host", async () => {
    const s = await sink({ tls: otherCert });
    const d = make(s.port, { tls: { mode: 'require', ca: otherCert.cert } });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(report.recipients[0]?.reply.text).toMatch(/mx\.secure\.test/);
    expect(s.messages).toHaveLength(0);
  });

  it("defers with 4.7.10 under 'require' when the server does not offer STARTTLS", async () => {
    const s = await sink({ tls: cert, hideSTARTTLS: true });
    const d = make(s.port, { tls: { mode: 'require', ca: cert.cert } });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.10' } });
    expect(s.messages).toHaveLength(0);
  });

  it('takes the per-hop TLS mode over the default', async () => {
    const s = await sink({ tls: cert });
    const d = make(s.port, {
      tls: { mode: 'none' },
      routes: { 'secure.test': { type: 'mx', domain: 'secure.test', tls: 'require' } },
    });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
  });

  it('retries in plain text on a new connection when an opportunistic handshake fails', async () => {
    const s = await sink({ tls: cert });
    const tap = await brokenMiddlebox(s);
    const logger = memoryLogger();
    const d = make(s.port, { logger });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    const [msg] = await s.waitFor(1);
    expect(msg?.secure).toBe(false);
    expect(tap.connections).toBe(2);
    expect(tap.clientText(1)).toContain('STARTTLS\r\n');
    expect(tap.clientText(2)).not.toContain('STARTTLS');
    expect(
      logger.records.some((r) => r.level === 'warn' && /retrying in plain text/.test(r.message ?? '')),
    ).toBe(true);
  });

  it("does not fall back to plain text under 'require' when the handshake fails", async () => {
    const s = await sink({ tls: cert });
    const tap = await brokenMiddlebox(s);
    const d = make(s.port, { tls: { mode: 'require', ca: cert.cert } });
    const report = await d.deliver(makeJob(['a@secure.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(tap.connections).toBe(1);
    expect(s.messages).toHaveLength(0);
  });
});

describe('implicit TLS', () => {
  it('speaks TLS from the first byte and verifies the certificate', async () => {
    const s = await sink({});
    const smtpsCert = makeCertificate(['smtps.secure.test']);
    const front = await startWireTap({ upstreamPort: s.port, host: '127.0.0.2', port: 0, tls: smtpsCert });
    cleanups.push(() => front.stop());
    dns.set('smtps.secure.test', { A: ['127.0.0.2'] });
    const route = {
      '*': { type: 'smtp' as const, host: 'smtps.secure.test', port: front.port, tls: 'implicit' as const },
    };

    const untrusting = make(25, { routes: route });
    const refused = await untrusting.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(refused.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(s.messages).toHaveLength(0);

    const wrongCa = make(25, { routes: route, tls: { ca: cert.cert } });
    const mismatch = await wrongCa.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(mismatch.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });

    const trusting = make(25, { routes: route, tls: { ca: smtpsCert.cert } });
    const report = await trusting.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`smtps.secure.test[127.0.0.2]:${front.port}`);
    // The sink behind the TLS front saw the EHLO in clear: the front is what spoke TLS.
    expect((await s.waitFor(1))[0]?.helo).toBe('out.tern.test');
    expect(front.clientText()).toContain('EHLO out.tern.test');
  });
});

describe('smarthost with AUTH', () => {
  const relay = (port: number, pass = 'secret', tls?: 'opportunistic' | 'require' | 'none') => ({
    '*': {
      type: 'smtp' as const,
      host: 'relay.test',
      port,
      auth: { user: 'tern', pass },
      ...(tls ? { tls } : {}),
    },
  });

  it('authenticates after STARTTLS and delivers', async () => {
    const s = await sink({ tls: cert, authUsers: { tern: 'secret' } });
    const d = make(25, { routes: relay(s.port) });
    const report = await d.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`relay.test[127.0.0.1]:${s.port}`);
    const [msg] = await s.waitFor(1);
    expect(msg?.user).toBe('tern');
    expect(msg?.secure).toBe(true);
  });

  it('defers with 4.7.0 when the smarthost refuses the credentials', async () => {
    const s = await sink({ tls: cert, authUsers: { tern: 'secret' } });
    const d = make(25, { routes: relay(s.port, 'wrong') });
    const report = await d.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.7.0' },
    });
    expect(report.recipients[0]?.reply.text).toContain('535');
    expect(s.messages).toHaveLength(0);
  });

  it('refuses to send credentials without TLS unless allowed', async () => {
    const s = await sink({ authUsers: { tern: 'secret' } });
    const tap = await startWireTap({ upstreamPort: s.port, host: '127.0.0.2', port: s.port });
    cleanups.push(() => tap.stop());
    const route = {
      '*': { type: 'smtp' as const, host: '127.0.0.2', port: s.port, auth: { user: 'tern', pass: 'secret' } },
    };
    const refusing = make(25, { routes: route });
    const report = await refusing.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.10' } });
    expect(tap.clientText()).not.toContain('AUTH');
    expect(s.messages).toHaveLength(0);

    const allowing = make(25, { routes: route, tls: { allowInsecureAuth: true } });
    const ok = await allowing.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(ok.recipients[0]?.result).toBe('delivered');
    expect((await s.waitFor(1))[0]?.user).toBe('tern');
    expect(tap.clientText()).toContain('AUTH PLAIN ');
  });

  it('authenticates with LOGIN when the server offers no PLAIN', async () => {
    const s = await sink({ authUsers: { tern: 'secret' } });
    const tap = await startWireTap({
      upstreamPort: s.port,
      host: '127.0.0.2',
      port: s.port,
      rewriteServer: (text) => text.replace(/^250([- ])AUTH .*$/m, '250$1AUTH LOGIN'),
    });
    cleanups.push(() => tap.stop());
    const logger = memoryLogger();
    const d = make(25, {
      logger,
      routes: {
        '*': { type: 'smtp', host: '127.0.0.2', port: s.port, auth: { user: 'tern', pass: 'secret' } },
      },
      tls: { allowInsecureAuth: true },
    });
    const report = await d.deliver(makeJob(['a@anywhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect((await s.waitFor(1))[0]?.user).toBe('tern');
    expect(tap.clientText()).toContain('AUTH LOGIN\r\n');
    expect(tap.clientText()).not.toContain('AUTH PLAIN');
    // The session logs every command at debug level, but never the credentials.
    const logged = JSON.stringify(logger.records);
    expect(logged).toContain('EHLO out.tern.test');
    for (const secret of [
      'secret',
      Buffer.from('secret').toString('base64'),
      Buffer.from('tern').toString('base64'),
    ]) {
      expect(logged).not.toContain(secret);
    }
  });
});
