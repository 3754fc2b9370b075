// DNSBL and DNSWL against the test DNS server. The query names are built with the testkit's
// reverseName, independently of the plugin's own reversal.

import { reversedLabel } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SpamDecision, type SpamOptions, spamFilter } from '../src/index.js';
import { listName, makeMessage } from './helpers.js';

const LISTED_V4 = '203.0.113.66';
const LISTED_V6 = '2001:db8:abcd:12::66';
const POLICY_V4 = '203.0.113.10';
const REFUSED_V4 = '203.0.113.99';
const SERVFAIL_V4 = '203.0.113.77';
const GOOD_V4 = '192.0.2.1';

let dns: TestDns;

beforeAll(async () => {
  dns = await startDnsServer({
    'example.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 ip4:203.0.113.0/24 ip6:2001:db8::/32 -all'] },
    [listName(LISTED_V4, 'bl.test')]: { A: ['127.0.0.2'] },
    [listName(LISTED_V6, 'bl.test')]: { A: ['127.0.0.2'] },
    [listName(POLICY_V4, 'bl.test')]: { A: ['127.0.0.10'] },
    [listName(REFUSED_V4, 'bl.test')]: { A: ['127.255.255.254'] },
    [listName(GOOD_V4, 'wl.test')]: { A: ['127.0.10.2'] },
  });
  dns.servfail(listName(SERVFAIL_V4, 'bl.test'));
});

afterAll(async () => {
  await dns.stop();
});

const blocklist = {
  zones: [
    {
      zone: 'bl.test',
      action: 'reject',
      codes: { '127.0.0.10': { name: 'PBL', weight: 3, action: 'score' } },
    },
  ],
} satisfies SpamOptions['dnsbl'];

function filter(
  extra: Partial<SpamOptions> = {},
  sink?: (d: SpamDecision) => void,
): ReturnType<typeof spamFilter> {
  return spamFilter({
    dns: { servers: [dns.server] },
    dnsbl: blocklist,
    dkim: { enabled: false },
    dmarc: { enabled: false },
    ...(sink ? { onDecision: sink } : {}),
    ...extra,
  });
}

/** One message from `ip` through every stage; returns the RCPT verdict, the decision and the logs. */
async function deliver(ip: string, extra: Partial<SpamOptions> = {}) {
  let decision: SpamDecision | undefined;
  const session = testPlugins(
    filter(extra, (d) => {
      decision = d;
    }),
    { remoteAddress: ip },
  );
  await session.connect();
  await session.helo('mail.example.test');
  await session.mailFrom('a@example.test');
  const rcpt = await session.rcptTo('bob@example.test');
  const data = rcpt.kind === 'continue' ? (await session.data(makeMessage())).verdict.kind : undefined;
  return { rcpt: rcpt.kind, data, decision, logs: session.logs };
}

describe('query names (RFC 5782 §2.1, §2.4)', () => {
  it('reverses IPv4 octets and IPv6 nibbles as the testkit does', () => {
    expect(`${reversedLabel(LISTED_V4)}.bl.test`).toBe(listName(LISTED_V4, 'bl.test'));
    expect(`${reversedLabel(LISTED_V6)}.bl.test`).toBe(listName(LISTED_V6, 'bl.test'));
    expect(reversedLabel('::ffff:203.0.113.66')).toBe('66.113.0.203');
    expect(reversedLabel('2001:db8::1').split('.')).toHaveLength(32);
  });
});

