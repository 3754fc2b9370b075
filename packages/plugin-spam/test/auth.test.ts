// SPF, DKIM and DMARC through mailauth against the test DNS server, and the Authentication-Results
// header they produce. Signatures come from the test's own node:crypto signer (helpers.ts).
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SpamDecision, type SpamOptions, spamFilter } from '../src/index.js';
import { type DkimKey, dkimSign, makeDkimKey, makeMessage } from './helpers.js';

let dns: TestDns;
let key: DkimKey;

beforeAll(async () => {
  key = makeDkimKey();
  dns = await startDnsServer({
    'example.test': { A: ['192.0.2.10'], TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=reject'] },
    'sel._domainkey.example.test': { TXT: [key.record] },
    'quarantine.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    '_dmarc.quarantine.test': { TXT: ['v=DMARC1; p=quarantine'] },
    'soft.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 ~all'] },
    'hard.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    'mail.example.test': { A: ['192.0.2.1'], TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    'helo-soft.test': { TXT: ['v=spf1 ~all'] },
    'helo-fail.test': { TXT: ['v=spf1 -all'] },
  });
});

afterAll(async () => {
  await dns.stop();
});

interface Run {
  decision: SpamDecision | undefined;
  verdict: string;
  code: number | undefined;
  text: string | undefined;
  headers: string;
  authResults: string | undefined;
  held: string | undefined;
}

async function run(
  raw: string,
  opts: {
    ip?: string;
    helo?: string;
    from?: string;
    plugin?: Partial<SpamOptions>;
  } = {},
): Promise<Run> {
  let decision: SpamDecision | undefined;
  const plugin = spamFilter({
    dns: { servers: [dns.server] },
    onDecision: (d) => {
      decision = d;
    },
    ...opts.plugin,
  });
  const session = testPlugins(plugin, { remoteAddress: opts.ip ?? '192.0.2.1' });
  expect((await session.connect()).kind).toBe('continue');
  await session.helo(opts.helo ?? 'mail.example.test');
  expect((await session.mailFrom(opts.from ?? 'alice@example.test')).kind).toBe('continue');
  expect((await session.rcptTo('bob@example.test')).kind).toBe('continue');
  const result = await session.data(raw);
  const reply = 'reply' in result.verdict ? result.verdict.reply : undefined;
  return {
    decision,
    verdict: result.verdict.kind,
    code: reply?.code,
    text: reply ? `${reply.enhanced} ${reply.text}` : undefined,
    headers: result.message.headers.toString(),
    authResults: result.message.headers.get('authentication-results'),
    held: result.held,
  };
}

const noDmarc = { dmarc: { enabled: false } } as const;

describe('SPF for MAIL FROM (RFC 7208)', () => {
  it('passes when the domain authorizes the client', async () => {
    const r = await run(makeMessage(), { plugin: noDmarc });
    expect(r.decision?.auth.spf[0]).toMatchObject({
      identity: 'mailfrom',
      result: 'pass',
      domain: 'example.test',
    });
    expect(r.decision?.symbols).toContainEqual({ name: 'SPF_PASS', score: -0.5, detail: 'example.test' });
    expect(r.authResults).toMatch(/spf=pass \([^)]*\) smtp\.mailfrom=alice@example\.test/);
  });

  it('fails when the domain forbids the client (-all)', async () => {
    const r = await run(makeMessage({ from: 'x@hard.test' }), { ip: '203.0.113.9', from: 'x@hard.test' });
    expect(r.decision?.auth.spf[0]?.result).toBe('fail');
    expect(r.decision?.symbols.map((s) => s.name)).toContain('SPF_FAIL');
    expect(r.authResults).toMatch(/spf=fail \([^)]*\) smtp\.mailfrom=x@hard\.test/);
  });

  it('softfails under ~all', async () => {
    const r = await run(makeMessage({ from: 'x@soft.test' }), { ip: '203.0.113.9', from: 'x@soft.test' });
    expect(r.decision?.auth.spf[0]?.result).toBe('softfail');
    expect(r.decision?.symbols).toContainEqual({ name: 'SPF_SOFTFAIL', score: 1.5, detail: 'soft.test' });
    expect(r.authResults).toMatch(/spf=softfail .*smtp\.mailfrom=x@soft\.test/);
  });

  it('checks postmaster@HELO for the null sender', async () => {
    const r = await run(makeMessage({ from: 'MAILER-DAEMON@mail.example.test' }), {
      from: '',
      plugin: noDmarc,
    });
    expect(r.decision?.auth.spf[0]).toMatchObject({
      identity: 'mailfrom',
      result: 'pass',
      domain: 'mail.example.test',
    });
    expect(r.authResults).toContain('smtp.mailfrom=postmaster@mail.example.test');
  });
});

