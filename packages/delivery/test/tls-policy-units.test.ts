// Units of the outbound TLS policy: MTA-STS records and policies, MX patterns, the policy cache,
// TLS-RPT aggregation, TLSA usability and the policy table's lookup order.
import { describe, expect, it } from 'vitest';
import {
  aggregateTlsReport,
  createDeliverer,
  isUsable,
  MemoryPolicyStore,
  mxMatchesPolicy,
  parseMtaStsPolicy,
  parseMtaStsRecord,
  type TlsPolicyOutcome,
} from '../src/index.js';
import { MxResolver } from '../src/mx.js';
import { TlsPolicy } from '../src/tls-policy.js';

describe('MTA-STS TXT record (RFC 8461 §3.1)', () => {
  it('takes the id of the one v=STSv1 record, ignoring other TXT records and extra fields', () => {
    expect(parseMtaStsRecord(['spf stuff', 'v=STSv1; id=20240101T000000; ext=1'])).toEqual({
      ok: true,
      id: '20240101T000000',
    });
  });

  it('refuses zero or several STS records and a bad id', () => {
    expect(parseMtaStsRecord([])).toMatchObject({ ok: false });
    expect(parseMtaStsRecord(['v=STSv1; id=1', 'v=STSv1; id=2'])).toMatchObject({ ok: false });
    expect(parseMtaStsRecord(['v=STSv1; id=not-alnum'])).toMatchObject({ ok: false });
    expect(parseMtaStsRecord(['v=STSv1; id=123456789012345678901234567890123'])).toMatchObject({ ok: false });
  });
});

describe('MTA-STS policy (RFC 8461 §3.2)', () => {
  it('parses CRLF or LF lines, several mx, and ignores unknown fields', () => {
    const parsed = parseMtaStsPolicy(
      'version: STSv1\nmode: enforce\r\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\nfuture: x\n',
    );
    expect(parsed).toEqual({
      ok: true,
      policy: {
        mode: 'enforce',
        mx: ['mail.example.com', '*.example.net'],
        maxAge: 604800,
        lines: [
          'version: STSv1',
          'mode: enforce',
          'mx: mail.example.com',
          'mx: *.example.net',
          'max_age: 604800',
          'future: x',
        ],
      },
    });
  });

  it.each([
    ['version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1', /version/],
    ['version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1', /mode/],
    ['version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601', /max_age/],
    ['version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1', /max_age/],
    ['version: STSv1\nmode: testing\nmax_age: 10', /without any mx/],
    ['version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 10', /not a host name pattern/],
    ['<html>oops</html>', /malformed line/],
  ])('refuses %j', (text, reason) => {
    const parsed = parseMtaStsPolicy(text);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toMatch(reason);
  });

  it('accepts mode none without mx', () => {
    expect(parseMtaStsPolicy('version: STSv1\nmode: none\nmax_age: 86400\n')).toMatchObject({ ok: true });
  });
});

describe('MX patterns (RFC 8461 §4.1)', () => {
  it('matches exactly, or one left-most label for a wildcard', () => {
    expect(mxMatchesPolicy('mx.example.com', ['mx.example.com'])).toBe(true);
    expect(mxMatchesPolicy('MX.Example.com.', ['mx.example.com'])).toBe(true);
    expect(mxMatchesPolicy('mail.example.com', ['*.example.com'])).toBe(true);
    expect(mxMatchesPolicy('example.com', ['*.example.com'])).toBe(false);
    expect(mxMatchesPolicy('a.b.example.com', ['*.example.com'])).toBe(false);
    expect(mxMatchesPolicy('evilexample.com', ['*.example.com'])).toBe(false);
  });
});

describe('MemoryPolicyStore', () => {
  it('returns a copy until the entry expires, and nothing after', async () => {
    let now = 1000;
    const store = new MemoryPolicyStore({ now: () => now });
    await store.set('mta-sts:a', { id: '1', mx: ['x'] }, 500);
    const value = (await store.get('mta-sts:a')) as { mx: string[] };
    value.mx.push('changed');
    expect(await store.get('mta-sts:a')).toEqual({ id: '1', mx: ['x'] });
    now = 1500;
    expect(await store.get('mta-sts:a')).toBeUndefined();
  });

  it('keeps at most maxEntries', async () => {
    const store = new MemoryPolicyStore({ maxEntries: 2 });
    for (const key of ['a', 'b', 'c']) await store.set(key, key, 60_000);
    expect(await store.get('a')).toBeUndefined();
    expect(await store.get('c')).toBe('c');
  });
});

