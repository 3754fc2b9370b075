// The DATA payload as it goes on the wire (RFC 5321 §4.5.2): every line ending CRLF, a leading dot
// doubled, and the terminating <CRLF>.<CRLF>. Stored messages are trusted to be CRLF already, but a
// bare CR or LF that slipped through must never reach another server (smuggling), so both become CRLF.
import { isAscii } from 'node:buffer';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const TERMINATOR = Buffer.from('.\r\n');
const LINE_END_TERMINATOR = Buffer.from('\r\n.\r\n');
const LINE_END = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);

/** The message encoded for DATA: chunks ready to write, ending with the `.` line, and their size. */
export interface WireMessage {
  readonly chunks: readonly Buffer[];
  /** Bytes on the wire, terminator included. */
  readonly size: number;
}

/**
 * Incremental encoder, so a message can be encoded chunk by chunk without holding a copy of it. It
 * also measures what it encodes: the same state machine serves a measuring pass (output dropped)
 * and the sending pass, so the SIZE we declare is what we send.
 */
export class DataEncoder {
  readonly #dotStuffing: boolean;
  #atLineStart = true;
  #pendingCR = false;
  #any = false;
  #size = 0;
  #stuffed = 0;
  #eightBit = false;

  /**
   * `dotStuffing: false` is for BDAT (RFC 3030): line ends are still made CRLF, but no dot is doubled
   * and end() gives only the last line's end, no terminator (the chunk sizes delimit the message).
   */
  constructor(options: { readonly dotStuffing?: boolean } = {}) {
    this.#dotStuffing = options.dotStuffing !== false;
  }

  /**
   * Bytes of the message as sent, line ends counted as CRLF, without the doubled dots and the
   * terminating `.` line: the value of SIZE= (RFC 1870 §3). Complete once end() was called.
   */
  get size(): number {
    return this.#size - this.#stuffed;
  }

  /** True once a byte with the high bit set went through: the message needs 8BITMIME (RFC 6152). */
  get eightBit(): boolean {
    return this.#eightBit;
  }

  /** Encodes one chunk of the message. */
  push(chunk: Buffer): Buffer {
    if (!this.#eightBit && !isAscii(chunk)) this.#eightBit = true;
    if (this.#passesAsIs(chunk)) {
      // The usual case (a stored message is CRLF and has few lines starting with a dot): the
      // chunk goes out as it is, no copy.
      this.#any ||= chunk.length > 0;
      this.#size += chunk.length;
      if (chunk.length > 0) this.#atLineStart = chunk[chunk.length - 1] === LF;
      return chunk;
    }
    // Worst case every byte doubles (a line of dots or of bare LFs), plus a pending CR's LF.
    const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
    let o = 0;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      this.#any = true;
      if (this.#pendingCR) {
        this.#pendingCR = false;
        out[o++] = CR;
        out[o++] = LF;
        this.#atLineStart = true;
        if (byte === LF) continue;
      }
      if (byte === CR) {
        this.#pendingCR = true;
        continue;
      }
      if (byte === LF) {
        out[o++] = CR;
        out[o++] = LF;
        this.#atLineStart = true;
        continue;
      }
      if (this.#atLineStart && byte === DOT && this.#dotStuffing) {
        out[o++] = DOT;
        this.#stuffed++;
      }
      out[o++] = byte;
      this.#atLineStart = false;
    }
    this.#size += o;
    return out.subarray(0, o);
  }

  /**
   * True when encoding would change nothing: no CR pending from the last chunk, every CR followed
   * by LF and every LF preceded by CR within the chunk (a chunk ending in CR goes the long way), and
   * no line that starts with a dot when dots are doubled. One pass that reads and writes nothing.
   */
  #passesAsIs(chunk: Buffer): boolean {
    if (this.#pendingCR) return false;
    const stuff = this.#dotStuffing;
    const last = chunk.length - 1;
    if (stuff && this.#atLineStart && chunk[0] === DOT) return false;
    for (let i = 0; i <= last; i++) {
      const byte = chunk[i] as number;
      if (byte === CR) {
        if (i === last || chunk[i + 1] !== LF) return false;
        i++;
        if (stuff && i < last && chunk[i + 1] === DOT) return false;
      } else if (byte === LF) {
        return false;
      }
    }
    return true;
  }

  /** Ends the last line (when the message does not end with one) and adds the terminator (not for BDAT). */
  end(): Buffer {
    if (this.#pendingCR || (this.#any && !this.#atLineStart)) {
      this.#pendingCR = false;
      this.#atLineStart = true;
      this.#size += 2;
      return this.#dotStuffing ? LINE_END_TERMINATOR : LINE_END;
    }
    return this.#dotStuffing ? TERMINATOR : EMPTY;
  }
}

/** Encodes a whole message held as chunks (small messages and tests: delivery streams through DataEncoder). */
export function encodeData(message: readonly Buffer[]): WireMessage {
  const encoder = new DataEncoder();
  const chunks: Buffer[] = [];
  let size = 0;
  for (const chunk of message) {
    const encoded = encoder.push(chunk);
    if (encoded.length > 0) {
      chunks.push(encoded);
      size += encoded.length;
    }
  }
  const end = encoder.end();
  chunks.push(end);
  size += end.length;
  return { chunks, size };
}

/** True when any byte has the high bit set: such a message needs 8BITMIME (RFC 6152). */
export function hasEightBitBytes(message: readonly Buffer[]): boolean {
  return message.some((chunk) => !isAscii(chunk));
}

/** True when the string has any character outside US-ASCII: such an address needs SMTPUTF8 (RFC 6531). */
export function isNonAscii(text: string): boolean {
  return /[^\x00-\x7f]/.test(text);
}
