// A next hop that attacks its client: endless multi-line replies, replies nobody asked for, and
// servers that trickle or read so slowly that a delivery would never end. Each must end the attempt
// soon with a deferral naming the server, holding little memory, and never crash or bounce the mail.
import type { SmtpReply } from '@tern/plugin-api';
import { describe, expect, it } from 'vitest';
import { createDeliverer } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { memoryProbe } from './helpers/memory.js';
import {
  delivererFor,
  type ScriptedServer,
  type ServerConnection,
  serveScripted,
  speakSmtp,
} from './helpers/scripted-server.js';

const MiB = 2 ** 20;
/** What a flooding server offers to send: far more than any bounded client may take. */
const FLOOD_BUDGET = 64 * MiB;

const remote = (server: ScriptedServer): string => `127.0.0.1[127.0.0.1]:${server.port}`;
/** 1 KiB at a time of `line` repeated: a flood of continuation lines. */
const linesOf = (line: string): (() => string) => {
  const text = `${line}\r\n`.repeat(Math.max(1, Math.floor(1024 / (line.length + 2))));
  return () => text;
};

/**
 * One attempt against a server whose script floods (the script returns the bytes it got out). The
 * evidence that the flood was bounded: the attempt defers with 4.5.0, the server could get only a
 * few MiB of its 64 into the kernel before we closed, and our retained memory never grew by 4 MiB.
 */
async function attemptAgainstFlood(
  script: (conn: ServerConnection, sample: () => Promise<void>) => Promise<number>,
): Promise<{ reply: SmtpReply | undefined; server: ScriptedServer }> {
  const probe = await memoryProbe();
  let flooded = 0;
  const server = await serveScripted(async (conn) => {
    flooded = await script(conn, () => probe.sample());
  });
  const report = await delivererFor(server).deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
  expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { code: 451, enhanced: '4.5.0' } });
  await server.connections[0]?.closed;
  expect(flooded).toBeLessThan(8 * MiB);
  await probe.sample();
  expect(probe.peakGrowth).toBeLessThan(4 * MiB);
  return { reply: report.recipients[0]?.reply, server };
}

describe('a server that floods its client', () => {
  it('ends an endless 250- reply to EHLO at 100 lines and defers with 4.5.0', async () => {
    const { reply, server } = await attemptAgainstFlood(async (conn, sample) => {
      conn.write('220 hostile.test ESMTP\r\n');
      await conn.line();
      // Short lines, as an EHLO reply has: the line bound is met long before the byte bound.
      return conn.flood(linesOf('250-PIPELINING'), FLOOD_BUDGET, sample);
    });
    expect(reply?.text).toBe(
      `${remote(server)} broke the SMTP protocol: it sent a reply of more than 100 lines; connection closed`,
    );
  });

  it('ends an endless 220- greeting of 1 KB lines at 64 KiB and defers with 4.5.0', async () => {
    const { reply, server } = await attemptAgainstFlood((conn, sample) =>
      conn.flood(linesOf(`220-${'x'.repeat(1020)}`), FLOOD_BUDGET, sample),
    );
    expect(reply?.text).toBe(
      `${remote(server)} broke the SMTP protocol: it sent a reply of more than 65536 bytes; connection closed`,
    );
  });

  it('ends a reply of few but huge lines at 64 KiB', async () => {
    const server = await serveScripted(async (conn) => {
      conn.write('220 hostile.test ESMTP\r\n');
      await conn.line();
      // 20 lines of 32 KiB: each under the old per-line cap, together 640 KiB for one reply.
      const long = `250-${'y'.repeat(32 * 1024)}\r\n`;
      conn.write(`${long.repeat(20)}250 PIPELINING\r\n`);
      await speakSmtp(conn);
    });
    const d = delivererFor(server);
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.5.0' } });
    expect(report.recipients[0]?.reply.text).toContain('it sent a reply of more than 65536 bytes');
    expect(server.connections[0]?.data).toEqual([]);
  });

  it('closes on replies nobody asked for instead of queueing them', async () => {
    const { reply, server } = await attemptAgainstFlood(async (conn, sample) => {
      conn.write('220 hostile.test ESMTP\r\n');
      await conn.line();
      conn.write('250-hostile.test\r\n250 PIPELINING\r\n');
      // Complete, well-formed replies, to commands never sent.
      return conn.flood(() => '250 2.0.0 nobody asked\r\n', FLOOD_BUDGET, sample);
    });
    expect(reply?.text).toBe(
      `${remote(server)} broke the SMTP protocol: it sent a reply nobody asked for ("250 2.0.0 nobody asked"); connection closed`,
    );
    // Nothing of the transaction was taken for an answer.
    expect(server.connections[0]?.data).toEqual([]);
  });

  it('takes a 421 a server sends unasked before closing as its last word', async () => {
    const server = await serveScripted(async (conn) => {
      conn.write('220 hostile.test ESMTP\r\n');
      await conn.line();
      conn.write('250-hostile.test\r\n250 PIPELINING\r\n421 4.3.2 shutting down\r\n');
      conn.socket.end();
    });
    const d = delivererFor(server);
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 421, enhanced: '4.3.2', text: 'shutting down' },
    });
  });
});

