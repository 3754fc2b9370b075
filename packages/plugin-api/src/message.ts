// A message as the intake holds it: a parsed, changeable header block and the body, held once:
// in memory as the chunks it arrived in, or (a large one) spooled to disk. Every reader streams.
import type { Readable } from 'node:stream';
import { Headers } from './headers.js';
import { type ByteSource, joinSources, memorySource, readAll } from './source.js';

/** What hooks see of a message. Streams are fresh on every call and never copy the body. */
export interface MessageView {
  readonly headers: Headers;
  /** Body size in bytes (after the header block and its empty line). */
  readonly bodySize: number;
  /** The whole message as it would be queued now: current headers, empty line, body. */
  stream(): Readable;
  /** The body only. */
  body(): Readable;
  /**
   * The whole message (current headers, empty line, body) in one buffer, for the rare hook that
   * cannot work on a stream. It must say how much it is prepared to hold: above `maxBytes` this
   * throws SourceTooLargeError (the hook fails; intake answers 451), so a 50 MiB message never
   * lands in memory by accident. Prefer `stream()`/`body()`.
   */
  buffer(maxBytes: number): Promise<Buffer>;
}

const CRLF = Buffer.from('\r\n');

export class MessageContent implements MessageView {
  readonly headers: Headers;
  readonly #body: ByteSource;

  /** `body`: a source (possibly on disk), or in-memory chunks. */
  constructor(headers: Headers, body: ByteSource | readonly Buffer[]) {
    this.headers = headers;
    this.#body = isSource(body) ? body : memorySource(body);
  }

  /** Splits a complete message (CRLF line ends expected) at its first empty line. For tests and small messages. */
  static parse(raw: string | Buffer): MessageContent {
    const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    const { headerEnd, bodyStart } = findHeaderEnd(buf);
    if (headerEnd === -1) return new MessageContent(Headers.parse(buf), []);
    return new MessageContent(Headers.parse(buf.subarray(0, headerEnd)), [buf.subarray(bodyStart)]);
  }

  get bodySize(): number {
    return this.#body.size;
  }

  /** The body as a source. */
  bodySource(): ByteSource {
    return this.#body;
  }

  /** Header block (as it is now) + empty line + body, to store or send without joining. */
  source(): ByteSource {
    return joinSources([memorySource([this.headers.toBuffer(), CRLF]), this.#body]);
  }

  stream(): Readable {
    return this.source().stream();
  }

  body(): Readable {
    return this.#body.stream();
  }

  buffer(maxBytes: number): Promise<Buffer> {
    return readAll(this.source(), maxBytes);
  }

  /** The whole message as chunks; throws when the body is on disk (use `stream()`). */
  toChunks(): Buffer[] {
    const chunks = this.source().chunks();
    if (chunks === undefined)
      throw new Error('MessageContent.toChunks: the body is spooled to disk; stream it');
    return [...chunks];
  }

  /** Concatenates the whole message: a copy, so only for small in-memory messages and tests. */
  toBuffer(): Buffer {
    return Buffer.concat(this.toChunks());
  }
}

function isSource(body: ByteSource | readonly Buffer[]): body is ByteSource {
  return !Array.isArray(body);
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
