// Shared by every backend: which messages are stored in one write with their jobs, and how the
// others are cut into slices on their way into the store, so a 50 MiB message is never whole in
// memory (each backend decides where the slices go).
import type { ByteSource } from '@tern/plugin-api/host';

/** Bytes per slice written to a store and read back for delivery. */
export const BODY_SLICE_BYTES = 256 * 1024;

/**
 * A message held in memory up to this size is stored in the same single write (one transaction,
 * one round trip) as its envelope and jobs. Larger ones, and every message intake spooled to
 * disk, are written in slices first. Intake keeps at most 256 KiB of a body in memory by default,
 * so its in-memory messages always take the single write.
 */
export const INLINE_BODY_LIMIT = 1024 * 1024;

/**
 * The message's own bytes could not be read (intake's spool file failed) or were not as many as
 * announced: the message is refused with 451, and the store is not to blame.
 */
export class MessageSourceError extends Error {
  override readonly name = 'MessageSourceError';
}

/** The message as in-memory chunks when it takes the single-write path; undefined when it must be sliced. */
export function inlineChunks(content: ByteSource, limit = INLINE_BODY_LIMIT): readonly Buffer[] | undefined {
  if (content.size > limit) return undefined;
  return content.chunks();
}

/**
 * Streams `content` and yields it in slices of `sliceBytes` (the last one shorter), filling
 * `buffers` buffers in turn: a slice is overwritten `buffers` slices later, so the consumer must be
 * done with it by then (SQLite binds a copy at once: 1; Redis keeps a window of commands in flight:
 * one more than the window). Nothing else is allocated, whatever the message size. Throws
 * MessageSourceError when the source fails or gives another size than it announced.
 */
export async function* slicesOf(
  content: ByteSource,
  buffers: number,
  sliceBytes = BODY_SLICE_BYTES,
): AsyncGenerator<Buffer, void, undefined> {
  let slice: Buffer = Buffer.allocUnsafe(sliceBytes);
  const ring: Buffer[] = [slice];
  let turn = 0;
  let filled = 0;
  let total = 0;
  const chunks = content.stream()[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<unknown>;
      try {
        next = await chunks.next();
      } catch (error) {
        throw new MessageSourceError(`the message could not be read: ${(error as Error)?.message}`, {
          cause: error,
        });
      }
      if (next.done) break;
      const bytes = typeof next.value === 'string' ? Buffer.from(next.value, 'utf8') : (next.value as Buffer);
      total += bytes.length;
      for (let read = 0; read < bytes.length; ) {
        const copied = bytes.copy(slice, filled, read, Math.min(bytes.length, read + sliceBytes - filled));
        filled += copied;
        read += copied;
        if (filled === sliceBytes) {
          yield slice;
          turn = (turn + 1) % buffers;
          if (ring.length === turn) ring.push(Buffer.allocUnsafe(sliceBytes));
          slice = ring[turn] as Buffer;
          filled = 0;
        }
      }
    }
  } finally {
    // Also when the consumer stops early (a store write failed): the source is closed, not left open.
    await chunks.return?.();
  }
  if (total !== content.size) {
    throw new MessageSourceError(
      `the message source gave ${total} bytes, not the ${content.size} it announced`,
    );
  }
  if (filled > 0) yield slice.subarray(0, filled);
}