describe('TLS-RPT aggregation (RFC 8460 §4.4)', () => {
  it('counts sessions per policy and groups failures by type and endpoints', () => {
    const base: TlsPolicyOutcome = {
      at: 0,
      policyDomain: 'example.com',
      policyType: 'sts',
      policyStrings: ['version: STSv1', 'mode: enforce'],
      mxHosts: ['mx.example.com'],
      result: 'success',
      receivingMxHostname: 'mx.example.com',
      receivingIp: '192.0.2.1',
      sendingMtaIp: '198.51.100.1',
    };
    const report = aggregateTlsReport([
      base,
      base,
      { ...base, result: 'certificate-expired', detail: 'expired' },
      { ...base, result: 'certificate-expired', detail: 'expired' },
      { ...base, policyType: 'no-policy-found', policyStrings: [], result: 'starttls-not-supported' },
    ]);
    expect(report).toEqual([
      {
        policy: {
          'policy-type': 'sts',
          'policy-string': ['version: STSv1', 'mode: enforce'],
          'policy-domain': 'example.com',
          'mx-host': ['mx.example.com'],
        },
        summary: { 'total-successful-session-count': 2, 'total-failure-session-count': 2 },
        'failure-details': [
          {
            'result-type': 'certificate-expired',
            'sending-mta-ip': '198.51.100.1',
            'receiving-mx-hostname': 'mx.example.com',
            'receiving-ip': '192.0.2.1',
            'failed-session-count': 2,
            'additional-information': 'expired',
          },
        ],
      },
      {
        policy: {
          'policy-type': 'no-policy-found',
          'policy-string': [],
          'policy-domain': 'example.com',
          'mx-host': ['mx.example.com'],
        },
        summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 1 },
        'failure-details': [
          {
            'result-type': 'starttls-not-supported',
            'sending-mta-ip': '198.51.100.1',
            'receiving-mx-hostname': 'mx.example.com',
            'receiving-ip': '192.0.2.1',
            'failed-session-count': 1,
          },
        ],
      },
    ]);
  });
});

describe('TLSA usability (RFC 7672 §3.1.3)', () => {
  const data = (n: number): Buffer => Buffer.alloc(n, 1);
  it('takes DANE-TA/EE with known selectors and digests of the right length only', () => {
    expect(isUsable({ usage: 3, selector: 1, matchingType: 1, data: data(32) })).toBe(true);
    expect(isUsable({ usage: 2, selector: 0, matchingType: 2, data: data(64) })).toBe(true);
    expect(isUsable({ usage: 3, selector: 0, matchingType: 0, data: data(300) })).toBe(true);
    expect(isUsable({ usage: 1, selector: 1, matchingType: 1, data: data(32) })).toBe(false);
    expect(isUsable({ usage: 0, selector: 1, matchingType: 1, data: data(32) })).toBe(false);
    expect(isUsable({ usage: 3, selector: 2, matchingType: 1, data: data(32) })).toBe(false);
    expect(isUsable({ usage: 3, selector: 1, matchingType: 1, data: data(31) })).toBe(false);
    expect(isUsable({ usage: 3, selector: 1, matchingType: 3, data: data(32) })).toBe(false);
  });
});

describe('policy table', () => {
  const policy = new TlsPolicy({
    table: {
      'example.com': 'secure',
      '.example.org': { level: 'verify', match: ['.example.org'] },
      '[relay.example.net]:587': 'encrypt',
      '[relay.example.net]': 'none',
    },
    defaultLevel: 'mta-sts',
    resolver: new MxResolver(),
  });

  it('looks up next hop with port, next hop, domain, then parent domains', () => {
    expect(policy.entryFor({ type: 'smtp', host: 'relay.example.net', port: 587 }, 'x.test')?.level).toBe(
      'encrypt',
    );
    expect(policy.entryFor({ type: 'smtp', host: 'Relay.Example.net' }, 'x.test')?.level).toBe('none');
    expect(policy.entryFor({ type: 'mx', domain: 'example.com' }, 'example.com')?.level).toBe('secure');
    expect(policy.entryFor({ type: 'mx', domain: 'a.b.example.org' }, 'a.b.example.org')).toEqual({
      level: 'verify',
      match: ['.example.org'],
    });
    expect(policy.entryFor({ type: 'mx', domain: 'example.org' }, 'example.org')).toBeUndefined();
  });

  it('refuses an unknown level, and dane-only without a validating resolver, naming the entry', () => {
    expect(() =>
      createDeliverer({ hostname: 'out.test', tlsPolicy: { 'a.test': 'strict' as never } }),
    ).toThrow(/delivery\.tlsPolicy\["a\.test"\]: expected one of none, may/);
    expect(() => createDeliverer({ hostname: 'out.test', tlsPolicy: { 'a.test': 'dane-only' } })).toThrow(
      /dane-only needs DNSSEC: set delivery\.dns\.dnssec: true/,
    );
  });
});
