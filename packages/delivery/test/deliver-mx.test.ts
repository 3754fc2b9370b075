// Routing and MX delivery end to end: a real DNS server, real SMTP sinks on loopback addresses.
import type { NextHop } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import { type SmtpSink, startDnsServer, startSmtpSink, type TestDns } from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

let dns: TestDns;
let sink: SmtpSink;
const stops: (() => Promise<void>)[] = [];
let deliverer: Deliverer | undefined;

beforeAll(async () => {
  sink = await startSmtpSink();
  dns = await startDnsServer({
    'example.test': { MX: [{ exchange: 'mx1.example.test', priority: 10 }] },
    'mx1.example.test': { A: ['127.0.0.1'] },
    'smarthost.test': { A: ['127.0.0.1'] },
    'null.test': { MX: [{ exchange: '.', priority: 0 }] },
    'broken.test': {},
  });
  dns.servfail('broken.test');
});

afterAll(async () => {
  await Promise.all([sink.stop(), dns.stop()]);
});

afterEach(async () => {
  await deliverer?.close();
  deliverer = undefined;
  for (const stop of stops.splice(0)) await stop();
  sink.messages.length = 0;
  sink.setRcptReply(undefined);
  sink.setDataReply(undefined);
});

function make(extra: Partial<Parameters<typeof createDeliverer>[0]> = {}): Deliverer {
  deliverer = createDeliverer({
    hostname: 'out.tern.test',
    port: sink.port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    ...extra,
  });
  return deliverer;
}

async function tapOn(
  host: string,
  options: Partial<Parameters<typeof startWireTap>[0]> = {},
): Promise<WireTap> {
  const tap = await startWireTap({ upstreamPort: sink.port, host, port: sink.port, ...options });
  stops.push(() => tap.stop());
  return tap;
}

