// Fuzzing the deliverer with a hostile next hop: a real TCP server (STARTTLS with a testkit
// certificate, SMTP and LMTP) that answers with seeded, mutated replies: wrong codes, missing or
// malformed enhanced codes, continuation lines that never end, replies split at every byte or sent
// before their command, bare LF, NUL, 8-bit and overlong lines, 421 at random points, resets
// mid-DATA, TLS handshake garbage, LMTP replies missing or extra. Every recipient must get exactly
// one outcome; a 5xx only when the server sent one; "delivered" only when the whole message reached
// the server and it answered 2xx after it; nothing thrown, no connection or timer left behind,
// memory bounded; and after each batch the same deliverer still delivers to a well-behaved sink.
// Reproduce a failure with TERN_FUZZ_SEED=<seed>; run longer with TERN_FUZZ_ROUNDS=<factor>.
import { TLSSocket } from 'node:tls';
import type { NextHop, TlsMode } from '@tern/plugin-api';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import type { DeliveryReport } from '@tern/queue';
import {
  fuzzRounds,
  fuzzSeeds,
  makeCertificate,
  mutate,
  Random,
  retainedMemory,
  type SmtpSink,
  split,
  startSmtpSink,
  waitFor,
  withinDeadline,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createDeliverer, type Deliverer } from '../src/index.js';
import { makeJob, storedMessage } from './helpers/jobs.js';
import { type ScriptedServer, ServerConnection, startScriptedServer } from './helpers/scripted-server.js';

const SEEDS = fuzzSeeds([1, 2, 3]);
const JOBS = fuzzRounds(48);
const BATCH = 16;
const cert = makeCertificate(['mx.fuzz.test']);
const GOOD_DOMAIN = 'good.test';

/** Short deadlines: a server that goes silent costs one of them, and silence is one of its moves. */
const TIMEOUTS = {
  connectMs: 1000,
  greetingMs: 1000,
  commandMs: 1000,
  dataInitMs: 1000,
  dataBlockMs: 1000,
  dataEndMs: 1500,
};

let sink: SmtpSink;
beforeAll(async () => {
  sink = await startSmtpSink({ tls: cert });
});
afterAll(async () => {
  await sink?.stop();
});

/** What the server did while one job was being delivered (over every connection it used). */
interface ServerLog {
  /** Every byte the server wrote during the job. */
  readonly written: Buffer[];
  /** Everything written on each connection the job used, also before it (a pooled one's EHLO reply). */
  readonly connections: Set<Buffer[]>;
  readonly transactions: ServerTransaction[];
  /** TLS handshakes that completed. */
  handshakes: number;
  /** Bytes of the message the job sends (what a SIZE limit is compared with). */
  messageSize: number;
}

/** One MAIL FROM as the server saw it. */
interface ServerTransaction {
  readonly rcpts: string[];
  /** The final dot of the message arrived. */
  dataEnded: boolean;
  /** What the server wrote after the final dot arrived (the replies to it). */
  readonly afterDot: Buffer[];
  /**
   * What it wrote from its 354 until the dot arrived (or the server hung up instead). A 2xx from
   * then is no answer to the message, but once our dot is on the wire a client cannot tell it from
   * one, even when the server then resets before reading the dot: such a server lies, as one that
   * says 250 and loses the message does. fuzz-findings covers the case a client can tell: the reply
   * arriving while the message is still being sent.
   */
  readonly whileReceiving: Buffer[];
}

/** How one deliverer reaches its hostile server. */
interface LaneConfig {
  readonly protocol: 'smtp' | 'lmtp';
  readonly tls: TlsMode;
  readonly auth: boolean;
}

/** One deliverer and the hostile server it talks to; its jobs run one after the other. */
interface Lane extends LaneConfig {
  readonly server: ScriptedServer;
  /** What the deliverer logged. */
  readonly logs: LogRecord[];
  deliverer: Deliverer;
  /** Where the server writes down what it does: the job being delivered now. */
  log: ServerLog;
  /** What each connection still open wrote (a pooled one may be refused locally without a word). */
  readonly open: Set<Buffer[]>;
  /** Draws for the jobs, and seeds for the server's connections: apart, so a run is reproducible. */
  readonly jobs: Random;
}

