// Messages stream from the store to the next hop: large messages go out with memory that does not
// grow with their size, every byte arrives as it must (dot-stuffed, CRLF, terminated), and the SIZE,
// 8BITMIME and beforeSend duties are met without holding the message.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PluginHost } from '@tern/plugin-api/host';
import type { DeliveryJob } from '@tern/queue';
import { describe, expect, it, onTestFinished } from 'vitest';
import { createDeliverer } from '../src/index.js';
import { type BigMessage, bigMessage } from './helpers/big-message.js';
import { makeJob } from './helpers/jobs.js';
import { type MemoryProbe, memoryProbe } from './helpers/memory.js';
import { delivererFor, type ScriptedServer, serveScripted, speakSmtp } from './helpers/scripted-server.js';

const MiB = 2 ** 20;
const HEADERS =
  'From: sender@origin.test\r\nTo: a@x.test\r\nSubject: a large one\r\nX-Stored: yes\r\nMessage-ID: <big@origin.test>\r\n';

/** A server that takes every message and keeps only counts and a hash of it. */
function discardingServer(options: Parameters<typeof speakSmtp>[1] = {}): Promise<ScriptedServer> {
  return serveScripted((conn) => speakSmtp(conn, options));
}

/** A job for a@x.test carrying what the queue will know of the message: its size, and no 8-bit byte. */
function jobWithSize(msg: BigMessage): DeliveryJob {
  return { ...makeJob(['a@x.test']), size: msg.size, eightBit: false };
}

/** The MAIL FROM line the server got on its first connection. */
function mailFrom(server: ScriptedServer, conn = 0): string {
  return server.connections[conn]?.commands.find((c) => c.startsWith('MAIL FROM:')) ?? '';
}

/** Follows the deliverer's retained memory while big messages stream (a sample every 8 MiB read). */
async function probeWhileStreaming(...messages: BigMessage[]): Promise<MemoryProbe> {
  const probe = await memoryProbe();
  let megabytes = 0;
  for (const message of messages) {
    message.onMegabyte = async () => {
      if (++megabytes % 8 === 0) await probe.sample();
    };
  }
  return probe;
}

