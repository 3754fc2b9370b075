// Fuzzing the SMTP listener with seeded, mutated sessions: commands from the grammar and from
// nowhere, long lines, NUL and 8-bit bytes, pipelined junk, AUTH garbage, smuggling sequences in
// DATA, STARTTLS then more of the same inside TLS, resets mid-command. Every reply must be well
// formed and leak nothing; a 250 after DATA only for a message the sink holds; after each batch
// a legitimate client is served and memory is back under a bound. Reproduce a failure with
// TERN_FUZZ_SEED=<seed>; run longer with TERN_FUZZ_ROUNDS=<factor> (npm run fuzz).
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fuzzRounds, fuzzSeeds, mutate, Random, split } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import type { UserStore } from '../src/index.js';
import { closeAll, ehlo, type Harness, LOCAL_DOMAIN, sendMail, startListener, testTls } from './helpers.js';

afterAll(closeAll);

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

const SEEDS = fuzzSeeds([1, 2, 3, 4]);
const SESSIONS = fuzzRounds(60);
const BATCH = 20;
const PARALLEL = 4;

const users: UserStore = { authenticate: async (user, pass) => user === 'fuzz' && pass === 'fuzz-password' };
const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

const HOSTS = [
  'client.example',
  '[127.0.0.1]',
  '[IPv6:::1]',
  'x',
  '',
  'a'.repeat(300),
  'bad host',
  'é.example',
];
const ADDRESSES = [
  `user@${LOCAL_DOMAIN}`,
  'friend@remote.example',
  '',
  'a@[127.0.0.1]',
  '@route.example:user@remote.example',
  'user%remote.example@local.test',
  'bang!user@local.test',
  '"quoted local"@local.test',
  `${'l'.repeat(300)}@local.test`,
  'üser@lökal.test',
  'user@local.test@evil.example',
  'no-at-sign',
];
const MAIL_PARAMS = [
  '',
  ' SIZE=100',
  ' BODY=8BITMIME',
  ' SMTPUTF8',
  ' RET=HDRS ENVID=x',
  ' AUTH=<>',
  ' SIZE=99999999999',
  ' FOO=bar',
  ' BODY=BINARYMIME',
];
const RCPT_PARAMS = ['', ' NOTIFY=SUCCESS,FAILURE', ' ORCPT=rfc822;x@y', ' NOTIFY=NEVER', ' BAR'];
const VERBS = [
  'NOOP',
  'RSET',
  'VRFY user',
  'EXPN list',
  'HELP',
  'ETRN x',
  'TURN',
  'WIZ',
  'KILL',
  'XFORWARD NAME=x',
  'BDAT 10 LAST',
  'XYZZY',
  'GET / HTTP/1.1',
  'POST / HTTP/1.0',
  'XCLIENT ADDR=10.0.0.1',
  'LHLO x',
];

function body(random: Random): Buffer {
  const lines: Buffer[] = [Buffer.from(`Subject: fuzz ${random.int(0, 1e6)}\r\n\r\n`)];
  for (let i = random.int(0, 12); i > 0; i--) {
    const line = random.pick([
      () => Buffer.from(`${random.text(random.int(0, 120))}\r\n`),
      () => Buffer.from('.\r\n.\r\n'),
      () => Buffer.from('..leading dot\r\n'),
      () => Buffer.from('bare LF\nhere\r\n'),
      () => Buffer.from('bare CR\rhere\r\n'),
      () => Buffer.from('NUL\0here\r\n'),
      () => Buffer.from(`${'L'.repeat(random.int(990, 1010))}\r\n`),
      () => Buffer.from('\n.\n'),
      () => Buffer.from('\r\n.\nMAIL FROM:<smuggled@example.org>\r\n'),
      () => Buffer.concat([random.bytes(random.int(1, 64)), Buffer.from('\r\n')]),
    ])();
    lines.push(random.chance(0.15) ? mutate(random, line) : line);
  }
  return Buffer.concat(lines);
}

/** One command line (CRLF included), valid or not. */
function command(random: Random): Buffer {
  const line = random.pick([
    () => `EHLO ${random.pick(HOSTS)}`,
    () => `HELO ${random.pick(HOSTS)}`,
    () => `MAIL FROM:<${random.pick(ADDRESSES)}>${random.pick(MAIL_PARAMS)}`,
    () => `RCPT TO:<${random.pick(ADDRESSES)}>${random.pick(RCPT_PARAMS)}`,
    () =>
      `AUTH PLAIN ${random.chance(0.5) ? b64(`\0fuzz\0${random.pick(['fuzz-password', 'wrong', ''])}`) : random.text(random.int(0, 80))}`,
    () => `AUTH LOGIN\r\n${b64('fuzz')}\r\n${random.chance(0.5) ? b64('wrong') : random.text(20)}`,
    () => `AUTH ${random.pick(['CRAM-MD5', 'XOAUTH2 abc', 'PLAIN', '=', 'LOGIN =='])}`,
    () => random.pick(VERBS),
    () => random.text(random.int(0, 200)),
  ])();
  const bytes = Buffer.from(`${line}\r\n`, 'latin1');
  return random.chance(0.25) ? mutate(random, bytes) : bytes;
}

