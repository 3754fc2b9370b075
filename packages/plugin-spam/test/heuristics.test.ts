// Header and content heuristics, GTUBE policy, and the removal of incoming fields that claim to
// be ours (RFC 8601 §5).
import { Readable } from 'node:stream';
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAddressList } from '../src/address.js';
import { authservIdOf, claimsAuthservId } from '../src/auth.js';
import { containsGtube } from '../src/heuristics.js';
import { GTUBE, type SpamDecision, type SpamOptions, SYMBOLS, spamFilter } from '../src/index.js';
import { type DkimKey, dkimSign, makeDkimKey, makeMessage } from './helpers.js';

let dns: TestDns;
let key: DkimKey;

beforeAll(async () => {
  key = makeDkimKey();
  dns = await startDnsServer({
    'example.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    'sel._domainkey.example.test': { TXT: [key.record] },
  });
});

afterAll(async () => {
  await dns.stop();
});

async function check(
  raw: string,
  opts: { helo?: string; plugin?: Partial<SpamOptions> } = {},
): Promise<{ decision: SpamDecision | undefined; verdict: string; text?: string; headers: string }> {
  let decision: SpamDecision | undefined;
  const session = testPlugins(
    spamFilter({
      dns: { servers: [dns.server] },
      spf: { enabled: false },
      dkim: { enabled: false },
      dmarc: { enabled: false },
      onDecision: (d) => {
        decision = d;
      },
      ...opts.plugin,
    }),
  );
  await session.connect();
  await session.helo(opts.helo ?? 'mail.example.test');
  await session.mailFrom('alice@example.test');
  await session.rcptTo('bob@example.test');
  const result = await session.data(raw);
  const reply = 'reply' in result.verdict ? result.verdict.reply : undefined;
  return {
    decision,
    verdict: result.verdict.kind,
    ...(reply ? { text: `${reply.code} ${reply.enhanced} ${reply.text}` } : {}),
    headers: result.message.headers.toString(),
  };
}

const names = (d: SpamDecision | undefined): string[] => (d?.symbols ?? []).map((s) => s.name).sort();

describe('header heuristics', () => {
  it('finds nothing wrong with a well-formed message', async () => {
    const { decision } = await check(makeMessage());
    expect(names(decision)).toEqual([]);
    expect(decision?.score).toBe(0);
    expect(decision?.action).toBe('accept');
  });

  it.each([
    ['MISSING_DATE', { date: null }],
    ['INVALID_DATE', { date: 'yesterday at noon' }],
    ['DATE_IN_FUTURE', { date: new Date(Date.now() + 3 * 86_400_000).toUTCString() }],
    ['MISSING_MESSAGE_ID', { messageId: null }],
    ['MISSING_FROM', { from: null }],
    ['FROM_MALFORMED', { from: 'Alice' }],
    ['FROM_MALFORMED', { from: 'Alice <alice at example.test>' }],
    ['FROM_NAME_SPOOFS_ADDRESS', { from: '"service@paypal.com" <billing@evil.test>' }],
    ['FROM_NAME_SPOOFS_ADDRESS', { from: '=?UTF-8?B?c2VydmljZUBwYXlwYWwuY29t?= <billing@evil.test>' }],
    ['REPLYTO_DOMAIN_MISMATCH', { extra: ['Reply-To: collect@elsewhere.test'] }],
    ['MULTIPLE_FROM', { extra: ['From: mallory@evil.test'] }],
    ['MISSING_SUBJECT', { subject: null }],
    ['SUBJECT_ALL_CAPS', { subject: 'WIN A FREE CRUISE TODAY' }],
    ['SUBJECT_ALL_CAPS', { subject: '=?ISO-8859-1?Q?GRATUIT_=C0_GAGNER_MAINTENANT?=' }],
  ] as const)('%s for %j', async (symbol, parts) => {
    const { decision } = await check(makeMessage(parts));
    expect(names(decision)).toEqual([symbol]);
    expect(decision?.symbols[0]?.score).toBe(SYMBOLS[symbol].weight);
  });

  it('HELO_NOT_FQDN for a bare HELO name, not for an address literal', async () => {
    expect(names((await check(makeMessage(), { helo: 'localhost' })).decision)).toEqual(['HELO_NOT_FQDN']);
    expect(names((await check(makeMessage(), { helo: '[192.0.2.1]' })).decision)).toEqual([]);
  });

  it('does not flag a display name with the sender own address, or a Reply-To of the same organization', async () => {
    const { decision } = await check(
      makeMessage({
        from: '"alice@example.test" <alice@example.test>',
        extra: ['Reply-To: support@help.example.test'],
      }),
    );
    expect(names(decision)).toEqual([]);
  });

  it('takes weights from scores overrides', async () => {
    const { decision } = await check(makeMessage({ date: null }), {
      plugin: { scores: { MISSING_DATE: 4.2 } },
    });
    expect(decision?.symbols).toEqual([{ name: 'MISSING_DATE', score: 4.2 }]);
  });

  it('can be switched off', async () => {
    const { decision } = await check(makeMessage({ date: null, subject: null }), {
      plugin: { heuristics: { enabled: false } },
    });
    expect(names(decision)).toEqual([]);
  });
});

