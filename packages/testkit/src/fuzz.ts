// Seeded randomness and byte mutations for the fuzz suites: every run is reproducible from its
// seed, and CI runs a fixed set of seeds a bounded number of times. `TERN_FUZZ_SEED` picks one
// seed (or `random`), `TERN_FUZZ_ROUNDS` scales how much each suite does (`npm run fuzz`).
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

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

let gc: (() => void) | undefined;

/** A full collection. The flag is set on first use only, so merely importing the testkit changes nothing. */
function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    // A context made after the flag is set has `gc`; the flag alone does not give it to this one.
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/**
 * Heap and buffer memory still held after full collections, so garbage waiting to be collected does
 * not count: what a test (a fuzz batch, a streaming test) compares with its baseline. V8 frees large
 * buffers in a sweeper that may still run when gc() returns, and meanwhile other I/O has buffers
 * briefly in flight; so this reads a few rounds of collect, wait, collect and takes the least.
 */
export async function retainedMemory(): Promise<number> {
  let least = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 3; round++) {
    collectGarbage();
    await sleep(5);
    collectGarbage();
    const usage = process.memoryUsage();
    // arrayBuffers is node's exact count of buffer memory; `external` also carries V8's lagging estimate.
    least = Math.min(least, usage.heapUsed + usage.arrayBuffers);
  }
  return least;
}

/** Why a fuzz suite stopped: one call did not finish within its bound (a hang is a finding, not a wait). */
export class FuzzDeadlineExceeded extends Error {
  override readonly name = 'FuzzDeadlineExceeded';
}

