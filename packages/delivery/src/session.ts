// One outbound SMTP or LMTP session: connect, greeting, EHLO/LHLO (HELO fallback), STARTTLS or
// implicit TLS, AUTH, then any number of transactions with per-recipient replies. Written on
// node:net and node:tls so every step (and every failure) maps to a reply delivery can report.

import { isIP, connect as netConnect, type Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { type ConnectionOptions, type SecureVersion, type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { Logger, SmtpReply, TlsMode } from '@tern/plugin-api';
import { heldChunks } from '@tern/plugin-api/host';
import { DataEncoder } from './encode.js';
import { DeliveryReplies, toSmtpReply, unexpectedReply, type WireReply } from './reply.js';
import { type TlsCheck, type TlsFailureType, type TlsVerdict, verifyPeer } from './tls-check.js';

/** RFC 5321 §4.5.3.2 timeouts, in milliseconds. */
export interface SessionTimeouts {
  /** TCP (and implicit TLS) connect (default 30 s). */
  readonly connectMs?: number;
  /** Waiting for the 220 greeting (default 5 min). */
  readonly greetingMs?: number;
  /** EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET replies (default 5 min). */
  readonly commandMs?: number;
  /** The 354 after DATA (default 2 min). */
  readonly dataInitMs?: number;
  /** Each block of data waiting to be accepted by the socket (default 3 min). */
  readonly dataBlockMs?: number;
  /**
   * The slowest a server may take the message, in bytes per second (default 4096): all waits for the
   * socket together may last `dataBlockMs` plus one second per this many bytes sent, so a server
   * that reads a little just often enough cannot hold a delivery for ever (a 25 MiB message gets
   * about 1 h 45 min).
   */
  readonly dataMinRate?: number;
  /** The reply after the final dot; for LMTP, every recipient's reply (default 10 min). */
  readonly dataEndMs?: number;
}

export const DEFAULT_TIMEOUTS: Required<SessionTimeouts> = {
  connectMs: 30_000,
  greetingMs: 300_000,
  commandMs: 300_000,
  dataInitMs: 120_000,
  dataBlockMs: 180_000,
  dataMinRate: 4096,
  dataEndMs: 600_000,
};

/** Bounds on one reply from a server; beyond them the connection ends and the attempt defers with 4.5.0. */
export interface ReplyLimits {
  /** Lines in one reply (default 100; the EHLO replies of real servers have 10 to 20). */
  readonly maxLines?: number;
  /** Bytes in one reply, line ends included (default 64 KiB: 100 lines of RFC 5321's 512 octets, with room). */
  readonly maxBytes?: number;
}

export const DEFAULT_REPLY_LIMITS: Required<ReplyLimits> = { maxLines: 100, maxBytes: 64 * 1024 };

/** TLS settings shared by every connection; the mode comes from the next hop. */
export interface TlsSettings {
  /** Trusted CAs for `require` and `implicit` (default: node's bundled roots). */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  readonly minVersion?: SecureVersion;
  readonly ciphers?: string;
}

/** Where a session goes: one address of one host. */
export interface SessionTarget {
  readonly protocol: 'smtp' | 'lmtp';
  /** The host's name: SNI, certificate check and logs (the MX name, not the address). */
  readonly hostname: string;
  readonly address?: string;
  readonly port?: number;
  /** A UNIX socket (LMTP). */
  readonly path?: string;
  readonly tls: TlsMode;
  /**
   * What the server must prove once TLS is up. Enforced under `require` and `implicit` (default there:
   * a PKIX chain naming `hostname`); under `opportunistic` only checked and reported (`tlsVerdict`),
   * e.g. for an MTA-STS policy in testing mode.
   */
  readonly check?: TlsCheck;
  readonly auth?: { readonly user: string; readonly pass: string };
  /** The egress source: the local address to connect from, and our name in EHLO from there. */
  readonly localAddress?: string;
  readonly heloName?: string;
}

export interface SessionSettings {
  /** Our name in EHLO/LHLO. */
  readonly heloName: string;
  readonly timeouts: Required<SessionTimeouts>;
  readonly replyLimits: Required<ReplyLimits>;
  readonly tls: TlsSettings;
  /** Send AUTH over a connection without TLS (default false). */
  readonly allowInsecureAuth: boolean;
  readonly logger: Logger;
}

/** What the server offered in its EHLO/LHLO reply. */
export interface Capabilities {
  readonly esmtp: boolean;
  readonly pipelining: boolean;
  readonly startTls: boolean;
  readonly eightBitMime: boolean;
  readonly smtpUtf8: boolean;
  /** DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID may be passed on. */
  readonly dsn: boolean;
  /** REQUIRETLS (RFC 8689): the server keeps the REQUIRETLS flag onward. */
  readonly requireTls: boolean;
  /** CHUNKING (RFC 3030): the message may go in BDAT chunks instead of DATA. */
  readonly chunking: boolean;
  /** SIZE limit; 0 means SIZE offered without a limit; undefined means not offered. */
  readonly size: number | undefined;
  readonly auth: readonly string[];
}

const NO_CAPABILITIES: Capabilities = {
  esmtp: false,
  pipelining: false,
  startTls: false,
  eightBitMime: false,
  smtpUtf8: false,
  dsn: false,
  requireTls: false,
  chunking: false,
  size: undefined,
  auth: [],
};

/**
 * The session could not be set up with this address. `permanent` is a 5xx from the server at greeting
 * or EHLO; everything else (connect, TLS, AUTH, 4xx) is temporary. `retryPlain` asks for a new
 * connection without STARTTLS (an opportunistic handshake failed).
 */
export class SessionError extends Error {
  readonly reply: SmtpReply;
  readonly permanent: boolean;
  readonly retryPlain: boolean;
  /** Set when TLS was the problem: what TLS-RPT calls it. */
  readonly tlsFailure: TlsFailureType | undefined;
  /** The server's own reply, when it refused us while setting up (back-off rules match on it). */
  readonly remote: SmtpReply | undefined;

  constructor(
    reply: SmtpReply,
    options: {
      permanent?: boolean;
      retryPlain?: boolean;
      tlsFailure?: TlsFailureType;
      cause?: unknown;
      remote?: SmtpReply;
    } = {},
  ) {
    super(`${reply.code} ${reply.enhanced} ${reply.text}`, { cause: options.cause });
    this.name = 'SessionError';
    this.reply = reply;
    this.permanent = options.permanent === true;
    this.retryPlain = options.retryPlain === true;
    this.tlsFailure = options.tlsFailure;
    this.remote = options.remote;
  }
}

export interface TransactionRecipient {
  readonly address: string;
  /** RCPT TO parameters such as `NOTIFY=FAILURE`. */
  readonly params: readonly string[];
}

/** One mail transaction: the wire-ready envelope, and the message to stream after DATA. */
export interface Transaction {
  /** Return path without brackets ('' for <>). */
  readonly mailFrom: string;
  /** MAIL FROM parameters such as `SIZE=123`, `BODY=8BITMIME`, `SMTPUTF8`. */
  readonly mailParams: readonly string[];
  readonly recipients: readonly TransactionRecipient[];
  /**
   * Opens the message as it goes onward, before dot-stuffing: called once per transaction, just
   * before DATA, and streamed to the socket as the socket takes it.
   */
  readonly message: () => Promise<Readable>;
}

/** Raised inside the reader when the connection dies or a reply does not come in time. */
class ConnectionProblem extends Error {
  override readonly name: string = 'ConnectionProblem';
}

/** The server broke the protocol in a way we do not wait out: a reply too large, or one nobody asked for. */
class ProtocolViolation extends ConnectionProblem {
  override readonly name: string = 'ProtocolViolation';
}

/** Our own store failed while the message was being sent: the server must not get the final dot. */
class MessageUnreadable extends Error {
  override readonly name = 'MessageUnreadable';
}

/**
 * A pooled connection turned out dead (or confused) at the RSET that starts its reuse, before the
 * server took any part of the transaction: the caller sends again on a fresh connection.
 */
export class StaleConnection extends Error {
  override readonly name = 'StaleConnection';
}

interface Waiter {
  resolve(reply: WireReply): void;
  reject(error: Error): void;
  /** performance.now() by which the reply must have come. */
  readonly deadline: number;
  /** What to name when the deadline passes: the command, and the limit (a deadline may be shared). */
  readonly what: string;
  readonly limitMs: number;
}

const EMPTY = Buffer.alloc(0);
const ZERO = 0x30;
const CR = 0x0d;
const SPACE = 0x20;
const DASH = 0x2d;
/** The separator of a last line, or of one that ends with its code. */
const LAST = -1;

const isDigit = (byte: number | undefined): boolean => byte !== undefined && byte >= ZERO && byte <= ZERO + 9;

/**
 * RFC 5321 §4.2: a reply line is the code, then SP or "-" and the text, or the line end (`5501 text`
 * is no 550). Returns DASH for a line that more follow, SPACE or LAST for the last one, undefined for
 * a malformed line. Read off the bytes: no string or match array per line.
 */
function replyLineSeparator(bytes: Buffer, end: number): number | undefined {
  if (end < 3 || !isDigit(bytes[0]) || !isDigit(bytes[1]) || !isDigit(bytes[2])) return undefined;
  // A CR inside the line (not the one ending it) makes it malformed: text never carries one. Searched
  // backwards from the line's end, so it never reads past the line.
  if (bytes.lastIndexOf(CR, end - 1) !== -1) return undefined;
  if (end === 3) return LAST;
  const separator = bytes[3];
  return separator === SPACE || separator === DASH ? separator : undefined;
}

/**
 * Splits the server's byte stream into replies and keeps replies that arrive early (pipelining) in
 * order. Everything it holds is bounded: one reply by `limits`, replies read ahead by the replies
 * owed (one per command sent, plus the greeting). A server that goes beyond that fails the reader,
 * which closes the connection at once (`onFailure`), so a flood costs us one reply's worth of memory.
 */
class ReplyReader {
  readonly #limits: Required<ReplyLimits>;
  readonly #onFailure: (error: Error) => void;
  /** Bytes after the last complete line. */
  #pending: Buffer = EMPTY;
  /** Lines of the reply in progress, and their bytes on the wire. */
  #lines: string[] = [];
  #replyBytes = 0;
  readonly #ready: WireReply[] = [];
  readonly #waiters: Waiter[] = [];
  /** Replies the server still owes us: commands sent (and the greeting) not answered yet. */
  #owed: number;
  #closingNoticeSeen = false;
  #failure: Error | undefined;
  /**
   * One timer for the reader, due at or before the earliest waiter's deadline, not one per read: a
   * reused connection reads a few replies per message, and each timer set and cleared is an object
   * and two timer-list updates. Replies come in milliseconds and limits are minutes, so it is
   * rarely set again; when it fires early for a waiter that came later, it is set for that one.
   */
  #timer: NodeJS.Timeout | undefined;
  #timerDue = Number.POSITIVE_INFINITY;

  constructor(limits: Required<ReplyLimits>, owed: number, onFailure: (error: Error) => void) {
    this.#limits = limits;
    this.#owed = owed;
    this.#onFailure = onFailure;
  }

  /** `count` more replies are due (commands were sent). Call it before the server can answer them. */
  expect(count: number): void {
    this.#owed += count;
  }

  /** Complete replies that arrived and were not read yet. */
  get unread(): readonly WireReply[] {
    return this.#ready;
  }

  /** Nothing has arrived that was not read: no partial line, no reply in progress, none waiting. */
  get idle(): boolean {
    return this.#pending.length === 0 && this.#lines.length === 0 && this.#ready.length === 0;
  }

  feed(chunk: Buffer): void {
    if (this.#failure) return;
    // A socket hands over at most 64 KiB at a time and #pending is bounded below: so is this copy.
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    let lf = this.#pending.indexOf(0x0a);
    while (lf !== -1) {
      const end = lf > 0 && this.#pending[lf - 1] === 0x0d ? lf - 1 : lf;
      this.#line(this.#pending, end, lf + 1);
      if (this.#failure) return;
      this.#pending = this.#pending.subarray(lf + 1);
      lf = this.#pending.indexOf(0x0a);
    }
    if (this.#replyBytes + this.#pending.length > this.#limits.maxBytes) {
      this.#violation(`a reply of more than ${this.#limits.maxBytes} bytes`);
    }
  }

  /** The line in `bytes[0, end)` (its line end not included), `size` bytes on the wire. */
  #line(bytes: Buffer, end: number, size: number): void {
    const separator = replyLineSeparator(bytes, end);
    if (separator === undefined) {
      const line = bytes.toString('utf8', 0, end);
      this.#violation(`a malformed reply line ${JSON.stringify(line.slice(0, 100))}`);
      return;
    }
    this.#lines.push(end > 4 ? bytes.toString('utf8', 4, end) : '');
    this.#replyBytes += size;
    if (this.#lines.length > this.#limits.maxLines) {
      this.#violation(`a reply of more than ${this.#limits.maxLines} lines`);
      return;
    }
    if (this.#replyBytes > this.#limits.maxBytes) {
      this.#violation(`a reply of more than ${this.#limits.maxBytes} bytes`);
      return;
    }
    if (separator === DASH) return;
    const code = (bytes[0] as number) * 100 + (bytes[1] as number) * 10 + (bytes[2] as number) - 111 * ZERO;
    const reply: WireReply = { code, lines: this.#lines };
    this.#lines = [];
    this.#replyBytes = 0;
    if (this.#owed > 0) {
      this.#owed--;
    } else if (reply.code === 421 && !this.#closingNoticeSeen) {
      // RFC 5321 §3.8: a server that must shut down may say 421 unasked, then close. It answers the next read.
      this.#closingNoticeSeen = true;
    } else {
      const said = `${reply.code} ${reply.lines.join(' ')}`.slice(0, 100);
      this.#violation(`a reply nobody asked for (${JSON.stringify(said)})`);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve(reply);
    } else {
      this.#ready.push(reply);
    }
  }

  /**
   * The next reply, waiting at most `timeoutMs` from now: a deadline, which bytes trickling in do not
   * move. `limitMs` is the limit to name when it passes (a deadline shared by several replies).
   */
  next(timeoutMs: number, what: string, limitMs = timeoutMs): Promise<WireReply> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const deadline = performance.now() + Math.max(0, timeoutMs);
      this.#waiters.push({ resolve, reject, deadline, what, limitMs });
      if (deadline < this.#timerDue) this.#armFor(deadline);
    });
  }

  #armFor(deadline: number): void {
    clearTimeout(this.#timer);
    this.#timerDue = deadline;
    this.#timer = setTimeout(() => this.#checkDeadlines(), Math.max(0, deadline - performance.now()));
    // It may outlive the reads it was set for; the socket's own pending read keeps the process up.
    this.#timer.unref();
  }

  /** The timer fired: fails the reader if a waiter's deadline passed, else waits for the earliest one. */
  #checkDeadlines(): void {
    this.#timer = undefined;
    this.#timerDue = Number.POSITIVE_INFINITY;
    const now = performance.now();
    let earliest = Number.POSITIVE_INFINITY;
    for (const waiter of this.#waiters) {
      if (waiter.deadline <= now) {
        this.fail(
          new ConnectionProblem(
            `timed out after ${waiter.limitMs} ms waiting for the reply to ${waiter.what}`,
          ),
        );
        return;
      }
      earliest = Math.min(earliest, waiter.deadline);
    }
    if (earliest !== Number.POSITIVE_INFINITY) this.#armFor(earliest);
  }

  /** The connection is gone or must go: every waiting and future read fails with `error`. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    this.#pending = EMPTY;
    this.#lines = [];
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(error);
    }
    this.#onFailure(error);
  }

  #violation(detail: string): void {
    this.fail(new ProtocolViolation(detail));
  }

  get failure(): Error | undefined {
    return this.#failure;
  }
}

/**
 * How long sending the message may wait for the server to take it: each block at most `blockMs`,
 * and all waits together at most `blockMs` plus one second per `minRate` bytes written, so a server
 * that reads a little just often enough cannot hold a delivery for ever.
 */
class DataDeadline {
  readonly #blockMs: number;
  readonly #minRate: number;
  #written = 0;
  #waitedMs = 0;

  constructor(blockMs: number, minRate: number) {
    this.#blockMs = blockMs;
    this.#minRate = minRate;
  }

  wrote(bytes: number): void {
    this.#written += bytes;
  }

  waited(ms: number): void {
    this.#waitedMs += ms;
  }

  /** How long the next wait may take, and what to say when it runs out. */
  allowance(): { ms: number; reason: string } {
    const left = this.#blockMs + (this.#written * 1000) / this.#minRate - this.#waitedMs;
    if (left >= this.#blockMs) {
      return { ms: this.#blockMs, reason: `timed out after ${this.#blockMs} ms sending data` };
    }
    return {
      ms: Math.max(0, left),
      reason: `the server took the message too slowly: ${this.#written} bytes in ${Math.round(
        (this.#waitedMs + Math.max(0, left)) / 1000,
      )} s of waiting, under the minimum of ${this.#minRate} bytes/s`,
    };
  }
}

/** An open, greeted (and possibly encrypted and authenticated) session. */
export class SmtpSession {
  readonly target: SessionTarget;
  readonly #settings: SessionSettings;
  readonly #log: Logger;
  #socket: Socket | TLSSocket;
  #reader: ReplyReader;
  /** Stops feeding the reader (before STARTTLS hands the socket to TLS). */
  #unlisten: () => void;
  #capabilities: Capabilities = NO_CAPABILITIES;
  #secure = false;
  #tlsInfo: { protocol: string; cipher: string; authorized: boolean } | undefined;
  /** The outcome of `target.check` (or of TLS not happening), when there was one. */
  #tlsVerdict: TlsVerdict | undefined;
  #broken = false;
  #resetPending = false;
  #transactions = 0;
  /** The 421 that closed the channel, if one did: the reply for everything still open. */
  #closing: SmtpReply | undefined;
  /** While true, lines sent are credentials (AUTH LOGIN sends them on lines of their own): never logged. */
  #authenticating = false;
  #remoteMta: string | undefined;

  private constructor(target: SessionTarget, settings: SessionSettings, socket: Socket | TLSSocket) {
    this.target = target;
    this.#settings = settings;
    this.#log = settings.logger;
    this.#socket = socket;
    // The greeting is owed before we say anything.
    [this.#reader, this.#unlisten] = this.#listen(socket, 1);
  }

  /**
   * Opens a session to `target`. An opportunistic STARTTLS whose handshake fails is retried once on a
   * new connection in plain text (logged), as RFC 3207 allows a client to do.
   */
  static async open(target: SessionTarget, settings: SessionSettings): Promise<SmtpSession> {
    try {
      return await SmtpSession.#open(target, settings, target.tls);
    } catch (error) {
      if (!(error instanceof SessionError) || !error.retryPlain) throw error;
      settings.logger.warn(
        { host: target.hostname, address: target.address ?? target.path, err: error.cause },
        'opportunistic STARTTLS handshake failed; retrying in plain text',
      );
      const plain = await SmtpSession.#open(target, settings, 'none');
      if (target.check) {
        plain.#tlsVerdict = { ok: false, failure: 'validation-failure', detail: error.reply.text };
      }
      return plain;
    }
  }

  static async #open(target: SessionTarget, settings: SessionSettings, tls: TlsMode): Promise<SmtpSession> {
    const socket = await connectSocket(target, settings, tls);
    const session = new SmtpSession(target, settings, socket);
    try {
      if (tls === 'implicit') session.#secured(socket as TLSSocket, true);
      await session.#greet();
      if (tls === 'opportunistic' || tls === 'require') await session.#startTls(tls);
      if (target.auth) await session.#authenticate(target.auth);
      return session;
    } catch (thrown) {
      // A violation closes the socket, so what the caller saw may only be the close it caused.
      const error = session.#reader.failure instanceof ProtocolViolation ? session.#reader.failure : thrown;
      session.close();
      if (error instanceof SessionError) throw error;
      const reply =
        error instanceof ProtocolViolation
          ? DeliveryReplies.protocolViolation(remoteMtaOf(target), error.message)
          : DeliveryReplies.noConnection(`${remoteMtaOf(target)}: ${message(error)}`);
      throw new SessionError(reply, { cause: error });
    }
  }

  get capabilities(): Capabilities {
    return this.#capabilities;
  }

  /** True once the session runs under TLS (STARTTLS or implicit). */
  get secure(): boolean {
    return this.#secure;
  }

  get tlsInfo(): { protocol: string; cipher: string; authorized: boolean } | undefined {
    return this.#tlsInfo;
  }

  /** How the server fared against `target.check` (undefined when nothing was to be checked). */
  get tlsVerdict(): TlsVerdict | undefined {
    return this.#tlsVerdict;
  }

  /** The local address the connection left from (TLS-RPT's sending-mta-ip). */
  get localAddress(): string | undefined {
    return this.#socket.localAddress;
  }

  /** `name[address]:port`, as DSNs name the Remote-MTA. */
  get remoteMta(): string {
    this.#remoteMta ??= remoteMtaOf(this.target);
    return this.#remoteMta;
  }

  /** When the connection was opened (Date.now()), for the pool's age limit. */
  readonly openedAt = Date.now();

  /** Transactions this session has carried (for the per-connection message limit). */
  get transactions(): number {
    return this.#transactions;
  }

  /** False once the connection is closed, broken, or out of sync with the server. */
  get usable(): boolean {
    return !this.#broken && !this.#socket.destroyed && this.#reader.failure === undefined;
  }

  /**
   * Runs one transaction and returns the final reply of each recipient, in the order given. Never
   * throws for remote failures: a connection lost midway gives 4.4.2 to every recipient still open.
   */
  async send(tx: Transaction): Promise<SmtpReply[]> {
    const t = this.#settings.timeouts;
    const resetFirst = this.#resetPending;
    this.#resetPending = false;
    const pipelining = this.#capabilities.pipelining;
    if (resetFirst && !pipelining) {
      await this.reset().catch((error: unknown) => {
        throw new StaleConnection(message(error));
      });
    }
    this.#transactions++;
    const replies: (SmtpReply | undefined)[] = tx.recipients.map(() => undefined);
    const accepted: number[] = [];
    let source: Readable | undefined;
    try {
      const mail = `MAIL FROM:<${tx.mailFrom}>${tx.mailParams.map((p) => ` ${p}`).join('')}`;
      const rcpts = tx.recipients.map(
        ({ address, params }) => `RCPT TO:<${address}>${params.map((p) => ` ${p}`).join('')}`,
      );
      let dataReply: WireReply;
      if (pipelining) {
        // RFC 2920: MAIL, every RCPT and DATA in one write (DATA last in the group: the message
        // waits for its 354). The message is opened first: a store that cannot give it must not
        // leave the server waiting at 354.
        source = await openMessage(tx);
        const reset = resetFirst ? ['RSET'] : [];
        // RFC 3030 with RFC 2920: the message goes in BDAT chunks right behind the commands, a small
        // one in the same write (RSET, MAIL, RCPT, BDAT n LAST and the message: one system call).
        // Nothing waits for a go-ahead, so a refused MAIL or RCPT costs the bytes, not a round trip;
        // the server discards what it got when the transaction failed. LMTP keeps DATA.
        const chunked = this.#capabilities.chunking && this.target.protocol === 'smtp';
        let chunks = 0;
        if (chunked) {
          try {
            chunks = await this.#sendChunked([...reset, mail, ...rcpts], source);
          } catch (error) {
            // The connection died before the last chunk was handed over: the server took nothing.
            if (resetFirst && error instanceof ConnectionProblem) {
              this.#broken = true;
              throw new StaleConnection(message(error));
            }
            throw error;
          }
        } else {
          this.#sendCommands([...reset, mail, ...rcpts, 'DATA']);
        }
        if (resetFirst) {
          // Nothing of this transaction has been taken before the RSET is answered.
          const rset = await this.#read(t.commandMs, 'RSET').catch((error: unknown) => {
            this.#broken = true;
            throw new StaleConnection(message(error));
          });
          if (rset.code !== 250) {
            this.#broken = true;
            throw new StaleConnection(`RSET answered ${rset.code} ${rset.lines.join(' ')}`);
          }
        }
        const mailReply = await this.#read(t.commandMs, 'MAIL FROM');
        // A 421 is noted as it is read: a server that closes after it leaves the later reads to fail,
        // and the recipients must get its 421, not "connection lost".
        this.#noteClosing(mailReply);
        const rcptReplies: WireReply[] = [];
        for (const _ of rcpts) {
          const reply = await this.#read(t.commandMs, 'RCPT TO');
          this.#noteClosing(reply);
          rcptReplies.push(reply);
        }
        if (chunked) return await this.#chunkedReplies(replies, accepted, mailReply, rcptReplies, chunks);
        if (!isPositive(mailReply)) {
          const failed = this.#transactionFailed(replies, mailReply);
          await this.#skipData();
          return failed;
        }
        for (const [i, reply] of rcptReplies.entries()) this.#recipientReply(replies, accepted, i, reply);
        if (this.#closing) return replies.map((reply) => reply ?? (this.#closing as SmtpReply));
        if (accepted.length === 0) {
          await this.#skipData();
          return finish(replies);
        }
        dataReply = await this.#read(t.dataInitMs, 'DATA');
      } else {
        const mailReply = await this.#command(mail, t.commandMs);
        if (!isPositive(mailReply)) return this.#transactionFailed(replies, mailReply);
        for (const [i, rcpt] of rcpts.entries()) {
          this.#recipientReply(replies, accepted, i, await this.#command(rcpt, t.commandMs));
        }
        if (accepted.length === 0) return finish(replies);
        if (this.#closing) return replies.map((reply) => reply ?? (this.#closing as SmtpReply));
        // Opened before DATA: a store that cannot give the message must not leave the server waiting at 354.
        source = await openMessage(tx);
        dataReply = await this.#command('DATA', t.dataInitMs);
      }
      if (dataReply.code !== 354) {
        this.#noteClosing(dataReply);
        const reply = dataReply.code >= 400 ? toSmtpReply(dataReply) : unexpectedReply(dataReply);
        for (const i of accepted) replies[i] = reply;
        return finish(replies);
      }
      // Owed from here on: a server that answers before the final dot has its reply kept, not refused.
      this.#reader.expect(this.target.protocol === 'lmtp' ? accepted.length : 1);
      await this.#sendData(source);
      // A reply that came before our final dot answers something else (a command the server thinks
      // it saw, or nothing): a 2xx taken for the message's answer could report delivered what the
      // server never took whole. A refusal that early stands (a server may stop reading and say so).
      if (this.#reader.unread.some(isPositive)) {
        this.#reader.fail(new ProtocolViolation('a positive reply before the end of the message'));
        throw this.#reader.failure;
      }
      // LMTP (RFC 2033 §4.2): one reply per accepted recipient, in RCPT order. SMTP: one for all.
      if (this.target.protocol === 'lmtp') {
        // Every reply answers the one final dot: they share one deadline, or a server answering each
        // just in time would hold us dataEndMs per recipient.
        const deadline = Date.now() + t.dataEndMs;
        for (const i of accepted) {
          const reply = await this.#read(deadline - Date.now(), 'end of data', t.dataEndMs);
          this.#noteClosing(reply);
          replies[i] = toSmtpReply(reply);
        }
      } else {
        const reply = await this.#read(t.dataEndMs, 'end of data');
        this.#noteClosing(reply);
        const final = toSmtpReply(reply);
        for (const i of accepted) replies[i] = final;
      }
      return finish(replies);
    } catch (error) {
      if (error instanceof StaleConnection) {
        this.#socket.destroy();
        throw error;
      }
      this.#broken = true;
      this.#socket.destroy();
      const lost = this.#closing ?? this.#lostReply(error);
      return replies.map((reply) => reply ?? lost);
    } finally {
      source?.destroy();
    }
  }

  /**
   * The replies to a pipelined BDAT transaction, after MAIL's and every RCPT's: one per chunk. All
   * are read (a reply left unread would answer the next transaction's command); the first chunk
   * refused is the answer for every accepted recipient, else the reply to BDAT LAST.
   */
  async #chunkedReplies(
    replies: (SmtpReply | undefined)[],
    accepted: number[],
    mailReply: WireReply,
    rcptReplies: readonly WireReply[],
    chunks: number,
  ): Promise<SmtpReply[]> {
    const t = this.#settings.timeouts;
    let final: WireReply | undefined;
    for (let n = 1; n <= chunks && !this.#closing; n++) {
      const reply = await this.#read(
        n === chunks ? t.dataEndMs : t.commandMs,
        n === chunks ? 'BDAT LAST' : 'BDAT',
      );
      this.#noteClosing(reply);
      if (final === undefined && (!isPositive(reply) || n === chunks)) final = reply;
    }
    if (!isPositive(mailReply)) return this.#transactionFailed(replies, mailReply);
    for (const [i, reply] of rcptReplies.entries()) this.#recipientReply(replies, accepted, i, reply);
    if (this.#closing) return replies.map((reply) => reply ?? (this.#closing as SmtpReply));
    if (accepted.length === 0) return finish(replies);
    // A server that took the message with no recipient accepted, or said 250 to MAIL and RCPT but
    // nothing to the chunks, is out of step: the recipients wait for another try.
    if (final === undefined) throw new ProtocolViolation('no reply to BDAT');
    const reply = isPositive(final) || final.code >= 400 ? toSmtpReply(final) : unexpectedReply(final);
    for (const i of accepted) replies[i] = reply;
    return finish(replies);
  }

  /**
   * Reads the answer to a pipelined DATA that no message will follow (MAIL or every RCPT refused).
   * A server that says 354 all the same waits for a message it must not get: the connection is
   * dropped (nothing was accepted, so nothing is lost). A read that fails has dropped it already.
   */
  async #skipData(): Promise<void> {
    // A 421 closes the channel: the session is broken already, and its DATA reply may never come.
    if (this.#closing) return;
    try {
      const reply = await this.#read(this.#settings.timeouts.dataInitMs, 'DATA');
      this.#noteClosing(reply);
      if (reply.code === 354) this.close();
    } catch {
      // #read marked the session broken and closed it; the replies decided so far stand.
    }
  }

  /** The reply for every recipient still open when a transaction breaks off. */
  #lostReply(thrown: unknown): SmtpReply {
    const error = this.#reader.failure instanceof ProtocolViolation ? this.#reader.failure : thrown;
    if (error instanceof ProtocolViolation)
      return DeliveryReplies.protocolViolation(this.remoteMta, error.message);
    if (error instanceof MessageUnreadable) {
      this.#log.error({ err: error.cause ?? error }, 'the stored message could not be read while sending it');
      return DeliveryReplies.localError('message could not be read while sending');
    }
    return DeliveryReplies.connectionLost(`${this.remoteMta}: ${message(error)}`);
  }

  /**
   * Marks a pooled session for its next transaction: it starts with RSET, which also proves the
   * server is still there. With PIPELINING the RSET goes in the same write as MAIL and RCPT, so
   * reuse costs no extra round trip; send() throws StaleConnection when the RSET fails.
   */
  reuse(): void {
    this.#resetPending = true;
  }

  /** RSET before reusing the connection: also proves the server is still there. Throws when it is not. */
  async reset(): Promise<void> {
    const reply = await this.#command('RSET', this.#settings.timeouts.commandMs).catch((error: unknown) => {
      this.#broken = true;
      throw error;
    });
    if (reply.code !== 250) {
      this.#broken = true;
      throw new ConnectionProblem(`RSET answered ${reply.code} ${reply.lines.join(' ')}`);
    }
  }

  /** Says QUIT and closes, waiting at most a few seconds for the 221. */
  async quit(): Promise<void> {
    if (!this.usable) {
      this.close();
      return;
    }
    this.#broken = true;
    try {
      this.#sendCommands(['QUIT']);
      await this.#reader.next(Math.min(this.#settings.timeouts.commandMs, 5000), 'QUIT');
    } catch {
      // The server may close before or instead of answering; either way we are done.
    } finally {
      this.close();
    }
  }

  /** Closes the connection at once. */
  close(): void {
    this.#broken = true;
    this.#socket.destroy();
  }

  #transactionFailed(replies: (SmtpReply | undefined)[], wire: WireReply): SmtpReply[] {
    this.#noteClosing(wire);
    const reply = wire.code >= 400 ? toSmtpReply(wire) : unexpectedReply(wire);
    return replies.map(() => reply);
  }

  #recipientReply(
    replies: (SmtpReply | undefined)[],
    accepted: number[],
    index: number,
    wire: WireReply,
  ): void {
    this.#noteClosing(wire);
    if (isPositive(wire)) accepted.push(index);
    else replies[index] = wire.code >= 400 ? toSmtpReply(wire) : unexpectedReply(wire);
  }

  /** A 421 means the server is closing the channel (RFC 5321 §3.8): never reuse it, and send nothing more. */
  #noteClosing(wire: WireReply): void {
    if (wire.code !== 421) return;
    this.#broken = true;
    this.#closing ??= toSmtpReply(wire);
  }

  async #greet(): Promise<void> {
    const t = this.#settings.timeouts;
    const greeting = await this.#read(t.greetingMs, 'the greeting');
    if (greeting.code !== 220) throw this.#setupError(greeting, 'greeting');
    await this.#hello();
  }

  /** EHLO (LHLO for LMTP), falling back to HELO when a plain SMTP server does not know EHLO. */
  async #hello(): Promise<void> {
    const t = this.#settings.timeouts;
    const name = this.target.heloName ?? this.#settings.heloName;
    const lmtp = this.target.protocol === 'lmtp';
    const reply = await this.#command(`${lmtp ? 'LHLO' : 'EHLO'} ${name}`, t.commandMs);
    if (reply.code === 250) {
      this.#capabilities = parseCapabilities(reply.lines.slice(1));
      return;
    }
    if (lmtp || reply.code < 500) throw this.#setupError(reply, lmtp ? 'LHLO' : 'EHLO');
    const helo = await this.#command(`HELO ${name}`, t.commandMs);
    if (helo.code !== 250) throw this.#setupError(helo, 'HELO');
    this.#capabilities = NO_CAPABILITIES;
  }

  async #startTls(mode: 'opportunistic' | 'require'): Promise<void> {
    const host = this.target.hostname;
    const noTls = (detail: string): void => {
      if (this.target.check) this.#tlsVerdict = { ok: false, failure: 'starttls-not-supported', detail };
    };
    if (!this.#capabilities.startTls) {
      if (mode === 'require') {
        throw new SessionError(DeliveryReplies.tlsUnavailable(host), {
          tlsFailure: 'starttls-not-supported',
        });
      }
      noTls(`${host} does not offer STARTTLS`);
      return;
    }
    const reply = await this.#command('STARTTLS', this.#settings.timeouts.commandMs);
    if (reply.code !== 220) {
      const said = `STARTTLS answered ${reply.code} ${reply.lines.join(' ')}`;
      if (mode === 'require') {
        throw new SessionError(DeliveryReplies.tlsFailed(host, said), {
          tlsFailure: 'starttls-not-supported',
        });
      }
      this.#log.info({ host, code: reply.code }, 'STARTTLS refused; continuing in plain text');
      noTls(said);
      return;
    }
    // Anything after the 220 came in plain text and would be taken as said under TLS (response injection).
    if (!this.#reader.idle) throw new ProtocolViolation('more than its reply to STARTTLS before TLS began');
    const plain = this.#socket;
    this.#unlisten();
    let secured: TLSSocket;
    try {
      secured = await upgrade(plain, this.target, this.#settings);
    } catch (error) {
      plain.destroy();
      throw new SessionError(DeliveryReplies.tlsFailed(host, message(error)), {
        retryPlain: mode !== 'require',
        tlsFailure: 'validation-failure',
        cause: error,
      });
    }
    // RFC 3207 §4.2: forget everything learned before TLS and say EHLO again.
    this.#socket = secured;
    [this.#reader, this.#unlisten] = this.#listen(secured, 0);
    this.#secured(secured, mode === 'require');
    this.#capabilities = NO_CAPABILITIES;
    await this.#hello();
  }

  /**
   * TLS is up: checks the server against `target.check` before anything else is said. A mandatory
   * check that fails ends the session (nothing of the mail has been sent); an optional one is reported.
   */
  #secured(socket: TLSSocket, mandatory: boolean): void {
    this.#markSecure(socket);
    const check =
      this.target.check ?? (mandatory ? { kind: 'pkix', names: [this.target.hostname] } : undefined);
    if (!check) return;
    const verdict = verifyPeer(socket, check);
    this.#tlsVerdict = verdict;
    if (verdict.ok || !mandatory) return;
    socket.destroy();
    throw new SessionError(DeliveryReplies.tlsFailed(this.target.hostname, verdict.detail), {
      tlsFailure: verdict.failure,
    });
  }

  async #authenticate(auth: { user: string; pass: string }): Promise<void> {
    const host = this.target.hostname;
    if (!this.#secure && !this.#settings.allowInsecureAuth) {
      throw new SessionError(DeliveryReplies.insecureAuth(host));
    }
    this.#authenticating = true;
    try {
      await this.#authenticateWith(auth, host);
    } finally {
      this.#authenticating = false;
    }
  }

  async #authenticateWith(auth: { user: string; pass: string }, host: string): Promise<void> {
    const t = this.#settings.timeouts;
    const offered = this.#capabilities.auth;
    let reply: WireReply;
    if (offered.includes('PLAIN')) {
      const token = Buffer.from(`\0${auth.user}\0${auth.pass}`, 'utf8').toString('base64');
      reply = await this.#command(`AUTH PLAIN ${token}`, t.commandMs, 'AUTH PLAIN');
    } else if (offered.includes('LOGIN')) {
      reply = await this.#command('AUTH LOGIN', t.commandMs);
      if (reply.code === 334) {
        reply = await this.#command(
          Buffer.from(auth.user, 'utf8').toString('base64'),
          t.commandMs,
          'AUTH LOGIN user',
        );
      }
      if (reply.code === 334) {
        reply = await this.#command(
          Buffer.from(auth.pass, 'utf8').toString('base64'),
          t.commandMs,
          'AUTH LOGIN password',
        );
      }
    } else {
      // Postfix does the same: credentials are configured, the server asks for none; let it decide at MAIL/RCPT.
      this.#log.warn(
        { host, offered },
        'credentials configured but the server offers no PLAIN or LOGIN; sending without AUTH',
      );
      return;
    }
    if (reply.code !== 235) {
      throw new SessionError(DeliveryReplies.authFailed(host, `${reply.code} ${reply.lines.join(' ')}`));
    }
  }

  /** A refusal while setting up: 5xx is permanent for this host, anything else temporary. */
  #setupError(wire: WireReply, stage: string): SessionError {
    const remote = `${wire.code} ${wire.lines.join(' ')}`;
    const reply = toSmtpReply(wire);
    if (wire.code >= 500 && wire.code < 600) {
      return new SessionError(
        { ...reply, text: `${this.remoteMta} said at ${stage}: ${reply.text}` },
        { permanent: true, remote: reply },
      );
    }
    return new SessionError(DeliveryReplies.noConnection(`${this.remoteMta} said at ${stage}: ${remote}`), {
      remote: reply,
    });
  }

  #markSecure(socket: TLSSocket): void {
    this.#secure = true;
    this.#tlsInfo = {
      protocol: socket.getProtocol() ?? 'unknown',
      cipher: socket.getCipher()?.name ?? 'unknown',
      authorized: socket.authorized,
    };
  }

  /** A reader for `socket` that owes `owed` replies; a reader that fails closes the socket at once. */
  #listen(socket: Socket | TLSSocket, owed: number): [ReplyReader, () => void] {
    const reader = new ReplyReader(this.#settings.replyLimits, owed, () => socket.destroy());
    const onData = (chunk: Buffer): void => reader.feed(chunk);
    const onError = (error: Error): void => reader.fail(new ConnectionProblem(error.message));
    const onClose = (): void => reader.fail(new ConnectionProblem('connection closed by the server'));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    // Only the data stops: under TLS the plain socket still needs a listener for its errors.
    return [reader, () => socket.removeListener('data', onData)];
  }

  /** Writes command lines in one go; each owes us a reply from here on. */
  #sendCommands(lines: readonly string[]): void {
    const text = lines.length === 1 ? `${lines[0]}\r\n` : `${lines.join('\r\n')}\r\n`;
    this.#sendLog(lines, text);
    this.#reader.expect(lines.length);
    this.#socket.write(text);
  }

  /** The debug record of command lines sent (never credentials); nothing is built when debug is off. */
  #sendLog(lines: readonly string[], text?: string): void {
    if (this.#log.isLevelEnabled?.('debug') === false) return;
    const line = this.#authenticating ? '(credentials)' : redact(text ?? `${lines.join('\r\n')}\r\n`);
    this.#log.debug({ host: this.target.hostname, line }, 'C:');
  }

  async #command(line: string, timeoutMs: number, what = line.split(' ')[0] ?? line): Promise<WireReply> {
    this.#sendCommands([line]);
    return this.#read(timeoutMs, what);
  }

  async #read(timeoutMs: number, what: string, limitMs = timeoutMs): Promise<WireReply> {
    try {
      return await this.#reader.next(timeoutMs, what, limitMs);
    } catch (error) {
      // A late reply would desynchronise every later command: the connection is done.
      this.#broken = true;
      this.#socket.destroy();
      throw error;
    }
  }

  /**
   * Streams the message after the 354: dot-stuffed, line ends made CRLF, then the final dot; as fast
   * as the socket takes it and no faster, so only a few blocks are ever held. A store that fails
   * midway ends the connection before the final dot, so the server discards the part it got.
   */
  async #sendData(source: Readable): Promise<void> {
    const t = this.#settings.timeouts;
    const encoder = new DataEncoder();
    const deadline = new DataDeadline(t.dataBlockMs, t.dataMinRate);
    // Encoded chunks not written yet: each write is a system call (and wakes the server), so small
    // chunks go out together, and the last goes out with the final dot (a small message: one write).
    const held: Buffer[] = [];
    let heldBytes = 0;
    await pipeEncoded(source, encoder, (encoded) => {
      held.push(encoded);
      heldBytes += encoded.length;
      if (heldBytes < DATA_WRITE_BYTES) return undefined;
      const block = joinHeld(held, heldBytes);
      held.length = 0;
      heldBytes = 0;
      return this.#writeData(block, deadline);
    });
    const end = encoder.end();
    held.push(end);
    await this.#writeData(joinHeld(held, heldBytes + end.length), deadline);
  }

  /**
   * Writes `commands` and then the message in BDAT chunks (RFC 3030), line ends made CRLF and no dot
   * doubled; the first chunk goes in the commands' write, and a small message is a single
   * `BDAT n LAST`. Returns the number of BDAT commands sent (each owes a reply). A store that fails
   * midway ends the connection before BDAT LAST, so the server discards the chunks it got.
   */
  async #sendChunked(commands: readonly string[], source: Readable): Promise<number> {
    const t = this.#settings.timeouts;
    const encoder = new DataEncoder({ dotStuffing: false });
    const deadline = new DataDeadline(t.dataBlockMs, t.dataMinRate);
    let pending: string[] = [...commands];
    let sent = 0;
    const held: Buffer[] = [];
    let heldBytes = 0;
    const flush = async (last: boolean): Promise<void> => {
      const bdat = `BDAT ${heldBytes}${last ? ' LAST' : ''}`;
      pending.push(bdat);
      this.#sendLog(pending);
      this.#reader.expect(pending.length);
      const head = Buffer.from(`${pending.join('\r\n')}\r\n`, 'utf8');
      const out = Buffer.concat([head, ...held], head.length + heldBytes);
      pending = [];
      held.length = 0;
      heldBytes = 0;
      sent++;
      await this.#writeData(out, deadline);
    };
    await pipeEncoded(source, encoder, (encoded) => {
      held.push(encoded);
      heldBytes += encoded.length;
      return heldBytes >= DATA_WRITE_BYTES ? flush(false) : undefined;
    });
    const end = encoder.end();
    if (end.length > 0) {
      held.push(end);
      heldBytes += end.length;
    }
    await flush(true);
    return sent;
  }

  async #writeData(chunk: Buffer, deadline: DataDeadline): Promise<void> {
    if (this.#reader.failure) throw this.#reader.failure;
    if (this.#socket.destroyed) throw new ConnectionProblem('connection closed while sending data');
    deadline.wrote(chunk.length);
    if (this.#socket.write(chunk)) return;
    const socket = this.#socket;
    const allowance = deadline.allowance();
    const started = Date.now();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => done(new ConnectionProblem(allowance.reason)), allowance.ms);
      const onClose = (): void => done(new ConnectionProblem('connection closed while sending data'));
      const onDrain = (): void => done();
      const done = (error?: Error): void => {
        clearTimeout(timer);
        socket.removeListener('drain', onDrain);
        socket.removeListener('close', onClose);
        deadline.waited(Date.now() - started);
        if (error) reject(error);
        else resolve();
      };
      socket.once('drain', onDrain);
      socket.once('close', onClose);
    });
  }
}