describe('DNSBL', () => {
  it('rejects a listed IPv4 client at RCPT by default', async () => {
    const session = testPlugins(filter(), { remoteAddress: LISTED_V4 });
    expect((await session.connect()).kind).toBe('continue');
    await session.helo('mail.example.test');
    expect((await session.mailFrom('a@example.test')).kind).toBe('continue');
    const verdict = await session.rcptTo('bob@example.test');
    expect(verdict).toEqual({
      kind: 'reject',
      reply: { code: 550, enhanced: '5.7.1', text: `Client host [${LISTED_V4}] blocked using bl.test` },
    });
    expect(dns.queries).toContainEqual(
      expect.objectContaining({ name: listName(LISTED_V4, 'bl.test'), type: 'A' }),
    );
  });

  it('rejects a listed IPv6 client at connect when rejectAt is connect', async () => {
    const session = testPlugins(filter({ dnsbl: { ...blocklist, rejectAt: 'connect' } }), {
      remoteAddress: LISTED_V6,
    });
    expect(await session.connect()).toEqual({
      kind: 'reject',
      reply: { code: 554, enhanced: '5.7.1', text: `Client host [${LISTED_V6}] blocked using bl.test` },
    });
    expect(dns.queries).toContainEqual(
      expect.objectContaining({ name: listName(LISTED_V6, 'bl.test'), type: 'A' }),
    );
  });

  it('rejects an IPv4-mapped IPv6 client as its IPv4 address', async () => {
    const session = testPlugins(filter({ dnsbl: { ...blocklist, rejectAt: 'connect' } }), {
      remoteAddress: `::ffff:${LISTED_V4}`,
    });
    expect((await session.connect()).kind).toBe('reject');
  });

  it('scores a code whose meaning says score, instead of rejecting', async () => {
    const r = await deliver(POLICY_V4);
    expect([r.rcpt, r.data]).toEqual(['continue', 'continue']);
    expect(r.decision?.symbols).toContainEqual({
      name: 'RBL_BL_TEST_PBL',
      score: 3,
      detail: 'bl.test=127.0.0.10',
    });
  });

  it('does not count a refusal code (127.255.255.x) or a failing zone', async () => {
    for (const ip of [REFUSED_V4, SERVFAIL_V4]) {
      const r = await deliver(ip);
      expect(r.rcpt).toBe('continue');
      expect(r.decision?.symbols.filter((s) => s.name.startsWith('RBL_'))).toEqual([]);
      expect(r.logs.some((l) => l.level === 'warn' && l.fields.zone === 'bl.test')).toBe(true);
    }
  });

  it('does not ask about private addresses, trusted clients or other listeners', async () => {
    const before = dns.queries.length;
    const cases = [
      testPlugins(filter(), { remoteAddress: '10.1.2.3' }),
      testPlugins(filter(), { remoteAddress: LISTED_V4, trusted: true }),
      testPlugins(filter(), {
        remoteAddress: LISTED_V4,
        listener: { name: 'submission', kind: 'submission' },
      }),
      testPlugins(filter({ listeners: ['mx-eu'] }), { remoteAddress: LISTED_V4 }),
    ];
    for (const session of cases) {
      expect((await session.connect()).kind).toBe('continue');
      await session.helo('mail.example.test');
      await session.mailFrom('a@example.test');
      expect((await session.rcptTo('bob@example.test')).kind).toBe('continue');
    }
    expect(dns.queries.slice(before).filter((q) => q.name.endsWith('.bl.test'))).toEqual([]);
  });

  it('runs on a named listener when listeners names it', async () => {
    const session = testPlugins(filter({ listeners: ['mx-eu'] }), {
      remoteAddress: LISTED_V4,
      listener: { name: 'mx-eu' },
    });
    await session.connect();
    await session.helo('mail.example.test');
    await session.mailFrom('a@example.test');
    expect((await session.rcptTo('bob@example.test')).kind).toBe('reject');
  });

  it('lets an authenticated session through by default', async () => {
    const plugins = [{ name: 'auth', auth: () => ({ kind: 'accept' as const }) }, filter()];
    const session = testPlugins(plugins, { remoteAddress: LISTED_V4 });
    await session.connect();
    await session.helo('laptop.example.test');
    expect((await session.auth('alice', 'secret')).kind).toBe('accept');
    await session.mailFrom('alice@example.test');
    expect((await session.rcptTo('bob@example.test')).kind).toBe('continue');
  });
});

describe('DNSWL', () => {
  async function scoreFor(dnswl: SpamOptions['dnswl']): Promise<SpamDecision | undefined> {
    let decision: SpamDecision | undefined;
    const session = testPlugins(
      filter({ dnswl }, (d) => {
        decision = d;
      }),
      { remoteAddress: GOOD_V4 },
    );
    await session.connect();
    await session.helo('mail.example.test');
    await session.mailFrom('a@example.test');
    await session.rcptTo('bob@example.test');
    // No Date and no Message-ID: a positive score to lower.
    await session.data(makeMessage({ date: null, messageId: null }));
    return decision;
  }

  it('lowers the score of a listed client by the zone weight', async () => {
    const without = await scoreFor({ zones: [] });
    const withList = await scoreFor({ zones: [{ zone: 'wl.test', weight: -4 }] });
    expect(withList?.symbols).toContainEqual({
      name: 'RWL_WL_TEST',
      score: -4,
      detail: 'wl.test=127.0.10.2',
    });
    expect((without?.score ?? 0) - (withList?.score ?? 0)).toBe(4);
    expect(withList?.score).toBeLessThan(without?.score ?? 0);
  });

  it('weighs by return code when codes are given (dnswl.org trust levels)', async () => {
    const decision = await scoreFor({
      zones: [{ zone: 'wl.test', name: 'DNSWL', codes: { '127.0.10.2': { name: 'MED', weight: -2.5 } } }],
    });
    expect(decision?.symbols).toContainEqual({
      name: 'RWL_DNSWL_MED',
      score: -2.5,
      detail: 'wl.test=127.0.10.2',
    });
  });
});