const newLog = (): ServerLog => ({
  written: [],
  connections: new Set(),
  transactions: [],
  handshakes: 0,
  messageSize: 0,
});

async function openLane(config: LaneConfig, random: Random): Promise<Lane> {
  const connections = new Random(random.int(0, 2 ** 31));
  const lane = {
    ...config,
    logs: [],
    log: newLog(),
    open: new Set<Buffer[]>(),
    jobs: new Random(random.int(0, 2 ** 31)),
  } as Omit<Lane, 'server' | 'deliverer'>;
  const server = await startScriptedServer((conn) =>
    hostile(conn, withServer, new Random(connections.int(0, 2 ** 31))),
  );
  const withServer: Lane = Object.assign(lane, {
    server,
    deliverer: makeDeliverer(config, server, lane.logs),
  });
  return withServer;
}

function makeDeliverer(config: LaneConfig, server: ScriptedServer, logs: LogRecord[]): Deliverer {
  const hop: NextHop =
    config.protocol === 'lmtp'
      ? { type: 'lmtp', host: '127.0.0.1', port: server.port, tls: config.tls }
      : {
          type: 'smtp',
          host: '127.0.0.1',
          port: server.port,
          tls: config.tls,
          ...(config.auth ? { auth: { user: 'fuzz', pass: 'fuzz-password' } } : {}),
        };
  return createDeliverer({
    hostname: 'out.tern.test',
    routes: {
      '*': hop,
      [GOOD_DOMAIN]: { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'opportunistic' },
    },
    tls: { ca: cert.cert, allowInsecureAuth: true },
    timeouts: TIMEOUTS,
    // Pooled connections are part of what is fuzzed (RSET on reuse, a server that broke while idle).
    pool: { idleMs: 2000 },
    logger: memoryLogger(logs),
  });
}

/** A reply of `code` with `lines` of text, multi-line when there are several. */
function reply(code: number, ...lines: string[]): string {
  return lines.map((text, i) => `${code}${i === lines.length - 1 ? ' ' : '-'}${text}\r\n`).join('');
}

/**
 * One connection of the hostile server: the dialogue of a working SMTP/LMTP server whose replies
 * (and choices: accept, defer, refuse) are drawn from `random`, with a hostile move instead of
 * the plain reply at a rate drawn per connection.
 */
