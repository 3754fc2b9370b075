// Score thresholds to actions, the headers each action writes, the per-message record (log line,
// transaction state, onDecision), exemptions, and option validation.
import { PluginOptionError } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SpamDecision, type SpamOptions, spamFilter } from '../src/index.js';
import { captureStates, makeMessage } from './helpers.js';

let dns: TestDns;

beforeAll(async () => {
  dns = await startDnsServer({});
});

afterAll(async () => {
  await dns.stop();
});

const thresholds = { tag: 5, quarantine: 10, tempfail: 12, reject: 15 };

/** A message without Date whose MISSING_DATE weight is `score`: the only symbol, so the score is exact. */
async function scored(score: number, extra: Partial<SpamOptions> = {}, subject = 'Hello') {
  const decisions: SpamDecision[] = [];
  const { plugin, states } = captureStates(
    spamFilter({
      dns: { servers: [dns.server] },
      spf: { enabled: false },
      dkim: { enabled: false },
      dmarc: { enabled: false },
      scores: { MISSING_DATE: score },
      actions: thresholds,
      onDecision: (d) => decisions.push(d),
      ...extra,
    }),
  );
  const session = testPlugins(plugin);
  await session.connect();
  await session.helo('mail.example.test');
  await session.mailFrom('alice@example.test');
  await session.rcptTo('bob@example.test');
  const result = await session.data(makeMessage({ date: null, subject }));
  return { result, headers: result.message.headers, decisions, states, logs: session.logs };
}

describe('actions by score', () => {
  it('accepts below the tag threshold and says No', async () => {
    const { result, headers, decisions } = await scored(3);
    expect(result.verdict.kind).toBe('continue');
    expect(decisions[0]?.action).toBe('accept');
    expect(headers.get('x-spam-status')).toBe('No, score=3.0, required=5.0, tests=MISSING_DATE');
    expect(headers.get('x-spam-score')).toBe('3.0');
    expect(headers.has('x-spam-flag')).toBe(false);
    expect(headers.has('x-spam-report')).toBe(false);
    expect(headers.has('x-tern-quarantine')).toBe(false);
  });

  it('writes no status on accepted mail when headers.status is tagged', async () => {
    const { headers } = await scored(3, { headers: { status: 'tagged' } });
    expect(headers.has('x-spam-status')).toBe(false);
    expect(headers.has('x-spam-score')).toBe(false);
  });

  it('tags at the tag threshold: status, flag, report and subject prefix', async () => {
    const { result, headers, decisions } = await scored(6, { headers: { subjectPrefix: '[SPAM] ' } });
    expect(result.verdict.kind).toBe('continue');
    expect(decisions[0]).toMatchObject({ action: 'tag', score: 6, reason: 'score 6 >= tag 5' });
    expect(headers.get('x-spam-status')).toBe('Yes, score=6.0, required=5.0, tests=MISSING_DATE');
    expect(headers.get('x-spam-flag')).toBe('YES');
    expect(headers.get('x-spam-report')).toBe('action=tag score=6.0\t*    6.0 MISSING_DATE');
    expect(headers.toString()).toContain(
      'X-Spam-Report: action=tag score=6.0\r\n\t*    6.0 MISSING_DATE\r\n',
    );
    expect(headers.get('subject')).toBe('[SPAM] Hello');
    expect(headers.has('x-tern-quarantine')).toBe(false);
  });

  // Found by fuzz-checks: the prefix was put before the unfolded subject, so a long subject folded
  // over lines of legal length became one line past RFC 5322's 998 octets, which a next hop may refuse.
  it('keeps the folding of the subject it prefixes', async () => {
    const folded = Array.from({ length: 40 }, (_, i) => `word${i}-${'x'.repeat(40)}`).join('\r\n ');
    const { headers } = await scored(6, { headers: { subjectPrefix: '[SPAM] ' } }, folded);
    expect(headers.toString()).toContain(`Subject: [SPAM] ${folded}\r\n`);
    expect(headers.get('subject')).toBe(`[SPAM] ${folded.replace(/\r\n/g, '')}`);
    expect(
      Math.max(
        ...headers
          .toString()
          .split('\r\n')
          .map((line) => line.length),
      ),
    ).toBeLessThanOrEqual(998);
  });

  it('quarantines at the quarantine threshold: the hold mark plus the tag headers', async () => {
    const { result, headers, decisions } = await scored(11);
    expect(result.verdict.kind).toBe('continue');
    expect(decisions[0]?.action).toBe('quarantine');
    expect(headers.get('x-tern-quarantine')).toBe('score 11 >= quarantine 10');
    expect(headers.get('x-spam-flag')).toBe('YES');
  });

  it('tempfails at the tempfail threshold', async () => {
    const { result, decisions } = await scored(13);
    expect(result.verdict).toEqual({
      kind: 'tempfail',
      reply: { code: 451, enhanced: '4.7.1', text: 'Message deferred, please try again later' },
    });
    expect(decisions[0]?.action).toBe('tempfail');
  });

  it('rejects at the reject threshold with the configured text', async () => {
    const { result, decisions } = await scored(20, { replies: { reject: 'No thanks' } });
    expect(result.verdict).toEqual({
      kind: 'reject',
      reply: { code: 550, enhanced: '5.7.1', text: 'No thanks' },
    });
    expect(decisions[0]?.reason).toBe('score 20 >= reject 15');
  });

  it('skips a disabled threshold', async () => {
    const { result, decisions } = await scored(13, { actions: { ...thresholds, tempfail: null } });
    expect(result.verdict.kind).toBe('continue');
    expect(decisions[0]?.action).toBe('quarantine');
  });
});

