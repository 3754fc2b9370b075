// A real HTTP receiver for webhook tests: it checks each post's X-Tern-Signature the way the
// README tells receivers to (HMAC-SHA256 of "t.body", compared in constant time), and answers as
// the test says: 200, 500, or never (the post times out).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type ReceiverMode = 'ok' | 'fail' | 'hang';

export interface ReceivedEvent {
  readonly id: string;
  readonly type: string;
  readonly queueId?: string;
  readonly recipient?: string;
  // biome-ignore lint/suspicious/noExplicitAny: the rest of the event, checked by the tests' matchers
  readonly [field: string]: any;
}

export interface WebhookReceiver {
  readonly url: string;
  mode: ReceiverMode;
  /** Events of posts answered 200, in arrival order. */
  readonly events: ReceivedEvent[];
  /** Every post (answered or not): its mode and whether its signature checked out. */
  readonly posts: { mode: ReceiverMode; signed: boolean; events: number }[];
  stop(): Promise<void>;
}

/** What a receiver does with X-Tern-Signature (the README's snippet, in TypeScript). */
export function verifySignature(
  secret: string,
  body: string,
  header: string,
  toleranceSeconds = 300,
): boolean {
  const fields = Object.fromEntries(header.split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(fields.t);
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > toleranceSeconds) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest();
  const given = Buffer.from(fields.v1 ?? '', 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export async function startWebhookReceiver(secret: string): Promise<WebhookReceiver> {
  const sockets = new Set<Socket>();
  const receiver = {
    url: '',
    mode: 'ok' as ReceiverMode,
    events: [] as ReceivedEvent[],
    posts: [] as WebhookReceiver['posts'],
    stop: async () => {},
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const signed = verifySignature(secret, body, String(req.headers['x-tern-signature'] ?? ''));
      const events = (JSON.parse(body) as { events: ReceivedEvent[] }).events;
      const mode = receiver.mode;
      receiver.posts.push({ mode, signed, events: events.length });
      if (mode === 'hang') return; // never answers: the post times out
      if (mode === 'fail') {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('receiver down for maintenance');
        return;
      }
      if (!signed) {
        res.writeHead(401).end('bad signature');
        return;
      }
      receiver.events.push(...events);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
  receiver.stop = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return receiver;
}

/** Event types per recipient of one message, in arrival order. */
export function typesOf(events: readonly ReceivedEvent[], queueId: string, recipient: string): string[] {
  return events.filter((e) => e.queueId === queueId && e.recipient === recipient).map((e) => e.type);
}
