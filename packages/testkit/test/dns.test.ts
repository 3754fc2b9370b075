import { promises as dns } from 'node:dns';
import dns2 from 'dns2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reverseName, startDnsServer, type TestDns } from '../src/index.js';

/** The MX fields; Node 24 adds `type: 'MX'` to each record, Node 20 does not. */
const mx = (records: { exchange: string; priority: number }[]) =>
  records.map(({ exchange, priority }) => ({ exchange, priority }));

const longTxt = `v=DKIM1; k=rsa; p=${'A'.repeat(700)}`;

describe('startDnsServer', () => {
  let server: TestDns;
  let resolver: dns.Resolver;

  beforeAll(async () => {
    server = await startDnsServer({
      'example.test': {
        A: ['192.0.2.10', '192.0.2.11'],
        AAAA: ['2001:db8::25', '::ffff:192.0.2.10'],
        MX: [
          { exchange: 'mx1.example.test', priority: 10 },
          { exchange: 'mx2.example.test.', priority: 20 },
        ],
        TXT: ['v=spf1 ip4:192.0.2.0/24 -all', ''],
      },
      'Mixed.Case.TEST': { A: ['192.0.2.99'] },
      'sel._domainkey.example.test': { TXT: [longTxt] },
      'nullmx.test': { MX: [{ exchange: '.', priority: 0 }] },
      'nullmx-empty.test': { MX: [{ exchange: '', priority: 0 }] },
      'alias.example.test': { CNAME: 'example.test' },
      [reverseName('192.0.2.10')]: { PTR: ['mx1.example.test'] },
      [reverseName('2001:db8::25')]: { PTR: ['mx6.example.test'] },
    });
    resolver = new dns.Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([server.server]);
  });

  afterAll(async () => {
    await server.stop();
  });

  it('reports where it listens', () => {
    expect(server.host).toBe('127.0.0.1');
    expect(server.server).toBe(`127.0.0.1:${server.port}`);
    expect(server.port).toBeGreaterThan(0);
  });

  it('answers A, AAAA, MX and TXT to node’s resolver', async () => {
    expect((await resolver.resolve4('example.test')).sort()).toEqual(['192.0.2.10', '192.0.2.11']);
    expect(await resolver.resolve6('example.test')).toEqual(['2001:db8::25', '::ffff:192.0.2.10']);
    expect(mx(await resolver.resolveMx('example.test')).sort((a, b) => a.priority - b.priority)).toEqual([
      { exchange: 'mx1.example.test', priority: 10 },
      { exchange: 'mx2.example.test', priority: 20 },
    ]);
    expect(await resolver.resolveTxt('example.test')).toEqual([['v=spf1 ip4:192.0.2.0/24 -all'], ['']]);
  });

  it('matches names case-insensitively and logs each query', async () => {
    const before = server.queries.length;
    expect(await resolver.resolve4('MIXED.case.test')).toEqual(['192.0.2.99']);
    expect(server.queries.slice(before)).toEqual([{ name: 'mixed.case.test', type: 'A', transport: 'udp' }]);
  });

  it('answers PTR for IPv4 and IPv6 reverse names', async () => {
    expect(reverseName('192.0.2.10')).toBe('10.2.0.192.in-addr.arpa');
    expect(reverseName('2001:db8::25')).toBe(
      '5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa',
    );
    expect(await resolver.reverse('192.0.2.10')).toEqual(['mx1.example.test']);
    expect(await resolver.reverse('2001:db8::25')).toEqual(['mx6.example.test']);
  });

  it('serves a null MX that node reports as exchange ""', async () => {
    expect(mx(await resolver.resolveMx('nullmx.test'))).toEqual([{ exchange: '', priority: 0 }]);
    expect(mx(await resolver.resolveMx('nullmx-empty.test'))).toEqual([{ exchange: '', priority: 0 }]);
  });

  it('gives NXDOMAIN, NODATA and SERVFAIL the error codes node uses', async () => {
    await expect(resolver.resolve4('missing.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(resolver.resolveMx('sel._domainkey.example.test')).rejects.toMatchObject({
      code: 'ENODATA',
    });
    // A name with records only below it exists (empty non-terminal): NODATA, not NXDOMAIN.
    await expect(resolver.resolveTxt('_domainkey.example.test')).rejects.toMatchObject({ code: 'ENODATA' });
    server.servfail('example.test');
    try {
      await expect(resolver.resolveMx('example.test')).rejects.toMatchObject({ code: 'ESERVFAIL' });
    } finally {
      server.servfail('example.test', false);
    }
    expect(await resolver.resolve4('example.test')).toHaveLength(2);
  });

  it('splits a TXT record over 255 bytes into chunks that join back to the original', async () => {
    const [record, ...rest] = await resolver.resolveTxt('sel._domainkey.example.test');
    expect(rest).toEqual([]);
    expect(record?.length).toBe(3);
    expect(record?.every((chunk) => chunk.length <= 255)).toBe(true);
    expect(record?.join('')).toBe(longTxt);
  });

  it('follows a CNAME inside the table', async () => {
    expect((await resolver.resolve4('alias.example.test')).sort()).toEqual(['192.0.2.10', '192.0.2.11']);
    expect(await resolver.resolveCname('alias.example.test')).toEqual(['example.test']);
  });

  it('shows set() and remove() on the next lookup (no stale cache in the resolver)', async () => {
    await expect(resolver.resolve4('late.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    server.set('LATE.test.', { A: ['192.0.2.50'] });
    expect(await resolver.resolve4('late.test')).toEqual(['192.0.2.50']);
    server.set('late.test', { A: ['192.0.2.51'] });
    expect(await resolver.resolve4('late.test')).toEqual(['192.0.2.51']);
    server.remove('late.test');
    await expect(resolver.resolve4('late.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });

  it('answers over TCP on the same port', async () => {
    const query = dns2.TCPClient({ dns: '127.0.0.1', port: server.port });
    const response = await query('example.test', 'MX');
    expect(response.header.rcode).toBe(0);
    expect(response.answers.map((answer) => answer.exchange).sort()).toEqual([
      'mx1.example.test',
      'mx2.example.test',
    ]);
    expect(server.queries.at(-1)).toEqual({ name: 'example.test', type: 'MX', transport: 'tcp' });
    const missing = await query('missing.test', 'A');
    expect(missing.header.rcode).toBe(3);
  });

  it('sets TC over UDP when the answer is too big, and node retries over TCP', async () => {
    server.set('big.test', { TXT: Array.from({ length: 8 }, (_, i) => String(i).repeat(400)) });
    const before = server.queries.length;
    const records = await resolver.resolveTxt('big.test');
    expect(records.map((record) => record.join(''))).toEqual(
      Array.from({ length: 8 }, (_, i) => String(i).repeat(400)),
    );
    expect(server.queries.slice(before).map((query) => query.transport)).toEqual(['udp', 'tcp']);
  });

  it('rejects records it could not encode when they are set', () => {
    expect(() => server.set('bad.test', { A: ['not-an-ip'] })).toThrow(/bad\.test: A record/);
    expect(() => server.set('bad.test', { AAAA: ['192.0.2.1'] })).toThrow(/AAAA record/);
    expect(() => server.set(`${'a'.repeat(64)}.test`, { A: ['192.0.2.1'] })).toThrow(/cannot be encoded/);
  });
});
