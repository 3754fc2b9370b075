// The checks as plugins of their own: each publishes a typed result that later plugins read, the
// checks listed one by one decide as the spamFilter() preset does, a plugin with its own policy
// acts on a published result, and each check validates its own options.
import {
  definePlugin,
  type Plugin,
  PluginOptionError,
  PluginRegistrationError,
  reject,
} from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import { CheckChain } from '../src/chain.js';
import {
  authenticationResults,
  type DkimVerification,
  type DmarcOutcome,
  type DnsListResult,
  dkimCheck,
  dkimResult,
  dmarcCheck,
  dmarcResult,
  dnsListCheck,
  dnsListResult,
  greylistCheck,
  greylistResult,
  type HeuristicsOutcome,
  heuristicsCheck,
  heuristicsResult,
  rspamdCheck,
  type SpamDecision,
  type SpfResult,
  spamDecisionResult,
  spamFilter,
  spamScore,
  spfCheck,
  spfResult,
} from '../src/index.js';
import { type DkimKey, dkimSign, listName, makeDkimKey, makeMessage } from './helpers.js';

const SPOOFER = '203.0.113.9';
const LISTED = '203.0.113.66';

let dns: TestDns;
let key: DkimKey;

beforeAll(async () => {
  key = makeDkimKey();
  dns = await startDnsServer({
    'example.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=reject'] },
    'sel._domainkey.example.test': { TXT: [key.record] },
    [listName('192.0.2.1', 'wl.test')]: { A: ['127.0.10.2'] },
    [listName(LISTED, 'bl.test')]: { A: ['127.0.0.2'] },
  });
});

afterAll(async () => {
  await dns.stop();
});

const servers = (): { servers: string[] } => ({ servers: [dns.server] });

/** One message through every stage; returns the verdict and the session (for its results and logs). */
async function deliver(
  plugins: Plugin[],
  raw: string,
  opts: { ip?: string; helo?: string; from?: string } = {},
): Promise<{
  verdict: string;
  text: string | undefined;
  session: ReturnType<typeof testPlugins>;
  headers: string;
}> {
  const session = testPlugins(plugins, { remoteAddress: opts.ip ?? '192.0.2.1' });
  await session.connect();
  await session.helo(opts.helo ?? 'mail.example.test');
  await session.mailFrom(opts.from ?? 'alice@example.test');
  await session.rcptTo('bob@example.test');
  const result = await session.data(raw);
  const reply = 'reply' in result.verdict ? result.verdict.reply : undefined;
  return {
    verdict: result.verdict.kind,
    text: reply ? `${reply.code} ${reply.enhanced} ${reply.text}` : undefined,
    session,
    headers: result.message.headers.toString(),
  };
}

