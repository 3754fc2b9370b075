// A real receiving SMTP/LMTP server (smtp-server) that records what it gets: the destination MX of
// delivery tests.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import {
  SMTPServer,
  type SMTPServerDataResult,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';

/** A reply the sink gives instead of its default 250. */
export interface SinkReply {
  code: number;
  message: string;
}

/** Decides the RCPT reply for `address`; undefined accepts it (250). */
export type RcptReplyFn = (address: string) => SinkReply | undefined;

/**
 * Decides the end-of-DATA reply; undefined accepts (250). LMTP: called once per recipient (in RCPT
 * order) and each answer is that recipient's reply. SMTP: called once with the first recipient.
 */
export type DataReplyFn = (msg: SinkMessage, rcpt: string) => SinkReply | undefined;

/** Options for {@link startSmtpSink}. */
export interface SmtpSinkOptions {
  /** Speak LMTP (LHLO, one DATA reply per recipient). */
  lmtp?: boolean;
  /** Key and cert to offer STARTTLS with; without them STARTTLS is not offered. */
  tls?: { key: string; cert: string } | false;
  /** Name in the banner and EHLO reply; defaults to mx.test. */
  hostname?: string;
  rcptReply?: RcptReplyFn;
  dataReply?: DataReplyFn;
  /** Waits this long after a message arrived (it is recorded at once) before answering its DATA: a slow receiver. */
  dataDelayMs?: number;
  /** Enables AUTH PLAIN/LOGIN against these username → password pairs (AUTH stays optional). */
  authUsers?: Record<string, string>;
  /** SIZE limit in bytes; bigger messages get 552. */
  size?: number;
  disabledCommands?: string[];
  hideSTARTTLS?: boolean;
  hide8BITMIME?: boolean;
  hideSMTPUTF8?: boolean;
  hidePIPELINING?: boolean;
  /** Offer DSN (RFC 3461) and take NOTIFY, ORCPT, RET and ENVID (default off, as in smtp-server). */
  offerDSN?: boolean;
  /** Offer REQUIRETLS (RFC 8689) on TLS sessions and take it on MAIL FROM (default off, as in smtp-server). */
  offerREQUIRETLS?: boolean;
  /** Address to listen on (default 127.0.0.1): another loopback address such as 127.0.0.2 or ::1. */
  host?: string;
  /** Port to listen on (default: any free one). Several sinks may share a port on different addresses. */
  port?: number;
}

/** One message the sink received. */
export interface SinkMessage {
  /** MAIL FROM address; '' for the null sender. */
  mailFrom: string;
  /** Every recipient accepted at RCPT. */
  rcptTo: string[];
  /** The recipients whose DATA reply was 2xx (all of rcptTo in SMTP mode). */
  accepted: string[];
  /** The message exactly as received, after dot-unstuffing. */
  raw: Buffer;
  /** The raw header block: everything before the first empty line, ending with the last header's line break. */
  headers: string;
  /** Everything after the empty line that ends the headers. */
  body: Buffer;
  /** True when the session was under TLS at DATA. */
  secure: boolean;
  /** SNI name the client sent with STARTTLS. */
  servername?: string;
  /** Authenticated username. */
  user?: string;
  /** The name the client gave with EHLO/HELO/LHLO. */
  helo: string;
  /** The client's address as this server saw it (the sender's source address). */
  remoteAddress: string;
  /** MAIL FROM parameters (keys upper case), e.g. { BODY: '8BITMIME', SMTPUTF8: true }. */
  mailArgs: Record<string, string | true>;
  /** RCPT TO parameters per accepted recipient, in RCPT order (keys upper case), e.g. { NOTIFY: 'SUCCESS' }. */
  rcptArgs: Record<string, string | true>[];
  /** smtp-server's session id (one per connection). */
  sessionId: string;
  /** Date.now() when DATA ended. */
  receivedAt: number;
}

