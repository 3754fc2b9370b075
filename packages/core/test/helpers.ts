// Shared set-up for core's end-to-end tests: a real listener on 127.0.0.1, a recording sink, and
// raw SMTP clients from the test kit.
import { connect as netConnect } from 'node:net';
import type { Plugin } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import { makeCertificate, type RawSmtp, smtpDialog } from '@tern/testkit';
import {
  createListener,
  type HostResolver,
  InMemoryQueue,
  type IntakeSpool,
  type Listener,
  type ListenerDeps,
  type ListenerOptions,
  type MessageSink,
  type UserStore,
} from '../src/index.js';

export const LOCAL_DOMAIN = 'local.test';
export const HOSTNAME = 'mx.tern.test';

export interface Harness {
  readonly listener: Listener;
  readonly port: number;
  readonly queue: InMemoryQueue;
  readonly logs: LogRecord[];
  readonly host: PluginHost;
  /** A raw client that has read the banner. */
  connect(options?: { tls?: boolean }): Promise<RawSmtp>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  readonly plugins?: readonly Plugin[];
  readonly users?: UserStore;
  readonly sink?: MessageSink;
  readonly hookTimeoutMs?: number;
  readonly resolver?: HostResolver;
  readonly onReply?: ListenerDeps['onReply'];
  readonly spool?: IntakeSpool;
}

/** A certificate for the default TLS pair in tests. */
export function testTls(): { key: string; cert: string } {
  return makeCertificate([HOSTNAME, 'localhost']);
}

const open: Harness[] = [];

export async function startListener(
  overrides: Partial<ListenerOptions> = {},
  options: HarnessOptions = {},
): Promise<Harness> {
  const logs: LogRecord[] = [];
  const logger = memoryLogger(logs);
  const host = new PluginHost(options.plugins ?? [], {
    logger,
    ...(options.hookTimeoutMs !== undefined ? { defaultTimeoutMs: options.hookTimeoutMs } : {}),
  });
  const queue = new InMemoryQueue();
  const listener = createListener(
    {
      name: 'test',
      kind: 'mx',
      host: '127.0.0.1',
      port: 0,
      hostname: HOSTNAME,
      localDomains: [LOCAL_DOMAIN],
      reverseLookup: false,
      ...overrides,
    },
    {
      plugins: host,
      sink: options.sink ?? queue,
      logger,
      ...(options.users ? { users: options.users } : {}),
      ...(options.resolver ? { resolver: options.resolver } : {}),
      ...(options.onReply ? { onReply: options.onReply } : {}),
      ...(options.spool ? { spool: options.spool } : {}),
    },
  );
  const { port } = await listener.listen();
  const clients: RawSmtp[] = [];
  const harness: Harness = {
    listener,
    port,
    queue,
    logs,
    host,
    async connect(connectOptions = {}) {
      const client = await smtpDialog(port, { tls: connectOptions.tls === true });
      clients.push(client);
      const banner = await client.read();
      if (!banner.startsWith('220 ')) throw new Error(`unexpected banner: ${banner}`);
      return client;
    },
    async close() {
      for (const client of clients) client.close();
      await listener.close({ graceful: false });
    },
  };
  open.push(harness);
  return harness;
}

/** Closes every harness a test file started (call from afterEach/afterAll). */
export async function closeAll(): Promise<void> {
  await Promise.all(open.splice(0).map((h) => h.close()));
}

/** EHLO and check the reply is a 250. */
export async function ehlo(client: RawSmtp, name = 'client.example'): Promise<string> {
  const reply = await client.command(`EHLO ${name}`);
  if (!reply.startsWith('250')) throw new Error(`EHLO refused: ${reply}`);
  return reply;
}

/** A small well-formed message with CRLF line ends. */
export function message(subject = 'test', body = 'Hello.'): string {
  return `From: <sender@example.org>\r\nTo: <user@${LOCAL_DOMAIN}>\r\nSubject: ${subject}\r\n\r\n${body}\r\n`;
}

/** MAIL, RCPT(s), DATA and the message; returns the final reply. */
export async function sendMail(
  client: RawSmtp,
  options: { from?: string; to?: string[]; data?: string } = {},
): Promise<string> {
  const mail = await client.command(`MAIL FROM:<${options.from ?? 'sender@example.org'}>`);
  if (!mail.startsWith('250')) return mail;
  for (const rcpt of options.to ?? [`user@${LOCAL_DOMAIN}`]) {
    const reply = await client.command(`RCPT TO:<${rcpt}>`);
    if (!reply.startsWith('250')) return reply;
  }
  const data = await client.command('DATA');
  if (!data.startsWith('354')) return data;
  client.send(`${options.data ?? message()}.\r\n`);
  return client.read();
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A raw SMTP client bound to a chosen local address (127.0.0.2 and so on), for trust and per-address
 * limits. The test kit's smtpDialog has no localAddress option yet.
 */
export interface BoundClient {
  read(): Promise<string>;
  send(bytes: string | Buffer): void;
  command(line: string): Promise<string>;
  readonly closed: Promise<void>;
  close(): void;
  /** Closes with a TCP RST, as a crashing client would. */
  reset(): void;
}

export function dialFrom(port: number, localAddress: string, host = '127.0.0.1'): Promise<BoundClient> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ port, host, localAddress });
    const replies: string[] = [];
    const waiters: { resolve(reply: string): void; reject(error: Error): void }[] = [];
    let pending = '';
    let lines: string[] = [];
    let ended = false;
    let markClosed!: () => void;
    const closed = new Promise<void>((done) => {
      markClosed = done;
    });
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
        const line = pending.slice(0, end).replace(/\r$/, '');
        pending = pending.slice(end + 1);
        lines.push(line);
        if (/^\d{3}-/.test(line)) continue;
        const reply = lines.join('\n');
        lines = [];
        const waiter = waiters.shift();
        if (waiter) waiter.resolve(reply);
        else replies.push(reply);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      ended = true;
      for (const waiter of waiters.splice(0))
        waiter.reject(new Error(`connection from ${localAddress} closed`));
      markClosed();
    });
    socket.once('connect', () => {
      const read = (): Promise<string> => {
        const reply = replies.shift();
        if (reply !== undefined) return Promise.resolve(reply);
        if (ended) return Promise.reject(new Error(`connection from ${localAddress} closed`));
        return new Promise((res, rej) => waiters.push({ resolve: res, reject: rej }));
      };
      resolve({
        read,
        send: (bytes) => {
          socket.write(bytes);
        },
        command: (line) => {
          socket.write(`${line}\r\n`);
          return read();
        },
        closed,
        close: () => socket.destroy(),
        reset: () => socket.resetAndDestroy(),
      });
    });
    socket.once('error', reject);
  });
}