describe('each check publishes its result', () => {
  it('for plugins that come later, down to the queued hook, with their types', async () => {
    const seen: Record<string, unknown> = {};
    const reader = definePlugin({
      name: 'reader',
      queued(ctx) {
        const { results } = ctx;
        expectTypeOf(results.get(dmarcResult)).toEqualTypeOf<DmarcOutcome | undefined>();
        expectTypeOf(results.get(dkimResult)).toEqualTypeOf<DkimVerification | undefined>();
        expectTypeOf(results.get(spfResult)).toEqualTypeOf<SpfResult | undefined>();
        expectTypeOf(results.get(dnsListResult)).toEqualTypeOf<DnsListResult | undefined>();
        expectTypeOf(results.get(heuristicsResult)).toEqualTypeOf<HeuristicsOutcome | undefined>();
        expectTypeOf(results.get(spamDecisionResult)).toEqualTypeOf<SpamDecision | undefined>();
        seen.lists = results.get(dnsListResult);
        seen.spf = results.get(spfResult);
        seen.dkim = results.get(dkimResult);
        seen.dmarc = results.get(dmarcResult);
        seen.heuristics = results.get(heuristicsResult);
        seen.decision = results.get(spamDecisionResult);
      },
    });
    const checks = [
      dnsListCheck({ dns: servers(), dnswl: { zones: [{ zone: 'wl.test', weight: -2 }] } }),
      spfCheck({ dns: servers() }),
      heuristicsCheck(),
      dkimCheck({ dns: servers() }),
      dmarcCheck({ dns: servers() }),
      authenticationResults(),
      spamScore(),
      reader,
    ];
    const signed = dkimSign(makeMessage(), { domain: 'example.test', selector: 'sel', key });
    const { verdict, session, headers } = await deliver(checks, signed);
    expect(verdict).toBe('continue');
    await session.queued('Q1');
    expect(seen.lists).toMatchObject({ ip: '192.0.2.1', allowListed: true });
    expect(seen.spf).toMatchObject({
      mailFrom: { identity: 'mailfrom', result: 'pass' },
      helo: { identity: 'helo', result: 'none' },
    });
    expect(seen.dkim).toMatchObject({
      result: 'pass',
      signatures: [{ domain: 'example.test', selector: 'sel', aligned: true }],
      author: { addresses: ['alice@example.test'], fields: 1 },
    });
    expect(seen.dmarc).toMatchObject({ result: 'pass', policy: 'reject', fromDomain: 'example.test' });
    expect(seen.heuristics).toEqual({ gtube: false, hits: [] });
    expect(seen.decision).toMatchObject({
      action: 'accept',
      symbols: [
        { name: 'RWL_WL_TEST', score: -2 },
        { name: 'SPF_PASS' },
        { name: 'SPF_HELO_NONE' },
        { name: 'DKIM_PASS' },
        { name: 'DMARC_PASS' },
      ],
    });
    expect(headers).toMatch(
      /^Authentication-Results: mx\.tern\.test;\r\n\tspf=pass .*\r\n\tspf=none .*\r\n\tdkim=pass .*\r\n\tdmarc=pass /s,
    );
    expect(headers).toContain('X-Spam-Status: No, score=-4.5');
  });

  it('greylisting publishes each recipient outcome', async () => {
    const session = testPlugins(greylistCheck({ delaySeconds: 60, allowSenderDomains: ['partner.test'] }));
    await session.connect();
    await session.mailFrom('alice@example.test');
    expect((await session.rcptTo('bob@example.test')).kind).toBe('tempfail');
    expect((await session.rcptTo('carol@example.test')).kind).toBe('tempfail');
    expect(session.results.get(greylistResult)).toEqual([
      { recipient: 'bob@example.test', outcome: 'new', retryInSeconds: 60 },
      { recipient: 'carol@example.test', outcome: 'new', retryInSeconds: 60 },
    ]);
    await session.mailFrom('x@mail.partner.test');
    expect((await session.rcptTo('bob@example.test')).kind).toBe('continue');
    expect(session.results.get(greylistResult)).toEqual([
      { recipient: 'bob@example.test', outcome: 'exempt' },
    ]);
  });
});

