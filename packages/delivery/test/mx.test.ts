import { createSocket, type Socket } from 'node:dgram';
import { startDnsServer, type TestDns, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DnsOptions, MxResolver } from '../src/mx.js';

let dns: TestDns;

beforeAll(async () => {
  dns = await startDnsServer({
    'two.test': {
      MX: [
        { exchange: 'backup.two.test', priority: 20 },
        { exchange: 'primary.two.test', priority: 10 },
      ],
    },
    'primary.two.test': { A: ['127.0.0.2'], AAAA: ['::1'] },
    'backup.two.test': { A: ['127.0.0.3'] },
    'multi.test': { A: ['127.0.0.11', '127.0.0.12', '127.0.0.13'], AAAA: ['::1', '::2'] },
    'equal.test': {
      MX: [
        { exchange: 'a.equal.test', priority: 10 },
        { exchange: 'b.equal.test', priority: 10 },
        { exchange: 'c.equal.test', priority: 30 },
      ],
    },
    'a.equal.test': { A: ['127.0.0.4'] },
    'b.equal.test': { A: ['127.0.0.5'] },
    'c.equal.test': { A: ['127.0.0.6'] },
    'implicit.test': { A: ['127.0.0.7'], AAAA: ['::1'] },
    'nomail.test': { TXT: ['v=spf1 -all'] },
    'null.test': { MX: [{ exchange: '.', priority: 0 }] },
    'dangling.test': { MX: [{ exchange: 'gone.dangling.test', priority: 10 }] },
    'flaky.test': { MX: [{ exchange: 'mx.flaky.test', priority: 10 }] },
    'mx.flaky.test': { A: ['127.0.0.8'] },
    'broken.test': { MX: [{ exchange: 'mx.broken.test', priority: 10 }] },
    // A hostile or broken zone: far more MX hosts than any attempt will try.
    'many.test': {
      MX: Array.from({ length: 60 }, (_, i) => ({ exchange: `mx${i}.many.test`, priority: 100 - i })),
    },
    ...Object.fromEntries(
      Array.from({ length: 60 }, (_, i) => [`mx${i}.many.test`, { A: [`127.1.0.${i}`] }]),
    ),
  });
  dns.servfail('broken.test');
  dns.servfail('mx.flaky.test');
});

afterAll(async () => {
  await dns.stop();
});

const resolver = (order?: 'ipv4-first' | 'ipv6-first'): MxResolver =>
  new MxResolver({
    servers: [dns.server],
    timeoutMs: 1000,
    tries: 1,
    ...(order ? { addressOrder: order } : {}),
  });

