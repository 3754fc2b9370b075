// The SMTP/LMTP conversation itself, seen on the wire through a recording relay in front of real sinks.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SmtpSink, startSmtpSink, waitFor } from '@tern/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function sinkWithTap(
  options: Parameters<typeof startSmtpSink>[0] = {},
  tapPath?: string,
): Promise<{ sink: SmtpSink; tap: WireTap }> {
  const sink = await startSmtpSink(options);
  cleanups.push(() => sink.stop());
  const tap = await startWireTap({ upstreamPort: sink.port, ...(tapPath ? { path: tapPath } : {}) });
  cleanups.push(() => tap.stop());
  return { sink, tap };
}

/** A deliverer whose every domain goes to the tap (a static '*' route, no DNS). */
function viaTap(tap: WireTap, extra: Partial<DelivererOptions> = {}): Deliverer {
  const d = createDeliverer({
    hostname: 'out.tern.test',
    routes: { '*': { type: 'smtp', host: '127.0.0.1', port: tap.port } },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    ...extra,
  });
  cleanups.push(() => d.close());
  return d;
}

/** The client chunk that carried MAIL FROM. */
function mailChunk(tap: WireTap): string {
  const chunk = tap.chunks.find((c) => c.dir === 'c2s' && c.data.toString('latin1').includes('MAIL FROM:'));
  return chunk?.data.toString('latin1') ?? '';
}