async function hostile(first: ServerConnection, lane: Lane, random: Random): Promise<void> {
  let conn = first;
  const lmtp = lane.protocol === 'lmtp';
  const hostility = random.pick([0, 0.03, 0.1, 0.25]);
  let secure = false;
  /** Replies already sent ahead of their command ("before the command"): the next ones say nothing. */
  let prepaid = 0;
  let tx: ServerTransaction | undefined;
  let accepted: string[] = [];
  /** From the final dot to the next command: what is written now answers the message. */
  let answeringDot = false;
  /** From the 354 to the final dot. */
  let receiving = false;
  let closed = false;
  /** Everything this connection wrote. */
  const history: Buffer[] = [];
  lane.open.add(history);
  void first.closed.then(() => lane.open.delete(history));

  const write = (bytes: Buffer | string): void => {
    if (closed || conn.socket.destroyed) return;
    const buffer = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
    lane.log.written.push(buffer);
    lane.log.connections.add(history);
    history.push(buffer);
    if (answeringDot) tx?.afterDot.push(buffer);
    if (receiving) tx?.whileReceiving.push(buffer);
    conn.write(buffer);
  };
  const hangUp = (reset: boolean): void => {
    closed = true;
    if (reset) {
      try {
        conn.socket.resetAndDestroy();
        return;
      } catch {
        // A TLS socket over a handle already gone: a plain destroy is all that is left.
      }
    }
    conn.socket.destroy();
  };

  /** Sends `text` (one reply), or a hostile move in its place. */
  const say = async (text: string): Promise<void> => {
    if (prepaid > 0) {
      prepaid--;
      return;
    }
    if (!random.chance(hostility)) return write(text);
    const bytes = Buffer.from(text, 'latin1');
    switch (random.int(0, 16)) {
      case 0:
        return write(mutate(random, bytes));
      case 1: // a wrong code, of any class
        return write(
          text.replace(
            /^\d{3}/gm,
            String(random.pick([100, 220, 235, 250, 334, 354, 421, 450, 500, 550, 999])),
          ),
        );
      case 2: // the enhanced code missing, malformed, or of the wrong class
        return write(
          text.replace(/^(\d{3}[ -])\d\.\d{1,3}\.\d{1,3} ?/gm, (_, start: string) =>
            random.pick([start, `${start}9.9.9 `, `${start}5.1 `, `${start}2.0.0 `, `${start}4.x.y `]),
          ),
        );
      case 3: {
        // Continuation lines that never end: until the client gives up on the reply.
        const code = text.slice(0, 3);
        await conn.flood(() => `${code}-${random.text(random.int(0, 40))}\r\n`, 4 * 2 ** 20);
        return;
      }
      case 4: // split at every byte
        for (const byte of bytes) {
          write(Buffer.from([byte]));
          await new Promise((resolve) => setImmediate(resolve));
        }
        return;
      case 5: // split at random points, pieces apart
        for (const piece of split(random, bytes)) {
          write(piece);
          await new Promise((resolve) => setImmediate(resolve));
        }
        return;
      case 6: // bare LF line ends
        return write(text.replace(/\r\n/g, '\n'));
      case 7: // NUL and 8-bit bytes in the text
        return write(Buffer.from(text.replace(/ /, ` \0\xff\xe9\xc3\x28 `), 'latin1'));
      case 8: // an overlong line
        return write(`${text.slice(0, 4)}${'x'.repeat(random.pick([600, 5000, 70_000]))}${text.slice(4)}`);
      case 9: // 421 instead, then gone
        write(reply(421, '4.3.2 Service shutting down'));
        return hangUp(false);
      case 10:
        return hangUp(random.chance(0.5));
      case 11: // silence: the client's deadline must end it
        return;
      case 12: // this reply, and the next one before its command
        write(text);
        write(reply(250, '2.0.0 Ok, said early'));
        prepaid++;
        return;
      case 13: // an extra reply nobody asked for
        return write(`${text}${reply(random.pick([250, 421, 550]), '2.0.0 unasked')}`);
      case 14: // too many lines, each short
        return write(`${text.slice(0, 3)}-x\r\n`.repeat(random.int(90, 300)) + text);
      case 15: // no separator after the code: `5501 text`, `250OK`
        return write(
          text.replace(/^(\d{3})[ -]/gm, (_, code: string) => `${code}${random.pick(['1', 'x', '', '\t'])}`),
        );
      default: // random bytes
        return write(random.bytes(random.int(1, 200)));
    }
  };

  const startTls = async (): Promise<void> => {
    switch (random.chance(hostility * 2) ? random.int(0, 4) : -1) {
      case 0: // handshake garbage: a record header, then noise, then gone or silent
        write(reply(220, '2.0.0 Ready to start TLS'));
        write(Buffer.concat([Buffer.from([0x16, 0x03, 0x03, 0x00, 0x40]), random.bytes(random.int(0, 300))]));
        if (random.chance(0.5)) hangUp(false);
        return;
      case 1: // response injection: a reply in plain text behind the 220
        write(`${reply(220, '2.0.0 Ready')}${reply(250, 'injected')}`);
        break;
      case 2:
        write(reply(454, '4.7.0 TLS not available'));
        return;
      case 3:
        write(reply(220, '2.0.0 Ready'));
        hangUp(random.chance(0.5));
        return;
      case 4:
        return say(reply(220, '2.0.0 Ready'));
      default:
        write(reply(220, '2.0.0 Ready'));
    }
    if (closed) return;
    // Only the TLS layer reads the plain socket from here on.
    conn.socket.removeAllListeners('data');
    const secured = new TLSSocket(conn.socket, { isServer: true, key: cert.key, cert: cert.cert });
    secured.on('error', () => {});
    secured.once('secure', () => {
      lane.log.handshakes++;
    });
    conn = new ServerConnection(secured);
    secure = true;
  };

  const extensions = (): string[] => {
    const offered = ['fuzz.test'];
    if (random.chance(0.7)) offered.push('PIPELINING');
    if (random.chance(0.8)) offered.push('8BITMIME');
    if (random.chance(0.5))
      offered.push(random.pick(['SIZE', 'SIZE 0', 'SIZE 10485760', 'SIZE 100', 'SIZE x']));
    if (random.chance(0.3)) offered.push('DSN');
    if (random.chance(0.3)) offered.push('SMTPUTF8');
    if (!secure && lane.tls !== 'none' && random.chance(0.9)) offered.push('STARTTLS');
    if (lane.auth) offered.push(random.pick(['AUTH PLAIN LOGIN', 'AUTH LOGIN', 'AUTH CRAM-MD5']));
    return offered;
  };

  await say(reply(220, `fuzz.test ${lmtp ? 'LMTP' : 'ESMTP'}`));
  for (let text = await conn.line(); text !== undefined && !closed; text = await conn.line()) {
    answeringDot = false;
    lane.log.connections.add(history);
    const verb = text.split(' ')[0]?.toUpperCase() ?? '';
    switch (verb) {
      case 'EHLO':
      case 'LHLO':
        if (!lmtp && random.chance(0.05)) await say(reply(502, '5.5.2 Say HELO'));
        else await say(reply(250, ...extensions()));
        break;
      case 'HELO':
        await say(reply(250, 'fuzz.test'));
        break;
      case 'STARTTLS':
        await startTls();
        break;
      case 'AUTH':
        if (/^AUTH LOGIN$/i.test(text)) {
          await say(reply(334, 'VXNlcm5hbWU6'));
          if ((await conn.line()) === undefined) return;
          await say(reply(334, 'UGFzc3dvcmQ6'));
          if ((await conn.line()) === undefined) return;
        }
        await say(
          random.chance(0.85) ? reply(235, '2.7.0 Authenticated') : reply(535, '5.7.8 Bad credentials'),
        );
        break;
      case 'MAIL':
        tx = { rcpts: [], dataEnded: false, afterDot: [], whileReceiving: [] };
        lane.log.transactions.push(tx);
        accepted = [];
        await say(
          random.pick([
            ...Array(16).fill(reply(250, '2.1.0 Sender ok')),
            reply(451, '4.3.0 Try again later'),
            reply(550, '5.7.1 Sender refused'),
            reply(421, '4.7.0 Too busy'),
          ]),
        );
        break;
      case 'RCPT': {
        const address = /<([^>]*)>/.exec(text)?.[1] ?? '';
        tx?.rcpts.push(address);
        const answer = random.pick([
          ...Array(8).fill(reply(250, '2.1.5 Recipient ok')),
          reply(450, '4.2.0 Mailbox busy'),
          reply(550, '5.1.1 No such user'),
        ]);
        if (answer.startsWith('250')) accepted.push(address);
        await say(answer);
        break;
      }
      case 'DATA': {
        if (accepted.length === 0 && random.chance(0.8)) {
          await say(reply(554, '5.5.1 No valid recipients'));
          break;
        }
        receiving = true;
        await say(reply(354, 'End data with <CR><LF>.<CR><LF>'));
        const reading = conn.readData();
        if (random.chance(hostility)) {
          // Reset while the message is still coming, or soon after it came.
          await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, random.int(0, 5)))]);
          return hangUp(true);
        }
        const stats = await Promise.race([reading, conn.closed.then(() => undefined)]);
        receiving = false;
        if (!stats?.ended || !tx) return;
        tx.dataEnded = true;
        answeringDot = true;
        if (lmtp) {
          const count = accepted.length + (random.chance(hostility) ? random.pick([-2, -1, 1, 2]) : 0);
          for (let i = 0; i < count; i++) {
            await say(
              random.pick([
                reply(250, `2.0.0 Delivered ${i}`),
                reply(452, '4.2.2 Over quota'),
                reply(550, '5.2.1 Mailbox disabled'),
              ]),
            );
          }
        } else {
          await say(
            random.pick([
              ...Array(8).fill(reply(250, '2.0.0 Queued')),
              reply(451, '4.3.0 Local error'),
              reply(554, '5.7.1 Message refused'),
            ]),
          );
        }
        accepted = [];
        break;
      }
      case 'RSET':
        accepted = [];
        await say(reply(250, '2.0.0 Reset'));
        break;
      case 'QUIT':
        write(reply(221, '2.0.0 Bye'));
        conn.socket.end();
        return;
      default:
        await say(reply(500, '5.5.1 Unknown command'));
    }
  }
}

