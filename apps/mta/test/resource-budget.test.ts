// The resource budget, on a real tern process with its default memory settings: 10,000 idle
// connections, twenty 25 MiB messages being received at once, and a hostile next hop streaming
// endless reply lines, all at the same time. Tern stays under the ceiling the README states and
// a legitimate client is served meanwhile. (Limits raised only where the load needs them:
// connection counts, message size.)
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { swaks, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { type OpsTern, startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

const MIB = 1024 * 1024;
/**
 * The ceiling the README states for this load with default intake and delivery settings (Node 22+
 * lets V8's young generation grow larger than Node 20 did; the README says how to cap it).
 */
const CEILING_MB = 512;
const IDLE = 10_000;
const BIG = 20;
const BIG_SIZE = 25 * MIB;

/** A next hop that answers EHLO with reply lines that never end. */
function hostileNextHop(): Promise<{ server: Server; port: number; connections: () => number }> {
  let connections = 0;
  const line = Buffer.from(`250-${'x'.repeat(1020)}\r\n`);
  const server = createServer((socket) => {
    connections++;
    socket.on('error', () => {});
    socket.write('220 hostile.test ESMTP\r\n');
    socket.once('data', () => {
      const flood = (): void => {
        while (!socket.destroyed && socket.write(line)) {}
        if (!socket.destroyed) socket.once('drain', flood);
      };
      flood();
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as { port: number }).port, connections: () => connections }),
    ),
  );
}

/** A next hop that takes every message and keeps only a count of bytes. */
function discardingNextHop(): Promise<{ server: Server; port: number; delivered: () => number }> {
  let delivered = 0;
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.write('220 sink.test ESMTP\r\n');
    let inData = false;
    let tail = '';
    socket.on('data', (chunk: Buffer) => {
      const text = tail + chunk.toString('latin1');
      if (inData) {
        const end = text.indexOf('\r\n.\r\n');
        if (end === -1) {
          tail = text.slice(-4);
          return;
        }
        inData = false;
        delivered++;
        tail = '';
        socket.write('250 2.0.0 kept\r\n');
        return;
      }
      tail = '';
      for (const command of text.split('\r\n').filter(Boolean)) {
        const verb = command.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') socket.write('250-sink.test\r\n250 PIPELINING\r\n');
        else if (verb === 'DATA') {
          inData = true;
          socket.write('354 go on\r\n');
        } else if (verb === 'QUIT') socket.end('221 bye\r\n');
        else socket.write('250 2.0.0 OK\r\n');
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, port: (server.address() as { port: number }).port, delivered: () => delivered }),
    ),
  );
}

/** Opens a connection and reads the banner; the socket then sits idle. */
async function idle(port: number): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1' });
  socket.on('error', () => {});
  await once(socket, 'data');
  return socket;
}

/** One message of about `size` bytes over its own connection, written as fast as tern reads it. */
async function sendLarge(port: number, size: number, to: string): Promise<string> {
  const socket = connect({ port, host: '127.0.0.1' });
  socket.on('error', () => {});
  let received = '';
  const replies: ((line: string) => void)[] = [];
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
    for (let end = received.indexOf('\r\n'); end >= 0; end = received.indexOf('\r\n')) {
      const line = received.slice(0, end);
      received = received.slice(end + 2);
      if (!/^\d{3}-/.test(line)) replies.shift()?.(line);
    }
  });
  const next = (): Promise<string> => new Promise((resolve) => replies.push(resolve));
  await next();
  for (const command of ['EHLO big.example', 'MAIL FROM:<big@src.test>', `RCPT TO:<${to}>`, 'DATA']) {
    const reply = next();
    socket.write(`${command}\r\n`);
    await reply;
  }
  const block = Buffer.from(`${'y'.repeat(76)}\r\n`.repeat(840));
  socket.write('Subject: big\r\n\r\n');
  for (let written = 0; written < size; written += block.length) {
    if (!socket.write(block)) await once(socket, 'drain');
  }
  const final = next();
  socket.write('.\r\n');
  const reply = await final;
  socket.destroy();
  return reply;
}

/** Peak resident memory of a process since it started (VmHWM), in MB. */
function peakRssMb(pid: number): number {
  const kb = Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return kb / 1024;
}
function rssMb(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
}

