// Stored messages of any size that are never held whole: a block of body lines is built once and
// streamed again and again, and the bytes expected on the wire (dot-stuffed, terminated) are known
// by hash without building them either.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';

const MiB = 2 ** 20;
/** A prime, so chunk borders fall anywhere: inside lines, between CR and LF, before a dot. */
const CHUNK = 65_521;

export interface BigMessage {
  /** Stored bytes: header block, empty line, body. */
  readonly size: number;
  /** Bytes of the body (after the empty line). */
  readonly bodySize: number;
  /** CRLF pairs in the stored message (its lines). */
  readonly lineCount: number;
  /** The queue contract's `message()`: a fresh stream on every call. */
  readonly message: () => Promise<Readable>;
  /** Streams opened so far. */
  readonly opens: number;
  /** Awaited after each MiB streamed (any stream), e.g. to sample memory. */
  onMegabyte?: () => Promise<void> | void;
  /** SHA-256 and length of the DATA bytes expected after `headerBlock` (the header block as it must arrive). */
  expectedWire(headerBlock: string): { sha256: string; bytes: number };
}

export interface BigMessageOptions {
  /** The stored header fields, CRLF after each (the empty line is added). */
  readonly headers: string;
  /** At least this many body bytes. */
  readonly bodyBytes: number;
  /** Put one 8-bit character in the last block of the body. */
  readonly eightBitAtEnd?: boolean;
}

/** A body block: ordinary lines, lines starting with one or two dots, empty lines; CRLF throughout. */
function bodyBlock(index: number, eightBit: boolean): string {
  const lines: string[] = [];
  for (let i = 0; i < 1000; i++) {
    if (i % 50 === 0) lines.push(`.a line that starts with a dot ${index}/${i}`);
    else if (i % 97 === 0) lines.push(`..two dots ${i}`);
    else if (i % 31 === 0) lines.push('');
    else if (i % 89 === 0) lines.push('.');
    else lines.push(`body line ${i} of block ${index % 2}: ${'lorem ipsum '.repeat(5)}`);
  }
  if (eightBit) lines.push('caf\u00e9 at the very end');
  return `${lines.join('\r\n')}\r\n`;
}

const stuff = (text: string): string => text.replace(/^\./gm, '..');

export function bigMessage(options: BigMessageOptions): BigMessage {
  const header = Buffer.from(`${options.headers}\r\n`, 'latin1');
  // Two distinct blocks alternate so a repeated-slice mistake would show in the hash.
  const blocks = [Buffer.from(bodyBlock(0, false), 'utf8'), Buffer.from(bodyBlock(1, false), 'utf8')];
  const blockSize = (blocks[0]?.length ?? 0) + (blocks[1]?.length ?? 0);
  const pairs = Math.ceil(options.bodyBytes / blockSize);
  const last = options.eightBitAtEnd ? Buffer.from(bodyBlock(1, true), 'utf8') : undefined;
  const sequence = (): Buffer[] => {
    const order: Buffer[] = [];
    for (let p = 0; p < pairs; p++) order.push(blocks[0] as Buffer, blocks[1] as Buffer);
    if (last) order[order.length - 1] = last;
    return order;
  };
  const bodySize = sequence().reduce((n, b) => n + b.length, 0);
  const crlfs = (b: Buffer): number => b.toString('latin1').split('\r\n').length - 1;
  const lineCount = crlfs(header) + sequence().reduce((n, b) => n + crlfs(b), 0);
  let opens = 0;
  let streamed = 0;

  const result: BigMessage = {
    size: header.length + bodySize,
    bodySize,
    lineCount,
    get opens(): number {
      return opens;
    },
    message: async () => {
      opens++;
      const order = sequence();
      async function* chunks(): AsyncGenerator<Buffer> {
        for (const part of [header, ...order]) {
          for (let at = 0; at < part.length; at += CHUNK) {
            // A fresh buffer, as a file stream gives: holding chunks must cost what holding the message costs.
            const chunk = Buffer.from(part.subarray(at, at + CHUNK));
            const before = Math.floor(streamed / MiB);
            streamed += chunk.length;
            if (Math.floor(streamed / MiB) > before) await result.onMegabyte?.();
            yield chunk;
          }
        }
      }
      return Readable.from(chunks(), { objectMode: false });
    },
    expectedWire(headerBlock: string): { sha256: string; bytes: number } {
      const hash = createHash('sha256');
      let bytes = 0;
      const add = (text: Buffer): void => {
        hash.update(text);
        bytes += text.length;
      };
      add(Buffer.from(stuff(headerBlock), 'latin1'));
      const stuffed = blocks.map((b) => Buffer.from(stuff(b.toString('utf8')), 'utf8'));
      const stuffedLast = last ? Buffer.from(stuff(last.toString('utf8')), 'utf8') : undefined;
      const order = sequence();
      for (const block of order) {
        if (block === last && stuffedLast) add(stuffedLast);
        else add(stuffed[block === blocks[0] ? 0 : 1] as Buffer);
      }
      add(Buffer.from('.\r\n'));
      return { sha256: hash.digest('hex'), bytes };
    },
  };
  return result;
}