/** `work`, or a FuzzDeadlineExceeded naming `what` when it takes longer than `ms`. */
export async function withinDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FuzzDeadlineExceeded(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A message as core's intake hands it to queue hooks under its `normalize` policy (LineEndingGuard):
 * bare CR and bare LF made CRLF, NUL dropped. Under `reject` such a message never gets that far, so
 * hooks never see those bytes; suites that fuzz the hooks feed them this form.
 */
export function asIntakeHandsIt(raw: Buffer): Buffer {
  return Buffer.from(
    raw
      .toString('latin1')
      .replace(/\0/g, '')
      .replace(/\r\n|\r|\n/g, '\r\n'),
    'latin1',
  );
}

/** Domains and a selector a message from {@link fuzzMessage} refers to (From, DKIM-Signature d= and s=). */
export interface FuzzMessageOptions {
  /** Author domains, e.g. ones the test DNS server or a signer knows (default `example.test`). */
  readonly domains?: readonly string[];
  readonly selector?: string;
  /** Chance that the finished message also goes through {@link mutate} (default 0.3). */
  readonly mutation?: number;
}

const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

/**
 * A message that parsers of headers and MIME must survive: folded and unfolded fields, missing
 * colons, huge and numerous fields, duplicate From, encoded words good and broken, DKIM-Signature
 * and Authentication-Results fields with garbage, MIME boundaries broken, missing or nested deep,
 * 8-bit and invalid UTF-8, NUL, very long lines; then, sometimes, byte mutations on top.
 */
export function fuzzMessage(random: Random, options: FuzzMessageOptions = {}): Buffer {
  const domains = options.domains ?? ['example.test'];
  const domain = (): string => random.pick(domains);
  const selector = options.selector ?? 'sel';
  const fields: Buffer[] = [];
  const field = (name: string, value: string | Buffer): void => {
    fields.push(Buffer.concat([Buffer.from(`${name}: `, 'latin1'), Buffer.from(value)]));
  };

  for (let n = random.chance(0.9) ? 1 : random.int(0, 3); n > 0; n--) field('From', author(random, domain()));
  field('To', random.pick(['bob@example.net', 'Undisclosed recipients:;', '', 'a@b, "c, d" <e@f>']));
  if (random.chance(0.9)) field('Subject', subject(random));
  if (random.chance(0.85)) {
    field(
      'Date',
      random.pick([
        'Thu, 27 Nov 2025 10:00:00 +0000',
        'Mon, 1 Jan 2099 00:00:00 +0000',
        'yesterday (sort of)',
        '',
        'Thu, 27 Nov 2025 10:00:00 +0000 (((((',
      ]),
    );
  }
  if (random.chance(0.85)) field('Message-ID', `<${random.int(0, 1e9)}@${domain()}>`);
  for (let n = random.int(0, 3); n > 0; n--) {
    field(
      random.pick(['Received', 'X-Mailer', 'Reply-To', 'Cc', 'Comments', 'Keywords']),
      random.pick([
        `from x (y [192.0.2.1]) by mx.${domain()};\r\n\tThu, 27 Nov 2025 10:00:00 +0000`,
        `Tern fuzz ${random.text(random.int(0, 60))}`,
        `"Someone" <someone@${domain()}>`,
        `a,\r\n b,\r\n\r\n c`,
      ]),
    );
  }
  for (let n = random.chance(0.4) ? random.int(1, 3) : 0; n > 0; n--) {
    field('DKIM-Signature', dkimGarbage(random, domain(), selector));
  }
  if (random.chance(0.3)) {
    field(
      'Authentication-Results',
      random.pick([
        `mx.tern.test; dkim=pass header.d=${domain()}; spf=pass smtp.mailfrom=${domain()}`,
        'mx.tern.test',
        '(comment) mx.tern.test; none',
        '"quoted\\" id"; dkim=',
        ';;;',
      ]),
    );
  }
  for (let n = random.chance(0.35) ? random.int(1, 4) : 0; n > 0; n--) fields.push(oddField(random));

  const mime = random.chance(0.5);
  const boundary = random.pick(['b1', 'simple boundary', '==_=_x', '"quoted"', '', `x${'-'.repeat(80)}`]);
  if (mime) {
    field('MIME-Version', '1.0');
    field(
      'Content-Type',
      random.pick([
        `multipart/mixed; boundary="${boundary}"`,
        `multipart/alternative; boundary=${boundary}`,
        'multipart/mixed',
        `multipart/mixed; boundary="${boundary}"; boundary="other"`,
        'text/plain; charset="utf-8"; format=flowed',
        'text/plain; charset=x-unknown',
      ]),
    );
  }
  // Fields in any order: parsers must not depend on From coming first, or Content-Type last.
  for (let i = fields.length - 1; i > 0; i--) {
    const j = random.int(0, i);
    [fields[i], fields[j]] = [fields[j] as Buffer, fields[i] as Buffer];
  }
  const eol = Buffer.from(random.chance(0.9) ? '\r\n' : '\n');
  const head = Buffer.concat(fields.flatMap((f) => [f, eol]));
  const body = mime
    ? multipartBody(random, boundary.replace(/^"|"$/g, ''), random.int(0, 4))
    : plainBody(random);
  const message = Buffer.concat([head, eol, body]);
  return random.chance(options.mutation ?? 0.3) ? mutate(random, message) : message;
}

function author(random: Random, domain: string): string | Buffer {
  return random.pick<() => string | Buffer>([
    () => `Alice <alice@${domain}>`,
    () => `alice@${domain}`,
    () => `"Bob, Jr. (the 2nd)" <bob@${domain}>`,
    () => `=?utf-8?B?${b64('Élise Ünïcode')}?= <elise@${domain}>`,
    () => `alice@${domain} (comment (nested (deep)))`,
    () => `Friends: a@${domain}, b@${domain};`,
    () => `"paypal.com <service@paypal.com>" <x@${domain}>`,
    () => `a@${domain}, b@other.example`,
    () => '<>',
    () => '',
    () => `"unterminated <x@${domain}>`,
    () => `alice@${domain}\r\n (folded comment)`,
    () => Buffer.concat([Buffer.from('J'), Buffer.from([0xf6, 0x72, 0x67]), Buffer.from(` <j@${domain}>`)]),
    () => `üser@${domain}`,
    () => `@${domain}`,
    () => `alice@[192.0.2.1]`,
  ])();
}

function subject(random: Random): string | Buffer {
  return random.pick<() => string | Buffer>([
    () => 'Lunch on Friday',
    () => 'FREE MONEY NOW CLICK HERE',
    () => `=?utf-8?Q?caf=C3=A9_au_lait?=`,
    () => '=?utf-8?B?!!!not base64!!!?=',
    () => '=?x-bogus?X?abc?=',
    () => '=?iso-8859-1?q?=E9t=E9?= =?utf-8?b?w6k=?=',
    () => '=?utf-7?B?K0FHRUFZdy0=?=',
    () => '=?utf-8*en?Q?=ZZ=?=',
    () => `=?utf-8?B?${b64('x'.repeat(random.int(100, 4000)))}?=`,
    () => `folded\r\n subject\r\n\tover lines`,
    () => Array.from({ length: random.int(20, 400) }, () => random.text(random.int(1, 60))).join('\r\n '),
    () => Buffer.from([0xc3, 0x28, 0x20, 0xff, 0xfe, 0x00, 0x41]),
    () => 'é€😀',
    () => 'x'.repeat(random.int(1000, 20_000)),
  ])();
}

/** DKIM-Signature values with garbage tags; some look almost right. */
function dkimGarbage(random: Random, domain: string, selector: string): string {
  const tags = [
    'v=1',
    random.pick(['a=rsa-sha256', 'a=ed25519-sha256', 'a=rsa-sha1', 'a=', 'a=rsa-md5']),
    random.pick(['c=relaxed/relaxed', 'c=simple', 'c=weird/strange', 'c=relaxed/']),
    `d=${random.pick([domain, '', '..', 'x'.repeat(300), 'é.test'])}`,
    `s=${random.pick([selector, '', 'no.such', '_domainkey'])}`,
    random.pick(['h=from:to:subject', 'h=', 'h=::::', 'h=dkim-signature', `h=${'from:'.repeat(500)}from`]),
    `bh=${random.pick(['', '!!!', b64('not a hash'), 'A'.repeat(44)])}`,
    `b=${random.pick(['', '====', b64(random.text(64)), 'A'.repeat(random.int(1, 5000))])}`,
  ];
  const optional = [
    'l=0',
    'l=-1',
    'l=99999999999999999999999',
    't=abc',
    'x=0',
    't=9999999999999',
    'i=@other.example',
    'q=dns/txt',
    'z=From:x|To:y',
    'd=second.example',
    'noequals',
    '=',
    ';;',
  ];
  for (let n = random.int(0, 4); n > 0; n--)
    tags.splice(random.int(0, tags.length), 0, random.pick(optional));
  if (random.chance(0.2)) tags.splice(random.int(0, tags.length - 1), 1);
  return tags.join(random.pick(['; ', ';', ';\r\n\t', ' ; ']));
}

/** A line that a header parser must not choke on: no colon, empty name, spaces, huge, NUL, 8-bit. */
function oddField(random: Random): Buffer {
  return random.pick<() => Buffer>([
    () => Buffer.from('A line without a colon'),
    () => Buffer.from(': empty name'),
    () => Buffer.from('Bad Name: spaces in the name'),
    () => Buffer.from(' continuation with nothing before it'),
    () => Buffer.from(`X-Huge: ${'h'.repeat(random.int(1000, 100_000))}`),
    () => Buffer.from(`X-Folded-Huge: ${'word '.repeat(random.int(100, 5000)).replace(/ /g, '\r\n ')}`),
    () => Buffer.from(`X-Many: ${random.text(20)}\r\n`.repeat(random.int(50, 800)).trimEnd()),
    () => Buffer.from('X-Nul: before\0after'),
    () => Buffer.concat([Buffer.from('X-8bit: '), Buffer.from([0xe9, 0xc3, 0x28, 0xff, 0x80])]),
    () => Buffer.from('X-Empty-Fold:\r\n \r\n \t'),
    () => Buffer.from('x-lower-case-from: a@b'),
    () => Buffer.from('FROM: shouting@example.test'),
  ])();
}

function plainBody(random: Random): Buffer {
  const lines: Buffer[] = [];
  for (let n = random.int(0, 12); n > 0; n--) {
    lines.push(
      random.pick<() => Buffer>([
        () => Buffer.from(`${random.text(random.int(0, 100))}\r\n`),
        () => Buffer.from('   \t  \r\n'),
        () => Buffer.from('\r\n'),
        () => Buffer.from('.\r\n'),
        () => Buffer.from(`${'L'.repeat(random.int(990, 100_000))}\r\n`),
        () => Buffer.from('trailing space   \r\n'),
        () => Buffer.from('bare LF\nbare CR\rhere\r\n'),
        () => Buffer.from('NUL\0in the body\r\n'),
        () => Buffer.concat([random.bytes(random.int(1, 80)), Buffer.from('\r\n')]),
        () => Buffer.from('XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n'),
      ])(),
    );
  }
  if (random.chance(0.2)) lines.push(Buffer.from('\r\n\r\n\r\n'));
  if (random.chance(0.1)) lines.push(Buffer.from('no final line end'));
  return Buffer.concat(lines);
}

/** A multipart body, `depth` levels deep at most, whose boundaries may be broken or missing. */
function multipartBody(random: Random, boundary: string, depth: number): Buffer {
  const parts: Buffer[] = [Buffer.from('This is a multi-part message in MIME format.\r\n')];
  for (let n = random.int(0, 4); n > 0; n--) {
    parts.push(Buffer.from(`--${random.chance(0.9) ? boundary : `${boundary}x`}\r\n`));
    const nested = depth > 0 && random.chance(0.4);
    const inner = `n${depth}${random.int(0, 99)}`;
    parts.push(
      Buffer.from(
        nested
          ? `Content-Type: multipart/mixed; boundary="${inner}"\r\n\r\n`
          : random.pick([
              'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
              'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n',
              'Content-Type: text/html\r\nContent-Transfer-Encoding: x-unknown\r\n\r\n',
              'Content-Type: message/rfc822\r\n\r\nFrom: inner@example.test\r\nSubject: inner\r\n\r\n',
              '\r\n',
            ]),
      ),
    );
    parts.push(
      nested
        ? multipartBody(random, inner, depth - 1)
        : random.pick<() => Buffer>([
            () => Buffer.from('caf=C3=A9 =ZZ broken soft break=\r\n'),
            () => Buffer.from(`${b64(random.text(random.int(0, 300)))}\r\n!!!not base64!!!\r\n`),
            () => plainBody(random),
          ])(),
    );
  }
  if (random.chance(0.75)) parts.push(Buffer.from(`--${boundary}--\r\n`));
  if (random.chance(0.2)) parts.push(Buffer.from('epilogue after the end\r\n'));
  return Buffer.concat(parts);
}