describe('the checks one by one', () => {
  const spoofed = makeMessage({ from: 'ceo@example.test' });
  const spoofing = { ip: SPOOFER, helo: 'spoofer.invalid', from: 'ceo@example.test' };

  it('decide as the spamFilter() preset does', async () => {
    const decisions: SpamDecision[] = [];
    const onDecision = (d: SpamDecision): number => decisions.push(d);
    const preset = await deliver([spamFilter({ dns: servers(), onDecision })], spoofed, spoofing);
    const single = await deliver(
      [
        spfCheck({ dns: servers() }),
        heuristicsCheck(),
        dkimCheck({ dns: servers() }),
        dmarcCheck({ dns: servers() }),
        authenticationResults(),
        spamScore({ onDecision }),
      ],
      spoofed,
      spoofing,
    );
    expect(single.verdict).toBe('reject');
    expect(single.text).toBe('550 5.7.1 Message rejected by the DMARC policy of its From domain');
    expect([preset.verdict, preset.text]).toEqual([single.verdict, single.text]);
    const [a, b] = decisions;
    expect(b?.symbols).toEqual(a?.symbols);
    expect([b?.score, b?.action, b?.reason, b?.forcedBy]).toEqual([a?.score, a?.action, a?.reason, 'dmarc']);
  });

  it('DMARC without a DKIM check verifies the signatures itself and publishes only its own result', async () => {
    const signed = dkimSign(makeMessage(), { domain: 'example.test', selector: 'sel', key });
    const { session } = await deliver(
      [spfCheck({ dns: servers() }), dmarcCheck({ dns: servers() })],
      signed,
      {
        ip: SPOOFER,
        helo: 'forwarder.invalid',
        from: 'list@forwarder.invalid',
      },
    );
    // Nobody waited for it (no score): it may still be pending after the message stage.
    expect(await session.results.wait(dmarcResult)).toMatchObject({
      result: 'pass',
      fromDomain: 'example.test',
    });
    expect(session.results.has(dkimResult)).toBe(false);
  });

  it('a plugin with its own policy rejects p=reject failures the preset only tags', async () => {
    const strictDmarc = definePlugin({
      name: 'strict-dmarc',
      async message(ctx) {
        const dmarc = await ctx.results.wait(dmarcResult);
        if (dmarc?.result === 'fail' && dmarc.policy === 'reject') {
          return reject(550, '5.7.1', 'Rejected by the DMARC policy of its From domain');
        }
      },
    });
    const preset = (): Plugin => spamFilter({ dns: servers(), dmarc: { onReject: 'score' } });
    const tagged = await deliver([preset()], spoofed, spoofing);
    expect(tagged.verdict).toBe('continue');
    expect(tagged.headers).toMatch(/X-Spam-Status: Yes, .*DMARC_POLICY_REJECT/s);
    const refused = await deliver([preset(), strictDmarc], spoofed, spoofing);
    expect([refused.verdict, refused.text]).toEqual([
      'reject',
      '550 5.7.1 Rejected by the DMARC policy of its From domain',
    ]);
  });

  it('a check listed twice (the preset and a copy of one of its checks) is refused at start-up', () => {
    expect(() => new PluginHost([spamFilter(), spfCheck()])).toThrow(PluginRegistrationError);
    expect(() => new PluginHost([spamFilter(), spfCheck()])).toThrow(
      'plugins[1] (spam-spf): result spam.spf is already published by plugin spam; keep one of the two',
    );
  });

  it('the DNS list check asks again when the client address changes (XCLIENT, PROXY)', async () => {
    const session = testPlugins(
      dnsListCheck({ dns: servers(), dnsbl: { zones: [{ zone: 'bl.test', action: 'reject' }] } }),
      {
        remoteAddress: '192.0.2.1',
      },
    );
    await session.connect();
    await session.mailFrom('a@example.test');
    expect((await session.rcptTo('b@example.test')).kind).toBe('continue');
    // The proxy names the real client, and the connect hooks run again for it.
    (session.session as { remoteAddress: string }).remoteAddress = LISTED;
    await session.connect();
    await session.mailFrom('a@example.test');
    expect(await session.rcptTo('b@example.test')).toMatchObject({
      kind: 'reject',
      reply: { code: 550, text: `Client host [${LISTED}] blocked using bl.test` },
    });
    expect(session.results.get(dnsListResult)?.ip).toBe(LISTED);
  });
});

