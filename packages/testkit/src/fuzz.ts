// Seeded randomness and byte mutations for the fuzz suites: every run is reproducible from its
// seed, and CI runs a fixed set of seeds a bounded number of times. `TERN_FUZZ_SEED` picks one
// seed (or `random`), `TERN_FUZZ_ROUNDS` scales how much each suite does (`npm run fuzz`).

/** A small, fast, seeded PRNG (mulberry32). Not for cryptography. */
export class Random {
  readonly seed: number;
  #state: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#state = this.seed;
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('Random.pick: no items');
    return items[this.int(0, items.length - 1)] as T;
  }

  bytes(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) out[i] = this.int(0, 255);
    return out;
  }

  /** Printable ASCII without CR/LF. */
  text(length: number): string {
    let out = '';
    for (let i = 0; i < length; i++) out += String.fromCharCode(this.int(0x20, 0x7e));
    return out;
  }
}

/** Bytes an SMTP peer should never be able to use against a parser. */
const NASTY = [
  Buffer.from('\0'),
  Buffer.from('\r'),
  Buffer.from('\n'),
  Buffer.from('\r\n'),
  Buffer.from('\n.\n'),
  Buffer.from('\r\n.\r\n'),
  Buffer.from('\r.\r'),
  Buffer.from('\x1b[31m'),
  Buffer.from([0xff, 0xfe]),
  Buffer.from([0xc3, 0x28]), // invalid UTF-8
  Buffer.from('é€😀', 'utf8'),
  Buffer.from('%'),
  Buffer.from('"'),
  Buffer.from('<>'),
  Buffer.from(':'),
  Buffer.from('\t'),
];

/** One random change to `input`: insert, delete, replace, repeat, cut, or splice in a nasty sequence. */
export function mutate(random: Random, input: Buffer): Buffer {
  const at = input.length === 0 ? 0 : random.int(0, input.length);
  switch (random.int(0, 6)) {
    case 0:
      return Buffer.concat([input.subarray(0, at), random.pick(NASTY), input.subarray(at)]);
    case 1:
      return Buffer.concat([
        input.subarray(0, at),
        input.subarray(Math.min(input.length, at + random.int(1, 8))),
      ]);
    case 2:
      return Buffer.concat([input.subarray(0, at), random.bytes(random.int(1, 16)), input.subarray(at + 1)]);
    case 3: {
      const piece = input.subarray(at, Math.min(input.length, at + random.int(1, 32)));
      return Buffer.concat([
        input.subarray(0, at),
        ...Array(random.int(2, 64)).fill(piece),
        input.subarray(at),
      ]);
    }
    case 4:
      return input.subarray(0, at);
    case 5:
      return Buffer.concat([
        input.subarray(0, at),
        Buffer.alloc(random.int(500, 12_000), 0x41),
        input.subarray(at),
      ]);
    default:
      return Buffer.from(
        [...input.toString('latin1')]
          .map((c) => (random.chance(0.3) ? c.toUpperCase() : c.toLowerCase()))
          .join(''),
        'latin1',
      );
  }
}

/** Splits `input` into 1–8 pieces at random points, as TCP might. */
export function split(random: Random, input: Buffer): Buffer[] {
  const cuts = Array.from({ length: random.int(0, 7) }, () => random.int(0, input.length)).sort(
    (a, b) => a - b,
  );
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    pieces.push(input.subarray(from, cut));
    from = cut;
  }
  pieces.push(input.subarray(from));
  return pieces.filter((p) => p.length > 0);
}

/** The seeds a fuzz suite runs: `TERN_FUZZ_SEED` (a number, or `random`), else `defaults`. */
export function fuzzSeeds(defaults: readonly number[]): number[] {
  const given = process.env.TERN_FUZZ_SEED;
  if (given === undefined || given === '') return [...defaults];
  if (given === 'random') return [Math.floor(Math.random() * 2 ** 32)];
  const seed = Number(given);
  if (!Number.isInteger(seed)) throw new Error(`TERN_FUZZ_SEED must be an integer or "random", got ${given}`);
  return [seed];
}

/** How many rounds a suite does: `base` times `TERN_FUZZ_ROUNDS` (default 1). */
export function fuzzRounds(base: number): number {
  const factor = Number(process.env.TERN_FUZZ_ROUNDS ?? '1');
  return Math.max(1, Math.round(base * (Number.isFinite(factor) && factor > 0 ? factor : 1)));
}