/**
 * Encoded message bytes held before a write: a stored message comes in chunks of 16–64 KiB, so
 * this rarely holds more than one; small chunks (a hook's header block, say) join the next.
 */
const DATA_WRITE_BYTES = 16 * 1024;

/**
 * Hands `take` the message read from `source`, encoded by `encoder` (chunks that encode to nothing
 * skipped), waiting for what it returns. A message the store holds in memory is taken without
 * reading its stream (heldChunks): no async iterator, no generator, no promises per chunk.
 */
async function pipeEncoded(
  source: Readable,
  encoder: DataEncoder,
  take: (encoded: Buffer) => Promise<void> | undefined,
): Promise<void> {
  const held = heldChunks(source);
  if (held !== undefined) {
    for (const chunk of held) {
      const encoded = encoder.push(chunk);
      if (encoded.length === 0) continue;
      const wait = take(encoded);
      if (wait !== undefined) await wait;
    }
    return;
  }
  for await (const encoded of encodedChunks(source, encoder)) {
    const wait = take(encoded);
    if (wait !== undefined) await wait;
  }
}

/**
 * The message read from `source`, encoded by `encoder` (chunks that encode to nothing skipped);
 * a failure to read it is a MessageUnreadable (the store's fault, not the server's).
 */
async function* encodedChunks(source: Readable, encoder: DataEncoder): AsyncGenerator<Buffer> {
  const chunks = source[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  for (;;) {
    let next: IteratorResult<Buffer | string>;
    try {
      next = await chunks.next();
    } catch (error) {
      throw new MessageUnreadable(message(error), { cause: error });
    }
    if (next.done) return;
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value, 'utf8') : next.value;
    const encoded = encoder.push(chunk);
    if (encoded.length > 0) yield encoded;
  }
}