describe('option validation', () => {
  const bad: [string, () => unknown, string, RegExp][] = [
    [
      'spam-rspamd',
      () => rspamdCheck({ url: 'ftp://scanner' }),
      'url',
      /expected an http:\/\/ or https:\/\/ URL/,
    ],
    ['spam-rspamd', () => rspamdCheck({ maxReplyBytes: 0 }), 'maxReplyBytes', /too small|>0|positive/i],
    [
      'spam-greylist',
      () => greylistCheck({ redis: 'localhost:6379' }),
      'redis',
      /redis:\/\/ or rediss:\/\/ URL/,
    ],
    [
      'spam-score',
      () => spamScore({ actions: { tag: 5, reject: 4 } }),
      'actions.reject',
      /must be above quarantine \(10\): actions go tag < quarantine < tempfail < reject/,
    ],
    [
      'spam-score',
      () => spamScore({ scanners: { rspamd: { failure: 'maybe' as never } } }),
      'scanners.rspamd.failure',
      /open|closed/,
    ],
    [
      'spam-dnslists',
      () => dnsListCheck({ dnsbl: { zones: [{ zone: 'not a zone' }] } }),
      'dnsbl.zones[0].zone',
      /expected a DNS name such as zen\.spamhaus\.org/,
    ],
    [
      'spam-spf',
      () => spfCheck({ dns: { servers: ['resolver.example'] } }),
      'dns.servers[0]',
      /is not a name server address: give an IP address, with a port if not 53/,
    ],
    ['spam-dkim', () => dkimCheck({ minBitLength: -1 }), 'minBitLength', /./],
    ['spam-dmarc', () => dmarcCheck({ listeners: [] }), 'listeners', /./],
    [
      'spam-heuristics',
      () => heuristicsCheck({ enabled: false } as never),
      'enabled',
      /unknown option: remove it or check its spelling/,
    ],
  ];

  it.each(
    bad,
  )('%s: a bad option names the plugin, the field and what to write', (plugin, make, field, fix) => {
    let error: unknown;
    try {
      make();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PluginOptionError);
    expect((error as PluginOptionError).field).toBe(field);
    expect((error as PluginOptionError).message).toMatch(
      new RegExp(`^plugin ${plugin}: option ${field.replace(/[.[\]()]/g, '\\$&')}: `),
    );
    expect((error as PluginOptionError).message).toMatch(fix);
  });

  it('every check works with no options at all', () => {
    for (const check of [
      dnsListCheck,
      spfCheck,
      dkimCheck,
      dmarcCheck,
      heuristicsCheck,
      rspamdCheck,
      spamScore,
      authenticationResults,
    ]) {
      expect(check().name).toMatch(/^spam-/);
    }
  });
});

describe('the chain behind the preset', () => {
  const step = (name: string, seen: string[], extra: Partial<Plugin> = {}): Plugin => ({
    name,
    connect: () => void seen.push(name),
    ...extra,
  });

  it('runs each stage as the runner runs plugins: hook order, then the given order; a verdict ends it', async () => {
    const seen: string[] = [];
    const chain = new CheckChain([
      step('a', seen),
      { name: 'b-post', connect: { order: 'post', handler: () => void seen.push('b-post') } },
      { name: 'c-pre', connect: { order: 'pre', handler: () => void seen.push('c-pre') } },
      step('d', seen, {
        connect: () => {
          seen.push('d');
          return reject(554, '5.7.1', 'no');
        },
      }),
      step('e', seen),
    ]);
    // One of its steps is 'pre': the chained hook must run that early too.
    expect(chain.hooks().connect).toMatchObject({ order: 'pre' });
    const session = testPlugins({ name: 'chained', ...chain.hooks() });
    expect((await session.connect()).kind).toBe('reject');
    expect(seen).toEqual(['c-pre', 'a', 'd']);
  });

  it('gives each check its own state and reports an observer that failed after the others ran', async () => {
    const closed: string[] = [];
    const chain = new CheckChain([
      {
        name: 'counter',
        state: { session: () => ({ n: 0 }) },
        helo: (ctx: { sessionState: { n: number } }) => void ctx.sessionState.n++,
        close: (ctx: { sessionState: { n: number } }) => void closed.push(`counter:${ctx.sessionState.n}`),
      },
      { name: 'broken', close: () => Promise.reject(new Error('boom')) },
      {
        name: 'other',
        state: { session: () => 'own' },
        close: (ctx: { sessionState: string }) => void closed.push(ctx.sessionState),
      },
    ]);
    const session = testPlugins({
      name: 'chained',
      state: { session: () => chain.sessionStates() },
      ...chain.hooks(),
    });
    await session.helo('a.test');
    await session.helo('b.test');
    await session.close();
    expect(closed.sort()).toEqual(['counter:2', 'own']);
    expect(session.logs.find((l) => l.level === 'error')?.fields.err).toMatchObject({ message: 'boom' });
  });

  it('refuses a check with a hook that cannot be chained', () => {
    expect(() => new CheckChain([{ name: 'router', route: () => undefined }])).toThrow(
      'check router: route hooks cannot be chained',
    );
  });
});
