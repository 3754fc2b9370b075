// The byte parser under each connection. smtp-server's SMTPStream splits command lines at a bare
// LF, lets a CR or NUL through inside a command, closes the connection on an over-long line and
// runs a partial last line when the client half-closes. This subclass keeps its DATA-mode parser
// (end of data only on <CRLF>.<CRLF>, verified by our tests) and replaces command-line splitting.
// It also keeps the times the session's deadlines are measured from, since every byte passes here.
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import type { BareLineEndingPolicy } from './options.js';

/** Why a command line is not executed. */
export type CommandViolation = 'bare-lf' | 'control' | 'too-long';

/**
 * Command verbs known by name: RFC 5321 and its extensions, and the ones Tern implements or
 * refuses on purpose. Anything else a client types is `OTHER`, so a verb read from the wire can
 * label a metric without letting the client invent label values.
 */
export const SMTP_VERBS = [
  'HELO',
  'EHLO',
  'LHLO',
  'MAIL',
  'RCPT',
  'DATA',
  'BDAT',
  'RSET',
  'NOOP',
  'QUIT',
  'VRFY',
  'EXPN',
  'HELP',
  'STARTTLS',
  'AUTH',
  'XCLIENT',
  'XFORWARD',
  'ETRN',
  'ATRN',
  'TURN',
] as const;

export type SmtpVerb = (typeof SMTP_VERBS)[number];

const KNOWN_VERBS: ReadonlySet<string> = new Set(SMTP_VERBS);

/**
 * The verb of a command line, read the way smtp-server picks the handler (UTF-8, up to the first
 * space, upper-cased: `ſtarttls` is STARTTLS there, so it is here); `OTHER` when it is none of
 * SMTP_VERBS. A verb longer than 64 bytes cannot be one of them, so no more is decoded.
 */
export function verbOf(line: Buffer): SmtpVerb | 'OTHER' {
  const space = line.indexOf(0x20);
  const verb = line.toString('utf8', 0, Math.min(space === -1 ? line.length : space, 64)).toUpperCase();
  return KNOWN_VERBS.has(verb) ? (verb as SmtpVerb) : 'OTHER';
}

type Callback = (error?: Error | null) => void;

const EMPTY = Buffer.alloc(0);
const LF = 0x0a;
const CR = 0x0d;
// How many synchronously answered commands to run from one chunk before yielding to the event loop.
const MAX_SYNC_COMMANDS = 100;

export class CommandStream extends SMTPStream {
  /** Set for the line being dispatched to `oncommand` when it must be refused instead of run. */
  violation: CommandViolation | undefined;
  /** When this parser was made: after STARTTLS, when the TLS handshake began (ms since epoch). */
  readonly createdAt = Date.now();
  /** When the incomplete command line now being received began, if one is. */
  lineStartedAt: number | undefined;
  /** When the client last sent a byte or was last answered. */
  lastActivityAt = this.createdAt;
  readonly #maxLineLength: number;
  readonly #bareLf: BareLineEndingPolicy;
  #pending: Buffer = EMPTY;
  #discarding = false;
  #executing = false;
  #inMessage = false;

  constructor(options: { maxLineLength: number; bareLineEndings: BareLineEndingPolicy }) {
    super({ maxCommandLength: options.maxLineLength });
    this.#maxLineLength = options.maxLineLength;
    this.#bareLf = options.bareLineEndings;
  }

  /** The client waits for us: a command is being executed, or a message received in full is being decided on. */
  get awaitingServer(): boolean {
    return this.#executing || (this.#inMessage && !this._dataMode);
  }

  /** A message is being received, between the 354 and the final dot. */
  get receivingMessage(): boolean {
    return this._dataMode;
  }

  override startDataMode(
    maxBytes?: Parameters<SMTPStream['startDataMode']>[0],
  ): ReturnType<SMTPStream['startDataMode']> {
    this.#inMessage = true;
    return super.startDataMode(maxBytes);
  }

  /** The client was answered (a greeting, the end of a command): its idle time starts now. */
  answered(): void {
    this.lastActivityAt = Date.now();
  }

  /** Called by smtp-server once the message has been answered. */
  override continue(): void {
    this.#inMessage = false;
    this.answered();
    super.continue();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding | 'buffer', next: Callback): void {
    if (!chunk || chunk.length === 0 || this.isClosed) {
      next();
      return;
    }
    this.lastActivityAt = Date.now();
    if (this._dataMode) {
      super._write(chunk, encoding, next);
      return;
    }
    this.#readCommands(chunk, next);
  }

  /** A command without its line end never runs, not even when the client closes after it. */
  override _flushData(): void {
    this.#pending = EMPTY;
    this.lineStartedAt = undefined;
  }

  #readCommands(chunk: Buffer, next: Callback): void {
    const data = this.#pending.length > 0 ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#pending = EMPTY;
    let pos = 0;
    let called = false;
    const done: Callback = (error) => {
      if (called) return;
      called = true;
      next(error);
    };
    let busy = false;
    let again = false;
    let processed = 0;
    const resume = (): void => {
      this.#executing = false;
      this.answered();
      readLine();
    };

    // Same shape as SMTPStream's loop: a handler may call back synchronously (NOOP), so loop
    // rather than recurse, and always leave `busy` cleared or the parser would stall.
    const readLine = (): void => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        for (;;) {
          again = false;
          if (this.isClosed) {
            done();
            return;
          }
          if (this._dataMode) {
            // DATA was accepted: the rest of this chunk is message content for the DATA parser.
            const rest = data.subarray(pos);
            if (rest.length === 0) done();
            else this._write(rest, 'buffer', done);
            return;
          }
          const lf = data.indexOf(LF, pos);
          if (lf === -1) {
            const rest = data.subarray(pos);
            if (!this.#discarding && rest.length > this.#maxLineLength) this.#discarding = true;
            // Copy: holding a slice would pin the whole chunk until the line completes.
            if (!this.#discarding) this.#pending = Buffer.from(rest);
            if (rest.length > 0) this.lineStartedAt ??= Date.now();
            done();
            return;
          }
          let line = data.subarray(pos, lf);
          pos = lf + 1;
          this.lineStartedAt = undefined;
          let violation: CommandViolation | undefined;
          if (this.#discarding) {
            this.#discarding = false;
            violation = 'too-long';
            line = EMPTY;
          } else {
            if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, -1);
            else if (this.#bareLf === 'reject') violation = 'bare-lf';
            if (violation === undefined && line.length > this.#maxLineLength) violation = 'too-long';
            if (violation === undefined && (line.includes(CR) || line.includes(0))) violation = 'control';
          }
          this.violation = violation;
          this.#executing = true;
          this.oncommand(Buffer.from(line), resume);
          if (!again) return; // the handler is asynchronous; it calls readLine when done
          if (++processed >= MAX_SYNC_COMMANDS) {
            processed = 0;
            setImmediate(readLine);
            return;
          }
        }
      } finally {
        busy = false;
      }
    };
    readLine();
  }
}
