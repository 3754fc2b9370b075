// Session ids: 80 random bits as 16 base-32 digits, the format smtp-server gives its own. smtp-server
// makes each one with randomBytes(10), a hex string and a BigInt; this takes them from a pool of
// random bytes refilled every 400 ids, and encodes each half (40 bits, exact in a double) apart.
import { randomFillSync } from 'node:crypto';

const ID_BYTES = 10;
const POOL_IDS = 400;
const pool = Buffer.alloc(ID_BYTES * POOL_IDS);
let next = pool.length;

/** A new random session id: 16 characters of [0-9a-v]. */
export function sessionId(): string {
  if (next === pool.length) {
    randomFillSync(pool);
    next = 0;
  }
  const at = next;
  next += ID_BYTES;
  return half(pool.readUIntBE(at, 5)) + half(pool.readUIntBE(at + 5, 5));
}

function half(value: number): string {
  return value.toString(32).padStart(8, '0');
}
