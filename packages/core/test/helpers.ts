// Shared set-up for core's end-to-end tests: a real listener on 127.0.0.1, a recording sink, and
// raw SMTP clients from the test kit.
import { type LogRecord, memoryLogger, type Plugin, PluginHost } from '@tern/plugin-api';
import { makeCertificate, type RawSmtp, smtpDialog } from '@tern/testkit';
import {
  createListener,
  type HostResolver,
  InMemoryQueue,
  type Listener,
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
