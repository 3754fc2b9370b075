// The outbound message for beforeSend: the header block is read off the front of the stored stream,
// however it is chunked, and split exactly where MessageContent.parse (the old, whole-message way)
// splits it; what goes onward is the hook's header block followed by the stored body.
import { Readable } from 'node:stream';
import { MessageContent } from '@tern/plugin-api/host';
import { describe, expect, it } from 'vitest';
import { HeaderBlockTooLarge, prepareOutbound } from '../src/outbound.js';
import { makeJob, storedMessage } from './helpers/jobs.js';

async function text(stream: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('latin1');
}

/** What beforeSend sees and what goes onward, with a hook that changes nothing. */
async function throughHook(stored: string, chunkSize: number, maxHeaderBytes = 1024 * 1024) {
  let seen: { headers: string; body: string; bodySize: number; whole: string } | undefined;
  const outbound = await prepareOutbound(makeJob(['a@x.test']), storedMessage(stored, chunkSize), {
    maxHeaderBytes,
    beforeSend: async (view) => {
      seen = {
        headers: view.headers.toString(),
        body: await text(view.body()),
        bodySize: view.bodySize,
        whole: await text(view.stream()),
      };
    },
  });
  return { seen, sent: await text(await outbound.open()), outbound };
}

const CASES: [string, string][] = [
  ['CRLF', 'From: a@x.test\r\nSubject: hi\r\n folded\r\n\r\nbody line\r\n\r\nlast\r\n'],
  ['LF only', 'From: a@x.test\nSubject: hi\n\nbody\n\nmore\n'],
  ['no empty line', 'From: a@x.test\r\nSubject: only headers\r\n'],
  ['an empty first line', '\r\nno headers at all\r\n'],
  ['a bare LF first line', '\nno headers\n'],
  ['an empty body', 'Subject: x\r\n\r\n'],
];

describe('the header block read for beforeSend', () => {
  for (const [name, stored] of CASES) {
    for (const chunkSize of [1, 3, 0]) {
      it(`splits a message with ${name} as MessageContent.parse does (chunks of ${chunkSize || 'all'})`, async () => {
        const whole = MessageContent.parse(Buffer.from(stored, 'latin1'));
        const { seen, sent } = await throughHook(stored, chunkSize);
        expect(seen).toEqual({
          headers: whole.headers.toString(),
          body: Buffer.concat(whole.bodySource().chunks() ?? []).toString('latin1'),
          bodySize: whole.bodySize,
          whole: whole.toBuffer().toString('latin1'),
        });
        expect(sent).toBe(whole.toBuffer().toString('latin1'));
      });
    }
  }

  it('finds the empty line in a chunk that follows a first chunk of two bytes', async () => {
    const parts = ['A:', '\r\n\r\nbody\r\n'];
    const outbound = await prepareOutbound(
      makeJob(['a@x.test']),
      async () => Readable.from(parts.map((p) => Buffer.from(p))),
      {
        maxHeaderBytes: 1024,
        beforeSend: async (view) => {
          view.headers.append('X-Seen', 'yes');
        },
      },
    );
    expect(await text(await outbound.open())).toBe('A:\r\nX-Seen: yes\r\n\r\nbody\r\n');
  });

  it('reads a header block of exactly the bound, and refuses one byte more', async () => {
    const block = `X-Pad: ${'p'.repeat(91)}\r\n\r\n`;
    expect(block).toHaveLength(102);
    const { sent } = await throughHook(`${block}body\r\n`, 7, 102);
    expect(sent).toBe(`${block}body\r\n`);
    await expect(throughHook(`${block}body\r\n`, 7, 101)).rejects.toBeInstanceOf(HeaderBlockTooLarge);
  });

  it('counts SIZE and 8-bit over the new header block and the stored body', async () => {
    const { outbound } = await throughHook('Subject: x\r\n\r\n.dot\ncaf\u00e9\n', 2);
    // `.dot\n` and the last line are sent with CRLF; the doubled dot does not count.
    expect(outbound.size).toBe('Subject: x\r\n\r\n.dot\r\ncaf\u00e9\r\n'.length + 1);
    expect(outbound.eightBit).toBe(true);
  });
});