describe('the record of each decision', () => {
  it('logs one structured line per message', async () => {
    const { logs } = await scored(6);
    const lines = logs.filter((l) => l.message === 'spam check');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      fields: {
        plugin: 'spam',
        score: 6,
        action: 'tag',
        symbols: 'MISSING_DATE(6)',
        mailFrom: 'alice@example.test',
        ip: '192.0.2.1',
      },
    });
  });

  it('keeps the decision on the transaction state and hands it to onDecision', async () => {
    const { states, decisions } = await scored(11);
    const decided = states.filter((s) => s.decision !== undefined);
    expect(decided).toHaveLength(1);
    expect(decided[0]?.decision).toBe(decisions[0]);
    expect(decided[0]?.decision).toMatchObject({
      score: 11,
      action: 'quarantine',
      symbols: [{ name: 'MISSING_DATE', score: 11 }],
      recipients: ['bob@example.test'],
    });
  });

  it('survives an onDecision that throws', async () => {
    const { result, logs } = await scored(6, {
      onDecision: () => {
        throw new Error('timeline down');
      },
    });
    expect(result.verdict.kind).toBe('continue');
    expect(logs.some((l) => l.level === 'error' && l.message === 'onDecision threw; ignored')).toBe(true);
  });
});

describe('exemptions', () => {
  const authPlugin = { name: 'auth', auth: () => ({ kind: 'accept' as const }) };

  async function submit(options: Partial<SpamOptions>) {
    const decisions: SpamDecision[] = [];
    const session = testPlugins([
      authPlugin,
      spamFilter({ dns: { servers: [dns.server] }, onDecision: (d) => decisions.push(d), ...options }),
    ]);
    await session.connect();
    await session.helo('laptop.example.test');
    await session.auth('alice', 'pw');
    await session.mailFrom('alice@example.test');
    await session.rcptTo('bob@example.test');
    const result = await session.data(
      makeMessage({
        date: null,
        body: 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n',
      }),
    );
    return { result, decisions };
  }

  it('does not check authenticated submissions by default', async () => {
    const { result, decisions } = await submit({});
    expect(result.verdict.kind).toBe('continue');
    expect(decisions).toEqual([]);
    expect(result.message.headers.has('x-spam-status')).toBe(false);
  });

  it('checks them when exemptAuthenticated is false', async () => {
    const { result, decisions } = await submit({ exemptAuthenticated: false });
    expect(result.verdict.kind).toBe('reject');
    expect(decisions[0]?.symbols.map((s) => s.name)).toContain('GTUBE');
  });
});

describe('stage order', () => {
  it('still checks the message when an earlier plugin accepted MAIL FROM (our hook never ran)', async () => {
    const decisions: SpamDecision[] = [];
    const session = testPlugins([
      { name: 'sender-ok', mailFrom: () => ({ kind: 'accept' as const }) },
      spamFilter({ dns: { servers: [dns.server] }, onDecision: (d) => decisions.push(d) }),
    ]);
    await session.connect();
    await session.helo('mail.example.test');
    expect((await session.mailFrom('alice@example.test')).kind).toBe('accept');
    await session.rcptTo('bob@example.test');
    const result = await session.data(makeMessage({ date: null }));
    expect(decisions[0]?.symbols.map((s) => s.name)).toEqual(
      expect.arrayContaining(['MISSING_DATE', 'SPF_NONE', 'SPF_HELO_NONE']),
    );
    expect(result.message.headers.get('authentication-results')).toMatch(/spf=none/);
  });
});

describe('option validation', () => {
  const bad: [unknown, string][] = [
    [{ actions: { tag: 5, reject: 4 } }, 'actions.reject'],
    [{ scores: { MISSING_DATES: 1 } }, 'scores.MISSING_DATES'],
    [{ scores: { RSPAMD: 2 } }, 'scores.RSPAMD'],
    [{ dnsbl: { zones: [{ zone: 'not a zone' }] } }, 'dnsbl.zones[0].zone'],
    [
      { dnsbl: { zones: [{ zone: 'bl.test', codes: { '10.0.0.2': {} } }] } },
      'dnsbl.zones[0].codes["10.0.0.2"]',
    ],
    [{ greylist: { allowNetworks: ['192.0.2.0/33'] } }, 'greylist.allowNetworks[0]'],
    [{ greylist: { redis: 'localhost:6379' } }, 'greylist.redis'],
    [{ rspamd: { url: 'ftp://x' } }, 'rspamd.url'],
    [{ spamd: { port: 70000 } }, 'spamd.port'],
    [{ dns: { servers: ['resolver.example'] } }, 'dns.servers[0]'],
    [{ replies: { reject: 'two\r\nlines' } }, 'replies.reject'],
    [{ spamassassin: {} }, 'spamassassin'],
  ];

  it.each(bad)('%j fails naming %s', (options, field) => {
    let error: unknown;
    try {
      spamFilter(options as SpamOptions);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PluginOptionError);
    expect((error as PluginOptionError).field).toBe(field);
    expect((error as PluginOptionError).message).toMatch(/^plugin spam: option /);
  });

  it('accepts no options at all', () => {
    expect(spamFilter().name).toBe('spam');
  });
});
