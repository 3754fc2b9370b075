// Connection-level limits and shutdown over real TCP: total and per-address limits, graceful and
// forced close, the close after QUIT.
import { execFile } from 'node:child_process';
import { connect as netConnect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { smtpDialog, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { closeAll, dialFrom, ehlo, LOCAL_DOMAIN, message, sendMail, startListener } from './helpers.js';

afterAll(closeAll);

const RECONNECTS = 200;
const execFileAsync = promisify(execFile);
const TOO_MANY = '421 4.7.0 Too many connections, try again later';
const SHUTTING_DOWN = '421 4.3.2 Service shutting down, try again later';

describe('connection limits', () => {
  test('maxConnectionsPerIp: the next connection from that address gets 421 4.7.0; other addresses are served', async () => {
    const h = await startListener({ limits: { maxConnectionsPerIp: 2 } });
    const a1 = await dialFrom(h.port, '127.0.0.1');
    const a2 = await dialFrom(h.port, '127.0.0.1');
    expect(await a1.read()).toMatch(/^220 /);
    expect(await a2.read()).toMatch(/^220 /);
    const a3 = await dialFrom(h.port, '127.0.0.1');
    expect(await a3.read()).toBe(TOO_MANY);
    await a3.closed;
    const b1 = await dialFrom(h.port, '127.0.0.2');
    expect(await b1.read()).toMatch(/^220 /);
    expect(h.listener.connections).toBe(3);
    // a slot frees up when a connection ends
    expect(await a1.command('QUIT')).toMatch(/^221 /);
    await waitFor(() => h.listener.connections === 2);
    const a4 = await dialFrom(h.port, '127.0.0.1');
    expect(await a4.read()).toMatch(/^220 /);
  });

  test('a client that reconnects as soon as its connection closed is not refused for the one it closed', async () => {
    const h = await startListener({ greetingDelayMs: 0, limits: { maxConnectionsPerIp: 1 } });
    // Another process, as a real client is: the listener's event loop does not run its turns.
    const client = `
      const { connect } = require('node:net');
      const greetings = [];
      const once = (left) => {
        if (left === 0) return console.log(JSON.stringify(greetings));
        const socket = connect(${h.port}, '127.0.0.1');
        let text = '';
        socket.on('data', (chunk) => {
          text += chunk;
          if (greetings.length === ${RECONNECTS} - left && text.includes('\\r\\n')) {
            greetings.push(text.split('\\r\\n')[0]);
            socket.write('QUIT\\r\\n');
          }
        });
        socket.on('error', () => {});
        socket.on('close', () => once(left - 1));
      };
      once(${RECONNECTS});
    `;
    const { stdout } = await execFileAsync(process.execPath, ['-e', client], { timeout: 20_000 });
    const greetings = JSON.parse(stdout) as string[];
    expect(greetings).toHaveLength(RECONNECTS);
    expect(greetings.filter((g) => !g.startsWith('220 '))).toEqual([]);
  });

  test('maxConnections: the next connection from anywhere gets 421 4.7.0', async () => {
    const h = await startListener({ limits: { maxConnections: 2 } });
    const first = await dialFrom(h.port, '127.0.0.3');
    const second = await dialFrom(h.port, '127.0.0.4');
    expect(await first.read()).toMatch(/^220 /);
    expect(await second.read()).toMatch(/^220 /);
    const third = await dialFrom(h.port, '127.0.0.5');
    expect(await third.read()).toBe(TOO_MANY);
    await third.closed;
    expect(h.logs.some((r) => r.message === 'connection refused' && r.fields.remote === '127.0.0.5')).toBe(
      true,
    );
  });
});

test('a port in use fails listen() with the listener and the address named', async () => {
  const h = await startListener();
  await expect(startListener({ port: h.port })).rejects.toThrow(
    `listener test: cannot listen on 127.0.0.1:${h.port}: EADDRINUSE`,
  );
});

describe('close()', () => {
  test('graceful: stops accepting, idle sessions get 421 4.3.2 at once, an open transaction finishes first', async () => {
    const h = await startListener();
    const idle = await h.connect();
    await ehlo(idle);
    const busy = await h.connect();
    await ehlo(busy);
    await busy.command('MAIL FROM:<a@example.org>');
    await busy.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);

    const closing = h.listener.close({ graceful: true, timeoutMs: 5000 });
    expect(await idle.read()).toBe(SHUTTING_DOWN);
    await idle.closed;
    await expect(smtpDialog(h.port)).rejects.toThrow(/cannot connect/);

    expect(await busy.command('DATA')).toMatch(/^354 /);
    busy.send(`${message()}.\r\n`);
    expect(await busy.read()).toMatch(/^250 2\.0\.0 queued as /);
    expect(await busy.command('MAIL FROM:<a@example.org>')).toBe(SHUTTING_DOWN);
    await busy.closed;
    await closing;
    expect(h.listener.connections).toBe(0);
    expect(h.queue.messages).toHaveLength(1);
  });

  test('graceful with a deadline: a transaction that does not finish in time is cut off', async () => {
    const h = await startListener();
    const slow = await h.connect();
    await ehlo(slow);
    await slow.command('MAIL FROM:<a@example.org>');
    const started = performance.now();
    await h.listener.close({ graceful: true, timeoutMs: 300 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect(await slow.read()).toBe(SHUTTING_DOWN);
    await slow.closed;
  });

  test('forced: every session gets 421 and is dropped now, mid-transaction too', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    await c.command('MAIL FROM:<a@example.org>');
    const started = performance.now();
    await h.listener.close({ graceful: false });
    expect(performance.now() - started).toBeLessThan(1000);
    await c.closed;
    expect(h.listener.connections).toBe(0);
  });

  test('close hooks have run when close() resolves', async () => {
    let closed = 0;
    const h = await startListener({}, { plugins: [{ name: 'count', close: () => void closed++ }] });
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c)).toMatch(/^250 /);
    await h.listener.close({ graceful: true, timeoutMs: 1000 });
    expect(closed).toBe(1);
  });
});

describe('QUIT', () => {
  /** A client that keeps its side open after QUIT (no FIN from it), as a raw half-open socket. */
  function quitAndHold(port: number): { received: Promise<string>; socket: Socket } {
    const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.endsWith('ESMTP\r\n')) socket.write('EHLO client.example\r\nQUIT\r\n');
    });
    const received = new Promise<string>((resolve, reject) => {
      socket.once('end', () => resolve(text));
      socket.once('error', reject);
    });
    return { received, socket };
  }

  test('the server lets go of the connection once the 221 is written, without waiting for the client to close', async () => {
    const h = await startListener();
    const { received, socket } = quitAndHold(h.port);
    // The 221 in full, then the server's FIN (a reset would reject).
    expect(await received).toMatch(/\r\n221 2\.0\.0 Bye\r\n$/);
    // smtp-server's half-close waited up to 5 s for the client's FIN; the session ends now.
    await waitFor(() => h.listener.connections === 0, 2000);
    expect(socket.destroyed).toBe(false); // the client has not closed its side
    socket.destroy();
  });
});