/** Reply lines on the wire: the bytes split at line ends, a trailing CR dropped. */
const wireLines = (bytes: readonly Buffer[]): string[] =>
  Buffer.concat(bytes)
    .toString('latin1')
    .split('\n')
    .map((l) => l.replace(/\r$/, ''));

/** Checks one job's report against what the server really did. */
function checkReport(
  report: DeliveryReport,
  recipients: readonly string[],
  lane: Pick<Lane, 'log' | 'open' | 'protocol'>,
  where: string,
): void {
  const log = lane.log;
  // Exactly one outcome per recipient, in order, well formed.
  expect(
    report.recipients.map((r) => r.address),
    where,
  ).toEqual(recipients);
  const written = wireLines(log.written);
  for (const outcome of report.recipients) {
    const { code, enhanced, text } = outcome.reply;
    const at = `${where}, ${outcome.address}: ${code} ${enhanced} ${text.slice(0, 300)}`;
    expect(code, at).toBeGreaterThanOrEqual(200);
    expect(code, at).toBeLessThan(600);
    expect(enhanced, at).toMatch(new RegExp(`^${Math.floor(code / 100)}\\.\\d{1,3}\\.\\d{1,3}$`));
    expect(outcome.result, at).toBe(code < 300 ? 'delivered' : code < 500 ? 'deferred' : 'failed');
    expect(text.length, at).toBeLessThanOrEqual(4096);
    if (outcome.result === 'failed') {
      // A bounce only for a 5xx the server really sent, or for a SIZE limit it announced.
      const local =
        code === 552 &&
        enhanced === '5.3.4' &&
        [...log.connections, ...lane.open].some((history) =>
          wireLines(history).some((l) => Number(/^250[ -]SIZE (\d+)/i.exec(l)?.[1]) < log.messageSize),
        );
      const sent = written.some((l) => new RegExp(`^${code}([ -]|$)`).test(l));
      expect(sent || local, `${at}: a 5xx the server never sent`).toBe(true);
    }
    if (outcome.result === 'delivered') {
      // Delivered only when the whole message reached the server and it said 2xx after the dot, or
      // it said 2xx while the message came (see whileReceiving).
      const proof = log.transactions.some(
        (tx) =>
          tx.rcpts.includes(outcome.address) &&
          ((tx.dataEnded && positive(tx.afterDot) > 0) || positive(tx.whileReceiving) > 0),
      );
      expect(proof, `${at}: delivered without a 2xx after a complete message`).toBe(true);
    }
  }
  if (lane.protocol === 'lmtp') {
    // One 2xx reply after the dot per recipient delivered, no fewer.
    const delivered = report.recipients.filter((r) => r.result === 'delivered').length;
    const replies = log.transactions.reduce(
      (n, tx) => n + (tx.dataEnded ? positive(tx.afterDot) : 0) + positive(tx.whileReceiving),
      0,
    );
    expect(delivered, `${where}: more LMTP recipients delivered than 2xx replies`).toBeLessThanOrEqual(
      replies,
    );
  }
}

