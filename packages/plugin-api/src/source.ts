// Message bytes that may be too large to hold at once: a small message lives in memory, a large
// one partly on disk (core's intake spool). Readers stream them, as often as they need to; only
// code that has checked `chunks()` may take the bytes as buffers.
import { Readable } from 'node:stream';

/** A message or body: its size, and its bytes as a fresh stream on every call. */
export interface ByteSource {
  /** Total bytes. */
  readonly size: number;
  /** A new stream over every byte, from the first. Streams never copy what is held in memory. */
  stream(): Readable;
  /** The bytes as in-memory chunks, or undefined when some of them live on disk (read `stream()` then). */
  chunks(): readonly Buffer[] | undefined;
}

/** The chunks behind each memoryStream (see heldChunks). */
const HELD = new WeakMap<Readable, readonly Buffer[]>();

/**
 * A stream over chunks held in memory. A reader that can take buffers asks heldChunks() first and
 * skips the stream machinery: an async iterator over a stream makes several promises per chunk
 * and end-of-stream tracking, a few dozen microseconds per message until the JIT has warmed up.
 */
export function memoryStream(chunks: readonly Buffer[]): Readable {
  const stream = Readable.from(chunks, { objectMode: false });
  HELD.set(stream, chunks);
  return stream;
}

/** The chunks of a memoryStream() that nobody has read from yet; undefined for any other stream. */
export function heldChunks(stream: Readable): readonly Buffer[] | undefined {
  const held = HELD.get(stream);
  return held === undefined || stream.readableDidRead || stream.destroyed ? undefined : held;
}

/** Bytes held in memory as the chunks they arrived in (never joined). */
export function memorySource(chunks: readonly Buffer[]): ByteSource {
  const size = chunks.reduce((n, c) => n + c.length, 0);
  return {
    size,
    stream: () => memoryStream(chunks),
    chunks: () => chunks,
  };
}

/** Several sources read one after the other as one (a header block, its empty line, a body). */
export function joinSources(parts: readonly ByteSource[]): ByteSource {
  const size = parts.reduce((n, p) => n + p.size, 0);
  const chunks = (): readonly Buffer[] | undefined => {
    const all: Buffer[] = [];
    for (const part of parts) {
      const held = part.chunks();
      if (held === undefined) return undefined;
      all.push(...held);
    }
    return all;
  };
  return {
    size,
    chunks,
    stream: () => {
      const held = chunks();
      if (held !== undefined) return memoryStream(held);
      return Readable.from(
        (async function* (): AsyncGenerator<Buffer> {
          for (const part of parts) for await (const chunk of part.stream()) yield asBuffer(chunk);
        })(),
        { objectMode: false },
      );
    },
  };
}

/** The source is larger than the caller agreed to hold in memory. */
export class SourceTooLargeError extends Error {
  override readonly name = 'SourceTooLargeError';
  constructor(size: number, limit: number) {
    super(`${size} bytes is more than the ${limit} bytes allowed in memory here`);
  }
}

/**
 * Every byte of `source` in one buffer: a copy, for code that truly needs the whole message at
 * once (and small messages in tests). Throws SourceTooLargeError above `limit` bytes.
 */
export async function readAll(source: ByteSource, limit = Number.POSITIVE_INFINITY): Promise<Buffer> {
  if (source.size > limit) throw new SourceTooLargeError(source.size, limit);
  const held = source.chunks();
  if (held !== undefined) return held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held, source.size);
  return readStream(source.stream(), limit);
}

/** Every byte of a stream in one buffer; throws SourceTooLargeError (and stops reading) above `limit`. */
export async function readStream(stream: Readable, limit = Number.POSITIVE_INFINITY): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buffer = asBuffer(chunk);
    size += buffer.length;
    if (size > limit) throw new SourceTooLargeError(size, limit);
    parts.push(buffer);
  }
  return Buffer.concat(parts, size);
}

function asBuffer(chunk: unknown): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer);
}
