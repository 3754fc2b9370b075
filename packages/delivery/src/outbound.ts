// The message as it goes onward, never held whole: each send opens the stored message again and
// streams it. SIZE and 8BITMIME come from the job when the queue knows them, else from one measuring
// pass; `beforeSend` hooks get the header block (read alone, bounded) and a view whose body streams
// from the store, and their header block goes onward in front of the stored body.
import { Readable } from 'node:stream';
import { Headers, type MessageView } from '@tern/plugin-api';
import { findHeaderEnd, readStream } from '@tern/plugin-api/host';
import type { DeliveryJob } from '@tern/queue';
import { DataEncoder } from './encode.js';

/** Opens the stored message from its first byte: the queue contract's `message()`. */
export type OpenMessage = () => Promise<Readable>;

/** What a transaction needs of the message before MAIL FROM, and the message itself on demand. */
export interface OutboundMessage {
  /** SIZE= value (RFC 1870): bytes as sent, line ends as CRLF, without doubled dots and the final dot. */
  readonly size: number;
  /** A byte has the high bit set: the message needs 8BITMIME onward. */
  readonly eightBit: boolean;
  /** A fresh stream of the message as it goes onward, from its first byte. */
  open(): Promise<Readable>;
}

/** Default bound on the header block read for `beforeSend` hooks. */
export const DEFAULT_MAX_HEADER_BYTES = 1024 * 1024;

/** The stored message has no end of its header block within the bound: hooks cannot be given it. */
export class HeaderBlockTooLarge extends Error {
  override readonly name = 'HeaderBlockTooLarge';
  readonly limit: number;

  constructor(limit: number) {
    super(
      `the header block of the message is larger than ${limit} bytes, so beforeSend hooks cannot run; raise maxHeaderBytes to deliver it`,
    );
    this.limit = limit;
  }
}

export interface PrepareOptions {
  /** Bound on the header block read for `beforeSend`. */
  readonly maxHeaderBytes: number;
  /** Runs the `beforeSend` hooks on a view of the message; absent, the stored message goes as it is. */
  readonly beforeSend?: (view: MessageView) => Promise<void>;
}

const CRLF = Buffer.from('\r\n');

/**
 * Gets a message ready to go onward, reading at most its header block plus (when the job does not
 * carry size and 8-bit) one pass over the rest, which is measured and dropped.
 */
export async function prepareOutbound(
  job: DeliveryJob,
  message: OpenMessage,
  options: PrepareOptions,
): Promise<OutboundMessage> {
  const known =
    job.size !== undefined && job.eightBit !== undefined
      ? { size: job.size, eightBit: job.eightBit }
      : undefined;
  if (!options.beforeSend) {
    const measured = known ?? (await measure(await message()));
    return { ...measured, open: message };
  }

  const stream = await message();
  let head: HeaderBlock;
  let body: Measured & { bytes: number };
  try {
    const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
    head = await readHeaderBlock(chunks, options.maxHeaderBytes);
    // The job's size covers the stored header block too; what follows it is the body.
    const stated = Math.max(0, (known?.size ?? 0) - head.bodyStart);
    body = known
      ? { size: stated, eightBit: known.eightBit, bytes: stated }
      : await measureRest(head.rest, chunks);
  } finally {
    stream.destroy();
  }
  const bodyStart = head.bodyStart;
  const headers = head.headers;
  const view: MessageView = {
    headers,
    bodySize: body.bytes,
    stream: () =>
      Readable.from(joined(blockOf(headers), storedFrom(message, bodyStart)), { objectMode: false }),
    body: () => Readable.from(storedFrom(message, bodyStart), { objectMode: false }),
    buffer: (maxBytes) => readStream(view.stream(), maxBytes),
  };
  await options.beforeSend(view);
  const block = blockOf(headers);
  const blockMeasured = measureBuffer(block);
  return {
    size: blockMeasured.size + body.size,
    eightBit: blockMeasured.eightBit || body.eightBit,
    open: async () => Readable.from(joined(block, storedFrom(message, bodyStart)), { objectMode: false }),
  };
}

interface Measured {
  readonly size: number;
  readonly eightBit: boolean;
}