describe('streaming to an SMTP server', () => {
  it('sends a 64 MiB message with memory that stays a small fraction of it, every byte right', async () => {
    const server = await discardingServer();
    const d = delivererFor(server);
    const msg = bigMessage({ headers: HEADERS, bodyBytes: 64 * MiB, eightBitAtEnd: true });
    const probe = await probeWhileStreaming(msg);
    // The queue did not say how big the message is or whether it is 8-bit: delivery finds out.
    const report = await d.deliver(makeJob(['a@x.test']), msg.message);
    expect(report.recipients[0]).toMatchObject({ result: 'delivered', reply: { code: 250 } });
    expect(probe.samples).toBeGreaterThanOrEqual(8);
    expect(probe.peakGrowth).toBeLessThan(4 * MiB);

    const expected = msg.expectedWire(`${HEADERS}\r\n`);
    const received = server.connections[0]?.data[0];
    expect(received?.ended).toBe(true);
    expect(received?.bytes).toBe(expected.bytes);
    expect(received?.sha256).toBe(expected.sha256);
    // One measuring pass found the size and the single 8-bit byte near the end; SIZE counts the message
    // as stored (RFC 1870: no doubled dots, no final dot line).
    expect(mailFrom(server)).toBe(`MAIL FROM:<sender@origin.test> SIZE=${msg.size} BODY=8BITMIME`);
    expect(msg.opens).toBe(2);
  });

  it('takes SIZE and 8-bit from the job when the queue knows them: one stream, no measuring pass', async () => {
    const server = await discardingServer();
    const d = delivererFor(server);
    const msg = bigMessage({ headers: HEADERS, bodyBytes: 4 * MiB });
    const job = jobWithSize(msg);
    const report = await d.deliver(job, msg.message);
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(msg.opens).toBe(1);
    expect(mailFrom(server)).toBe(`MAIL FROM:<sender@origin.test> SIZE=${msg.size}`);
    expect(server.connections[0]?.data[0]?.sha256).toBe(msg.expectedWire(`${HEADERS}\r\n`).sha256);
  });

  it('runs beforeSend on the header block alone and sends its headers before the streamed body', async () => {
    const server = await discardingServer();
    const seen: { bodySize?: number; bodyStart?: string; streamStart?: string } = {};
    const plugins = new PluginHost([
      {
        name: 'stamp',
        beforeSend: async (ctx) => {
          ctx.message.headers.prepend('X-Hop', ctx.hop.type);
          ctx.message.headers.remove('X-Stored');
          seen.bodySize = ctx.message.bodySize;
          seen.bodyStart = await firstBytes(ctx.message.body(), 40);
          seen.streamStart = await firstBytes(ctx.message.stream(), 12);
        },
      },
    ]);
    const d = delivererFor(server, { plugins });
    const msg = bigMessage({ headers: HEADERS, bodyBytes: 64 * MiB });
    const probe = await probeWhileStreaming(msg);
    const report = await d.deliver(makeJob(['a@x.test']), msg.message);
    expect(report.recipients[0]?.result).toBe('delivered');
    expect(probe.peakGrowth).toBeLessThan(4 * MiB);

    const sentHeaders = `X-Hop: smtp\r\n${HEADERS.replace('X-Stored: yes\r\n', '')}\r\n`;
    const expected = msg.expectedWire(sentHeaders);
    const received = server.connections[0]?.data[0];
    expect(received?.head.startsWith(sentHeaders)).toBe(true);
    expect(received?.bytes).toBe(expected.bytes);
    expect(received?.sha256).toBe(expected.sha256);
    expect(mailFrom(server)).toBe(
      `MAIL FROM:<sender@origin.test> SIZE=${msg.size - HEADERS.length + sentHeaders.length - 2}`,
    );
    // The view streams from the store too: its body starts after the stored header block.
    expect(seen).toEqual({
      bodySize: msg.bodySize,
      bodyStart: '.a line that starts with a dot 0/0\r\nbody',
      streamStart: 'X-Hop: smtp\r',
    });
  });

  it('holds little memory with several large deliveries at once', async () => {
    const server = await discardingServer();
    const d = delivererFor(server);
    const messages = Array.from({ length: 4 }, () => bigMessage({ headers: HEADERS, bodyBytes: 16 * MiB }));
    const probe = await probeWhileStreaming(...messages);
    const reports = await Promise.all(
      messages.map((m, i) => d.deliver(makeJob([`r${i}@x.test`]), m.message)),
    );
    expect(reports.map((r) => r.recipients[0]?.result)).toEqual([
      'delivered',
      'delivered',
      'delivered',
      'delivered',
    ]);
    const expected = messages[0]?.expectedWire(`${HEADERS}\r\n`);
    expect(server.connections.map((c) => c.data[0]?.sha256)).toEqual(Array(4).fill(expected?.sha256));
    // 64 MiB on its way at once; holding each message (let alone twice) would be 64 MiB and more.
    expect(probe.peakGrowth).toBeLessThan(4 * MiB);
  });

  it('defers a message whose header block exceeds maxHeaderBytes when a hook needs it, without connecting', async () => {
    const server = await discardingServer();
    const plugins = new PluginHost([{ name: 'noop', beforeSend: () => {} }]);
    const d = delivererFor(server, { plugins, maxHeaderBytes: 4096 });
    const msg = bigMessage({ headers: `${HEADERS}X-Long: ${'h'.repeat(8000)}\r\n`, bodyBytes: 1 });
    const report = await d.deliver(makeJob(['a@x.test']), msg.message);
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.3.0', text: 'Local problem: header block larger than 4096 bytes' },
    });
    expect(server.connections).toHaveLength(0);
  });

  it('drops the connection before the final dot when the store fails midway', async () => {
    const server = await discardingServer();
    const d = delivererFor(server);
    const msg = bigMessage({ headers: HEADERS, bodyBytes: 8 * MiB });
    // Known size: no measuring pass, so the failure comes while the data is on its way.
    const job = jobWithSize(msg);
    const failing = async (): Promise<Readable> => {
      const source = await msg.message();
      let bytes = 0;
      return Readable.from(
        (async function* () {
          for await (const chunk of source) {
            bytes += (chunk as Buffer).length;
            if (bytes > 2 * MiB) throw new Error('disk read error');
            yield chunk as Buffer;
          }
        })(),
        { objectMode: false },
      );
    };
    const report = await d.deliver(job, failing);
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.3.0', text: 'Local problem: message could not be read while sending' },
    });
    const conn = server.connections[0];
    await conn?.closed;
    expect(conn?.data[0]?.ended).toBe(false);
    expect(conn?.data[0]?.bytes).toBeGreaterThan(MiB);
  });
});