/** The held chunks as one buffer for one write (a copy only when there are several). */
function joinHeld(held: readonly Buffer[], bytes: number): Buffer {
  return held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held, bytes);
}

/** `name[address]:port` (or `name[path]` for a UNIX socket). */
export function remoteMtaOf(target: SessionTarget): string {
  if (target.path !== undefined) return `${target.hostname}[${target.path}]`;
  return `${target.hostname}[${target.address ?? target.hostname}]:${target.port ?? 25}`;
}

/** The message of a transaction, opened; a store that fails is MessageUnreadable (4.3.0, never "lost"). */
function openMessage(tx: Transaction): Promise<Readable> {
  return tx.message().catch((error: unknown) => {
    throw new MessageUnreadable(message(error), { cause: error });
  });
}

function finish(replies: (SmtpReply | undefined)[]): SmtpReply[] {
  // Every index is filled by the time a transaction ends; a gap would be a bug, reported as a retry.
  return replies.map((reply) => reply ?? DeliveryReplies.noDataReply);
}

function isPositive(wire: WireReply): boolean {
  return wire.code >= 200 && wire.code < 300;
}

/** EHLO keywords (RFC 5321 §4.1.1.1): one per line after the first, case-insensitive. */
export function parseCapabilities(lines: readonly string[]): Capabilities {
  let caps: {
    -readonly [K in keyof Capabilities]: Capabilities[K];
  } = { ...NO_CAPABILITIES, esmtp: true, auth: [] };
  for (const line of lines) {
    const [keyword = '', ...args] = line.trim().split(/\s+/);
    switch (keyword.toUpperCase()) {
      case 'PIPELINING':
        caps.pipelining = true;
        break;
      case 'STARTTLS':
        caps.startTls = true;
        break;
      case '8BITMIME':
        caps.eightBitMime = true;
        break;
      case 'SMTPUTF8':
        caps.smtpUtf8 = true;
        break;
      case 'DSN':
        caps.dsn = true;
        break;
      case 'REQUIRETLS':
        caps.requireTls = true;
        break;
      case 'CHUNKING':
        caps.chunking = true;
        break;
      case 'SIZE': {
        const limit = Number(args[0] ?? '0');
        caps.size = Number.isFinite(limit) && limit > 0 ? limit : 0;
        break;
      }
      case 'AUTH':
        caps = { ...caps, auth: [...caps.auth, ...args.map((a) => a.toUpperCase())] };
        break;
    }
  }
  return caps;
}