describe('MxResolver against a DNS server', () => {
  it('orders MX hosts by preference and resolves A and AAAA of each (IPv4 first by default)', async () => {
    const result = await resolver().resolveMx('two.test');
    expect(result).toEqual({
      ok: true,
      hosts: [
        {
          name: 'primary.two.test',
          preference: 10,
          addresses: ['127.0.0.2', '::1'],
          implicit: false,
          addressesSecure: false,
        },
        {
          name: 'backup.two.test',
          preference: 20,
          addresses: ['127.0.0.3'],
          implicit: false,
          addressesSecure: false,
        },
      ],
      // node's resolver cannot tell: without dns.dnssec nothing is secure.
      secure: false,
    });
  });

  it('interleaves the families, so a few addresses of a broken family do not hide the other', async () => {
    const found = await resolver().resolveAddresses('multi.test');
    expect(found).toMatchObject({
      ok: true,
      value: ['127.0.0.11', '::1', '127.0.0.12', '::2', '127.0.0.13'],
    });
    const v6first = await resolver('ipv6-first').resolveAddresses('multi.test');
    expect(v6first).toMatchObject({
      ok: true,
      value: ['::1', '127.0.0.11', '::2', '127.0.0.12', '127.0.0.13'],
    });
  });

  it('puts IPv6 first when asked', async () => {
    const result = await resolver('ipv6-first').resolveMx('two.test');
    expect(result.ok && result.hosts[0]?.addresses).toEqual(['::1', '127.0.0.2']);
  });

  it('shuffles hosts of equal preference and keeps them ahead of worse ones', async () => {
    const firsts = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const result = await resolver().resolveMx('equal.test');
      if (!result.ok) throw new Error('lookup failed');
      expect(result.hosts.map((h) => h.preference)).toEqual([10, 10, 30]);
      firsts.add(result.hosts[0]?.name ?? '');
    }
    expect(firsts).toEqual(new Set(['a.equal.test', 'b.equal.test']));
  });

  it('uses the A/AAAA records of the domain itself when it has no MX (implicit MX)', async () => {
    expect(await resolver().resolveMx('implicit.test')).toEqual({
      ok: true,
      hosts: [
        {
          name: 'implicit.test',
          preference: 0,
          addresses: ['127.0.0.7', '::1'],
          implicit: true,
          addressesSecure: false,
        },
      ],
      secure: false,
    });
  });

  it('fails at once with 5.1.10 for a null MX (RFC 7505)', async () => {
    const result = await resolver().resolveMx('null.test');
    expect(result).toMatchObject({ ok: false, result: 'failed', reply: { code: 550, enhanced: '5.1.10' } });
    if (!result.ok) expect(result.reply.text).toContain('does not accept mail (null MX)');
  });

  it('fails with 5.1.2 for a domain that does not exist', async () => {
    expect(await resolver().resolveMx('nowhere.test')).toMatchObject({
      ok: false,
      result: 'failed',
      reply: { code: 550, enhanced: '5.1.2' },
    });
  });

  it('fails with 5.1.2 for a domain with neither MX nor address records', async () => {
    expect(await resolver().resolveMx('nomail.test')).toMatchObject({
      ok: false,
      result: 'failed',
      reply: { enhanced: '5.1.2' },
    });
  });

  it('defers with 4.4.3 when the MX lookup gets SERVFAIL', async () => {
    expect(await resolver().resolveMx('broken.test')).toMatchObject({
      ok: false,
      result: 'deferred',
      reply: { code: 451, enhanced: '4.4.3' },
    });
  });

  it('defers with 4.4.3 when the only MX host cannot be resolved for now', async () => {
    expect(await resolver().resolveMx('flaky.test')).toMatchObject({
      ok: false,
      result: 'deferred',
      reply: { enhanced: '4.4.3' },
    });
  });

  it('fails with 5.4.4 when no MX host name exists', async () => {
    expect(await resolver().resolveMx('dangling.test')).toMatchObject({
      ok: false,
      result: 'failed',
      reply: { enhanced: '5.4.4' },
    });
  });

  it('defers with 4.4.3 when the name server does not answer in time', async () => {
    const silent: Socket = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address();
      const mute = new MxResolver({ servers: [`127.0.0.1:${port}`], timeoutMs: 200, tries: 1 });
      const result = await mute.resolveMx('two.test');
      expect(result).toMatchObject({ ok: false, result: 'deferred', reply: { enhanced: '4.4.3' } });
      if (!result.ok) expect(result.reply.text).toContain('ETIMEOUT');
    } finally {
      silent.close();
    }
  });

  it('looks up addresses of the 10 most preferred MX hosts only, however many a domain publishes', async () => {
    const before = dns.queries.length;
    const result = await resolver().resolveMx('many.test');
    if (!result.ok) throw new Error(`lookup failed: ${result.reply.text}`);
    // Preference 41..50 are the best ten (mx59 … mx50).
    expect(result.hosts.map((h) => h.preference)).toEqual([41, 42, 43, 44, 45, 46, 47, 48, 49, 50]);
    const asked = new Set(
      dns.queries
        .slice(before)
        .filter((q) => q.type === 'A' || q.type === 'AAAA')
        .map((q) => q.name),
    );
    expect(asked.size).toBe(10);
  });

  it('takes an IP literal as its own address', async () => {
    expect(await resolver().resolveAddresses('[127.0.0.9]')).toEqual({
      ok: true,
      value: ['127.0.0.9'],
      secure: false,
    });
  });
});