describe('SPF for HELO (RFC 7208 §2.3)', () => {
  it.each([
    ['mail.example.test', 'pass', 'SPF_HELO_PASS'],
    ['helo-fail.test', 'fail', 'SPF_HELO_FAIL'],
    ['helo-soft.test', 'softfail', 'SPF_HELO_SOFTFAIL'],
  ])('HELO %s is %s', async (helo, result, symbol) => {
    const r = await run(makeMessage(), { helo, plugin: noDmarc });
    expect(r.decision?.auth.spf.find((o) => o.identity === 'helo')).toMatchObject({ result, domain: helo });
    expect(r.decision?.symbols.map((s) => s.name)).toContain(symbol);
    expect(r.authResults).toContain(`spf=${result}`);
    expect(r.authResults).toMatch(
      new RegExp(`spf=${result} \\([^)]*\\) smtp\\.helo=${helo.replace(/\./g, '\\.')}`),
    );
  });

  it('does not check an address literal', async () => {
    const r = await run(makeMessage(), { helo: '[192.0.2.1]', plugin: noDmarc });
    expect(r.decision?.auth.spf.find((o) => o.identity === 'helo')?.result).toBe('none');
    expect(r.decision?.symbols.map((s) => s.name)).toContain('SPF_HELO_NONE');
  });
});

describe('DKIM verification (RFC 6376)', () => {
  it('verifies a message signed with the published key', async () => {
    const signed = dkimSign(makeMessage(), { domain: 'example.test', selector: 'sel', key });
    const r = await run(signed);
    expect(r.decision?.auth.dkim).toBe('pass');
    expect(r.decision?.symbols).toContainEqual({ name: 'DKIM_PASS', score: -1, detail: 'example.test:pass' });
    expect(r.authResults).toMatch(/dkim=pass .*header\.[di]=@?example\.test/);
    expect(r.authResults).toContain('header.s=sel');
  });

  it('fails a signed message whose body was changed afterwards', async () => {
    const signed = dkimSign(makeMessage({ body: 'Pay invoice 100 EUR\r\n' }), {
      domain: 'example.test',
      selector: 'sel',
      key,
    });
    const tampered = signed.replace('100 EUR', '900 EUR');
    const r = await run(tampered, { plugin: noDmarc });
    expect(r.decision?.auth.dkim).toBe('fail');
    expect(r.decision?.symbols.map((s) => s.name)).toContain('DKIM_FAIL');
    expect(r.authResults).toMatch(/dkim=fail \(body hash did not verify\)/);
  });

  it('fails a signed message whose Subject was changed afterwards', async () => {
    const signed = dkimSign(makeMessage({ subject: 'Invoice' }), {
      domain: 'example.test',
      selector: 'sel',
      key,
    });
    const r = await run(signed.replace('Subject: Invoice', 'Subject: Urgent invoice'), { plugin: noDmarc });
    expect(r.decision?.auth.dkim).toBe('fail');
  });

  it('reports dkim=none for an unsigned message', async () => {
    const r = await run(makeMessage(), { plugin: noDmarc });
    expect(r.decision?.auth.dkim).toBe('none');
    expect(r.authResults).toContain('dkim=none');
  });
});

