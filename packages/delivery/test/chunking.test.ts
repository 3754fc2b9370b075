// BDAT (RFC 3030) with PIPELINING, against a real CHUNKING server over TCP: the message goes in the
// same write as the commands, bytes arrive exactly (line ends CRLF, no dot doubled), refusals at
// every step are reported, and the connection stays in step for the next message.
import { waitFor } from '@tern/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions } from '../src/index.js';
import { type ChunkingSink, type ChunkingSinkOptions, startChunkingSink } from './helpers/chunking-sink.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { startWireTap, type WireTap } from './helpers/wire-tap.js';

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setUp(
  options: ChunkingSinkOptions = {},
  extra: Partial<DelivererOptions> = {},
): Promise<{ sink: ChunkingSink; tap: WireTap; d: Deliverer }> {
  const sink = await startChunkingSink(options);
  cleanups.push(() => sink.stop());
  const tap = await startWireTap({ upstreamPort: sink.port });
  cleanups.push(() => tap.stop());
  const d = createDeliverer({
    hostname: 'out.tern.test',
    routes: { '*': { type: 'smtp', host: '127.0.0.1', port: tap.port } },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    ...extra,
  });
  cleanups.push(() => d.close());
  return { sink, tap, d };
}

/** The client chunks (as the tap read them) that carried MAIL FROM. */
function mailChunks(tap: WireTap): string[] {
  return tap.chunks
    .filter((c) => c.dir === 'c2s' && c.data.toString('latin1').includes('MAIL FROM:'))
    .map((c) => c.data.toString('latin1'));
}

describe('BDAT with PIPELINING', () => {
  it('sends MAIL, RCPT, BDAT n LAST and the message in one write, and never DATA', async () => {
    const { sink, tap, d } = await setUp();
    const report = await d.deliver(makeJob(['a@x.test', 'b@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => r.result)).toEqual(['delivered', 'delivered']);
    expect(report.recipients[0]?.reply.code).toBe(250);
    const size = Buffer.byteLength(SIMPLE_MESSAGE);
    expect(mailChunks(tap)).toEqual([
      `MAIL FROM:<sender@origin.test> SIZE=${size}\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n` +
        `BDAT ${size} LAST\r\n${SIMPLE_MESSAGE}`,
    ]);
    expect(sink.commands).not.toContain('DATA');
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]?.rcptTo).toEqual(['a@x.test', 'b@x.test']);
    expect(sink.messages[0]?.body.toString('utf8')).toBe(SIMPLE_MESSAGE);
  });

  it('makes bare LF and CR into CRLF, doubles no dot, and ends the last line', async () => {
    const { sink, d } = await setUp();
    const stored = 'Subject: dots\n\n.hidden line\rplain\r\n.\r\nQUIT\r\n..two\nlast line without break';
    // Small chunks, so line ends fall on chunk borders too.
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(stored, 3));
    expect(report.recipients[0]?.result).toBe('delivered');
    const body = sink.messages[0]?.body.toString('latin1');
    expect(body).toBe(
      'Subject: dots\r\n\r\n.hidden line\r\nplain\r\n.\r\nQUIT\r\n..two\r\nlast line without break\r\n',
    );
    // The lone dot line is message text, not an end: the server saw no QUIT and no second message.
    expect(sink.commands).not.toContain('QUIT');
    expect(sink.messages).toHaveLength(1);
    // SIZE declared what went.
    expect(sink.commands.find((c) => c.startsWith('MAIL'))).toContain(
      `SIZE=${Buffer.byteLength(body ?? '')}`,
    );
  });

  it('sends a large message in several chunks, the last one BDAT LAST, bytes intact', async () => {
    const { sink, d } = await setUp();
    const line = `${'x'.repeat(76)}\r\n`;
    const message = `Subject: big\r\n\r\n${line.repeat(3000)}`;
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(message, 7000));
    expect(report.recipients[0]?.result).toBe('delivered');
    const got = sink.messages[0];
    expect(got?.body.equals(Buffer.from(message))).toBe(true);
    expect(got?.chunks.length).toBeGreaterThan(1);
    const bdats = sink.commands.filter((c) => c.startsWith('BDAT'));
    expect(bdats.at(-1)).toMatch(/^BDAT \d+ LAST$/);
    expect(bdats.slice(0, -1).every((c) => /^BDAT \d+$/.test(c))).toBe(true);
  });

  it('reuses the connection with RSET in the same write, and keeps in step after refusals', async () => {
    const { sink, tap, d } = await setUp({ refuseRecipients: ['nobody@x.test'] });
    const first = await d.deliver(makeJob(['nobody@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(first.recipients[0]?.result).toBe('failed');
    expect(first.recipients[0]?.reply.code).toBe(550);
    const second = await d.deliver(makeJob(['a@x.test', 'nobody@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(second.recipients.map((r) => r.result)).toEqual(['delivered', 'failed']);
    expect(tap.connections).toBe(1);
    expect(mailChunks(tap)[1]?.startsWith('RSET\r\nMAIL FROM:')).toBe(true);
    expect(mailChunks(tap)[1]).toContain(`BDAT ${Buffer.byteLength(SIMPLE_MESSAGE)} LAST\r\n`);
    // Only the message with an accepted recipient was kept, for that recipient.
    expect(sink.messages.map((m) => m.rcptTo)).toEqual([['a@x.test']]);
  });

  it('reports a refused MAIL FROM for every recipient, not the BDAT reply after it', async () => {
    const { sink, d } = await setUp({ mailReply: '451 4.3.0 try later' });
    const report = await d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]?.result).toBe('deferred');
    expect(report.recipients[0]?.reply.code).toBe(451);
    expect(sink.commands.filter((c) => c.startsWith('BDAT'))).toHaveLength(1);
    expect(sink.messages).toHaveLength(0);
  });

  it('defers on a temporary and fails on a permanent refusal of BDAT LAST', async () => {
    const temporary = await setUp({ lastReply: '452 4.3.1 out of room' });
    const deferred = await temporary.d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(deferred.recipients[0]?.result).toBe('deferred');
    expect(deferred.recipients[0]?.reply.code).toBe(452);
    const permanent = await setUp({ lastReply: '554 5.6.0 content refused' });
    const failed = await permanent.d.deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(failed.recipients[0]?.result).toBe('failed');
    expect(failed.recipients[0]?.reply.code).toBe(554);
  });

  it('ends the connection before BDAT LAST when the store fails midway: nothing is kept', async () => {
    const { sink, d } = await setUp();
    const line = `${'y'.repeat(76)}\r\n`;
    const message = async () => {
      const { Readable } = await import('node:stream');
      return Readable.from(
        (async function* () {
          yield Buffer.from(`Subject: broken\r\n\r\n${line.repeat(400)}`);
          // The store fails once the server has the first chunk's command (a chunk is on its way).
          await waitFor(() => sink.commands.some((c) => /^BDAT \d+$/.test(c)));
          throw new Error('disk gone');
        })(),
      );
    };
    const report = await d.deliver(makeJob(['a@x.test']), message);
    expect(report.recipients[0]?.result).toBe('deferred');
    expect(sink.messages).toHaveLength(0);
    // The chunk read before the failure went (the store failed after it); the last never did.
    expect(sink.commands.some((c) => c.endsWith('LAST'))).toBe(false);
  });
});
