// The body is held once: a 50 MB message goes through two plugins that each stream the whole
// message, into the sink, while the process grows by well under twice the message size.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { definePlugin } from '@tern/plugin-api';
import { afterAll, expect, test } from 'vitest';
import { closeAll, LOCAL_DOMAIN, startListener } from './helpers.js';

afterAll(closeAll);

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

const MESSAGE_SIZE = 50 * 1024 * 1024;
const LINE = `${'x'.repeat(76)}\r\n`; // 78 bytes, never a dot at the start
const BLOCK = Buffer.from(LINE.repeat(840)); // ~64 KiB, written again and again (never copied by the test)

function reader(socket: Socket): () => Promise<string> {
  let buffer = '';
  const waiting: ((line: string) => void)[] = [];
  socket.on('data', (chunk) => {
    buffer += chunk.toString('latin1');
    for (let end = buffer.indexOf('\r\n'); end >= 0; end = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (/^\d{3}-/.test(line)) continue;
      waiting.shift()?.(line);
    }
  });
  return () => new Promise((resolve) => waiting.push(resolve));
}

test('a 50 MB message is held once in memory while two plugins stream it', async () => {
  const digests: string[] = [];
  const streamer = (name: string) =>
    definePlugin({
      name,
      message: async (ctx) => {
        const hash = createHash('sha256');
        for await (const chunk of ctx.message.stream()) hash.update(chunk as Buffer);
        digests.push(hash.digest('hex'));
      },
    });
  const h = await startListener(
    { limits: { maxMessageSize: 60 * 1024 * 1024 } },
    { plugins: [streamer('first-reader'), streamer('second-reader')] },
  );

  const socket = connect({ port: h.port, host: '127.0.0.1' });
  await once(socket, 'connect');
  const next = reader(socket);
  expect(await next()).toMatch(/^220 /);
  const say = async (line: string): Promise<string> => {
    socket.write(`${line}\r\n`);
    return next();
  };
  await say('EHLO client.example');
  await say('MAIL FROM:<big@example.org>');
  await say(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
  expect(await say('DATA')).toMatch(/^354 /);

  gc();
  const before = process.memoryUsage();
  let peakArrayBuffers = 0;
  let peakRss = 0;
  const sample = (): void => {
    const now = process.memoryUsage();
    peakArrayBuffers = Math.max(peakArrayBuffers, now.arrayBuffers - before.arrayBuffers);
    peakRss = Math.max(peakRss, now.rss - before.rss);
  };
  const sampler = setInterval(sample, 10);

  const header = Buffer.from('Subject: big\r\n\r\n');
  const sent = createHash('sha256').update(header);
  socket.write(header);
  let written = header.length;
  while (written < MESSAGE_SIZE) {
    sent.update(BLOCK);
    written += BLOCK.length;
    if (!socket.write(BLOCK)) await once(socket, 'drain');
  }
  const reply = next();
  socket.write('.\r\n');
  expect(await reply).toMatch(/^250 2\.0\.0 queued as /);
  sample();
  clearInterval(sampler);
  socket.destroy();

  // What was queued is exactly what was sent, behind our Received header; both plugins saw all of it.
  const queued = h.queue.messages[0]!.message;
  const stored = createHash('sha256');
  const [received, crlf, ...body] = queued.chunks;
  expect(received?.toString()).toMatch(/^Received: [\s\S]*Subject: big\r\n$/);
  expect(crlf?.toString()).toBe('\r\n');
  stored.update('Subject: big\r\n\r\n');
  for (const chunk of body) stored.update(chunk);
  expect(stored.digest('hex')).toBe(sent.digest('hex'));
  expect(digests).toHaveLength(2);
  expect(digests[0]).toBe(digests[1]);
  const bodyBytes = body.reduce((n, c) => n + c.length, 0);
  expect(bodyBytes).toBe(written - header.length);

  const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  console.info(`50 MiB message: peak arrayBuffers +${mib(peakArrayBuffers)}, peak rss +${mib(peakRss)}`);
  // One copy of the message must be held (the queue keeps it); a second full copy would add
  // another 50 MiB on top. Garbage from socket reads not yet collected makes up the margin.
  expect(peakArrayBuffers).toBeGreaterThan(MESSAGE_SIZE * 0.9);
  expect(peakArrayBuffers).toBeLessThan(MESSAGE_SIZE * 1.6);
  expect(peakRss).toBeLessThan(MESSAGE_SIZE * 2);
}, 60_000);