/** One header field's value (unfolded, trimmed) from the stored message, reading only its header block. */
export async function readHeaderField(
  message: OpenMessage,
  name: string,
  maxBytes: number,
): Promise<string | undefined> {
  const stream = await message();
  try {
    const head = await readHeaderBlock(
      stream[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>,
      maxBytes,
    );
    return head.headers.get(name)?.trim();
  } finally {
    stream.destroy();
  }
}

interface HeaderBlock {
  readonly headers: Headers;
  /** Offset of the body in the stored message (after the empty line). */
  readonly bodyStart: number;
  /** Body bytes read along with the header block. */
  readonly rest: readonly Buffer[];
}

/** The header block as it goes onward: every field, then the empty line. */
function blockOf(headers: Headers): Buffer {
  return Buffer.concat([headers.toBuffer(), CRLF]);
}

/**
 * Reads up to the empty line that ends the header block, holding at most `max` bytes: the split
 * is MessageContent.parse's (findHeaderEnd), searched only in what is new so small chunks cost no
 * rescans, and the part of a chunk past the bound is passed on, not copied.
 */
async function readHeaderBlock(chunks: AsyncIterator<Buffer | string>, max: number): Promise<HeaderBlock> {
  let held = Buffer.alloc(Math.min(max, 16 * 1024));
  let length = 0;
  for (;;) {
    const next = await chunks.next();
    if (next.done) {
      // No empty line at all: the whole message is its header block, as MessageContent.parse has it.
      return { headers: Headers.parse(held.subarray(0, length)), bodyStart: length, rest: [] };
    }
    const chunk = toBuffer(next.value);
    const take = Math.min(chunk.length, max - length);
    if (length + take > held.length) {
      const grown = Buffer.alloc(Math.min(max, Math.max(held.length * 2, length + take)));
      held.copy(grown, 0, 0, length);
      held = grown;
    }
    chunk.copy(held, length, 0, take);
    const from = length;
    length += take;
    const end = headerEndFrom(held.subarray(0, length), from);
    if (end) {
      return {
        headers: Headers.parse(held.subarray(0, end.headerEnd)),
        bodyStart: end.bodyStart,
        rest: [held.subarray(end.bodyStart, length), chunk.subarray(take)],
      };
    }
    if (length >= max) throw new HeaderBlockTooLarge(max);
  }
}

/** findHeaderEnd over `buf`, knowing that no end of the header block starts before `from - 3`. */
function headerEndFrom(buf: Buffer, from: number): { headerEnd: number; bodyStart: number } | undefined {
  // The block ends at the first CRLFCRLF or LFLF (or at an empty first line): the earliest of the
  // two searches, each from where a match could first be complete in the new bytes.
  if (from < 2) {
    const end = findHeaderEnd(buf);
    return end.headerEnd === -1 ? undefined : end;
  }
  // (from >= 2 here, so from - 3 >= -1; a negative offset would count from the end: clamp it.)
  const crlf = buf.indexOf('\r\n\r\n', Math.max(0, from - 3));
  const lf = buf.indexOf('\n\n', from - 1);
  if (crlf !== -1 && (lf === -1 || crlf < lf)) return { headerEnd: crlf + 2, bodyStart: crlf + 4 };
  if (lf !== -1) return { headerEnd: lf + 1, bodyStart: lf + 2 };
  return undefined;
}

async function measureRest(
  first: readonly Buffer[],
  chunks: AsyncIterator<Buffer | string>,
): Promise<Measured & { bytes: number }> {
  const encoder = new DataEncoder();
  let bytes = 0;
  for (const chunk of first) {
    encoder.push(chunk);
    bytes += chunk.length;
  }
  for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
    const chunk = toBuffer(next.value);
    bytes += chunk.length;
    encoder.push(chunk);
  }
  encoder.end();
  return { size: encoder.size, eightBit: encoder.eightBit, bytes };
}

/** One pass over a whole message: what SIZE and 8BITMIME need, nothing kept. */
async function measure(stream: Readable): Promise<Measured> {
  try {
    const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
    const { size, eightBit } = await measureRest([], chunks);
    return { size, eightBit };
  } finally {
    stream.destroy();
  }
}

function measureBuffer(buffer: Buffer): Measured {
  const encoder = new DataEncoder();
  encoder.push(buffer);
  encoder.end();
  return { size: encoder.size, eightBit: encoder.eightBit };
}

/** The stored message from `offset` on, opened afresh: a body without the stored header block. */
async function* storedFrom(message: OpenMessage, offset: number): AsyncGenerator<Buffer> {
  const stream = await message();
  try {
    let skip = offset;
    for await (const raw of stream) {
      const chunk = toBuffer(raw as Buffer | string);
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      yield skip === 0 ? chunk : chunk.subarray(skip);
      skip = 0;
    }
    if (skip > 0) throw new Error('the stored message ended before the end of its header block');
  } finally {
    stream.destroy();
  }
}

async function* joined(first: Buffer, rest: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  yield first;
  yield* rest;
}

function toBuffer(chunk: Buffer | string): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
}