/** A transaction the listener should accept, before mutation: EHLO, MAIL, RCPT, DATA. */
function transaction(random: Random): Buffer[] {
  const line = (text: string): Buffer => Buffer.from(`${text}\r\n`, 'latin1');
  const steps = [
    line(`EHLO ${random.pick(['client.example', 'fuzz.example'])}`),
    line(`MAIL FROM:<sender@example.org>${random.pick(['', ' SIZE=1000', ' BODY=8BITMIME'])}`),
    line(`RCPT TO:<user@${LOCAL_DOMAIN}>`),
    Buffer.concat([line('DATA'), body(random), line('.')]),
  ];
  return steps.map((step) => (random.chance(0.12) ? mutate(random, step) : step));
}

/** What one session sends: a list of writes (one or several commands each, pipelined or split). */
function script(random: Random): Buffer[] {
  const writes: Buffer[] = [];
  for (let i = random.int(1, 6); i > 0; i--) {
    if (random.chance(0.5)) {
      for (const step of transaction(random)) {
        if (random.chance(0.15)) writes.push(command(random));
        writes.push(...(random.chance(0.3) ? split(random, step) : [step]));
      }
    } else {
      const burst = Buffer.concat(Array.from({ length: random.int(1, 4) }, () => command(random)));
      writes.push(...split(random, burst));
    }
  }
  return writes;
}

interface SessionResult {
  readonly output: string;
  readonly queued: number;
  /** The client vanished mid-session: a message it sent whole may be queued without the reply reaching it. */
  readonly vanished?: boolean;
}

/** A raw socket that collects everything the server says and tells when it closed. */
function collect(socket: Socket | TLSSocket): { text(): string; closed: Promise<void> } {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {});
  // Not events.once: it would reject on the 'error' a reset brings.
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { text: () => Buffer.concat(chunks).toString('latin1'), closed };
}

const write = (socket: Socket, bytes: Buffer): Promise<void> =>
  new Promise((resolve) => {
    // The server may have closed already (too many errors, QUIT in the junk): then there is nothing to send.
    if (socket.destroyed || !socket.writable) return resolve();
    try {
      socket.write(bytes, () => resolve());
    } catch {
      resolve();
    }
  });

/** Runs one fuzzed session; `tls` first does EHLO and STARTTLS, then fuzzes inside TLS. */
async function session(h: Harness, random: Random, tls: boolean): Promise<SessionResult> {
  const plain = netConnect({ port: h.port, host: '127.0.0.1' });
  await once(plain, 'connect');
  let socket: Socket | TLSSocket = plain;
  let seen = collect(plain);
  let prefix = '';
  if (tls) {
    // Read up to the 220 that answers STARTTLS before the handshake (bytes after it must not be sent).
    const lines = await readUntil(plain, /^220 .*\r\n(.|\r\n)*^220 /m, 'EHLO tls.example\r\nSTARTTLS\r\n');
    prefix = lines;
    plain.removeAllListeners('data');
    const secured = tlsConnect({ socket: plain, rejectUnauthorized: false });
    await once(secured, 'secureConnect');
    socket = secured;
    seen = collect(secured);
  }
  for (const bytes of script(random)) {
    if (random.chance(0.02)) {
      // A client that vanishes mid-command: the server must just clean up.
      void write(socket, bytes.subarray(0, Math.floor(bytes.length / 2)));
      try {
        if (random.chance(0.5)) plain.resetAndDestroy();
        else socket.destroy();
      } catch {
        socket.destroy(); // already closed by the server: a reset is no longer possible
      }
      await seen.closed;
      return { output: prefix + seen.text(), queued: countQueued(prefix + seen.text()), vanished: true };
    }
    await write(socket, bytes);
  }
  // Whatever state the server is in (DATA, an AUTH exchange, half a line), this ends it.
  await write(socket, Buffer.from('\r\n.\r\nQUIT\r\n'));
  const finished = await Promise.race([seen.closed.then(() => true), hang(15_000)]);
  socket.destroy();
  const output = prefix + seen.text();
  expect(
    finished,
    `the server neither answered QUIT nor closed (seed ${random.seed}):\n${output.slice(-2000)}`,
  ).toBe(true);
  return { output, queued: countQueued(output) };
}