/** Complete 2xx replies in what the server wrote. */
const positive = (written: readonly Buffer[]): number =>
  wireLines(written).filter((l) => /^2\d\d( |$)/.test(l)).length;

const BODY = [
  'From: sender@origin.test',
  'To: someone@example.test',
  'Subject: fuzz',
  'Message-ID: <fuzz@origin.test>',
  '',
  'Hello.',
  '.leading dot',
  '',
].join('\r\n');

const LARGE = `${BODY}${`${'z'.repeat(998)}\r\n`.repeat(512)}`;

/** Transport resources keeping the process alive: after a batch these must be back to the baseline. */
function liveHandles(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) {
    if (/TCPSocketWrap|TLSWrap|Timeout|Immediate/.test(kind)) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return counts;
}

function noMoreThan(now: Map<string, number>, baseline: Map<string, number>): boolean {
  return [...now].every(([kind, n]) => n <= (baseline.get(kind) ?? 0));
}

test('the report checks catch what they are for', () => {
  const bytes = (...lines: string[]): Buffer[] => lines.map((l) => Buffer.from(`${l}\r\n`));
  const outcome = (code: number, enhanced: string, result: 'delivered' | 'deferred' | 'failed') => ({
    address: 'a@x.test',
    result,
    reply: { code, enhanced, text: 'x' },
  });
  const lane = (log: Partial<ServerLog>) => ({
    protocol: 'smtp' as const,
    open: new Set<Buffer[]>(),
    log: { ...newLog(), ...log },
  });
  const tx = (t: Partial<ServerTransaction>): ServerTransaction => ({
    rcpts: ['a@x.test'],
    dataEnded: true,
    afterDot: [],
    whileReceiving: [],
    ...t,
  });
  const check = (report: DeliveryReport, l: ReturnType<typeof lane>): void =>
    checkReport(report, ['a@x.test'], l, 'self-check');
  // What passes: a bounce the server said, a delivery it confirmed after a whole message.
  check({ recipients: [outcome(550, '5.1.1', 'failed')] }, lane({ written: bytes('550 5.1.1 no') }));
  check(
    { recipients: [outcome(250, '2.0.0', 'delivered')] },
    lane({ transactions: [tx({ afterDot: bytes('250 2.0.0 ok') })] }),
  );
  // What must not.
  expect(() => check({ recipients: [] }, lane({}))).toThrow();
  expect(() =>
    check({ recipients: [outcome(550, '5.1.1', 'failed')] }, lane({ written: bytes('451 4.3.0 later') })),
  ).toThrow(/a 5xx the server never sent/);
  expect(() =>
    check({ recipients: [outcome(550, '5.1.1', 'failed')] }, lane({ written: bytes('5501 glued') })),
  ).toThrow(/a 5xx the server never sent/);
  expect(() =>
    check(
      { recipients: [outcome(250, '2.0.0', 'delivered')] },
      lane({ transactions: [tx({ dataEnded: false, afterDot: bytes('250 2.0.0 ok') })] }),
    ),
  ).toThrow(/delivered without a 2xx/);
  expect(() =>
    check(
      { recipients: [outcome(250, '2.0.0', 'delivered')] },
      lane({ transactions: [tx({ afterDot: bytes('451 4.3.0 no') })] }),
    ),
  ).toThrow(/delivered without a 2xx/);
  expect(() =>
    check({ recipients: [outcome(451, '5.0.0', 'deferred')] }, lane({ written: bytes('451 5.0.0 x') })),
  ).toThrow();
});