describe('a server that trickles or stalls', () => {
  it('holds each reply to a deadline that bytes trickling in do not move', async () => {
    let trickled = 0;
    const server = await serveScripted(async (conn) => {
      conn.write('220 hostile.test ESMTP\r\n');
      await conn.line();
      // A valid, endless EHLO reply, one byte every 10 ms: never more than the line bounds allow.
      const text = '250-TRICKLE\r\n';
      while (!conn.isClosed) {
        conn.write(text[trickled % text.length] ?? '');
        trickled++;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    });
    const d = delivererFor(server, { timeouts: { commandMs: 600 } });
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.4.1' } });
    expect(report.recipients[0]?.reply.text).toContain(
      'timed out after 600 ms waiting for the reply to EHLO',
    );
    // Bytes kept coming all along; an idle timer would have been reset by every one of them.
    expect(trickled).toBeGreaterThan(20);
  });

  it('holds the STARTTLS handshake to a deadline when the server trickles it', async () => {
    let trickled = 0;
    const server = await serveScripted(async (conn) => {
      conn.write('220 hostile.test ESMTP\r\n');
      await conn.line();
      conn.write('250-hostile.test\r\n250 STARTTLS\r\n');
      await conn.line();
      conn.write('220 2.0.0 go ahead\r\n');
      // The start of a TLS handshake record announcing 16 KiB, whose body then comes a byte at a time.
      conn.write(Buffer.from([0x16, 0x03, 0x03, 0x40, 0x00]));
      while (!conn.isClosed) {
        conn.write(Buffer.from([0x02]));
        trickled++;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    });
    const d = delivererFor(server, {
      routes: { '*': { type: 'smtp', host: '127.0.0.1', port: server.port, tls: 'require' } },
      timeouts: { commandMs: 600 },
    });
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'deferred', reply: { enhanced: '4.7.5' } });
    expect(report.recipients[0]?.reply.text).toContain('TLS handshake timed out after 600 ms');
    expect(trickled).toBeGreaterThan(20);
  });

  it('ends a DATA phase the server takes too slowly, before the final dot', async () => {
    let readFreely = (): void => {};
    const server = await serveScripted((conn) =>
      speakSmtp(conn, {
        // One socket read every 20 ms: a few MB/s on loopback, so the whole message would take 10 s.
        onData: (c) => {
          readFreely = c.readSlowly(20);
        },
      }),
    );
    // Each block drains in about 0.5 s here, far inside its 3 s; the phase as a whole may wait only
    // 3 s plus one second per 64 MiB: the server reads just often enough, but never fast enough.
    const d = delivererFor(server, { timeouts: { dataBlockMs: 3000, dataMinRate: 64 * MiB } });
    const big = `${SIMPLE_MESSAGE}${'z'.repeat(998)}\r\n`.repeat(32 * 1024);
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(big, 64 * 1024));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.4.2' },
    });
    expect(report.recipients[0]?.reply.text).toMatch(
      /the server took the message too slowly: \d+ bytes in \d+ s of waiting, under the minimum of 67108864 bytes\/s/,
    );
    // What the kernel had taken still reaches the server, then the end of the stream: read it all.
    readFreely();
    const conn = server.connections[0];
    await conn?.closed;
    // Cut off before the final dot: the server must not take a truncated message.
    expect(conn?.data[0]?.ended).toBe(false);
    expect(conn?.data[0]?.bytes).toBeLessThan(big.length);
  });

  it('gives a reply its own deadline, not one due earlier for a reply that came in time', async () => {
    // One timer serves all of a connection's reads: the one set for LHLO's 300 ms fires while the
    // reply to the data (allowed 5 s) is still awaited, and must wait on for it, not end the session.
    const server = await serveScripted((conn) =>
      speakSmtp(conn, {
        lmtp: true,
        beforeLmtpReply: () => new Promise((resolve) => setTimeout(resolve, 900)),
      }),
    );
    const d = delivererFor(server, {
      local: { domains: ['local.test'], lmtp: { host: '127.0.0.1', port: server.port } },
      timeouts: { commandMs: 300, dataEndMs: 5000 },
    });
    const report = await d.deliver(makeJob(['r1@local.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'delivered', reply: { code: 250 } });
  });

  it('gives the LMTP replies after the final dot one deadline together', async () => {
    const recipients = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8'].map((r) => `${r}@local.test`);
    const server = await serveScripted((conn) =>
      speakSmtp(conn, {
        lmtp: true,
        // Each reply well inside the limit on its own; all of them together far beyond it.
        beforeLmtpReply: () => new Promise((resolve) => setTimeout(resolve, 300)),
      }),
    );
    const d = delivererFor(server, {
      local: { domains: ['local.test'], lmtp: { host: '127.0.0.1', port: server.port } },
      timeouts: { dataEndMs: 1000 },
    });
    const report = await d.deliver(makeJob(recipients), storedMessage(SIMPLE_MESSAGE));
    const results = report.recipients.map((r) => r.result);
    expect(results[0]).toBe('delivered');
    expect(report.recipients.at(-1)).toMatchObject({ result: 'deferred', reply: { enhanced: '4.4.2' } });
    expect(report.recipients.at(-1)?.reply.text).toContain(
      'timed out after 1000 ms waiting for the reply to end of data',
    );
    // Replies that came in time count; the deadline only cuts off the rest.
    const firstDeferred = results.indexOf('deferred');
    expect(results.slice(firstDeferred).every((r) => r === 'deferred')).toBe(true);
  });
});

describe('the bounds as options', () => {
  it('refuses a bound that is not a whole number of at least 1, naming the field', () => {
    const base = { hostname: 'out.tern.test' };
    expect(() => createDeliverer({ ...base, replyLimits: { maxLines: 0 } })).toThrow(
      /^delivery\.replyLimits\.maxLines: must be a whole number of at least 1, got 0$/,
    );
    expect(() => createDeliverer({ ...base, replyLimits: { maxBytes: 1.5 } })).toThrow(
      /replyLimits\.maxBytes/,
    );
    expect(() => createDeliverer({ ...base, timeouts: { dataMinRate: -1 } })).toThrow(
      /timeouts\.dataMinRate/,
    );
    expect(() => createDeliverer({ ...base, maxHeaderBytes: Number.NaN })).toThrow(/maxHeaderBytes/);
    expect(() => createDeliverer({ ...base, dns: { maxMxHosts: 0 } })).toThrow(/dns\.maxMxHosts/);
  });
});
