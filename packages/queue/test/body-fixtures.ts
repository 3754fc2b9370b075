// Large messages for the storage tests: a body spooled to a file as intake leaves it, a source
// that stops half-way (to crash between the slices and the commit), a delivery that only hashes
// what it reads, and a memory sampler.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Envelope } from '@tern/plugin-api';
import type { ByteSource } from '@tern/plugin-api/host';
import type { Deliver, DeliveryJob, IncomingMessage } from '../src/contract.js';

export const MIB = 1024 * 1024;

export interface BigMessage {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

/**
 * Writes a message of a header block and `bodyBytes` of body to `dir`, as intake's spool would hold
 * it. The body is random (so 8-bit) and never repeats a 1 MiB block exactly.
 */
export async function writeBigMessage(dir: string, bodyBytes: number): Promise<BigMessage> {
  const path = join(dir, `big-${bodyBytes}.eml`);
  const out = createWriteStream(path);
  const hash = createHash('sha256');
  const write = async (chunk: Buffer): Promise<void> => {
    hash.update(chunk);
    if (!out.write(chunk)) await once(out, 'drain');
  };
  const head = Buffer.from('From: <big@origin.test>\r\nTo: <rcpt@dest.test>\r\nSubject: big\r\n\r\n');
  await write(head);
  const block = randomBytes(MIB);
  for (let written = 0, n = 0; written < bodyBytes; n++) {
    const chunk = Buffer.from(block.subarray(0, Math.min(MIB, bodyBytes - written)));
    chunk.writeUInt32BE(n, 0);
    await write(chunk);
    written += chunk.length;
  }
  out.end();
  await once(out, 'close');
  return { path, size: head.length + bodyBytes, sha256: hash.digest('hex') };
}

/** A message whose bytes are in a file: `chunks()` is undefined, as for a body intake spooled. */
export function fileSource(path: string, size: number): ByteSource {
  return { size, stream: () => createReadStream(path), chunks: () => undefined };
}

/**
 * A spooled message of `size` bytes whose stream gives `before` bytes, calls `stalled` once they
 * are written, and goes on with the rest only when `resume` settles (never, by default): the
 * enqueue waits between its slices and its commit, for a crash or a full disk to come.
 */
export function stallingSource(
  size: number,
  before: number,
  stalled: () => void,
  resume: Promise<void> = new Promise(() => {}),
): ByteSource {
  async function* bytes(): AsyncGenerator<Buffer> {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let given = 0;
    for (; given < before; given += chunk.length) yield chunk;
    // Once what was read is written (the writes follow in the same turn of the event loop).
    setImmediate(stalled);
    await resume;
    for (; given < size; given += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, size - given));
  }
  return { size, stream: () => Readable.from(bytes(), { objectMode: false }), chunks: () => undefined };
}

export function bigIncoming(content: ByteSource, extra: Partial<IncomingMessage> = {}): IncomingMessage {
  const envelope: Envelope = { mailFrom: 'big@origin.test', recipients: [{ address: 'rcpt@dest.test' }] };
  return { envelope, content, receivedAt: Date.now(), ...extra };
}

export interface HashedDelivery {
  readonly job: DeliveryJob;
  readonly sha256: string;
  readonly bytes: number;
  /** The largest chunk the stream gave. */
  readonly largestChunk: number;
}

/** Delivers every recipient after reading the message stream through a hash, keeping nothing else. */
export function hashingDeliver(): { deliver: Deliver; seen: HashedDelivery[] } {
  const seen: HashedDelivery[] = [];
  const deliver: Deliver = async (job, open) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let largestChunk = 0;
    for await (const chunk of await open()) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
      largestChunk = Math.max(largestChunk, (chunk as Buffer).length);
    }
    seen.push({ job, sha256: hash.digest('hex'), bytes, largestChunk });
    return {
      recipients: job.recipients.map((r) => ({
        address: r.address,
        result: 'delivered',
        reply: { code: 250, enhanced: '2.0.0', text: 'OK' },
      })),
    };
  };
  return { deliver, seen };
}

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

/**
 * Samples this process's memory growth until stopped. `retained`: full collections before each
 * sample, so the figures are what the code holds, not garbage the collector has not taken back yet
 * (which depends on its heuristics, not on the code under test); the samples are then spaced so
 * the collections take at most a fifth of the time.
 */
export function memorySampler(retained = false): { stop(): { rss: number; arrayBuffers: number } } {
  gc();
  const before = process.memoryUsage();
  let rss = 0;
  let arrayBuffers = 0;
  let timer: NodeJS.Timeout | undefined;
  const sample = (): void => {
    const started = performance.now();
    if (retained) {
      // Twice: V8 frees the buffers a collection found dead in the background, and the next
      // collection first finishes that; otherwise a loaded machine shows garbage as held.
      gc();
      gc();
    }
    const now = process.memoryUsage();
    rss = Math.max(rss, now.rss - before.rss);
    arrayBuffers = Math.max(arrayBuffers, now.arrayBuffers - before.arrayBuffers);
    const spent = performance.now() - started;
    timer = setTimeout(sample, retained ? Math.max(50, 4 * spent) : 10);
  };
  timer = setTimeout(sample, retained ? 50 : 10);
  return {
    stop() {
      clearTimeout(timer);
      sample();
      clearTimeout(timer);
      return { rss, arrayBuffers };
    },
  };
}
