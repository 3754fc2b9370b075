// The rspamd (/checkv2) and spamd (SPAMC/SPAMD) clients against real daemons started by the test,
// and their timeouts against a silent TCP peer (accepts, never answers), failing open and closed.
import { testPlugins } from '@tern/plugin-api';
import { freePort, startDnsServer, type TestDns, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GTUBE, type SpamDecision, type SpamOptions, spamFilter } from '../src/index.js';
import { parseSpamdReply } from '../src/scanners.js';
import { type Daemon, startRspamd, startSilentPeer, startSpamd } from './daemons.js';
import { makeMessage } from './helpers.js';

let dns: TestDns;
let rspamd: Daemon;
let spamd: Daemon;
let silent: Awaited<ReturnType<typeof startSilentPeer>>;

beforeAll(async () => {
  dns = await startDnsServer({});
  [rspamd, spamd, silent] = await Promise.all([startRspamd(dns.server), startSpamd(), startSilentPeer()]);
}, 120_000);

afterAll(async () => {
  await Promise.all([rspamd?.stop(), spamd?.stop(), silent?.stop(), dns?.stop()]);
});

interface Outcome {
  decision: SpamDecision | undefined;
  verdict: string;
  reply: string | undefined;
  logs: ReturnType<typeof testPlugins>['logs'];
  ms: number;
}

async function scan(options: Partial<SpamOptions>, raw: string, user?: string): Promise<Outcome> {
  let decision: SpamDecision | undefined;
  const plugins = [
    { name: 'auth', auth: () => ({ kind: 'accept' as const }) },
    spamFilter({
      dns: { servers: [dns.server] },
      spf: { enabled: false },
      dkim: { enabled: false },
      dmarc: { enabled: false },
      heuristics: { enabled: false },
      exemptAuthenticated: false,
      onDecision: (d) => {
        decision = d;
      },
      ...options,
    }),
  ];
  const session = testPlugins(plugins, { remoteAddress: '198.51.100.23' });
  await session.connect();
  await session.helo('sender.example.test');
  if (user) await session.auth(user, 'pw');
  await session.mailFrom('alice@example.test');
  await session.rcptTo('bob@example.test');
  await session.rcptTo('carol@example.test');
  const started = Date.now();
  const result = await session.data(raw);
  const ms = Date.now() - started;
  const reply = 'reply' in result.verdict ? result.verdict.reply : undefined;
  return {
    decision,
    verdict: result.verdict.kind,
    reply: reply ? `${reply.code} ${reply.enhanced} ${reply.text}` : undefined,
    logs: session.logs,
    ms,
  };
}

const gtube = makeMessage({ subject: 'test', body: `${GTUBE}\r\n` });
const marked = makeMessage({ subject: 'tern-marker', body: 'tern-marker in the body\r\n' });

describe('rspamd client (real rspamd)', () => {
  const url = (): string => `http://127.0.0.1:${rspamd.port}`;

  it('passes the SMTP envelope in request headers (IP, From, Rcpt, Helo, User)', async () => {
    const r = await scan({ rspamd: { url: url() } }, makeMessage(), 'alice');
    const result = r.decision?.scanners.rspamd;
    expect(result?.status, rspamd.output()).toBe('scanned');
    expect(result?.status === 'scanned' && result.symbols).toContain('TERN_ENVELOPE');
    // rspamd logs every task with its symbols; the Lua rule's options show what rspamd received.
    const received =
      'TERN_ENVELOPE(0.00){ip=198.51.100.23;from=alice@example.test;rcpt=bob@example.test;rcpt=carol@example.test;helo=sender.example.test;user=alice;}';
    await waitFor(() => rspamd.output().includes(received), 5000);
  });

  it('adds rspamd score times its weight and rejects GTUBE by our thresholds', async () => {
    const r = await scan({ rspamd: { url: url(), weight: 2 } }, gtube);
    const result = r.decision?.scanners.rspamd;
    expect(result?.status, rspamd.output()).toBe('scanned');
    if (result?.status !== 'scanned') return;
    expect(result.symbols).toContain('GTUBE');
    expect(result.score).toBeGreaterThanOrEqual(15);
    expect(r.decision?.symbols.find((s) => s.name === 'RSPAMD')?.score).toBe(result.score * 2);
    expect(r.verdict).toBe('reject');
    expect(r.reply).toBe('550 5.7.1 Message rejected as spam');
  });

  it('counts a rule with a fixed score', async () => {
    const r = await scan({ rspamd: { url: url() } }, marked);
    const result = r.decision?.scanners.rspamd;
    expect(result?.status === 'scanned' && result.symbols).toContain('TERN_MARKER');
    const plain = await scan(
      { rspamd: { url: url() } },
      makeMessage({ subject: 'tern marker', body: 'x\r\n' }),
    );
    const base = plain.decision?.scanners.rspamd;
    expect(base?.status === 'scanned' && base.symbols).not.toContain('TERN_MARKER');
    expect(
      result?.status === 'scanned' && base?.status === 'scanned' && result.score - base.score,
    ).toBeCloseTo(7.5, 1);
  });

  it('fails open on a timeout: no score, a warning, SCANNER_UNAVAILABLE', async () => {
    const r = await scan(
      { rspamd: { url: `http://127.0.0.1:${silent.port}`, timeoutMs: 300 } },
      makeMessage(),
    );
    expect(r.verdict).toBe('continue');
    expect(r.ms).toBeGreaterThanOrEqual(290);
    expect(r.ms).toBeLessThan(5000);
    expect(r.decision?.symbols).toEqual([
      { name: 'SCANNER_UNAVAILABLE', score: 0, detail: 'rspamd: rspamd: no answer within 300 ms' },
    ]);
    expect(r.logs.some((l) => l.level === 'warn' && l.fields.scanner === 'rspamd')).toBe(true);
  });

  it('fails closed on a timeout when told to: 451 and nothing about the scanner in the reply', async () => {
    const r = await scan(
      { rspamd: { url: `http://127.0.0.1:${silent.port}`, timeoutMs: 300, failure: 'closed' } },
      makeMessage(),
    );
    expect(r.verdict).toBe('tempfail');
    expect(r.reply).toBe('451 4.7.1 Message deferred, please try again later');
    expect(r.decision?.reason).toBe('rspamd failed: rspamd: no answer within 300 ms');
  });

  it('fails closed when nothing listens', async () => {
    const r = await scan(
      { rspamd: { url: `http://127.0.0.1:${await freePort()}`, failure: 'closed' } },
      makeMessage(),
    );
    expect(r.verdict).toBe('tempfail');
    expect(r.decision?.reason).toMatch(/^rspamd failed: rspamd: .*ECONNREFUSED/);
  });

  it('does not send a message over maxBytes', async () => {
    const r = await scan(
      { rspamd: { url: `http://127.0.0.1:${silent.port}`, maxBytes: 100, failure: 'closed' } },
      gtube,
    );
    expect(r.verdict).toBe('continue');
    expect(r.decision?.scanners.rspamd?.status).toBe('skipped');
  });
});

