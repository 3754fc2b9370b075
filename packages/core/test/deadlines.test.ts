// Deadlines over real TCP: a client that trickles bytes keeps resetting the idle timeout, so what
// it owes (a command line, a PROXY header, a TLS handshake) and the whole session have deadlines
// of their own, shorter while the listener is under stress (Postfix's overload mode).
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import type { ListenerOptions } from '../src/index.js';
import {
  type BoundClient,
  closeAll,
  dialFrom,
  ehlo,
  LOCAL_DOMAIN,
  sendMail,
  startListener,
  testTls,
} from './helpers.js';

afterAll(closeAll);

const COMMAND_TIMEOUT = '421 4.4.2 Timeout waiting for the end of the command line, closing connection';
const IDLE_TIMEOUT = '421 4.4.2 Timeout waiting for a command, closing connection';
const SESSION_TIMEOUT = '421 4.4.2 Connection time limit reached, closing connection';

// The header of a 16 KiB TLS handshake record: the server waits for the rest, which comes byte by byte.
const TLS_RECORD_START = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]);

/** Sends `text` one byte every `everyMs`, starting over when done, until stopped or the connection closes. */
function trickle(client: { send(bytes: string | Buffer): void }, text: string, everyMs = 40): () => void {
  let i = 0;
  const timer = setInterval(() => {
    client.send(text[i % text.length] as string);
    i++;
  }, everyMs);
  return () => clearInterval(timer);
}

/** The reply, or a failure naming what was waited for once `ms` passed (instead of the test timing out). */
function within<T>(what: string, ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function withTimeouts(
  timeouts: NonNullable<ListenerOptions['limits']>['timeouts'],
  more = {},
): Partial<ListenerOptions> {
  return { limits: { timeouts, ...more } };
}

describe('the command deadline', () => {
  test('a client trickling a command line is cut at the deadline while a normal client is served', async () => {
    const h = await startListener(withTimeouts({ command: 400 }));
    const slow = await dialFrom(h.port, '127.0.0.2');
    expect(await slow.read()).toMatch(/^220 /);
    const started = Date.now();
    const stop = trickle(slow, 'NOOP NOOP NOOP NOOP NOOP NOOP');
    try {
      // Meanwhile a normal client on the same listener sends a message.
      const normal = await h.connect();
      await ehlo(normal);
      expect(await sendMail(normal)).toMatch(/^250 2\.0\.0 queued as /);
      expect(await within('the trickling client', 5000, slow.read())).toBe(COMMAND_TIMEOUT);
      expect(Date.now() - started).toBeGreaterThanOrEqual(380);
      await within('the close', 6000, slow.closed);
    } finally {
      stop();
    }
    expect(h.queue.messages).toHaveLength(1);
    expect(h.logs.some((r) => r.message === 'deadline passed' && r.fields.deadline === 'command')).toBe(true);
    await waitFor(() => h.listener.connections === 1);
  });

  test('the deadline runs from the first byte of a line; a line finished in time runs, and so does the next', async () => {
    const h = await startListener(withTimeouts({ command: 600 }));
    const c = await dialFrom(h.port, '127.0.0.2');
    expect(await c.read()).toMatch(/^220 /);
    // Four lines of 200 ms each: together far past the deadline, each well within it.
    for (let i = 0; i < 4; i++) {
      c.send('NO');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await c.command('OP')).toMatch(/^250 /);
    }
  });

  test('a PROXY header trickled by a trusted client is dropped at the deadline', async () => {
    const h = await startListener({
      proxy: true,
      trustedNetworks: ['127.0.0.2/32'],
      ...withTimeouts({ command: 300 }),
    });
    const c = await dialFrom(h.port, '127.0.0.2');
    const stop = trickle(c, 'PROXY TCP4 198.51.100.7 127.0.0.1 40000 25 ');
    try {
      await within('the close', 5000, c.closed);
    } finally {
      stop();
    }
    expect(h.logs.some((r) => r.message === 'no SMTP session in time: dropped')).toBe(true);
  });

  test('an smtps client that never finishes its TLS handshake is dropped at the deadline', async () => {
    const h = await startListener({ kind: 'smtps', tls: testTls(), ...withTimeouts({ command: 300 }) });
    const socket = await rawConnect(h.port);
    socket.write(TLS_RECORD_START);
    const stop = trickle({ send: (b) => socket.write(b) }, '\0');
    try {
      await within('the close', 5000, closedOf(socket));
    } finally {
      stop();
    }
    expect(h.logs.some((r) => r.message === 'no SMTP session in time: dropped')).toBe(true);
  });

  test('a client that stalls the TLS handshake after STARTTLS is dropped at the deadline', async () => {
    const h = await startListener({ tls: testTls(), ...withTimeouts({ command: 300 }) });
    const c = await dialFrom(h.port, '127.0.0.2');
    expect(await c.read()).toMatch(/^220 /);
    await c.command('EHLO client.example');
    expect(await c.command('STARTTLS')).toBe('220 2.0.0 Ready to start TLS');
    c.send(TLS_RECORD_START);
    const stop = trickle(c, '\0');
    try {
      await within('the close', 5000, c.closed);
    } finally {
      stop();
    }
    expect(h.logs.some((r) => r.message === 'deadline passed' && r.fields.deadline === 'tls-handshake')).toBe(
      true,
    );
    await waitFor(() => h.listener.connections === 0);
  });
});

