import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, makeCertificate, smtpDialog, waitFor } from '../src/index.js';

const servers: Server[] = [];

/** A fake server that runs `script` on each connection: exact bytes, split however the test likes. */
async function scripted(script: (socket: Socket) => void, tls = false): Promise<number> {
  const server = tls ? createTlsServer(makeCertificate(), script) : createServer(script);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return address.port;
}

afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          (server as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
        }),
    ),
  );
});

describe('smtpDialog', () => {
  it('joins a multi-line reply split across packets, and buffers the replies after it', async () => {
    const port = await scripted((socket) => {
      socket.write('220-first banner line\r\n22');
      setTimeout(() => socket.write('0 second\r\n250-a\r\n250-b'), 20);
      setTimeout(() => socket.write('\r\n250 c\r\n354 go ahead\r\n250\r\n'), 40);
    });
    const c = await smtpDialog(port);
    expect(await c.read()).toBe('220-first banner line\n220 second');
    expect(await c.read()).toBe('250-a\n250-b\n250 c');
    expect(await c.read()).toBe('354 go ahead');
    // A bare code with no text ends a reply too.
    expect(await c.read()).toBe('250');
    expect(c.transcript).toEqual([
      'S: 220-first banner line\n220 second',
      'S: 250-a\n250-b\n250 c',
      'S: 354 go ahead',
      'S: 250',
    ]);
    c.close();
  });

  it('sends exactly the bytes given and records them', async () => {
    const received: Buffer[] = [];
    const port = await scripted((socket) => {
      socket.write('220 ready\r\n');
      socket.on('data', (chunk) => {
        received.push(chunk);
        if (Buffer.concat(received).toString().endsWith('\r\n')) socket.write('250 ok\r\n');
      });
    });
    const c = await smtpDialog(port);
    await c.read();
    c.send('MAIL FROM:<a@b>\n');
    c.send(Buffer.from([0x00, 0x0d]));
    expect(await c.command('X')).toBe('250 ok');
    expect(Buffer.concat(received)).toEqual(Buffer.from('MAIL FROM:<a@b>\n\u0000\rX\r\n', 'latin1'));
    expect(c.transcript).toEqual([
      'S: 220 ready',
      'C: MAIL FROM:<a@b>\n',
      'C: \u0000\r',
      'C: X',
      'S: 250 ok',
    ]);
    c.close();
  });

  it('rejects a pending read when the server closes, showing the partial reply', async () => {
    const port = await scripted((socket) => {
      socket.end('250-only half\r\n250 ');
    });
    const c = await smtpDialog(port);
    await expect(c.read()).rejects.toThrow(/closed after a partial reply: "250-only half\\n250 "/);
    await c.closed;
    await expect(c.read()).rejects.toThrow(/closed/);
  });

  it('reports a refused connection clearly', async () => {
    const port = await freePort();
    await expect(smtpDialog(port)).rejects.toThrow(`smtpDialog: cannot connect to 127.0.0.1:${port}`);
  });

  it('speaks implicit TLS', async () => {
    const port = await scripted((socket) => {
      socket.write('220 tls ready\r\n');
      socket.on('data', () => socket.write('221 bye\r\n'));
    }, true);
    const c = await smtpDialog(port, { tls: true });
    expect(await c.read()).toBe('220 tls ready');
    expect(await c.command('QUIT')).toBe('221 bye');
    c.close();
    await c.closed;
  });
});

describe('waitFor', () => {
  it('resolves once the predicate holds, sync or async', async () => {
    let n = 0;
    await waitFor(() => ++n >= 3, 1000, 1);
    expect(n).toBe(3);
    await waitFor(async () => true);
  });

  it('throws with the condition in the message on timeout', async () => {
    await expect(waitFor(() => 1 > 2, 50)).rejects.toThrow(
      /waitFor: condition still false after 50 ms: .*1 > 2/,
    );
  });
});

describe('freePort', () => {
  it('returns a port that can be bound on 127.0.0.1', async () => {
    const port = await freePort();
    const server = createServer();
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    expect(port).toBeGreaterThan(1024);
  });
});
