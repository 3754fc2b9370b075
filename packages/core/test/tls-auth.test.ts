// TLS (STARTTLS, implicit, SNI) and AUTH (PLAIN, LOGIN, the auth hook, the users file) over real SMTP.
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as connectTcp } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { definePlugin, type Plugin, reject, tempfail } from '@tern/plugin-api';
import { makeCertificate, type RawSmtp } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { addUser, FileUserStore, type ListenerOptions } from '../src/index.js';
import { closeAll, ehlo, type Harness, sendMail, sleep, startListener, testTls } from './helpers.js';

const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };
let dir: string;
let users: FileUserStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tern-core-auth-'));
  const file = join(dir, 'users');
  await addUser(file, 'alice', 'correct horse', FAST_SCRYPT);
  await addUser(file, 'bob', 'battery staple', FAST_SCRYPT);
  users = await FileUserStore.open(file);
});

afterAll(async () => {
  await closeAll();
  await rm(dir, { recursive: true, force: true });
});

const plain = (user: string, password: string, authzid = ''): string =>
  Buffer.from(`${authzid}\0${user}\0${password}`).toString('base64');
const b64 = (text: string): string => Buffer.from(text).toString('base64');

async function submission(
  overrides: Partial<ListenerOptions> = {},
  plugins: Plugin[] = [],
): Promise<Harness> {
  return startListener(
    { kind: 'submission', tls: testTls(), authFailureDelayMs: 0, ...overrides },
    { users, plugins },
  );
}

async function secured(h: Harness): Promise<RawSmtp> {
  const c = await h.connect();
  await ehlo(c);
  expect(await c.command('STARTTLS')).toBe('220 2.0.0 Ready to start TLS');
  await c.startTls();
  return c;
}