/** A running sink. */
export interface SmtpSink {
  host: string;
  port: number;
  /** Messages accepted for at least one recipient, in arrival order. */
  messages: SinkMessage[];
  /** TCP connections seen so far. */
  readonly connections: number;
  /** Resolves with `messages` once it holds at least `count` (default timeout 5000 ms). */
  waitFor(count: number, timeoutMs?: number): Promise<SinkMessage[]>;
  setRcptReply(fn: RcptReplyFn | undefined): void;
  setDataReply(fn: DataReplyFn | undefined): void;
  /** See {@link SmtpSinkOptions.dataDelayMs}. */
  setDataDelay(ms: number): void;
  /** Closes the server and every open connection. */
  stop(): Promise<void>;
}

/** Starts a receiving SMTP (or LMTP) server on a free port of 127.0.0.1 (or where `host`/`port` say). */
export async function startSmtpSink(opts: SmtpSinkOptions = {}): Promise<SmtpSink> {
  let rcptReply = opts.rcptReply;
  let dataReply = opts.dataReply;
  let dataDelayMs = opts.dataDelayMs ?? 0;
  const messages: SinkMessage[] = [];
  const arrivals = new EventEmitter();
  const sockets = new Set<Socket>();
  let connections = 0;
  const tls = opts.tls || undefined;
  const authUsers = opts.authUsers;

  const disabledCommands = [...(opts.disabledCommands ?? [])];
  // Without a certificate smtp-server would fall back to its published test key: offer no TLS instead.
  if (!tls) disabledCommands.push('STARTTLS');
  if (!authUsers) disabledCommands.push('AUTH');

  const options: SMTPServerOptions = {
    lmtp: opts.lmtp === true,
    name: opts.hostname ?? 'mx.test',
    disabledCommands,
    authOptional: true,
    // With TLS on offer, AUTH waits for it, as on a real server; without, tests may still authenticate.
    allowInsecureAuth: !tls,
    disableReverseLookup: true,
    logger: false,
    closeTimeout: 100,
    hideSTARTTLS: opts.hideSTARTTLS === true,
    hide8BITMIME: opts.hide8BITMIME === true,
    hideSMTPUTF8: opts.hideSMTPUTF8 === true,
    hidePIPELINING: opts.hidePIPELINING === true,
    hideDSN: opts.offerDSN !== true,
    hideREQUIRETLS: opts.offerREQUIRETLS !== true,
    ...(tls ? { key: tls.key, cert: tls.cert } : {}),
    ...(opts.size === undefined ? {} : { size: opts.size, rejectOversized: true }),
    onAuth(auth, _session, callback) {
      const username = auth.username ?? '';
      const expected = authUsers?.[username];
      if (expected !== undefined && auth.password === expected) {
        callback(null, { user: username });
        return;
      }
      callback(replyError({ code: 535, message: '5.7.8 Authentication credentials invalid' }));
    },
    onRcptTo(address, _session, callback) {
      const reply = rcptReply?.(address.address);
      callback(reply && reply.code >= 300 ? replyError(reply) : null);
    },
    onData(stream, session, reply) {
      const delay = dataDelayMs;
      const callback: typeof reply = (...args) => {
        if (delay > 0) setTimeout(() => reply(...args), delay);
        else reply(...args);
      };
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.once('error', (error) => callback(error));
      stream.once('end', () => {
        if (stream.sizeExceeded) {
          // rejectOversized makes smtp-server answer 552 itself; the sink only has to not record it.
          callback(
            replyError({
              code: 552,
              message: `5.3.4 Message exceeds fixed maximum message size ${opts.size}`,
            }),
          );
          return;
        }
        const msg = toSinkMessage(Buffer.concat(chunks), session);
        const recipients = opts.lmtp ? msg.rcptTo : msg.rcptTo.slice(0, 1);
        const replies = recipients.map((rcpt) => ({ rcpt, reply: dataReply?.(msg, rcpt) }));
        msg.accepted = opts.lmtp
          ? replies.filter(({ reply }) => isSuccess(reply)).map(({ rcpt }) => rcpt)
          : isSuccess(replies[0]?.reply)
            ? msg.rcptTo.slice()
            : [];
        if (msg.accepted.length > 0) {
          messages.push(msg);
          arrivals.emit('message');
        }
        if (opts.lmtp) {
          const results: SMTPServerDataResult[] = replies.map(({ reply }) =>
            reply && !isSuccess(reply) ? replyError(reply) : (reply?.message ?? 'OK: message accepted'),
          );
          callback(null, results);
          return;
        }
        const reply = replies[0]?.reply;
        if (reply && !isSuccess(reply)) callback(replyError(reply));
        else callback(null, reply?.message ?? 'OK: message queued');
      });
    },
  };

  const server = new SMTPServer(options);
  // A client that resets its connection makes smtp-server emit 'error'; unhandled, it kills the process.
  server.on('error', () => {});
  server.server.on('connection', (socket: Socket) => {
    connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  const listenHost = opts.host ?? '127.0.0.1';
  const port = await new Promise<number>((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.server.once('error', onError);
    server.listen(opts.port ?? 0, listenHost, () => {
      server.server.removeListener('error', onError);
      const address = server.server.address();
      if (address === null || typeof address === 'string') reject(new Error('startSmtpSink: no TCP address'));
      else resolve(address.port);
    });
  });

  return {
    host: listenHost,
    port,
    messages,
    get connections(): number {
      return connections;
    },
    waitFor(count: number, timeoutMs = 5000): Promise<SinkMessage[]> {
      if (messages.length >= count) return Promise.resolve(messages);
      return new Promise((resolve, reject) => {
        const onMessage = (): void => {
          if (messages.length < count) return;
          clearTimeout(timer);
          arrivals.removeListener('message', onMessage);
          resolve(messages);
        };
        const timer = setTimeout(() => {
          arrivals.removeListener('message', onMessage);
          reject(
            new Error(
              `SmtpSink.waitFor: ${messages.length} of ${count} messages after ${timeoutMs} ms (port ${port})`,
            ),
          );
        }, timeoutMs);
        arrivals.on('message', onMessage);
      });
    },
    setRcptReply(fn: RcptReplyFn | undefined): void {
      rcptReply = fn;
    },
    setDataDelay(ms: number): void {
      dataDelayMs = ms;
    },
    setDataReply(fn: DataReplyFn | undefined): void {
      dataReply = fn;
    },
    stop(): Promise<void> {
      return new Promise((resolve) => {
        server.close(() => resolve());
        // Tests want a prompt stop, not smtp-server's grace period for open sessions.
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}

function isSuccess(reply: SinkReply | undefined): boolean {
  return reply === undefined || (reply.code >= 200 && reply.code < 300);
}

function replyError(reply: SinkReply): Error & { responseCode: number } {
  return Object.assign(new Error(reply.message), { responseCode: reply.code });
}

function toSinkMessage(raw: Buffer, session: SMTPServerSession): SinkMessage {
  const { headerEnd, bodyStart } = splitHeaders(raw);
  const mailFrom = session.envelope.mailFrom;
  const msg: SinkMessage = {
    mailFrom: mailFrom ? mailFrom.address : '',
    rcptTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
    accepted: [],
    raw,
    headers: raw.subarray(0, headerEnd).toString('utf8'),
    body: raw.subarray(bodyStart),
    secure: session.secure,
    helo: session.hostNameAppearsAs || '',
    remoteAddress: (session.remoteAddress || '').replace(/^::ffff:/, ''),
    mailArgs: mailFrom ? mailFrom.args || {} : {},
    rcptArgs: session.envelope.rcptTo.map((rcpt) => rcpt.args || {}),
    sessionId: session.id,
    receivedAt: Date.now(),
  };
  if (session.servername) msg.servername = session.servername;
  if (session.user !== undefined) msg.user = String(session.user);
  return msg;
}

/** Finds the empty line that ends the header block (CRLF CRLF, or a bare LF LF from sloppy clients). */
function splitHeaders(raw: Buffer): { headerEnd: number; bodyStart: number } {
  if (raw.subarray(0, 2).toString('latin1') === '\r\n') return { headerEnd: 0, bodyStart: 2 };
  if (raw[0] === 0x0a) return { headerEnd: 0, bodyStart: 1 };
  const crlf = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return { headerEnd: crlf + 2, bodyStart: crlf + 4 };
  if (lf >= 0) return { headerEnd: lf + 1, bodyStart: lf + 2 };
  return { headerEnd: raw.length, bodyStart: raw.length };
}