describe('PIPELINING', () => {
  it('sends MAIL, every RCPT and DATA in one go when the server offers it', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['a@x.test', 'b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(mailChunk(tap)).toBe(
      'MAIL FROM:<sender@origin.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n',
    );
    // The message waits for the 354, then goes out with its final dot in one write.
    const afterMail = tap.chunks.slice(
      tap.chunks.findIndex((c) => c.data.toString('latin1').includes('MAIL FROM')),
    );
    const message = afterMail.find(
      (c) => c.dir === 'c2s' && c.data.toString('latin1').includes('Subject: test'),
    );
    expect(message?.data.toString('latin1')).toBe(`${SIMPLE_MESSAGE}.\r\n`);
    expect((await sink.waitFor(1))[0]?.rcptTo).toEqual(['a@x.test', 'b@x.test']);
  });

  it('sends no message after a pipelined DATA when every recipient was refused, and keeps the connection', async () => {
    const { sink, tap } = await sinkWithTap({
      rcptReply: (address) =>
        address.startsWith('nobody@') ? { code: 550, message: '5.1.1 No such user' } : undefined,
    });
    const d = viaTap(tap);
    const refused = await d.deliver(makeJob(['nobody@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(refused.recipients.map((r) => [r.result, r.reply.code, r.reply.enhanced])).toEqual([
      ['failed', 550, '5.1.1'],
    ]);
    // smtp-server refused the DATA (no recipient): the session is in step and serves the next message.
    const next = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(next.recipients[0]?.result).toBe('delivered');
    await sink.waitFor(1);
    expect(sink.messages).toHaveLength(1);
    expect(tap.connections).toBe(1);
    expect(tap.clientText(1).match(/Subject: test/g)).toHaveLength(1);
  });

  it('drops the connection, sending nothing, when a server says 354 to DATA with no recipient accepted', async () => {
    const sink = await startSmtpSink({
      rcptReply: (address) =>
        address.startsWith('nobody@') ? { code: 550, message: '5.1.1 No such user' } : undefined,
    });
    cleanups.push(() => sink.stop());
    // A broken server: it invites the message although it took no recipient.
    const tap = await startWireTap({
      upstreamPort: sink.port,
      rewriteServer: (text) => text.replace(/^503 [^\r\n]*\r\n/m, '354 go ahead\r\n'),
    });
    cleanups.push(() => tap.stop());
    const d = viaTap(tap);
    const refused = await d.deliver(makeJob(['nobody@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(refused.recipients.map((r) => [r.result, r.reply.code])).toEqual([['failed', 550]]);
    expect(tap.clientText(1)).not.toContain('Subject: test');
    const next = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(next.recipients[0]?.result).toBe('delivered');
    expect(tap.connections).toBe(2);
  });

  it('waits for each reply when the server does not offer it', async () => {
    const { sink, tap } = await sinkWithTap({ hidePIPELINING: true });
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['a@x.test', 'b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(mailChunk(tap)).toBe('MAIL FROM:<sender@origin.test>\r\n');
    // Every command comes only after the reply to the one before: chunks alternate client/server.
    const after = tap.chunks.slice(
      tap.chunks.findIndex((c) => c.data.toString('latin1').startsWith('MAIL FROM')),
    );
    const dirs = after.slice(0, 6).map((c) => c.dir);
    expect(dirs).toEqual(['c2s', 's2c', 'c2s', 's2c', 'c2s', 's2c']);
    expect(sink.messages).toHaveLength(1);
  });

  it('reads every pipelined reply even when MAIL is refused, and fails all recipients with it', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    const report = await d.deliver(
      makeJob(['a@x.test', 'b@x.test'], { mailFrom: 'bad sender@origin.test' }),
      storedMessage(SIMPLE_MESSAGE),
    );
    // smtp-server refuses the unparsable MAIL FROM (5xx); the RCPTs then get 503, which must not count.
    expect(report.recipients.every((r) => r.result === 'failed' && r.reply.code >= 500)).toBe(true);
    expect(new Set(report.recipients.map((r) => r.reply.text)).size).toBe(1);
    expect(sink.messages).toHaveLength(0);
  });
});

describe('broken conversations', () => {
  it('defers with 4.4.2 when the reply after the final dot never comes, and drops the connection', async () => {
    const sink = await startSmtpSink();
    cleanups.push(() => sink.stop());
    // Swallow the server's answer to the end of data: the client is left waiting.
    const tap = await startWireTap({
      upstreamPort: sink.port,
      rewriteServer: (text) => text.replace(/^250 OK: message queued.*\r\n/m, ''),
    });
    cleanups.push(() => tap.stop());
    const d = viaTap(tap, { timeouts: { dataEndMs: 300 } });
    const report = await d.deliver(makeJob(['a@x.test', 'b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => [r.result, r.reply.code, r.reply.enhanced])).toEqual([
      ['deferred', 451, '4.4.2'],
      ['deferred', 451, '4.4.2'],
    ]);
    expect(report.recipients[0]?.reply.text).toMatch(
      /timed out after 300 ms waiting for the reply to end of data/,
    );
    // The server did get the message: this is the duplicate that at-least-once accepts.
    await sink.waitFor(1);
    // A session left out of step is never reused.
    await d.deliver(makeJob(['c@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(tap.connections).toBe(2);
  });

  it('stops at a 421, defers every open recipient with it, and never reuses the connection', async () => {
    const { sink, tap } = await sinkWithTap({
      rcptReply: (address) =>
        address.startsWith('busy@') ? { code: 421, message: '4.3.2 Shutting down' } : undefined,
    });
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['ok@x.test', 'busy@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => [r.result, r.reply.code, r.reply.enhanced])).toEqual([
      ['deferred', 421, '4.3.2'],
      ['deferred', 421, '4.3.2'],
    ]);
    // DATA went in the pipelined group, but no message follows a 421 (nor any final dot).
    expect(tap.clientText(1)).not.toContain('Subject: test');
    expect(tap.clientText(1)).not.toContain('\r\n.\r\n');
    const again = await d.deliver(makeJob(['again@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(again.recipients[0]?.result).toBe('delivered');
    await sink.waitFor(1);
    expect(tap.connections).toBe(2);
  });
});

describe('connection reuse', () => {
  it('sends two messages over one connection with RSET between them', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    const first = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    const second = await d.deliver(makeJob(['b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect([first.recipients[0]?.result, second.recipients[0]?.result]).toEqual(['delivered', 'delivered']);
    await sink.waitFor(2);
    expect(sink.connections).toBe(1);
    expect(tap.connections).toBe(1);
    const text = tap.clientText(1);
    expect(text.match(/^EHLO /gm)).toHaveLength(1);
    expect(text).toMatch(
      /\r\n\.\r\nRSET\r\nMAIL FROM:<sender@origin\.test>\r\nRCPT TO:<b@x\.test>\r\nDATA\r\n/,
    );
    // With PIPELINING, reuse costs no round trip: RSET travels in the write that carries MAIL and RCPT.
    const reuseChunk = tap.chunks.find(
      (c) => c.dir === 'c2s' && c.data.toString('latin1').includes('RCPT TO:<b@x.test>'),
    );
    expect(reuseChunk?.data.toString('latin1')).toBe(
      'RSET\r\nMAIL FROM:<sender@origin.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n',
    );
    expect(new Set(sink.messages.map((m) => m.sessionId)).size).toBe(1);
  });

  it('sends again on a fresh connection when a pooled one fails its RSET', async () => {
    let refuseReset = false;
    const sink = await startSmtpSink();
    cleanups.push(() => sink.stop());
    // The server answers the reuse RSET with 421, as one that timed the idle connection out would.
    const tap = await startWireTap({
      upstreamPort: sink.port,
      rewriteServer: (text) =>
        refuseReset ? text.replace(/^250 (2\.0\.0 )?Flushed\r\n/m, '421 4.4.2 Idle too long\r\n') : text,
    });
    cleanups.push(() => tap.stop());
    const d = viaTap(tap, { pool: { idleMs: 60_000 } });
    await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    refuseReset = true;
    const report = await d.deliver(makeJob(['b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    await sink.waitFor(2);
    expect(tap.connections).toBe(2);
    expect(sink.messages.map((m) => m.rcptTo)).toEqual([['a@x.test'], ['b@x.test']]);
  });

  it('opens a new connection once maxMessagesPerConnection is reached, and says QUIT', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap, { pool: { maxMessagesPerConnection: 1 } });
    await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    await d.deliver(makeJob(['b@x.test']), storedMessage(SIMPLE_MESSAGE));
    await sink.waitFor(2);
    expect(tap.connections).toBe(2);
    expect(tap.clientText(1).endsWith('QUIT\r\n')).toBe(true);
  });

  it('replaces a pooled connection the server has closed', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap, { pool: { idleMs: 60_000 } });
    await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    await tap.dropAll();
    const report = await d.deliver(makeJob(['b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    await sink.waitFor(2);
    expect(tap.connections).toBe(2);
  });

  it('closes idle connections after idleMs', async () => {
    const { tap } = await sinkWithTap();
    const d = viaTap(tap, { pool: { idleMs: 100 } });
    await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    const handedBack = Date.now();
    await waitFor(() => tap.clientText(1).endsWith('QUIT\r\n'), 5000);
    // Not before its idle time ran out (the pool's one timer is due when the oldest runs out).
    expect(Date.now() - handedBack).toBeGreaterThanOrEqual(95);
  });

  it('keeps reusing one connection past 100 messages (no count limit by default)', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    for (let i = 0; i < 120; i++) {
      const report = await d.deliver(makeJob([`r${i}@x.test`]), storedMessage(SIMPLE_MESSAGE));
      expect(report.recipients[0]?.result).toBe('delivered');
    }
    await sink.waitFor(120);
    expect(tap.connections).toBe(1);
  });

  it('opens a new connection once a pooled one is maxConnectionAgeMs old, and says QUIT', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap, { pool: { maxConnectionAgeMs: 0 } });
    await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    await d.deliver(makeJob(['b@x.test']), storedMessage(SIMPLE_MESSAGE));
    await sink.waitFor(2);
    expect(tap.connections).toBe(2);
    expect(tap.clientText(1).endsWith('QUIT\r\n')).toBe(true);
  });
});

describe("a fixed hop's TLS plan, kept between messages", () => {
  it("still follows the policy entry of each message's domain through the same hop", async () => {
    // No STARTTLS on this server: `encrypt` for one domain must keep its mail back, every time,
    // while the same hop (one '*' route object) carries the other domain's mail in plain text.
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap, { tlsPolicy: { 'locked.test': 'encrypt' } });
    for (let round = 0; round < 2; round++) {
      const open = await d.deliver(makeJob([`r${round}@open.test`]), storedMessage(SIMPLE_MESSAGE));
      expect(open.recipients[0]?.result).toBe('delivered');
      expect(open.tls?.policy).not.toBe('encrypt');
      const locked = await d.deliver(makeJob([`r${round}@locked.test`]), storedMessage(SIMPLE_MESSAGE));
      expect(locked.recipients[0]?.result).toBe('deferred');
      expect(locked.tls?.policy).toBe('encrypt');
    }
    await sink.waitFor(2);
    expect(sink.messages.flatMap((m) => m.rcptTo)).toEqual(['r0@open.test', 'r1@open.test']);
  });
});

describe('DATA encoding on the wire', () => {
  it('dot-stuffs lines starting with a dot and turns bare LF into CRLF', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    const stored = 'Subject: dots\n\n.hidden line\nplain\r\n..two dots\n.\nlast line without break';
    // Small chunks, so line ends and dots fall on chunk borders too.
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(stored, 3));
    expect(report.recipients[0]?.result).toBe('delivered');
    const wire = tap.clientText(1);
    const data = wire.slice(wire.indexOf('DATA\r\n') + 6);
    expect(data).toBe(
      'Subject: dots\r\n\r\n..hidden line\r\nplain\r\n...two dots\r\n..\r\nlast line without break\r\n.\r\n',
    );
    expect(data.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    const [msg] = await sink.waitFor(1);
    expect(msg?.body.toString()).toBe(
      '.hidden line\r\nplain\r\n..two dots\r\n.\r\nlast line without break\r\n',
    );
  });
});

describe('8BITMIME, SMTPUTF8 and SIZE', () => {
  const eightBit = 'Subject: caf\u00e9\r\n\r\nS\u00fc\u00df.\r\n';

  it('sends 8-bit content with BODY=8BITMIME to a server that offers it', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(eightBit));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect((await sink.waitFor(1))[0]?.mailArgs).toMatchObject({ BODY: '8BITMIME' });
    expect((await sink.waitFor(1))[0]?.raw.toString('utf8')).toBe(eightBit);
  });

  it('fails 8-bit content with 5.6.3 to a server without 8BITMIME, before MAIL', async () => {
    const { sink, tap } = await sinkWithTap({ hide8BITMIME: true });
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(eightBit));
    expect(report.recipients[0]).toMatchObject({ result: 'failed', reply: { code: 554, enhanced: '5.6.3' } });
    expect(tap.clientText()).not.toContain('MAIL FROM');
    expect(sink.messages).toHaveLength(0);
  });

  it('fails a message declared 8BITMIME to such a server even when its bytes are 7-bit', async () => {
    const { tap } = await sinkWithTap({ hide8BITMIME: true });
    const d = viaTap(tap);
    const report = await d.deliver(
      makeJob(['a@x.test'], { body: '8BITMIME' }),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.recipients[0]).toMatchObject({ result: 'failed', reply: { enhanced: '5.6.3' } });
  });

  it('sends 7-bit content to a server without 8BITMIME, without a BODY parameter', async () => {
    const { sink, tap } = await sinkWithTap({ hide8BITMIME: true });
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    expect((await sink.waitFor(1))[0]?.mailArgs.BODY).toBeUndefined();
  });

  it('sends SMTPUTF8 for a non-ASCII address to a server that offers it', async () => {
    const { sink, tap } = await sinkWithTap();
    const d = viaTap(tap);
    const report = await d.deliver(makeJob(['j\u00f6rg@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('delivered');
    const [msg] = await sink.waitFor(1);
    expect(msg?.mailArgs).toMatchObject({ SMTPUTF8: true });
    expect(msg?.rcptTo).toEqual(['j\u00f6rg@x.test']);
  });

  it('fails with 5.6.7 when SMTPUTF8 is needed and not offered (flag or non-ASCII address)', async () => {
    const { sink, tap } = await sinkWithTap({ hideSMTPUTF8: true });
    const d = viaTap(tap);
    const flagged = await d.deliver(makeJob(['a@x.test'], { smtputf8: true }), storedMessage(SIMPLE_MESSAGE));
    expect(flagged.recipients[0]).toMatchObject({
      result: 'failed',
      reply: { code: 554, enhanced: '5.6.7' },
    });
    const unicode = await d.deliver(makeJob(['j\u00f6rg@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(unicode.recipients[0]).toMatchObject({ result: 'failed', reply: { enhanced: '5.6.7' } });
    expect(tap.clientText()).not.toContain('MAIL FROM');
    expect(sink.messages).toHaveLength(0);
  });

  it("declares SIZE and fails with 5.3.4 before MAIL when the message exceeds the server's limit", async () => {
    const { sink, tap } = await sinkWithTap({ size: 200 });
    const d = viaTap(tap);
    const small = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(small.recipients[0]?.result).toBe('delivered');
    // RFC 1870 §3: the message's bytes, without the doubled dots and the terminating `.` line.
    expect((await sink.waitFor(1))[0]?.mailArgs.SIZE).toBe(String(SIMPLE_MESSAGE.length));
    const big = await d.deliver(
      makeJob(['b@x.test']),
      storedMessage(`${SIMPLE_MESSAGE}${'x'.repeat(300)}\r\n`),
    );
    expect(big.recipients[0]).toMatchObject({ result: 'failed', reply: { code: 552, enhanced: '5.3.4' } });
    expect(tap.clientText().match(/MAIL FROM/g)).toHaveLength(1);
  });
});

describe('DSN parameters (RFC 3461)', () => {
  const dsnJob = () => {
    // Envelopes hold ENVID and ORCPT decoded (as intake got them from smtp-server); on the wire they are xtext.
    const job = makeJob(['a@x.test', 'b@x.test'], { ret: 'HDRS', envid: 'QUEUE+42' });
    return {
      ...job,
      recipients: [
        {
          address: 'a@x.test',
          status: 'pending' as const,
          notify: ['SUCCESS', 'FAILURE'] as const,
          orcpt: 'rfc822;a+x@x.test',
        },
        { address: 'b@x.test', status: 'pending' as const, orcpt: 'no address type' },
      ],
    };
  };

  it('passes RET, ENVID, NOTIFY and ORCPT on to a server that offers DSN, dropping malformed ones', async () => {
    const sink = await startSmtpSink();
    cleanups.push(() => sink.stop());
    const tap = await startWireTap({
      upstreamPort: sink.port,
      rewriteServer: (text) => text.replace(/^250 (AUTH|SMTPUTF8)/m, '250-DSN\r\n250 $1'),
    });
    cleanups.push(() => tap.stop());
    const d = viaTap(tap);
    const report = await d.deliver(dsnJob(), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(mailChunk(tap)).toBe(
      'MAIL FROM:<sender@origin.test> RET=HDRS ENVID=QUEUE+2B42\r\n' +
        'RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@x.test\r\n' +
        'RCPT TO:<b@x.test>\r\nDATA\r\n',
    );
  });

  it('sends none of them to a server without DSN', async () => {
    const { tap } = await sinkWithTap();
    const d = viaTap(tap);
    await d.deliver(dsnJob(), storedMessage(SIMPLE_MESSAGE));
    expect(mailChunk(tap)).toBe(
      'MAIL FROM:<sender@origin.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n',
    );
  });
});

describe('LMTP', () => {
  it('reports one reply per recipient after DATA', async () => {
    const sink = await startSmtpSink({
      lmtp: true,
      dataReply: (_msg, rcpt) => {
        if (rcpt.startsWith('quota@')) return { code: 452, message: '4.2.2 Over quota' };
        if (rcpt.startsWith('gone@')) return { code: 550, message: '5.1.1 Unknown mailbox' };
        return undefined;
      },
    });
    cleanups.push(() => sink.stop());
    const d = createDeliverer({
      hostname: 'out.tern.test',
      local: { domains: ['local.test'], lmtp: { host: '127.0.0.1', port: sink.port } },
      routes: { '*': { type: 'smtp', host: '127.0.0.9', port: 1 } },
    });
    cleanups.push(() => d.close());
    const report = await d.deliver(
      makeJob(['ok@local.test', 'quota@local.test', 'gone@local.test']),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.hop).toEqual({ type: 'lmtp', host: '127.0.0.1', port: sink.port });
    expect(report.recipients.map((r) => [r.address, r.result, r.reply.code, r.reply.enhanced])).toEqual([
      ['ok@local.test', 'delivered', 250, '2.0.0'],
      ['quota@local.test', 'deferred', 452, '4.2.2'],
      ['gone@local.test', 'failed', 550, '5.1.1'],
    ]);
    const [msg] = await sink.waitFor(1);
    expect(msg?.accepted).toEqual(['ok@local.test']);
  });

  it('talks LMTP over a UNIX socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-lmtp-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'lmtp.sock');
    const { sink, tap } = await sinkWithTap({ lmtp: true }, socketPath);
    const d = createDeliverer({
      hostname: 'out.tern.test',
      routes: { 'local.test': { type: 'lmtp', path: socketPath } },
    });
    cleanups.push(() => d.close());
    const report = await d.deliver(makeJob(['a@local.test', 'b@local.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(report.remoteMta).toBe(`localhost[${socketPath}]`);
    expect(tap.clientText()).toMatch(/^LHLO out\.tern\.test\r\n/);
    expect((await sink.waitFor(1))[0]?.accepted).toEqual(['a@local.test', 'b@local.test']);
  });
});

describe('maildir next hop', () => {
  it('writes the message (after beforeSend) into the mailbox folder of each recipient', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tern-maildir-'));
    cleanups.push(async () => rmSync(root, { recursive: true, force: true }));
    const d = createDeliverer({
      hostname: 'out.tern.test',
      routes: { 'local.test': { type: 'maildir', path: root } },
    });
    cleanups.push(() => d.close());
    const report = await d.deliver(
      makeJob(['alice@local.test', '../etc@local.test']),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(report.recipients.map((r) => [r.result, r.reply.enhanced])).toEqual([
      ['delivered', '2.0.0'],
      ['failed', '5.1.1'],
    ]);
    const files = readdirSync(join(root, 'alice', 'new'));
    expect(files).toHaveLength(1);
    const stored = readFileSync(join(root, 'alice', 'new', files[0] ?? ''), 'utf8');
    expect(stored).toContain('Delivered-To: alice@local.test\n');
    expect(stored).toContain('\nHello.\n');
  });
});