describe('before STARTTLS on a submission listener', () => {
  test('AUTH is neither advertised nor accepted, MAIL is refused, STARTTLS is offered', async () => {
    const h = await submission();
    const c = await h.connect();
    const features = await ehlo(c);
    expect(features).toMatch(/\n250[ -]STARTTLS(\n|$)/);
    expect(features).not.toMatch(/AUTH/);
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`)).toBe(
      '530 5.7.0 Must issue a STARTTLS command first',
    );
    expect(await c.command('AUTH LOGIN')).toBe('530 5.7.0 Must issue a STARTTLS command first');
    expect(await c.command('MAIL FROM:<alice@example.org>')).toBe(
      '530 5.7.0 Must issue a STARTTLS command first',
    );
  });

  test('a submission listener without TLS is a configuration error', async () => {
    await expect(startListener({ kind: 'submission' })).rejects.toThrow(
      'listener test: tls: requireTls is set, so a key and certificate are needed',
    );
  });
});

describe('STARTTLS', () => {
  test('after the handshake AUTH is offered, STARTTLS is not, and MAIL needs AUTH', async () => {
    const h = await submission();
    const c = await secured(h);
    const features = await ehlo(c);
    expect(features).toMatch(/\n250[ -]AUTH PLAIN LOGIN(\n|$)/);
    expect(features).not.toMatch(/STARTTLS/);
    expect(await c.command('MAIL FROM:<alice@example.org>')).toBe('530 5.7.0 Authentication required');
  });

  test('a partial command line sent before the handshake is not joined to the first encrypted command', async () => {
    const h = await submission();
    const c = await h.connect();
    await ehlo(c);
    c.send('STARTTLS\r\nNOOP x');
    expect(await c.read()).toBe('220 2.0.0 Ready to start TLS');
    await c.startTls();
    // Were "NOOP x" kept, this line would be "NOOP xEHLO client.example": 250 for NOOP, no EHLO.
    expect(await c.command('EHLO client.example')).toMatch(/^250-mx\.tern\.test Hello /);
    expect(await c.command('NOOP')).toBe('250 2.0.0 OK');
  });

  test('complete commands pipelined after STARTTLS in clear text are discarded, not run inside TLS', async () => {
    const h = await submission();
    const c = await h.connect();
    await ehlo(c);
    c.send(
      `STARTTLS\r\nEHLO injected.example\r\nAUTH PLAIN ${plain('alice', 'correct horse')}\r\nMAIL FROM:<evil@example.org>\r\n`,
    );
    expect(await c.read()).toBe('220 2.0.0 Ready to start TLS');
    await c.startTls();
    // The first reply inside TLS must be NOOP's: nothing injected was answered.
    expect(await c.command('NOOP')).toBe('250 2.0.0 OK');
    await ehlo(c);
    expect(await c.command('MAIL FROM:<x@example.org>')).toBe('530 5.7.0 Authentication required');
  });
});

async function commonName(socket: TLSSocket): Promise<string> {
  const subject = socket.getPeerCertificate().subject as { CN?: string };
  socket.destroy();
  return subject.CN ?? '';
}

function implicitTls(port: number, servername?: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connectTls({
      port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      ...(servername ? { servername } : {}),
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Runs EHLO and STARTTLS over a plain socket and returns the TLS socket. */
function startTlsWith(port: number, servername: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ port, host: '127.0.0.1' });
    let buffer = '';
    let step = 0;
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      buffer += chunk.toString('latin1');
      if (step === 0 && /^220 .*\r\n/m.test(buffer)) {
        step = 1;
        buffer = '';
        socket.write('EHLO client.example\r\n');
      } else if (step === 1 && /^250 .*\r\n/m.test(buffer)) {
        step = 2;
        buffer = '';
        socket.write('STARTTLS\r\n');
      } else if (step === 2 && /^220 .*\r\n/m.test(buffer)) {
        step = 3;
        socket.removeAllListeners('data');
        const secure = connectTls({ socket, servername, rejectUnauthorized: false });
        secure.once('secureConnect', () => resolve(secure));
        secure.once('error', reject);
      }
    });
  });
}

describe('implicit TLS and SNI', () => {
  const sni = { 'alt.tern.test': makeCertificate(['alt.tern.test']) };

  test('an smtps listener speaks TLS from the first byte and offers AUTH at once', async () => {
    const h = await startListener({ kind: 'smtps', tls: { ...testTls(), sni } }, { users });
    const c = await h.connect({ tls: true });
    const features = await ehlo(c);
    expect(features).toMatch(/AUTH PLAIN LOGIN/);
    expect(features).not.toMatch(/STARTTLS/);
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`)).toBe(
      '235 2.7.0 Authentication successful',
    );
    expect(await sendMail(c, { to: ['friend@remote.example'] })).toMatch(/^250 2\.0\.0 queued as /);
    expect(await commonName(await implicitTls(h.port))).toBe('mx.tern.test');
    expect(await commonName(await implicitTls(h.port, 'alt.tern.test'))).toBe('alt.tern.test');
    expect(await commonName(await implicitTls(h.port, 'unknown.example'))).toBe('mx.tern.test');
  });

  test('STARTTLS picks the certificate by SNI too', async () => {
    const h = await startListener({ kind: 'mx', tls: { ...testTls(), sni } });
    expect(await commonName(await startTlsWith(h.port, 'alt.tern.test'))).toBe('alt.tern.test');
    expect(await commonName(await startTlsWith(h.port, 'mx.tern.test'))).toBe('mx.tern.test');
  });

  test('TLS older than 1.2 is refused', async () => {
    const h = await startListener({ kind: 'smtps', tls: testTls() });
    const attempt = new Promise<string>((resolve) => {
      const socket = connectTls({
        port: h.port,
        host: '127.0.0.1',
        rejectUnauthorized: false,
        maxVersion: 'TLSv1.1',
        minVersion: 'TLSv1',
      });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('error', () => resolve('refused'));
    });
    expect(await attempt).toBe('refused');
  });
});

