// A message as the intake holds it: a parsed, changeable header block and the body as the
// chunks it arrived in. The body is held once; every reader streams over the same chunks.
import { Readable } from 'node:stream';
import { Headers } from './headers.js';

/** What hooks see of a message. Streams are fresh on every call and never copy the body. */
export interface MessageView {
  readonly headers: Headers;
  /** Body size in bytes (after the header block and its empty line). */
  readonly bodySize: number;
  /** The whole message as it would be queued now: current headers, empty line, body. */
  stream(): Readable;
  /** The body only. */
  body(): Readable;
}

const CRLF = Buffer.from('\r\n');

export class MessageContent implements MessageView {
  readonly headers: Headers;
  readonly #chunks: readonly Buffer[];
  readonly bodySize: number;

  constructor(headers: Headers, bodyChunks: readonly Buffer[]) {
    this.headers = headers;
    this.#chunks = bodyChunks;
    this.bodySize = bodyChunks.reduce((n, c) => n + c.length, 0);
  }

  /** Splits a complete message (CRLF line ends expected) at its first empty line. For tests and small messages. */
  static parse(raw: string | Buffer): MessageContent {
    const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    const { headerEnd, bodyStart } = findHeaderEnd(buf);
    if (headerEnd === -1) return new MessageContent(Headers.parse(buf), []);
    return new MessageContent(Headers.parse(buf.subarray(0, headerEnd)), [buf.subarray(bodyStart)]);
  }

  /** The body chunks (not copied). */
  bodyChunks(): readonly Buffer[] {
    return this.#chunks;
  }

  /** Header block + empty line + body chunks, as a list of buffers to write or store without concatenating. */
  toChunks(): Buffer[] {
    return [this.headers.toBuffer(), CRLF, ...this.#chunks];
  }

  stream(): Readable {
    return Readable.from(this.toChunks(), { objectMode: false });
  }

  body(): Readable {
    return Readable.from(this.#chunks, { objectMode: false });
  }

  /** Concatenates the whole message: a copy, so only for small messages and tests. */
  toBuffer(): Buffer {
    return Buffer.concat(this.toChunks());
  }
}

/** Finds the empty line that ends the header block: returns where it starts and where the body starts, or -1. */
export function findHeaderEnd(buf: Buffer): { headerEnd: number; bodyStart: number } {
  if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) return { headerEnd: 0, bodyStart: 2 };
  if (buf.length >= 1 && buf[0] === 0x0a) return { headerEnd: 0, bodyStart: 1 };
  const crlf = buf.indexOf('\r\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf !== -1 && (lf === -1 || crlf < lf)) return { headerEnd: crlf + 2, bodyStart: crlf + 4 };
  if (lf !== -1) return { headerEnd: lf + 1, bodyStart: lf + 2 };
  return { headerEnd: -1, bodyStart: -1 };
}