describe('DMARC (RFC 7489)', () => {
  it('rejects an SPF-failing, unsigned sender of a p=reject domain', async () => {
    const r = await run(makeMessage({ from: 'ceo@example.test' }), {
      ip: '203.0.113.9',
      helo: 'spoofer.invalid',
      from: 'ceo@example.test',
    });
    expect(r.verdict).toBe('reject');
    expect(r.code).toBe(550);
    expect(r.text).toBe('5.7.1 Message rejected by the DMARC policy of its From domain');
    expect(r.decision?.auth.dmarc).toMatchObject({
      result: 'fail',
      policy: 'reject',
      fromDomain: 'example.test',
    });
    expect(r.decision?.action).toBe('reject');
    expect(r.decision?.reason).toBe('dmarc policy reject for example.test');
    expect(r.decision?.symbols.map((s) => s.name)).toEqual(
      expect.arrayContaining(['SPF_FAIL', 'DMARC_POLICY_REJECT', 'DKIM_NONE']),
    );
  });

  it('quarantines it instead when dmarc.onReject says so', async () => {
    const r = await run(makeMessage({ from: 'ceo@example.test' }), {
      ip: '203.0.113.9',
      helo: 'spoofer.invalid',
      from: 'ceo@example.test',
      plugin: { dmarc: { onReject: 'quarantine' } },
    });
    expect(r.verdict).toBe('continue');
    expect(r.decision?.action).toBe('quarantine');
    expect(r.headers).toContain('X-Tern-Quarantine: dmarc policy reject for example.test\r\n');
    expect(r.authResults).toContain('dmarc=fail');
  });

  it('only scores it when dmarc.onReject is score', async () => {
    const r = await run(makeMessage({ from: 'ceo@example.test' }), {
      ip: '203.0.113.9',
      helo: 'spoofer.invalid',
      from: 'ceo@example.test',
      plugin: { dmarc: { onReject: 'score' } },
    });
    expect(r.verdict).toBe('continue');
    // SPF_FAIL 3 + DMARC_POLICY_REJECT 5 = 8: tagged by score, neither rejected nor held.
    expect(r.decision?.score).toBe(8);
    expect(r.decision?.action).toBe('tag');
    expect(r.headers).not.toContain('X-Tern-Quarantine');
    expect(r.held).toBeUndefined();
  });

  it('quarantines a failing message of a p=quarantine domain', async () => {
    const r = await run(makeMessage({ from: 'a@quarantine.test' }), {
      ip: '203.0.113.9',
      from: 'a@quarantine.test',
    });
    expect(r.verdict).toBe('continue');
    expect(r.decision?.auth.dmarc?.policy).toBe('quarantine');
    expect(r.headers).toContain('X-Tern-Quarantine: dmarc policy quarantine for quarantine.test\r\n');
    expect(r.held).toBe('dmarc policy quarantine for quarantine.test');
  });

  it('passes on an aligned DKIM signature even when SPF fails (forwarded mail)', async () => {
    const signed = dkimSign(makeMessage(), { domain: 'example.test', selector: 'sel', key });
    const r = await run(signed, {
      ip: '203.0.113.9',
      helo: 'forwarder.invalid',
      from: 'list@forwarder.invalid',
    });
    expect(r.verdict).toBe('continue');
    expect(r.decision?.auth.dmarc?.result).toBe('pass');
    expect(r.decision?.action).toBe('accept');
  });
});

describe('Authentication-Results (RFC 8601)', () => {
  it('reports spf, dkim and dmarc pass for a clean message under our authserv-id', async () => {
    const signed = dkimSign(makeMessage(), { domain: 'example.test', selector: 'sel', key });
    const r = await run(signed);
    expect(r.verdict).toBe('continue');
    // The header is added on top, before any other field.
    expect(r.headers.startsWith('Authentication-Results: mx.tern.test;\r\n\t')).toBe(true);
    const value = r.authResults ?? '';
    const resinfos = value.split(';').map((part) => part.trim());
    expect(resinfos[0]).toBe('mx.tern.test');
    expect(resinfos[1]).toMatch(
      /^spf=pass \(mx\.tern\.test: domain of alice@example\.test designates 192\.0\.2\.1 as permitted sender\) smtp\.mailfrom=alice@example\.test$/,
    );
    expect(resinfos[2]).toMatch(/^spf=pass \(.*\) smtp\.helo=mail\.example\.test$/);
    expect(resinfos[3]).toMatch(/^dkim=pass .*header\.s=sel/);
    // RFC 8601 values with a '/' (a tspecial) are quoted; the signature is random, so both forms occur.
    expect(resinfos[3]).toMatch(/header\.b=("[A-Za-z0-9+/]{8}"|[A-Za-z0-9+]{8})(\s|$)/);
    expect(resinfos[4]).toMatch(/^dmarc=pass \(p=REJECT\) policy\.dmarc=reject header\.from=example\.test/);
    expect(resinfos).toHaveLength(5);
    expect(r.decision?.symbols.map((s) => s.name).sort()).toEqual([
      'DKIM_PASS',
      'DMARC_PASS',
      'SPF_HELO_PASS',
      'SPF_PASS',
    ]);
    expect(r.decision?.score).toBe(-2.7);
  });

  it('reports only the methods that ran (DKIM verified for DMARC but not reported)', async () => {
    const signed = dkimSign(makeMessage(), { domain: 'example.test', selector: 'sel', key });
    const r = await run(signed, { plugin: { spf: { enabled: false }, dkim: { enabled: false } } });
    expect(r.authResults).toMatch(/^mx\.tern\.test;\s+dmarc=pass /);
    expect(r.decision?.symbols.map((s) => s.name)).toEqual(['DMARC_PASS']);
  });

  it('can be left out', async () => {
    const r = await run(makeMessage(), { plugin: { authenticationResults: false } });
    expect(r.authResults).toBeUndefined();
  });
});