describe('streaming to LMTP and Maildir', () => {
  it('streams a large message over LMTP', async () => {
    const server = await discardingServer({ lmtp: true });
    const d = delivererFor(server, {
      local: { domains: ['local.test'], lmtp: { host: '127.0.0.1', port: server.port } },
    });
    const msg = bigMessage({ headers: HEADERS, bodyBytes: 32 * MiB });
    const probe = await probeWhileStreaming(msg);
    const report = await d.deliver(makeJob(['a@local.test', 'b@local.test']), msg.message);
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(probe.peakGrowth).toBeLessThan(4 * MiB);
    expect(server.connections[0]?.data[0]?.sha256).toBe(msg.expectedWire(`${HEADERS}\r\n`).sha256);
  });

  it('writes a large message into each maildir from a fresh stream, with beforeSend headers', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tern-maildir-'));
    onTestFinished(() => rmSync(root, { recursive: true, force: true }));
    const plugins = new PluginHost([
      { name: 'stamp', beforeSend: (ctx) => ctx.message.headers.prepend('X-Hop', ctx.hop.type) },
    ]);
    const d = createDeliverer({
      hostname: 'out.tern.test',
      routes: { 'local.test': { type: 'maildir', path: root } },
      plugins,
    });
    onTestFinished(() => d.close());
    const msg = bigMessage({ headers: HEADERS, bodyBytes: 16 * MiB });
    const probe = await probeWhileStreaming(msg);
    const report = await d.deliver(makeJob(['alice@local.test', 'bob@local.test']), msg.message);
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(probe.peakGrowth).toBeLessThan(4 * MiB);
    // Header read and measure, then one stream per mailbox.
    expect(msg.opens).toBe(3);
    for (const box of ['alice', 'bob']) {
      const [file] = readdirSync(join(root, box, 'new'));
      const stored = await fileSummary(join(root, box, 'new', file ?? ''));
      const prefix = `Return-Path: <sender@origin.test>\nDelivered-To: ${box}@local.test\n`;
      expect(stored.head.startsWith(`${prefix}X-Hop: maildir\nFrom: sender@origin.test\n`)).toBe(true);
      // The message as sent has the hook's field on top; local mailboxes get LF for every CRLF.
      const sent = 'X-Hop: maildir\r\n'.length + msg.size;
      expect(stored.bytes).toBe(prefix.length + sent - (msg.lineCount + 1));
      expect(stored.tail).toBe('orem ipsum lorem ipsum \n');
    }
  });
});

/** The first `n` bytes of a stream (latin1), then the stream is let go. */
async function firstBytes(stream: Readable, n: number): Promise<string> {
  const parts: Buffer[] = [];
  let have = 0;
  for await (const chunk of stream) {
    parts.push(chunk as Buffer);
    have += (chunk as Buffer).length;
    if (have >= n) break;
  }
  return Buffer.concat(parts).subarray(0, n).toString('latin1');
}

/** A file's first 4 KiB, last 24 bytes and length, read as a stream. */
async function fileSummary(path: string): Promise<{ head: string; tail: string; bytes: number }> {
  const file = await open(path, 'r');
  try {
    let head = '';
    let tail = Buffer.alloc(0);
    let bytes = 0;
    for await (const chunk of file.createReadStream()) {
      const data = chunk as Buffer;
      if (head.length < 4096) head += data.subarray(0, 4096).toString('latin1');
      tail = Buffer.concat([tail, data]).subarray(-24);
      bytes += data.length;
    }
    return { head, tail: tail.toString('latin1'), bytes };
  } finally {
    await file.close();
  }
}
