// Reads a stored message body out of Redis in slices, so a worker delivering many large messages
// at once never holds each of them whole in memory.
import { Readable } from 'node:stream';
import type { RedisClient } from '@tern/redis';
import { BODY_SLICE_BYTES } from '../body.js';

/** A stream over the string at `key`; it errors when the key does not exist. */
export function bodyStream(client: RedisClient, key: string, sliceBytes = BODY_SLICE_BYTES): Readable {
  async function* slices(): AsyncGenerator<Buffer> {
    const [[, size], [, exists]] = (await client.multi().strlen(key).exists(key).exec()) as [
      [null, number],
      [null, number],
    ];
    if (exists === 0) throw new Error(`the stored message ${key} is gone`);
    for (let start = 0; start < size; start += sliceBytes) {
      yield await client.getrangeBuffer(key, start, Math.min(size, start + sliceBytes) - 1);
    }
  }
  return Readable.from(slices(), { objectMode: false });
}