/** Binds the connection to the egress source's address, when the target has one. */
function localOf(target: SessionTarget): { localAddress?: string } {
  return target.localAddress === undefined ? {} : { localAddress: target.localAddress };
}

function connectSocket(
  target: SessionTarget,
  settings: SessionSettings,
  tls: TlsMode,
): Promise<Socket | TLSSocket> {
  const timeoutMs = settings.timeouts.connectMs;
  return new Promise((resolve, reject) => {
    let socket: Socket | TLSSocket;
    const readyEvent = tls === 'implicit' ? 'secureConnect' : 'connect';
    if (tls === 'implicit') {
      socket = tlsConnect({
        ...(target.path !== undefined
          ? { path: target.path }
          : { host: target.address, port: target.port, ...localOf(target) }),
        ...tlsOptions(target, settings),
      });
    } else if (target.path !== undefined) {
      socket = netConnect({ path: target.path });
    } else {
      socket = netConnect({ host: target.address, port: target.port ?? 25, ...localOf(target) });
    }
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new SessionError(
          DeliveryReplies.noConnection(`${remoteMtaOf(target)}: connect timed out after ${timeoutMs} ms`),
        ),
      );
    }, timeoutMs);
    socket.once(readyEvent, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      // SMTP is small command/reply turns: with Nagle's algorithm each pipelined burst can wait
      // for the peer's delayed ACK (40 ms on Linux), which caps a connection near 25 messages/s.
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      const reply =
        tls === 'implicit' && !(error as NodeJS.ErrnoException).syscall
          ? DeliveryReplies.tlsFailed(target.hostname, error.message)
          : DeliveryReplies.noConnection(`${remoteMtaOf(target)}: ${error.message}`);
      reject(new SessionError(reply, { cause: error }));
    });
  });
}