describe('AUTH with the users file', () => {
  test('PLAIN: right password 235 2.7.0, wrong password 535 5.7.8, unknown user 535 5.7.8', async () => {
    const h = await submission();
    const c = await secured(h);
    await ehlo(c);
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'wrong')}`)).toBe(
      '535 5.7.8 Authentication credentials invalid',
    );
    expect(await c.command(`AUTH PLAIN ${plain('mallory', 'x')}`)).toBe(
      '535 5.7.8 Authentication credentials invalid',
    );
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'correct horse', 'bob')}`)).toBe(
      '535 5.7.8 Authorization identity must match the authentication identity',
    );
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`)).toBe(
      '235 2.7.0 Authentication successful',
    );
    expect(await c.command(`AUTH PLAIN ${plain('bob', 'battery staple')}`)).toMatch(/^503 5\.5\.1 /);
  });

  test('PLAIN with the initial response on its own line', async () => {
    const h = await submission();
    const c = await secured(h);
    await ehlo(c);
    expect(await c.command('AUTH PLAIN')).toBe('334 ');
    expect(await c.command(plain('bob', 'battery staple'))).toBe('235 2.7.0 Authentication successful');
  });

  test('a broken continuation line ends the exchange; the next line is a command again', async () => {
    const h = await submission({ limits: { maxLineLength: 512 } });
    const c = await secured(h);
    await ehlo(c);
    expect(await c.command('AUTH LOGIN')).toBe('334 VXNlcm5hbWU6');
    expect(await c.command('x'.repeat(600))).toBe('501 5.5.4 Authentication aborted');
    expect(await c.command('AUTH PLAIN')).toBe('334 ');
    c.send(`${plain('alice', 'correct horse')}\n`); // bare LF
    expect(await c.read()).toBe('501 5.5.4 Authentication aborted');
    expect(await c.command('NOOP')).toMatch(/^250 /);
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`)).toBe(
      '235 2.7.0 Authentication successful',
    );
  });

  test('LOGIN: right and wrong password', async () => {
    const h = await submission();
    const c = await secured(h);
    await ehlo(c);
    expect(await c.command('AUTH LOGIN')).toBe('334 VXNlcm5hbWU6');
    expect(await c.command(b64('alice'))).toBe('334 UGFzc3dvcmQ6');
    expect(await c.command(b64('nope'))).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.command(`AUTH LOGIN ${b64('alice')}`)).toBe('334 UGFzc3dvcmQ6');
    expect(await c.command(b64('correct horse'))).toBe('235 2.7.0 Authentication successful');
  });

  test('an authenticated submission relays; Received says TLS and AUTH; Message-ID and Date are added', async () => {
    const h = await submission();
    const c = await secured(h);
    await ehlo(c);
    await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`);
    expect(await sendMail(c, { from: 'alice@example.org', to: ['friend@remote.example'] })).toMatch(
      /^250 2\.0\.0 queued as /,
    );
    const queued = h.queue.messages[0]!.message;
    expect(queued.source).toMatchObject({ user: 'alice', listener: 'test' });
    const raw = h.queue.raw(0).toString('latin1');
    expect(raw).toMatch(
      /^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+\)\r\n\t\(authenticated as alice\)\r\n\tby mx\.tern\.test \(Tern\) with ESMTPSA id /,
    );
    expect(raw).toMatch(/\r\nMessage-ID: <[0-9a-f-]{36}@mx\.tern\.test>\r\n/);
    expect(raw).toMatch(/\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/);
    expect(queued.messageId).toMatch(/@mx\.tern\.test>$/);
  });

  test('an existing Message-ID and Date are kept', async () => {
    const h = await submission();
    const c = await secured(h);
    await ehlo(c);
    await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`);
    const data =
      'Message-ID: <mine@example.org>\r\nDate: Mon, 1 Jan 2029 00:00:00 +0000\r\nSubject: x\r\n\r\nx\r\n';
    expect(await sendMail(c, { data })).toMatch(/^250 /);
    const raw = h.queue.raw(0).toString('latin1');
    expect(raw.match(/^Message-ID:/gim)).toHaveLength(1);
    expect(raw.match(/^Date:/gim)).toHaveLength(1);
    expect(h.queue.messages[0]?.message.messageId).toBe('<mine@example.org>');
  });

  test('failures are answered ever more slowly and the connection is closed after maxAuthFailures', async () => {
    const h = await submission({ authFailureDelayMs: 100, limits: { maxAuthFailures: 3 } });
    const c = await secured(h);
    await ehlo(c);
    const timed = async (line: string): Promise<[string, number]> => {
      const started = performance.now();
      const reply = await c.command(line);
      return [reply, performance.now() - started];
    };
    const [first, t1] = await timed(`AUTH PLAIN ${plain('alice', 'bad1')}`);
    const [second, t2] = await timed(`AUTH PLAIN ${plain('alice', 'bad2')}`);
    const [third, t3] = await timed(`AUTH PLAIN ${plain('alice', 'bad3')}`);
    expect([first, second]).toEqual([
      '535 5.7.8 Authentication credentials invalid',
      '535 5.7.8 Authentication credentials invalid',
    ]);
    expect(third).toBe('421 4.7.0 Too many failed authentication attempts, closing connection');
    expect(t1).toBeGreaterThanOrEqual(95);
    expect(t2).toBeGreaterThanOrEqual(195);
    expect(t3).toBeGreaterThanOrEqual(395);
    await c.closed;
  });

  test('the users file is re-read when it changes', async () => {
    const file = join(dir, 'users-reload');
    await addUser(file, 'carol', 'first', FAST_SCRYPT);
    const store = await FileUserStore.open(file);
    const h = await startListener(
      { kind: 'submission', tls: testTls(), authFailureDelayMs: 0 },
      { users: store },
    );
    const c = await secured(h);
    await ehlo(c);
    await sleep(20); // a different mtime for the rewrite
    await addUser(file, 'carol', 'second', FAST_SCRYPT);
    expect(await c.command(`AUTH PLAIN ${plain('carol', 'first')}`)).toMatch(/^535 /);
    expect(await c.command(`AUTH PLAIN ${plain('carol', 'second')}`)).toBe(
      '235 2.7.0 Authentication successful',
    );
  });
});

