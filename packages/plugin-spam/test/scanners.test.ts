// The rspamd (/checkv2) and spamd (SPAMC/SPAMD) clients against real daemons started by the test,
// their timeouts against a silent TCP peer (accepts, never answers), failing open and closed, and
// their limits against a hostile one: endless, trickled and oversized replies, a scanner that stops
// reading, and messages streamed byte for byte as announced.
import { Readable } from 'node:stream';
import { Headers, type MessageView } from '@tern/plugin-api';
import { MessageContent } from '@tern/plugin-api/host';
import { testPlugins } from '@tern/plugin-api/testing';
import { freePort, startDnsServer, type TestDns, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rspamdOptionsSchema } from '../src/checks/rspamd.js';
import { spamdOptionsSchema } from '../src/checks/spamd.js';
import {
  GTUBE,
  rspamdResult,
  type SpamDecision,
  type SpamOptions,
  spamdResult,
  spamFilter,
} from '../src/index.js';
import { messageBytes } from '../src/message-bytes.js';
import {
  parseSpamdReply,
  type ScanEnvelope,
  type ScanResult,
  scanWithRspamd,
  scanWithSpamd,
} from '../src/scanners.js';
import {
  type Daemon,
  type Hostility,
  startHostilePeer,
  startRspamd,
  startSilentPeer,
  startSpamd,
} from './daemons.js';
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
  session: ReturnType<typeof testPlugins>;
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
    session,
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

// ---- limits and streaming ---------------------------------------------------------------------

const KiB = 1024;
const MiB = 1024 * KiB;
const envelope: ScanEnvelope = {
  ip: '198.51.100.23',
  helo: 'sender.example.test',
  mailFrom: 'alice@example.test',
  recipients: ['bob@example.test'],
  user: undefined,
  mta: 'mx.tern.test',
  logTag: 'limits',
};

/** Scans `message` with one client, straight, against a peer on `port`. */
async function scanDirect(
  protocol: 'rspamd' | 'spamd',
  port: number,
  message: MessageView,
  limits: { timeoutMs?: number; maxBytes?: number; maxReplyBytes?: number } = {},
): Promise<{ result: ScanResult; ms: number }> {
  const started = Date.now();
  const result =
    protocol === 'rspamd'
      ? await scanWithRspamd(
          rspamdOptionsSchema.parse({ url: `http://127.0.0.1:${port}`, ...limits }),
          messageBytes(message),
          envelope,
        )
      : await scanWithSpamd(spamdOptionsSchema.parse({ port, ...limits }), messageBytes(message));
  return { result, ms: Date.now() - started };
}

/** A message whose body of `size` bytes is made only as the reader pulls it. */
function lazyMessage(size: number): { message: MessageView; produced: () => number } {
  let produced = 0;
  const chunk = Buffer.alloc(64 * KiB, 'a');
  const body = (): Readable =>
    Readable.from(
      (function* () {
        for (let n = 0; n < size; n += chunk.length) {
          produced += chunk.length;
          yield chunk;
        }
      })(),
    );
  const headers = Headers.parse('From: alice@example.test\r\nSubject: large\r\n');
  const stream = (): Readable => {
    throw new Error('the scanners stream the header block and body() themselves');
  };
  const buffer = (): Promise<Buffer> => {
    throw new Error('the scanners never hold the whole message');
  };
  return { message: { headers, bodySize: size, body, stream, buffer }, produced: () => produced };
}

const peers: { stop(): Promise<void> }[] = [];
async function hostile(protocol: 'rspamd' | 'spamd', hostility: Hostility) {
  const peer = await startHostilePeer(protocol, hostility);
  peers.push(peer);
  return peer;
}
afterAll(async () => {
  await Promise.all(peers.map((p) => p.stop()));
});

const small = (): MessageContent => MessageContent.parse(makeMessage());