function hang(ms: number): Promise<false> {
  return new Promise((resolve) => setTimeout(() => resolve(false), ms).unref());
}

async function readUntil(socket: Socket, pattern: RegExp, send: string): Promise<string> {
  let text = '';
  const onData = (chunk: Buffer): void => {
    text += chunk.toString('latin1');
  };
  socket.on('data', onData);
  socket.write(send);
  while (!pattern.test(text)) await once(socket, 'data');
  socket.removeListener('data', onData);
  return text;
}

const countQueued = (output: string): number => output.match(/^250 2\.0\.0 queued as /gm)?.length ?? 0;

/** Every reply line is a reply; errors carry an enhanced code of their class; nothing internal leaks. */
function checkReplies(output: string, seed: number): void {
  const lines = output.split('\r\n');
  if (lines.at(-1) === '') lines.pop();
  for (const line of lines) {
    const where = `seed ${seed}, line ${JSON.stringify(line.slice(0, 200))}`;
    expect(line, where).toMatch(/^[2-5]\d\d[ -]/);
    expect(line.length, where).toBeLessThanOrEqual(512);
    if (/^[45]/.test(line)) expect(line, where).toMatch(/^([45])\d\d[ -]\1\.\d{1,3}\.\d{1,3} \S/);
    expect(line, where).not.toMatch(
      /Error:|TypeError|ReferenceError|\bat \S+ \(|node_modules|\/work\/|\[object |undefined|NaN/,
    );
  }
}

async function legitimateSession(h: Harness): Promise<void> {
  const c = await h.connect();
  await ehlo(c);
  expect(await sendMail(c)).toMatch(/^250 2\.0\.0 queued as /);
  c.close();
}

test('the reply checks catch what they are for', () => {
  checkReplies('220 mx ready\r\n250-mx\r\n250 OK\r\n550 5.7.1 no\r\n', 0);
  for (const bad of [
    '451 try later\r\n',
    '550 4.7.1 wrong class\r\n',
    '250 ok\r\ngarbage\r\n',
    '451 4.3.0 TypeError: x\r\n',
  ]) {
    expect(() => checkReplies(bad, 0)).toThrow();
  }
});

describe.each(SEEDS)('fuzzed SMTP sessions, seed %i', (seed) => {
  test(`${SESSIONS} sessions in plain text and inside TLS`, async () => {
    const h = await startListener(
      {
        tls: testTls(),
        auth: true,
        greetingDelayMs: 0,
        authFailureDelayMs: 1,
        xclient: true,
        trustedNetworks: seed % 2 === 0 ? ['127.0.0.0/8'] : [],
      },
      { users },
    );
    const random = new Random(seed);
    gc();
    const baseline = process.memoryUsage().heapUsed;
    let queuedReplies = 0;
    let vanished = 0;
    const seen = { replies: 0, errors: 0, sessions: 0 };
    for (let done = 0; done < SESSIONS; done += BATCH) {
      for (let i = 0; i < BATCH; i += PARALLEL) {
        const results = await Promise.all(
          Array.from({ length: PARALLEL }, () =>
            session(h, new Random(random.int(0, 2 ** 31)), random.chance(0.3)),
          ),
        );
        for (const result of results) {
          const { output, queued } = result;
          checkReplies(output, seed);
          queuedReplies += queued;
          if (result.vanished) vanished++;
          seen.sessions++;
          seen.replies += output.match(/^\d{3} /gm)?.length ?? 0;
          seen.errors += output.match(/^[45]\d{2} /gm)?.length ?? 0;
        }
      }
      // Every 250 after DATA is a message the sink holds; the sink holds no other message, but for
      // those of clients that vanished before reading their reply (at most one each).
      const held = h.queue.messages.length - done / BATCH; // less the legitimate sessions
      expect(held, `seed ${seed}`).toBeGreaterThanOrEqual(queuedReplies);
      expect(held, `seed ${seed}`).toBeLessThanOrEqual(queuedReplies + vanished);
      await legitimateSession(h);
      gc();
      const grown = process.memoryUsage().heapUsed - baseline;
      expect(grown, `heap grew by ${grown} bytes after ${done + BATCH} sessions (seed ${seed})`).toBeLessThan(
        64 * 1024 * 1024,
      );
    }
    expect(h.listener.connections).toBeLessThanOrEqual(1);
    console.info(
      `seed ${seed}: ${seen.sessions} sessions, ${seen.replies} replies (${seen.errors} errors), ${queuedReplies} queued`,
    );
    // The fuzzer must reach the deep states, not only bounce off the first syntax error.
    expect(queuedReplies).toBeGreaterThan(0);
    expect(seen.errors).toBeGreaterThan(seen.sessions);
  }, 300_000);
});
