// Reads a stored message body out of Redis in slices, so a worker delivering many large messages
// at once never holds each of them whole in memory.
import { Readable } from 'node:stream';
import type { RedisClient } from '@tern/redis';
import { BODY_SLICE_BYTES } from '../body.js';

/**
 * A stream over the string at `key`; it errors when the key does not exist. One GETRANGE per slice
 * and nothing else: a slice shorter than `sliceBytes` is the last, and only an empty first slice
 * asks whether the key exists (an empty body, or none).
 */
export function bodyStream(client: RedisClient, key: string, sliceBytes = BODY_SLICE_BYTES): Readable {
  async function* slices(): AsyncGenerator<Buffer> {
    for (let start = 0; ; start += sliceBytes) {
      const slice = await client.getrangeBuffer(key, start, start + sliceBytes - 1);
      if (start === 0 && slice.length === 0 && (await client.exists(key)) === 0) {
        throw new Error(`the stored message ${key} is gone`);
      }
      if (slice.length > 0) yield slice;
      if (slice.length < sliceBytes) return;
    }
  }
  return Readable.from(slices(), { objectMode: false });
}