describe('GTUBE', () => {
  const gtube = makeMessage({ subject: 'test', body: `This is the GTUBE, the\r\n${GTUBE}\r\n` });

  it('is rejected with the default thresholds, with a reply that names no internals', async () => {
    const r = await check(gtube);
    expect(r.verdict).toBe('reject');
    expect(r.text).toBe('550 5.7.1 Message rejected as spam');
    expect(r.decision?.symbols).toContainEqual({ name: 'GTUBE', score: 1000 });
    expect(r.decision?.reason).toBe('score 1000 >= reject 15');
  });

  it('is only tagged when the policy has no reject threshold', async () => {
    const r = await check(gtube, { plugin: { actions: { reject: null, quarantine: null } } });
    expect(r.verdict).toBe('continue');
    expect(r.decision?.action).toBe('tag');
    expect(r.headers).toContain('X-Spam-Status: Yes, score=1000.0, required=5.0, tests=GTUBE\r\n');
    expect(r.headers).toContain('X-Spam-Flag: YES\r\n');
  });

  it('is found across chunk boundaries', async () => {
    const cut = 20;
    const chunks = [Buffer.from(`hello ${GTUBE.slice(0, cut)}`), Buffer.from(`${GTUBE.slice(cut)} bye`)];
    expect(await containsGtube(Readable.from(chunks))).toBe(true);
    expect(await containsGtube(Readable.from([Buffer.from(GTUBE.slice(0, -1))]))).toBe(false);
  });
});

describe('incoming fields that claim to be ours', () => {
  it('parses the authserv-id after comments, in quotes, and before a version', () => {
    expect(authservIdOf('mx.tern.test; spf=pass')).toBe('mx.tern.test');
    expect(authservIdOf(' (forged) MX.Tern.Test 1; dkim=pass')).toBe('MX.Tern.Test');
    expect(authservIdOf('"mx.tern.test"; none')).toBe('mx.tern.test');
    expect(claimsAuthservId('(x (nested)) mx.tern.test.; none', 'mx.tern.test')).toBe(true);
    expect(claimsAuthservId('mx.tern.test.evil; none', 'mx.tern.test')).toBe(false);
  });

  it('removes Authentication-Results with our authserv-id and forged X-Spam-*/X-Tern-Quarantine, keeps others', async () => {
    const raw = makeMessage({
      extra: [
        'Authentication-Results: mx.tern.test; spf=pass smtp.mailfrom=ceo@example.test; dkim=pass',
        'Authentication-Results: (looks legit)\r\n MX.TERN.TEST;\r\n dmarc=pass header.from=example.test',
        'Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=alice@example.test',
        'X-Spam-Status: No, score=-100',
        'X-Tern-Quarantine: hold me',
      ],
    });
    const r = await check(raw, { plugin: { spf: { enabled: true } } });
    const results = r.headers.split(/\r\n(?![ \t])/).filter((l) => /^authentication-results:/i.test(l));
    expect(results).toHaveLength(2);
    expect(results[0]).toMatch(/^Authentication-Results: mx\.tern\.test;\r\n\tspf=pass /);
    expect(results[1]).toBe(
      'Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=alice@example.test',
    );
    expect(r.headers).not.toContain('score=-100');
    expect(r.headers).not.toContain('hold me');
    expect(r.headers).toContain('X-Spam-Status: No, score=-0.5');
  });

  it('still verifies a DKIM signature that covered a removed field', async () => {
    const signed = dkimSign(makeMessage({ extra: ['Authentication-Results: mx.tern.test; none'] }), {
      domain: 'example.test',
      selector: 'sel',
      key,
      headers: ['from', 'subject', 'authentication-results'],
    });
    const r = await check(signed, { plugin: { dkim: { enabled: true } } });
    expect(r.decision?.auth.dkim).toBe('pass');
    expect(r.headers).not.toContain('mx.tern.test; none');
  });
});

describe('address parsing', () => {
  it('reads display names, comments, groups and encoded words', () => {
    expect(parseAddressList('"Doe, John" <john@example.test> (work), jane@example.test')).toEqual([
      { name: 'Doe, John', address: 'john@example.test', domain: 'example.test', valid: true },
      { name: '', address: 'jane@example.test', domain: 'example.test', valid: true },
    ]);
    expect(parseAddressList('Team: a@x.test, b@y.test;').map((m) => m.address)).toEqual([
      'a@x.test',
      'b@y.test',
    ]);
    expect(parseAddressList('=?UTF-8?Q?J=C3=B6rg?= <jorg@example.test>')[0]?.name).toBe('Jörg');
    expect(parseAddressList('no-at-sign')[0]?.valid).toBe(false);
  });
});