describe.each(['rspamd', 'spamd'] as const)('%s client against a hostile scanner (real TCP)', (protocol) => {
  it('an endless reply fails at maxReplyBytes, long before the deadline, and the connection is closed', async () => {
    const peer = await hostile(protocol, 'endless');
    const { result, ms } = await scanDirect(protocol, peer.port, small(), {
      timeoutMs: 20_000,
      maxReplyBytes: 64 * KiB,
    });
    expect(result).toEqual({
      status: 'failed',
      reason: `${protocol}: reply larger than maxReplyBytes 65536`,
    });
    expect(ms).toBeLessThan(5000);
    await waitFor(() => peer.closed() === 1, 5000);
    // The peer writes only as the client reads: what it got out is socket buffers, not the 20 s of reply.
    expect(peer.sent()).toBeLessThan(16 * MiB);
  });

  it('a reply trickled a byte at a time fails at the deadline', async () => {
    const peer = await hostile(protocol, 'trickle');
    const { result, ms } = await scanDirect(protocol, peer.port, small(), { timeoutMs: 600 });
    expect(result).toEqual({ status: 'failed', reason: `${protocol}: no answer within 600 ms` });
    expect(ms).toBeGreaterThanOrEqual(590);
    expect(ms).toBeLessThan(5000);
    expect(peer.sent()).toBeGreaterThan(3); // it did answer, slowly
    await waitFor(() => peer.closed() === 1, 5000);
  });

  it('sends the header block, an empty line and the body, exactly as many bytes as announced', async () => {
    const peer = await hostile(protocol, 'record');
    const body = ['first chunk\r\n', 'x'.repeat(100_000), '\r\nlast line\r\n'].map((t) => Buffer.from(t));
    const message = new MessageContent(
      Headers.parse('From: alice@example.test\r\nSubject: chunks\r\n'),
      body,
    );
    const { result } = await scanDirect(protocol, peer.port, message);
    expect(result).toMatchObject({ status: 'scanned', score: 1.5, symbols: ['TERN_FAKE'] });
    const request = peer.requests()[0] ?? Buffer.alloc(0);
    const headEnd = request.indexOf('\r\n\r\n') + 4;
    const announced = /content-length: *(\d+)/i.exec(request.subarray(0, headEnd).toString('latin1'))?.[1];
    const expected = message.toBuffer();
    expect(Number(announced)).toBe(expected.length);
    expect(request.subarray(headEnd).equals(expected)).toBe(true);
  });

  it('reads the body only as fast as the scanner takes it (the message is streamed, not collected)', async () => {
    const peer = await hostile(protocol, 'stall');
    const { message, produced } = lazyMessage(64 * MiB);
    const { result } = await scanDirect(protocol, peer.port, message, {
      timeoutMs: 1500,
      maxBytes: 128 * MiB,
    });
    expect(result).toEqual({ status: 'failed', reason: `${protocol}: no answer within 1500 ms` });
    expect(peer.requests()[0]?.length).toBeGreaterThanOrEqual(64 * KiB);
    // A client that gathered the message first would have made all 64 MiB before sending any.
    expect(produced()).toBeLessThan(16 * MiB);
  });
});

describe('scanner limits through the filter', () => {
  it('rspamd: a reply announcing 1 GiB fails at once, without waiting for it', async () => {
    const peer = await hostile('rspamd', 'huge-length');
    const { result, ms } = await scanDirect('rspamd', peer.port, small(), { timeoutMs: 20_000 });
    expect(result).toEqual({
      status: 'failed',
      reason: 'rspamd: reply of 1073741824 bytes over maxReplyBytes 1048576',
    });
    expect(ms).toBeLessThan(5000);
  });

  it('an oversized reply is a scanner failure under the failure policy: 451 when closed, SCANNER_UNAVAILABLE when open', async () => {
    const peer = await hostile('spamd', 'endless');
    const closed = await scan(
      { spamd: { port: peer.port, failure: 'closed', maxReplyBytes: 4096 } },
      makeMessage(),
    );
    expect([closed.verdict, closed.reply]).toEqual([
      'tempfail',
      '451 4.7.1 Message deferred, please try again later',
    ]);
    expect(closed.decision?.reason).toBe('spamd failed: spamd: reply larger than maxReplyBytes 4096');
    const open = await scan({ spamd: { port: peer.port, maxReplyBytes: 4096 } }, makeMessage());
    expect(open.verdict).toBe('continue');
    expect(open.decision?.symbols).toEqual([
      { name: 'SCANNER_UNAVAILABLE', score: 0, detail: 'spamd: spamd: reply larger than maxReplyBytes 4096' },
    ]);
  });

  it('a message over maxBytes is not sent: published as skipped, too big, and decided without it', async () => {
    const rspamdPeer = await hostile('rspamd', 'record');
    const spamdPeer = await hostile('spamd', 'record');
    const raw = makeMessage({ body: `${'y'.repeat(2000)}\r\n` });
    const r = await scan(
      {
        rspamd: { url: `http://127.0.0.1:${rspamdPeer.port}`, maxBytes: 1000, failure: 'closed' },
        spamd: { port: spamdPeer.port, maxBytes: 1000, failure: 'closed' },
      },
      raw,
    );
    expect(r.verdict).toBe('continue');
    const size = Buffer.byteLength(raw);
    const skipped = { status: 'skipped', reason: 'too-big', size, maxBytes: 1000 };
    expect(r.session.results.get(rspamdResult)).toEqual(skipped);
    expect(r.session.results.get(spamdResult)).toEqual(skipped);
    expect(r.decision?.scanners).toEqual({ rspamd: skipped, spamd: skipped });
    expect(r.logs.filter((l) => l.message === 'scanner skipped: message too big')).toHaveLength(2);
    expect(rspamdPeer.connections() + spamdPeer.connections()).toBe(0);
  });
});

describe('real daemons: a large message streams whole', () => {
  it('rspamd and spamd both see the last line of a 600 KB message', async () => {
    const raw = makeMessage({
      body: `${'lorem ipsum dolor sit amet\r\n'.repeat(22_000)}tern-tail-marker\r\n`,
    });
    expect(raw.length).toBeGreaterThan(600_000);
    const r = await scan(
      {
        rspamd: { url: `http://127.0.0.1:${rspamd.port}` },
        spamd: { port: spamd.port, maxBytes: 1_000_000, timeoutMs: 30_000 },
      },
      raw,
    );
    const { rspamd: viaRspamd, spamd: viaSpamd } = r.decision?.scanners ?? {};
    expect(viaRspamd?.status, rspamd.output()).toBe('scanned');
    expect(viaSpamd?.status, spamd.output()).toBe('scanned');
    expect(viaRspamd?.status === 'scanned' && viaRspamd.symbols).toContain('TERN_TAIL');
    expect(viaSpamd?.status === 'scanned' && viaSpamd.symbols).toContain('TERN_TAIL');
  }, 60_000);
});