describe('the session deadline', () => {
  test('a client that keeps its connection busy is closed at timeouts.session', async () => {
    const h = await startListener(withTimeouts({ session: 500 }));
    const started = Date.now();
    const c = await h.connect();
    let reply = '';
    while (!reply.startsWith('421') && Date.now() - started < 5000) {
      reply = await c.command('NOOP');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(reply).toBe(SESSION_TIMEOUT);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    await c.closed;
  });

  test('a client that pipelines commands and never reads the replies is closed at the deadline too', async () => {
    const h = await startListener(withTimeouts({ session: 3000 }));
    const socket = await rawConnect(h.port);
    await once(socket, 'data'); // the banner
    socket.pause(); // from now on never reads: replies pile up until the server waits for a drain
    socket.write('EHLO client.example\r\n');
    // About 12 MB of replies, more than the socket buffers hold: well before the deadline the
    // server is only waiting for the client to read.
    socket.write('HELP\r\n'.repeat(200_000));
    // 3 s, then smtp-server's 5 s for a closed connection whose client keeps its side open.
    await waitFor(() => h.listener.connections === 0, 15_000);
    expect(h.logs.some((r) => r.message === 'deadline passed' && r.fields.deadline === 'session')).toBe(true);
    socket.destroy();
  });

  test('a message being received when the session deadline passes is answered first', async () => {
    const h = await startListener(withTimeouts({ session: 1000 }));
    const c = await h.connect();
    await ehlo(c);
    await c.command('MAIL FROM:<a@example.org>');
    await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
    expect(await c.command('DATA')).toMatch(/^354 /);
    const started = Date.now();
    c.send('Subject: slow\r\n\r\n');
    while (Date.now() - started < 1500) {
      c.send('a line of a slow message\r\n');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    c.send('.\r\n');
    expect(await c.read()).toMatch(/^250 2\.0\.0 queued as /);
    expect(await within('the session deadline', 5000, c.read())).toBe(SESSION_TIMEOUT);
    expect(h.queue.messages).toHaveLength(1);
  });
});

describe('under stress', () => {
  // Two open connections of four put the listener under stress.
  const stressed = (timeouts: NonNullable<ListenerOptions['limits']>['timeouts']): Partial<ListenerOptions> =>
    withTimeouts(timeouts, { maxConnections: 4, stressThreshold: 0.5 });

  test('the shorter command deadline applies to every connection, and only under stress', async () => {
    const h = await startListener(stressed({ command: 30_000, stress: { command: 300, socket: 30_000 } }));
    const c = await dialFrom(h.port, '127.0.0.2');
    expect(await c.read()).toMatch(/^220 /);
    // Alone: a line that takes 600 ms is fine.
    c.send('NO');
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await c.command('OP')).toMatch(/^250 /);
    expect(h.listener.underStress).toBe(false);
    // A second connection: under stress, the same line is cut at 300 ms.
    const other = await dialFrom(h.port, '127.0.0.3');
    expect(await other.read()).toMatch(/^220 /);
    expect(h.listener.underStress).toBe(true);
    const started = Date.now();
    const stop = trickle(c, 'NOOP NOOP NOOP NOOP NOOP');
    try {
      expect(await within('the stressed deadline', 5000, c.read())).toBe(COMMAND_TIMEOUT);
    } finally {
      stop();
    }
    expect(Date.now() - started).toBeLessThan(5000);
    expect(h.logs.some((r) => r.level === 'warn' && /^under stress/.test(r.message ?? ''))).toBe(true);
    // The client that behaves is still served.
    expect(await other.command('EHLO client.example')).toMatch(/^250/);
  });

  test('idle clients get the stress idle timeout instead of the five-minute one', async () => {
    // With two connections allowed, one open connection is stress: the second client is cut too,
    // after the first is gone.
    const h = await startListener(
      withTimeouts({ stress: { socket: 300 } }, { maxConnections: 2, stressThreshold: 0.5 }),
    );
    expect(h.listener.options.limits.timeouts.socket).toBe(5 * 60_000);
    const clients: BoundClient[] = [];
    for (const address of ['127.0.0.2', '127.0.0.3']) {
      const c = await dialFrom(h.port, address);
      expect(await c.read()).toMatch(/^220 /);
      clients.push(c);
    }
    expect(await clients[0]?.command('EHLO client.example')).toMatch(/^250/);
    for (const c of clients) expect(await within('the idle timeout', 5000, c.read())).toBe(IDLE_TIMEOUT);
  });

  test('a client waiting for a slow hook is not idle', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const h = await startListener(stressed({ stress: { socket: 300 } }), {
      plugins: [{ name: 'slow', mailFrom: () => gate }],
    });
    const waiting = await dialFrom(h.port, '127.0.0.2');
    const idle = await dialFrom(h.port, '127.0.0.3');
    for (const c of [waiting, idle]) expect(await c.read()).toMatch(/^220 /);
    await waiting.command('EHLO client.example');
    const mail = waiting.command('MAIL FROM:<a@example.org>');
    // The idle one is cut after 300 ms; the one waiting for the hook is not, and gets its answer.
    expect(await within('the idle timeout', 5000, idle.read())).toBe(IDLE_TIMEOUT);
    release();
    expect(await mail).toMatch(/^250 /);
  });
});

function rawConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ port, host: '127.0.0.1' });
    socket.on('error', () => {});
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function closedOf(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once('close', () => resolve());
  });
}
