// The hand-over to the queue: 250 only once the sink has resolved; 451 4.3.0 when it fails, hangs
// past the enqueue timeout, or answers something that is not a queue id.
import type { RawSmtp } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { type IncomingMessage, InMemoryQueue, type MessageSink } from '../src/index.js';
import { closeAll, ehlo, type Harness, LOCAL_DOMAIN, message, sleep, startListener } from './helpers.js';

afterAll(closeAll);

const LOCAL_ERROR = '451 4.3.0 Temporary local problem, please try again later';

async function upToFinalDot(h: Harness): Promise<RawSmtp> {
  const c = await h.connect();
  await ehlo(c);
  await c.command('MAIL FROM:<a@example.org>');
  await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
  expect(await c.command('DATA')).toMatch(/^354 /);
  c.send(`${message()}.\r\n`);
  return c;
}

/** The next reply, or 'none' if nothing arrives within `ms`. */
async function replyWithin(c: RawSmtp, ms: number): Promise<string> {
  return Promise.race([c.read(), sleep(ms).then(() => 'none')]);
}

describe('250 only after the sink resolved', () => {
  test('no reply while the sink holds the message; 250 with its queue id once it resolves', async () => {
    const queue = new InMemoryQueue({ behaviour: 'hang' });
    const h = await startListener({}, { sink: queue });
    const c = await upToFinalDot(h);
    const pending = c.read();
    const first = await Promise.race([pending, sleep(300).then(() => 'none')]);
    expect(first).toBe('none');
    expect(queue.attempts).toBe(1);
    expect(queue.release()).toBe(1);
    expect(await pending).toBe('250 2.0.0 queued as mem000001');
    expect(queue.messages).toHaveLength(1);
  });

  test('the sink gets the envelope, the content, the source and the time', async () => {
    const h = await startListener();
    const c = await upToFinalDot(h);
    expect(await c.read()).toMatch(/^250 /);
    const incoming = h.queue.messages[0]!.message;
    expect(incoming.envelope).toEqual({
      mailFrom: 'a@example.org',
      recipients: [{ address: `user@${LOCAL_DOMAIN}` }],
    });
    expect(incoming.source).toEqual({
      listener: 'test',
      remoteAddress: '127.0.0.1',
      helo: 'client.example',
      sessionId: expect.stringMatching(/^[0-9a-z]{16}$/),
    });
    expect(Math.abs(incoming.receivedAt - Date.now())).toBeLessThan(5000);
    expect(incoming.content.chunks()?.length).toBeGreaterThanOrEqual(3);
    expect(incoming.eightBit).toBe(false);
  });
});

describe('451 4.3.0 and never 250 when the sink cannot take the message', () => {
  test('the sink rejects', async () => {
    const queue = new InMemoryQueue({ behaviour: 'fail' });
    const h = await startListener({}, { sink: queue });
    const c = await upToFinalDot(h);
    expect(await c.read()).toBe(LOCAL_ERROR);
    expect(queue.attempts).toBe(1);
    expect(h.logs.some((r) => r.level === 'error' && r.message?.includes('enqueue failed'))).toBe(true);
    // the session goes on, and a retry succeeds once the sink works again
    queue.behaviour = 'accept';
    expect(await c.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
  });

  test('the sink hangs past the enqueue timeout', async () => {
    const queue = new InMemoryQueue({ behaviour: 'hang' });
    const h = await startListener({ limits: { timeouts: { enqueue: 200 } } }, { sink: queue });
    const c = await upToFinalDot(h);
    const started = performance.now();
    expect(await c.read()).toBe(LOCAL_ERROR);
    expect(performance.now() - started).toBeGreaterThanOrEqual(150);
    // a late success changes nothing for the client (it will retry: at-least-once)
    queue.release();
    expect(await replyWithin(c, 100)).toBe('none');
  });

  test.each([
    [
      'throws synchronously',
      (): Promise<string> => {
        throw new Error('boom');
      },
    ],
    ['resolves with an empty id', (): Promise<string> => Promise.resolve('')],
    ['resolves with a non-string', (): Promise<string> => Promise.resolve(42 as unknown as string)],
    ['resolves with an id holding a line break', (): Promise<string> => Promise.resolve('id\r\n250 fake')],
  ])('the sink %s', async (_name, enqueue) => {
    const sink: MessageSink = { enqueue: enqueue as (m: IncomingMessage) => Promise<string> };
    const h = await startListener({}, { sink });
    const c = await upToFinalDot(h);
    expect(await c.read()).toBe(LOCAL_ERROR);
    expect(await c.command('NOOP')).toBe('250 2.0.0 OK');
  });
});