describe('addresses kept for their TTL', () => {
  let timed: TestDns;
  beforeAll(async () => {
    timed = await startDnsServer(
      {
        'kept.test': { MX: [{ exchange: 'mx.kept.test', priority: 10 }] },
        'mx.kept.test': { A: ['127.0.0.21'], AAAA: ['::1'] },
        'relay.kept.test': { A: ['127.0.0.22'] },
        'one.kept.test': { A: ['127.0.0.23'] },
        'two.kept.test': { A: ['127.0.0.24'] },
        'three.kept.test': { A: ['127.0.0.25'] },
        'later.kept.test': { A: ['127.0.0.26'] },
      },
      { ttl: 300 },
    );
  });
  afterAll(async () => {
    await timed.stop();
  });

  const on = (server: TestDns, extra: Partial<DnsOptions> = {}): MxResolver =>
    new MxResolver({ servers: [server.server], timeoutMs: 1000, tries: 1, ...extra });
  /** A and AAAA questions about `name` the server got since `from`. */
  const addressQueries = (server: TestDns, name: string, from = 0): number =>
    server.queries.slice(from).filter((q) => q.name === name && (q.type === 'A' || q.type === 'AAAA')).length;

  it('asks for an MX host’s addresses once while their TTL lasts; the MX itself each time', async () => {
    const r = on(timed);
    const from = timed.queries.length;
    const first = await r.resolveMx('kept.test');
    const second = await r.resolveMx('kept.test');
    expect(second).toEqual(first);
    expect(first).toMatchObject({ ok: true, hosts: [{ addresses: ['127.0.0.21', '::1'] }] });
    expect(addressQueries(timed, 'mx.kept.test', from)).toBe(2);
    expect(timed.queries.slice(from).filter((q) => q.type === 'MX')).toHaveLength(2);
  });

  it('shares one lookup among those who ask while it is under way', async () => {
    const r = on(timed);
    const from = timed.queries.length;
    const all = await Promise.all(Array.from({ length: 20 }, () => r.resolveAddresses('relay.kept.test')));
    expect(new Set(all.map((a) => JSON.stringify(a))).size).toBe(1);
    expect(addressQueries(timed, 'relay.kept.test', from)).toBe(2);
  });

  it('keeps nothing with TTL 0, with cacheSize 0, or when the answer was a failure', async () => {
    const from = dns.queries.length;
    const r = on(dns);
    await r.resolveAddresses('multi.test');
    await r.resolveAddresses('multi.test');
    expect(addressQueries(dns, 'multi.test', from)).toBe(4);

    const off = on(timed, { cacheSize: 0 });
    const fromOff = timed.queries.length;
    await off.resolveAddresses('relay.kept.test');
    await off.resolveAddresses('relay.kept.test');
    expect(addressQueries(timed, 'relay.kept.test', fromOff)).toBe(4);

    const r2 = on(timed);
    timed.servfail('later.kept.test');
    expect(await r2.resolveAddresses('later.kept.test')).toMatchObject({ ok: false, kind: 'temporary' });
    timed.servfail('later.kept.test', false);
    expect(await r2.resolveAddresses('later.kept.test')).toMatchObject({ ok: true, value: ['127.0.0.26'] });
  });

  it('holds at most cacheSize names, dropping the oldest', async () => {
    const r = on(timed, { cacheSize: 2, addressOrder: 'ipv4-only' });
    const from = timed.queries.length;
    for (const name of [
      'one.kept.test',
      'two.kept.test',
      'three.kept.test',
      'three.kept.test',
      'one.kept.test',
    ]) {
      await r.resolveAddresses(name);
    }
    // one, two, three asked; three kept; one was dropped for three and is asked again.
    expect(addressQueries(timed, 'one.kept.test', from)).toBe(2);
    expect(addressQueries(timed, 'three.kept.test', from)).toBe(1);
  });

  it('asks again once the TTL has run out', async () => {
    const short = await startDnsServer({ 'brief.test': { A: ['127.0.0.27'] } }, { ttl: 1 });
    try {
      const r = on(short, { addressOrder: 'ipv4-only' });
      await r.resolveAddresses('brief.test');
      await r.resolveAddresses('brief.test');
      expect(addressQueries(short, 'brief.test')).toBe(1);
      await waitFor(async () => {
        await r.resolveAddresses('brief.test');
        return addressQueries(short, 'brief.test') === 2;
      }, 5000);
    } finally {
      await short.stop();
    }
  });

  it('keeps the answers of the validating client (dns.dnssec) for their TTL too', async () => {
    const r = on(timed, { dnssec: true, addressOrder: 'ipv4-only' });
    const from = timed.queries.length;
    await r.resolveAddresses('two.kept.test');
    expect(await r.resolveAddresses('two.kept.test')).toMatchObject({ ok: true, value: ['127.0.0.24'] });
    expect(addressQueries(timed, 'two.kept.test', from)).toBe(1);
  });
});
