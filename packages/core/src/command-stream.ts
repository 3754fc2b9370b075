// The byte parser under each connection. smtp-server's SMTPStream splits command lines at a bare
// LF, lets a CR or NUL through inside a command, closes the connection on an over-long line and
// runs a partial last line when the client half-closes. This subclass keeps its DATA-mode parser
// (end of data only on <CRLF>.<CRLF>, verified by our tests) and replaces command-line splitting.
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import type { BareLineEndingPolicy } from './options.js';

/** Why a command line is not executed. */
export type CommandViolation = 'bare-lf' | 'control' | 'too-long';

type Callback = (error?: Error | null) => void;

const EMPTY = Buffer.alloc(0);
const LF = 0x0a;
const CR = 0x0d;
// How many synchronously answered commands to run from one chunk before yielding to the event loop.
const MAX_SYNC_COMMANDS = 100;

export class CommandStream extends SMTPStream {
  /** Set for the line being dispatched to `oncommand` when it must be refused instead of run. */
  violation: CommandViolation | undefined;
  readonly #bareLf: BareLineEndingPolicy;
  #pending: Buffer = EMPTY;
  #discarding = false;

  constructor(options: { maxLineLength: number; bareLineEndings: BareLineEndingPolicy }) {
    super({ maxCommandLength: options.maxLineLength });
    this.#bareLf = options.bareLineEndings;
  }

  override _write(chunk: Buffer, encoding: BufferEncoding | 'buffer', next: Callback): void {
    if (!chunk || chunk.length === 0 || this.isClosed) {
      next();
      return;
    }
    if (this._dataMode) {
      super._write(chunk, encoding, next);
      return;
    }
    this.#readCommands(chunk, next);
  }

  /** A command without its line end never runs, not even when the client closes after it. */
  override _flushData(): void {
    this.#pending = EMPTY;
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
            if (!this.#discarding && rest.length > this._maxCommandLength) this.#discarding = true;
            // Copy: holding a slice would pin the whole chunk until the line completes.
            if (!this.#discarding) this.#pending = Buffer.from(rest);
            done();
            return;
          }
          let line = data.subarray(pos, lf);
          pos = lf + 1;
          let violation: CommandViolation | undefined;
          if (this.#discarding) {
            this.#discarding = false;
            violation = 'too-long';
            line = EMPTY;
          } else {
            if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, -1);
            else if (this.#bareLf === 'reject') violation = 'bare-lf';
            if (violation === undefined && line.length > this._maxCommandLength) violation = 'too-long';
            if (violation === undefined && (line.includes(CR) || line.includes(0))) violation = 'control';
          }
          this.violation = violation;
          this.oncommand(Buffer.from(line), readLine);
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