function tlsOptions(target: SessionTarget, settings: SessionSettings): ConnectionOptions {
  const name = target.hostname;
  return {
    // SNI must be a host name, never an address (RFC 6066 §3); DANE needs it too (RFC 7672 §8.1).
    ...(isIP(name) === 0 ? { servername: name } : {}),
    // The server is checked once the handshake is done (tls-check.ts), against the name we looked up
    // or TLSA records: one place decides, and every outcome can be reported, including the failures.
    rejectUnauthorized: false,
    // Names are checked there too (against the policy's names, which need not be the SNI name), so
    // node's own identity check must not mark a sound chain as unauthorized.
    checkServerIdentity: () => undefined,
    ...(settings.tls.ca !== undefined
      ? { ca: settings.tls.ca as string | Buffer | (string | Buffer)[] }
      : {}),
    ...(settings.tls.minVersion !== undefined ? { minVersion: settings.tls.minVersion } : {}),
    ...(settings.tls.ciphers !== undefined ? { ciphers: settings.tls.ciphers } : {}),
  };
}

function upgrade(plain: Socket, target: SessionTarget, settings: SessionSettings): Promise<TLSSocket> {
  const timeoutMs = settings.timeouts.commandMs;
  return new Promise((resolve, reject) => {
    const secured = tlsConnect({ socket: plain, ...tlsOptions(target, settings) });
    const timer = setTimeout(() => {
      secured.destroy();
      reject(new Error(`TLS handshake timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    secured.once('secureConnect', () => {
      clearTimeout(timer);
      secured.removeAllListeners('error');
      resolve(secured);
    });
    secured.once('error', (error) => {
      clearTimeout(timer);
      secured.destroy();
      reject(error);
    });
  });
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Keeps credentials out of debug logs. */
function redact(line: string): string {
  return /^AUTH\s/i.test(line) ? 'AUTH ***\r\n' : line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