describe('spamd client (real spamd)', () => {
  it('SYMBOLS: adds the SpamAssassin score and rule names; GTUBE is rejected', async () => {
    const r = await scan({ spamd: { port: spamd.port } }, gtube);
    const result = r.decision?.scanners.spamd;
    expect(result?.status, spamd.output()).toBe('scanned');
    if (result?.status !== 'scanned') return;
    expect(result.symbols).toContain('GTUBE');
    expect(result.score).toBeGreaterThanOrEqual(1000);
    expect(result.required).toBe(5);
    expect(r.decision?.symbols.find((s) => s.name === 'SPAMD')?.score).toBe(result.score);
    expect(r.verdict).toBe('reject');
  });

  it('SYMBOLS: counts a local rule with a fixed score', async () => {
    const marked1 = await scan({ spamd: { port: spamd.port } }, marked);
    const plain = await scan(
      { spamd: { port: spamd.port } },
      makeMessage({ subject: 'tern marker', body: 'x\r\n' }),
    );
    const a = marked1.decision?.scanners.spamd;
    const b = plain.decision?.scanners.spamd;
    expect(a?.status === 'scanned' && a.symbols).toContain('TERN_MARKER');
    expect(b?.status === 'scanned' && b.symbols).not.toContain('TERN_MARKER');
    expect(a?.status === 'scanned' && b?.status === 'scanned' && a.score - b.score).toBeCloseTo(7.5, 1);
  });

  it('CHECK: the score without rule names', async () => {
    const r = await scan({ spamd: { port: spamd.port, command: 'CHECK', user: 'nobody' } }, gtube);
    const result = r.decision?.scanners.spamd;
    expect(result?.status, spamd.output()).toBe('scanned');
    if (result?.status !== 'scanned') return;
    expect(result.score).toBeGreaterThanOrEqual(1000);
    expect(result.symbols).toEqual([]);
  });

  it('fails open on a timeout', async () => {
    const r = await scan({ spamd: { port: silent.port, timeoutMs: 300 } }, gtube.replace(GTUBE, 'hello'));
    expect(r.verdict).toBe('continue');
    expect(r.decision?.symbols).toEqual([
      { name: 'SCANNER_UNAVAILABLE', score: 0, detail: 'spamd: spamd: no answer within 300 ms' },
    ]);
  });

  it('fails closed on a timeout when told to', async () => {
    const r = await scan({ spamd: { port: silent.port, timeoutMs: 300, failure: 'closed' } }, makeMessage());
    expect(r.verdict).toBe('tempfail');
    expect(r.reply).toBe('451 4.7.1 Message deferred, please try again later');
    expect(r.decision?.reason).toBe('spamd failed: spamd: no answer within 300 ms');
  });

  it('both scanners add in together', async () => {
    const r = await scan(
      { rspamd: { url: `http://127.0.0.1:${rspamd.port}` }, spamd: { port: spamd.port } },
      marked,
    );
    const names = r.decision?.symbols.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['RSPAMD', 'SPAMD']));
    const sum = (r.decision?.symbols ?? []).reduce((n, s) => n + s.score, 0);
    expect(r.decision?.score).toBeCloseTo(sum, 2);
  });
});

describe('SPAMD reply parsing', () => {
  it('reads status, Spam header and symbols, and waits for a complete reply', () => {
    const full = 'SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: True ; 15.5 / 5.0\r\n\r\nGTUBE,OTHER';
    expect(parseSpamdReply(full, false)).toEqual({
      status: 'scanned',
      score: 15.5,
      required: 5,
      symbols: ['GTUBE', 'OTHER'],
    });
    expect(parseSpamdReply(full.slice(0, -3), false)).toBeUndefined();
    expect(parseSpamdReply('SPAMD/1.0 76 Bad header line: x\r\n', true)).toEqual({
      status: 'failed',
      reason: 'spamd: 76 Bad header line: x',
    });
    expect(parseSpamdReply('SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.2 / 5.0\r\n\r\n', true)).toMatchObject({
      score: -1.2,
      symbols: [],
    });
  });
});