describe('AUTH through the auth hook', () => {
  test('accept authenticates without the users file; reject and tempfail give the plugin reply; continue falls through', async () => {
    const seen: string[] = [];
    const policy = definePlugin({
      name: 'auth-policy',
      auth: (ctx) => {
        seen.push(`${ctx.method}:${ctx.username}`);
        if (ctx.username === 'service') return ctx.password === 'token' ? { kind: 'accept' } : undefined;
        if (ctx.username === 'blocked') return reject(535, '5.7.8', 'Account disabled');
        if (ctx.username === 'flaky') return tempfail(454, '4.7.0', 'Directory unavailable');
        return undefined;
      },
    });
    const h = await submission({}, [policy]);
    const c = await secured(h);
    await ehlo(c);
    expect(await c.command(`AUTH PLAIN ${plain('blocked', 'x')}`)).toBe('535 5.7.8 Account disabled');
    expect(await c.command(`AUTH PLAIN ${plain('flaky', 'x')}`)).toBe('454 4.7.0 Directory unavailable');
    expect(await c.command(`AUTH PLAIN ${plain('service', 'nope')}`)).toMatch(/^535 5\.7\.8 /);
    expect(await c.command(`AUTH LOGIN ${b64('service')}`)).toBe('334 UGFzc3dvcmQ6');
    expect(await c.command(b64('token'))).toBe('235 2.7.0 Authentication successful');
    expect(seen).toEqual(['PLAIN:blocked', 'PLAIN:flaky', 'PLAIN:service', 'LOGIN:service']);
  });

  test('an auth hook that throws gives 451 4.3.0, never a success', async () => {
    const broken = definePlugin({
      name: 'broken-auth',
      auth: () => {
        throw new Error('ldap://secret-host/ unreachable');
      },
    });
    const h = await submission({}, [broken]);
    const c = await secured(h);
    await ehlo(c);
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'correct horse')}`)).toBe(
      '451 4.3.0 Temporary local problem, please try again later',
    );
  });
});
