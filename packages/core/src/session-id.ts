// Session ids: 80 random bits as 16 base-32 digits, the format smtp-server gives its own. smtp-server
// makes each one with randomBytes(10), a hex string and a BigInt; this takes them from a pool of
// random bytes refilled every 400 ids and writes the digits, five bits each, as one latin1 string
// (Number#toString(32) divides with fmod per digit: about 1 % of a greeting-only connection's CPU).
import { randomFillSync } from 'node:crypto';

const ID_BYTES = 10;
const POOL_IDS = 400;
const pool = Buffer.alloc(ID_BYTES * POOL_IDS);
let next = pool.length;
const DIGITS = Buffer.from('0123456789abcdefghijklmnopqrstuv', 'latin1');
const id = Buffer.alloc(16);

/** A new random session id: 16 characters of [0-9a-v]. */
export function sessionId(): string {
  if (next === pool.length) {
    randomFillSync(pool);
    next = 0;
  }
  const at = next;
  next += ID_BYTES;
  digits(at, 0);
  digits(at + 5, 8);
  return id.toString('latin1');
}

/** The 8 base-32 digits of the 40-bit big-endian number at pool[from], written at id[to]. */
function digits(from: number, to: number): void {
  const b0 = pool[from] as number;
  const b1 = pool[from + 1] as number;
  const b2 = pool[from + 2] as number;
  const b3 = pool[from + 3] as number;
  const b4 = pool[from + 4] as number;
  id[to] = DIGITS[b0 >> 3] as number;
  id[to + 1] = DIGITS[((b0 & 7) << 2) | (b1 >> 6)] as number;
  id[to + 2] = DIGITS[(b1 >> 1) & 31] as number;
  id[to + 3] = DIGITS[((b1 & 1) << 4) | (b2 >> 4)] as number;
  id[to + 4] = DIGITS[((b2 & 15) << 1) | (b3 >> 7)] as number;
  id[to + 5] = DIGITS[(b3 >> 2) & 31] as number;
  id[to + 6] = DIGITS[((b3 & 3) << 3) | (b4 >> 5)] as number;
  id[to + 7] = DIGITS[b4 & 31] as number;
}