describe.each(SEEDS)('a hostile next hop, seed %i', (seed) => {
  test(`${JOBS} deliveries to mutated SMTP and LMTP servers`, async () => {
    const random = new Random(seed);
    const configs: LaneConfig[] = [
      { protocol: 'smtp', tls: 'opportunistic', auth: false },
      { protocol: 'smtp', tls: 'require', auth: random.chance(0.5) },
      { protocol: 'smtp', tls: 'none', auth: false },
      { protocol: 'lmtp', tls: random.pick<TlsMode>(['none', 'opportunistic']), auth: false },
    ];
    const lanes: Lane[] = [];
    for (const config of configs) lanes.push(await openLane(config, random));
    const baselineHandles = liveHandles();
    const baseline = await retainedMemory();
    const tally = { delivered: 0, deferred: 0, failed: 0, handshakes: 0, jobs: 0 };
    let counter = 0;
    try {
      for (let done = 0; done < JOBS; done += BATCH) {
        await Promise.all(
          lanes.map(async (lane) => {
            for (let i = 0; i < BATCH / lanes.length; i++) {
              counter++;
              const domain = lane.protocol === 'lmtp' ? 'local.test' : 'remote.test';
              const recipients = Array.from(
                { length: lane.jobs.int(1, 4) },
                (_, n) => `r${counter}-${n}@${domain}`,
              );
              lane.log = newLog();
              // Sometimes large enough that the socket pushes back: replies and resets land mid-DATA.
              const body = lane.jobs.chance(0.15) ? LARGE : BODY;
              lane.log.messageSize = Buffer.byteLength(body);
              const job = makeJob(recipients, { mailFrom: `fuzz-${counter}@origin.test` });
              const where = `seed ${seed}, job ${counter} (${lane.protocol}, tls ${lane.tls})`;
              const report = await withinDeadline(
                lane.deliverer.deliver(
                  job,
                  storedMessage(body, lane.jobs.pick(body === LARGE ? [0, 65_521] : [0, 1, 7])),
                ),
                30_000,
                where,
              );
              checkReport(report, recipients, lane, where);
              tally.jobs++;
              tally.handshakes += lane.log.handshakes;
              for (const r of report.recipients) tally[r.result]++;
            }
          }),
        );
        // After each batch the same deliverers still deliver to a well-behaved server.
        for (const lane of lanes) {
          const before = sink.messages.length;
          const report = await lane.deliverer.deliver(makeJob([`ok@${GOOD_DOMAIN}`]), storedMessage(BODY));
          expect(report.recipients[0], `seed ${seed}: the legitimate delivery`).toMatchObject({
            result: 'delivered',
          });
          expect(sink.messages.length).toBe(before + 1);
        }
        // Nothing thrown inside the deliverer.
        for (const lane of lanes) {
          const internal = lane.logs.filter((r) => r.level === 'error');
          expect(
            internal.map((r) => r.message),
            `seed ${seed}`,
          ).toEqual([]);
          lane.logs.length = 0;
        }
        // Closing leaves no connection or timer behind: every server connection ends, the process could exit.
        for (const lane of lanes) {
          await lane.deliverer.close();
          await withinDeadline(
            Promise.all(lane.server.connections.map((c) => c.closed)),
            5000,
            `seed ${seed}: server connections closing after deliverer.close()`,
          );
          lane.deliverer = makeDeliverer(lane, lane.server, lane.logs);
        }
        await waitFor(() => noMoreThan(liveHandles(), baselineHandles), 5000);
        const grown = (await retainedMemory()) - baseline;
        expect(grown, `seed ${seed}: retained memory grew by ${grown} bytes`).toBeLessThan(32 * 2 ** 20);
      }
    } finally {
      for (const lane of lanes) {
        await lane.deliverer.close();
        await lane.server.stop();
      }
    }
    console.info(`seed ${seed}: ${JSON.stringify(tally)}`);
    // The fuzzer must reach every kind of outcome, and TLS.
    expect(tally.delivered).toBeGreaterThan(0);
    expect(tally.deferred).toBeGreaterThan(0);
    expect(tally.failed).toBeGreaterThan(0);
    expect(tally.handshakes).toBeGreaterThan(0);
  }, 300_000);
});