let tern: OpsTern;
let hostile: Awaited<ReturnType<typeof hostileNextHop>>;
let sink: Awaited<ReturnType<typeof discardingNextHop>>;
const sockets: Socket[] = [];

beforeAll(async () => {
  hostile = await hostileNextHop();
  sink = await discardingNextHop();
  tern = await startOpsTern(
    {
      localDomains: [],
      trustedNetworks: ['127.0.0.0/8'],
      log: { level: 'warn' },
      delivery: {
        routes: {
          'hostile.test': { type: 'smtp', host: '127.0.0.1', port: hostile.port, tls: 'none' },
          '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' },
        },
      },
    },
    {
      listener: {
        reverseLookup: false,
        // Room for the idle crowd without tipping the listener into stress (80 % of maxConnections).
        limits: { maxConnections: 15_000, maxConnectionsPerIp: 15_000, maxMessageSize: 30 * MIB },
      },
    },
  );
}, 60_000);

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await stopAllOpsTern();
  hostile?.server.close();
  sink?.server.close();
});

test(`${IDLE} idle connections, ${BIG} x 25 MiB and a hostile next hop at once: under ${CEILING_MB} MB, still serving`, async () => {
  const baseline = rssMb(tern.pid);
  // The idle crowd, opened in waves so the test does not drown the listener's accept queue.
  for (let opened = 0; opened < IDLE; opened += 500) {
    sockets.push(...(await Promise.all(Array.from({ length: 500 }, () => idle(tern.port)))));
  }
  expect(sockets).toHaveLength(IDLE);

  // A hostile next hop for a few messages, and twenty large messages, all at once.
  const hostileMail = Promise.all(
    Array.from({ length: 4 }, (_, i) =>
      swaks(tern.port, ['--from', 'app@src.test', '--to', `user${i}@hostile.test`]),
    ),
  );
  const large = Promise.all(
    Array.from({ length: BIG }, (_, i) => sendLarge(tern.port, BIG_SIZE, `big${i}@dest.test`)),
  );

  // Meanwhile a legitimate client is served.
  await waitFor(() => hostile.connections() > 0, 30_000);
  const legit = await swaks(tern.port, ['--from', 'app@src.test', '--to', 'someone@dest.test']);
  expect(legit.stdout).toMatch(/<- +250 2\.0\.0 queued as/);

  const replies = await large;
  expect(replies.map((r) => r.slice(0, 3))).toEqual(Array(BIG).fill('250'));
  for (const result of await hostileMail) expect(result.stdout).toMatch(/<- +250 2\.0\.0 queued as/);
  // Everything for the good next hop arrives; the hostile one only ever gets deferrals.
  await waitFor(() => sink.delivered() >= BIG + 1, 120_000);
  // Evidence the hostile next hop was dealt with: its recipients deferred as a protocol violation.
  const deferred = async (): Promise<number> =>
    Number(
      /^tern_delivery_recipients_total\{result="deferred"\} (\d+)/m.exec(
        (await tern.api('GET', '/metrics')).body,
      )?.[1] ?? 0,
    );
  await waitFor(async () => (await deferred()) >= 4, 60_000);
  const hostileJobs = (await tern.api('GET', '/api/queue?domain=hostile.test')).body.jobs as {
    recipients: { lastReply?: { enhanced: string; text: string } }[];
  }[];
  expect(hostileJobs).toHaveLength(4);
  for (const job of hostileJobs) {
    expect(job.recipients[0]?.lastReply?.enhanced).toBe('4.5.0');
    expect(job.recipients[0]?.lastReply?.text).toMatch(/broke the SMTP protocol/);
  }

  const peak = peakRssMb(tern.pid);
  console.info(
    `resource budget: baseline ${baseline.toFixed(0)} MB, peak ${peak.toFixed(0)} MB with ${IDLE} idle connections, ${BIG} x 25 MiB and a hostile next hop`,
  );
  expect(peak).toBeLessThan(CEILING_MB);
  // The idle crowd is still connected: nothing was dropped to make room.
  expect(sockets.filter((s) => !s.destroyed).length).toBe(IDLE);
}, 300_000);