describe('MX delivery', () => {
  it('delivers to the MX host and reports the remote MTA', async () => {
    const d = make();
    const report = await d.deliver(makeJob(['alice@example.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients).toEqual([
      { address: 'alice@example.test', result: 'delivered', reply: expect.objectContaining({ code: 250 }) },
    ]);
    expect(report.remoteMta).toBe(`mx1.example.test[127.0.0.1]:${sink.port}`);
    expect(report.hop).toEqual({ type: 'mx', domain: 'example.test' });
    const [msg] = await sink.waitFor(1);
    expect(msg?.helo).toBe('out.tern.test');
    expect(msg?.mailFrom).toBe('sender@origin.test');
    expect(msg?.rcptTo).toEqual(['alice@example.test']);
    expect(msg?.raw.toString()).toBe(SIMPLE_MESSAGE);
  });

  it('reports each recipient by its own RCPT reply (accepted, 4xx, 5xx)', async () => {
    sink.setRcptReply((address) => {
      if (address.startsWith('full@')) return { code: 452, message: '4.2.2 Mailbox full' };
      if (address.startsWith('gone@')) return { code: 550, message: '5.1.1 No such user' };
      if (address.startsWith('plain@')) return { code: 553, message: 'No enhanced code here' };
      return undefined;
    });
    const d = make();
    const report = await d.deliver(
      makeJob(['ok@example.test', 'full@example.test', 'gone@example.test', 'plain@example.test']),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.recipients.map((r) => [r.address, r.result, r.reply.code, r.reply.enhanced])).toEqual([
      ['ok@example.test', 'delivered', 250, '2.0.0'],
      ['full@example.test', 'deferred', 452, '4.2.2'],
      ['gone@example.test', 'failed', 550, '5.1.1'],
      ['plain@example.test', 'failed', 553, '5.0.0'],
    ]);
    expect(report.recipients[1]?.reply.text).toBe('Mailbox full');
    const [msg] = await sink.waitFor(1);
    expect(msg?.rcptTo).toEqual(['ok@example.test']);
  });

  it('applies a DATA refusal to every accepted recipient, and only to them', async () => {
    sink.setRcptReply((address) =>
      address.startsWith('gone@') ? { code: 550, message: '5.1.1 No' } : undefined,
    );
    sink.setDataReply(() => ({ code: 451, message: '4.7.1 Greylisted, come back later' }));
    const d = make();
    const report = await d.deliver(
      makeJob(['a@example.test', 'b@example.test', 'gone@example.test']),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.recipients.map((r) => [r.result, r.reply.enhanced])).toEqual([
      ['deferred', '4.7.1'],
      ['deferred', '4.7.1'],
      ['failed', '5.1.1'],
    ]);
  });

  it('tries the second MX when the first refuses the connection', async () => {
    dns.set('fallback.test', {
      MX: [
        { exchange: 'down.fallback.test', priority: 10 },
        { exchange: 'up.fallback.test', priority: 20 },
      ],
    });
    // Nothing listens on 127.0.0.5 at the sink's port: connection refused.
    dns.set('down.fallback.test', { A: ['127.0.0.5'] });
    dns.set('up.fallback.test', { A: ['127.0.0.1'] });
    const logger = memoryLogger();
    const d = make({ logger });
    const report = await d.deliver(makeJob(['bob@fallback.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`up.fallback.test[127.0.0.1]:${sink.port}`);
    expect(
      logger.records.some((r) => r.message === 'next address' && r.fields.host === 'down.fallback.test'),
    ).toBe(true);
  });

  it('uses the most preferred MX and leaves the backup alone', async () => {
    const primary = await tapOn('127.0.0.2');
    const backup = await tapOn('127.0.0.3');
    dns.set('pref.test', {
      MX: [
        { exchange: 'backup.pref.test', priority: 20 },
        { exchange: 'primary.pref.test', priority: 5 },
      ],
    });
    dns.set('primary.pref.test', { A: ['127.0.0.2'] });
    dns.set('backup.pref.test', { A: ['127.0.0.3'] });
    const d = make();
    const report = await d.deliver(makeJob(['carol@pref.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(primary.connections).toBe(1);
    expect(backup.connections).toBe(0);
  });

  it('spreads deliveries over MX hosts of equal preference', async () => {
    const a = await tapOn('127.0.0.2');
    const b = await tapOn('127.0.0.3');
    dns.set('equal.test', {
      MX: [
        { exchange: 'a.equal.test', priority: 10 },
        { exchange: 'b.equal.test', priority: 10 },
      ],
    });
    dns.set('a.equal.test', { A: ['127.0.0.2'] });
    dns.set('b.equal.test', { A: ['127.0.0.3'] });
    // No pooling: each delivery picks its MX afresh.
    const d = make({ pool: { maxMessagesPerConnection: 1 } });
    for (let i = 0; i < 16; i++) {
      const report = await d.deliver(makeJob([`r${i}@equal.test`]), storedMessage(SIMPLE_MESSAGE));
      expect(report.recipients[0]?.result).toBe('delivered');
    }
    expect(a.connections).toBeGreaterThan(0);
    expect(b.connections).toBeGreaterThan(0);
    expect(a.connections + b.connections).toBe(16);
  });

  it('delivers to the implicit MX (the A record of the domain) when there is no MX', async () => {
    dns.set('implicit.test', { A: ['127.0.0.1'] });
    const d = make();
    const report = await d.deliver(makeJob(['dan@implicit.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`implicit.test[127.0.0.1]:${sink.port}`);
  });

  it('tries an AAAA address when the A address refuses', async () => {
    // ::1 at the sink's port forwards to the sink; 127.0.0.6 refuses.
    const v6 = await tapOn('::1');
    dns.set('dual.test', { MX: [{ exchange: 'mx.dual.test', priority: 10 }] });
    dns.set('mx.dual.test', { A: ['127.0.0.6'], AAAA: ['::1'] });
    const d = make();
    const report = await d.deliver(makeJob(['eve@dual.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toBe(`mx.dual.test[::1]:${sink.port}`);
    expect(v6.connections).toBe(1);
  });

  it('defers with 4.4.1 when no address answers, after at most maxAddresses tries', async () => {
    dns.set('dead.test', { MX: [{ exchange: 'mx.dead.test', priority: 10 }] });
    dns.set('mx.dead.test', { A: ['127.0.0.11', '127.0.0.12', '127.0.0.13'] });
    const logger = memoryLogger();
    const d = make({ logger, maxAddresses: 2 });
    const report = await d.deliver(makeJob(['x@dead.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.4.1' },
    });
    expect(logger.records.filter((r) => r.message === 'next address')).toHaveLength(2);
  });

  it('moves on when a server accepts the connection but never greets', async () => {
    await tapOn('127.0.0.2', { greetingDelayMs: 5000 });
    dns.set('slow.test', {
      MX: [
        { exchange: 'slow.slow.test', priority: 10 },
        { exchange: 'fast.slow.test', priority: 20 },
      ],
    });
    dns.set('slow.slow.test', { A: ['127.0.0.2'] });
    dns.set('fast.slow.test', { A: ['127.0.0.1'] });
    const d = make({ timeouts: { greetingMs: 300 } });
    const report = await d.deliver(makeJob(['f@slow.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.remoteMta).toContain('fast.slow.test');
  });

  it('fails a null-MX domain at once with 5.1.10 and never connects', async () => {
    const before = sink.connections;
    const d = make();
    const report = await d.deliver(makeJob(['a@null.test', 'b@null.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => [r.result, r.reply.code, r.reply.enhanced])).toEqual([
      ['failed', 550, '5.1.10'],
      ['failed', 550, '5.1.10'],
    ]);
    expect(report.recipients[0]?.reply.text).toMatch(/does not accept mail \(null MX\)/);
    expect(sink.connections).toBe(before);
  });

  it('fails NXDOMAIN with 5.1.2 and defers SERVFAIL with 4.4.3', async () => {
    const d = make();
    const nx = await d.deliver(makeJob(['a@nowhere.test']), storedMessage(SIMPLE_MESSAGE));
    expect(nx.recipients[0]).toMatchObject({ result: 'failed', reply: { enhanced: '5.1.2' } });
    const sf = await d.deliver(makeJob(['a@broken.test']), storedMessage(SIMPLE_MESSAGE));
    expect(sf.recipients[0]).toMatchObject({ result: 'deferred', reply: { code: 451, enhanced: '4.4.3' } });
  });
});

describe('routing', () => {
  it("sends everything through the '*' smarthost, and an exact static route beats it", async () => {
    const other = await startSmtpSink();
    stops.push(() => other.stop());
    const d = make({
      routes: {
        '*': { type: 'smtp', host: 'smarthost.test', port: other.port },
        'example.test': { type: 'smtp', host: '127.0.0.1', port: sink.port },
      },
    });
    const viaStar = await d.deliver(makeJob(['a@null.test']), storedMessage(SIMPLE_MESSAGE));
    expect(viaStar.recipients[0]?.result).toBe('delivered');
    expect(viaStar.remoteMta).toBe(`smarthost.test[127.0.0.1]:${other.port}`);
    expect(other.messages).toHaveLength(1);
    const exact = await d.deliver(makeJob(['b@example.test']), storedMessage(SIMPLE_MESSAGE));
    expect(exact.hop).toEqual({ type: 'smtp', host: '127.0.0.1', port: sink.port });
    expect(sink.messages).toHaveLength(1);
  });

  it('lets a route hook decide first, and falls through when it has no opinion', async () => {
    const other = await startSmtpSink();
    stops.push(() => other.stop());
    const seen: string[] = [];
    const plugins = new PluginHost([
      {
        name: 'router',
        route: (ctx) => {
          seen.push(`${ctx.domain}:${ctx.recipients.map((r) => r.address).join(',')}`);
          return ctx.domain === 'null.test'
            ? { type: 'smtp', host: '127.0.0.1', port: other.port }
            : undefined;
        },
      },
    ]);
    const d = make({ plugins, routes: { 'null.test': { type: 'smtp', host: '127.0.0.9', port: 1 } } });
    const hooked = await d.deliver(makeJob(['a@null.test']), storedMessage(SIMPLE_MESSAGE));
    expect(hooked.recipients[0]?.result).toBe('delivered');
    expect(other.messages).toHaveLength(1);
    const mx = await d.deliver(makeJob(['b@example.test']), storedMessage(SIMPLE_MESSAGE));
    expect(mx.hop).toEqual({ type: 'mx', domain: 'example.test' });
    expect(seen).toEqual(['null.test:a@null.test', 'example.test:b@example.test']);
  });

  it('defers with 4.3.0 when the route hook throws', async () => {
    const plugins = new PluginHost([
      {
        name: 'bad-router',
        route: () => {
          throw new Error('boom');
        },
      },
    ]);
    const d = make({ plugins });
    const report = await d.deliver(makeJob(['a@example.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.3.0' },
    });
    expect(report.recipients[0]?.reply.text).not.toContain('boom');
  });

  it('defers with 4.3.0 when a route hook names a hop that is not one, naming plugin and hook', async () => {
    const records: LogRecord[] = [];
    const plugins = new PluginHost([{ name: 'half-router', route: () => ({ type: 'smtp' }) as NextHop }], {
      logger: memoryLogger(records),
    });
    const d = make({ plugins });
    const report = await d.deliver(makeJob(['a@example.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.3.0' },
    });
    expect(sink.messages).toHaveLength(0);
    expect(records.find((r) => r.level === 'error')).toMatchObject({
      message: 'plugin half-router: hook route returned something it may not: an smtp hop needs a host',
      fields: { plugin: 'half-router', hook: 'route' },
    });
  });

  it('sends a job an operator rerouted to its hop, before route hooks and static routes', async () => {
    const other = await startSmtpSink();
    stops.push(() => other.stop());
    const seen: string[] = [];
    const plugins = new PluginHost([{ name: 'router', route: (ctx) => void seen.push(ctx.domain) }]);
    const d = make({ plugins, routes: { 'example.test': { type: 'smtp', host: '127.0.0.9', port: 1 } } });
    const hop: NextHop = { type: 'smtp', host: '127.0.0.1', port: other.port };
    const report = await d.deliver(
      { ...makeJob(['a@example.test']), nextHop: hop },
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(report.hop).toEqual(hop);
    expect(other.messages).toHaveLength(1);
    expect(seen).toEqual([]);
  });

  it("runs the attempt's own plugin host, not the one it was made with", async () => {
    const seen: string[] = [];
    const stamp = (name: string): PluginHost =>
      new PluginHost([
        {
          name,
          route: () => void seen.push(`route ${name}`),
          beforeSend: () => void seen.push(`beforeSend ${name}`),
        },
      ]);
    const d = make({ plugins: stamp('made-with') });
    const report = await d.deliver(makeJob(['a@example.test']), storedMessage(SIMPLE_MESSAGE), {
      plugins: stamp('attempt'),
    });
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(seen).toEqual(['route attempt', 'beforeSend attempt']);
  });

  it('runs beforeSend so header changes reach the wire', async () => {
    const plugins = new PluginHost([
      {
        name: 'stamp',
        beforeSend: (ctx) => {
          ctx.message.headers.prepend('X-Hop', ctx.hop.type);
          ctx.message.headers.remove('Message-ID');
        },
      },
    ]);
    const d = make({ plugins });
    const report = await d.deliver(makeJob(['a@example.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    const [msg] = await sink.waitFor(1);
    expect(msg?.headers.startsWith('X-Hop: mx\r\n')).toBe(true);
    expect(msg?.headers).not.toContain('Message-ID');
    expect(msg?.body.toString()).toBe('Hello.\r\n');
  });

  it('refuses an address that would break the command line', async () => {
    const d = make();
    const report = await d.deliver(
      makeJob(['ok@example.test', 'evil@example.test>\r\nRCPT TO:<x@y.test']),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.recipients.map((r) => [r.result, r.reply.enhanced])).toEqual([
      ['delivered', '2.0.0'],
      ['failed', '5.1.3'],
    ]);
    const [msg] = await sink.waitFor(1);
    expect(msg?.rcptTo).toEqual(['ok@example.test']);
  });
});
