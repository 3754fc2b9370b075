// Message bytes as sources: joined without copying, streamed as often as needed, and held whole
// only by code that says how much it will hold.
import { Readable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import {
  heldChunks,
  joinSources,
  MessageContent,
  memorySource,
  memoryStream,
  readAll,
  readStream,
} from '../src/host.js';
import { definePlugin, SourceTooLargeError } from '../src/index.js';
import { testPlugins } from '../src/testing/index.js';

const fileLike = (bytes: Buffer) => ({
  size: bytes.length,
  stream: () => Readable.from([bytes.subarray(0, 3), bytes.subarray(3)]),
  chunks: () => undefined,
});

describe('sources', () => {
  test('joined sources read as one, in memory or not', async () => {
    const head = memorySource([Buffer.from('A: 1\r\n'), Buffer.from('\r\n')]);
    const inMemory = joinSources([head, memorySource([Buffer.from('body\r\n')])]);
    expect(inMemory.chunks()?.length).toBe(3);
    expect((await readAll(inMemory)).toString()).toBe('A: 1\r\n\r\nbody\r\n');
    const spooled = joinSources([head, fileLike(Buffer.from('body\r\n'))]);
    expect(spooled.chunks()).toBeUndefined();
    expect(spooled.size).toBe(14);
    expect((await readAll(spooled)).toString()).toBe('A: 1\r\n\r\nbody\r\n');
    expect((await readAll(spooled)).toString()).toBe('A: 1\r\n\r\nbody\r\n'); // again: a fresh stream
  });

  test('a memory stream offers its chunks until someone reads it; other streams never do', async () => {
    const chunks = [Buffer.from('A: 1\r\n\r\n'), Buffer.from('body\r\n')];
    const untouched = memoryStream(chunks);
    expect(heldChunks(untouched)).toBe(chunks);
    expect((await readStream(untouched)).toString()).toBe('A: 1\r\n\r\nbody\r\n');
    expect(heldChunks(untouched)).toBeUndefined(); // read: what it held may be gone
    const started = memoryStream(chunks);
    expect(started.read(4)?.toString()).toBe('A: 1');
    expect(heldChunks(started)).toBeUndefined();
    const destroyed = memoryStream(chunks);
    destroyed.destroy();
    expect(heldChunks(destroyed)).toBeUndefined();
    expect(heldChunks(Readable.from(chunks))).toBeUndefined();
    expect(heldChunks(memorySource(chunks).stream())).toBe(chunks);
  });

  test('readAll and MessageView.buffer refuse more than the caller agreed to hold', async () => {
    const message = new MessageContent(
      MessageContent.parse('A: 1\r\n\r\n').headers,
      fileLike(Buffer.alloc(4096, 0x78)),
    );
    await expect(message.buffer(1024)).rejects.toBeInstanceOf(SourceTooLargeError);
    expect((await message.buffer(8192)).length).toBe('A: 1\r\n\r\n'.length + 4096);
  });

  test('a hook that asks for more than it may hold fails (451), it does not fill the memory', async () => {
    const greedy = definePlugin({
      name: 'greedy',
      message: async (ctx) => {
        await ctx.message.buffer(16);
      },
    });
    const session = testPlugins([greedy]);
    await session.connect();
    await session.helo('client.example');
    await session.mailFrom('a@example.org');
    await session.rcptTo('b@example.test');
    const result = await session.data('Subject: more than sixteen bytes\r\n\r\nbody\r\n');
    expect(result.verdict).toMatchObject({ kind: 'tempfail', reply: { code: 451, enhanced: '4.3.0' } });
  });
});
