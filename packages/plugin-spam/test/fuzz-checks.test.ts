// Fuzzing the spam checks that parse messages: SPF, DKIM and DMARC through mailauth against the
// test DNS server, the header heuristics, the score's headers and Authentication-Results, on
// seeded, mutated messages (folded and unfolded fields, missing colons, huge fields, duplicate
// From, encoded words, DKIM-Signature fields with garbage tags and real signatures mutated after
// signing, broken MIME, 8-bit, invalid UTF-8, NUL, long lines) from odd HELO names and senders.
// No hook fails (a failure is a logged 451), every message is judged within a bound, what the
// checks write is well formed (an Authentication-Results that parses as RFC 8601, no field smuggled
// in a value), forged results are gone, memory stays bounded. Reproduce a failure with
// TERN_FUZZ_SEED=<seed>; run longer with TERN_FUZZ_ROUNDS=<factor>.
import { Headers } from '@tern/plugin-api';
import { MessageContent } from '@tern/plugin-api/host';
import { type LogRecord, testPlugins } from '@tern/plugin-api/testing';
import {
  asIntakeHandsIt,
  fuzzMessage,
  fuzzRounds,
  fuzzSeeds,
  mutate,
  Random,
  retainedMemory,
  startDnsServer,
  type TestDns,
  withinDeadline,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type SpamOptions, type SpamPlugin, spamFilter } from '../src/index.js';
import { type DkimKey, dkimSign, makeDkimKey } from './helpers.js';

const SEEDS = fuzzSeeds([1, 2, 3]);
const MESSAGES = fuzzRounds(80);
const BATCH = 40;
const CALL_BOUND_MS = 10_000;
const AUTHSERV_ID = 'mx.tern.test';
const DOMAINS = ['example.test', 'quarantine.test', 'broken.test', 'nodmarc.test', 'unknown.invalid'];

let dns: TestDns;
let key: DkimKey;
let plugins: SpamPlugin[];

beforeAll(async () => {
  key = makeDkimKey();
  dns = await startDnsServer({
    'example.test': { A: ['192.0.2.10'], TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=reject; adkim=s'] },
    'sel._domainkey.example.test': { TXT: [key.record] },
    'quarantine.test': { TXT: ['v=spf1 ~all'] },
    '_dmarc.quarantine.test': { TXT: ['v=DMARC1; p=quarantine; pct=50'] },
    'sel._domainkey.quarantine.test': { TXT: ['v=DKIM1; k=rsa; p=!!!notbase64'] },
    'broken.test': { TXT: ['v=spf1 include:broken.test redirect=nowhere.invalid ip4:999.1.1.1'] },
    '_dmarc.broken.test': { TXT: ['v=DMARC1; p=bogus; rua=mailto:'] },
    'nodmarc.test': { TXT: ['v=spf1 ?all', 'v=spf1 -all'] },
    'mail.example.test': { A: ['192.0.2.1'], TXT: ['v=spf1 a -all'] },
  });
  const base: SpamOptions = { dns: { servers: [dns.server], timeoutMs: 500, tries: 1 } };
  plugins = [
    spamFilter(base),
    // Tags nearly everything: the subject prefix and the report are written on fuzzed fields.
    spamFilter({
      ...base,
      actions: { tag: 0.1, quarantine: 50, reject: 100 },
      headers: { subjectPrefix: '[SPAM] ', status: 'all', report: true },
      dmarc: { onReject: 'score', onQuarantine: 'score' },
    }),
  ];
});

afterAll(async () => {
  await dns?.stop();
});

const KEYWORD = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;
/** RFC 2045 token: US-ASCII without controls, space and tspecials. */
const TOKEN = /^[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+$/;
const QUOTED = /^"(?:[^"\\\r\n]|\\.)*"$/;
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$/;
const DOMAIN = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/;
const RESULTS: Record<string, readonly string[]> = {
  spf: ['none', 'neutral', 'pass', 'fail', 'softfail', 'temperror', 'permerror', 'policy'],
  dkim: ['none', 'pass', 'fail', 'policy', 'neutral', 'temperror', 'permerror'],
  dmarc: ['none', 'pass', 'fail', 'temperror', 'permerror'],
};

/** Where words of a value were apart: white space or a comment (CFWS). */
const GAP = ' ';

/**
 * Parses an Authentication-Results value by RFC 8601 §2.2 and returns its authserv-id and methods;
 * throws, naming the problem, when it does not parse. Quoted strings stay whole (a `;` or `=`
 * inside one is text); CFWS becomes a GAP, which separates words but may stand around `.` and `=`.
 */
export function parseAuthenticationResults(value: string): { authservId: string; methods: string[] } {
  const parts: string[][] = [[]];
  let word = '';
  const flush = (): void => {
    if (word !== '') parts.at(-1)?.push(word);
    word = '';
  };
  const gap = (): void => {
    flush();
    const part = parts.at(-1);
    if (part && part.length > 0 && part.at(-1) !== GAP) part.push(GAP);
  };
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (c === '"') {
      let quoted = '"';
      for (i++; i < value.length && value[i] !== '"'; i++) {
        if (value[i] === '\\') quoted += value[i++] ?? '';
        if (/[\r\n]/.test(value[i] ?? '')) throw new Error('a line break inside a quoted string');
        quoted += value[i] ?? '';
      }
      if (i >= value.length) throw new Error('an unterminated quoted string');
      word += `${quoted}"`;
    } else if (c === '(') {
      let depth = 1;
      for (i++; i < value.length && depth > 0; i++) {
        if (value[i] === '\\') i++;
        else if (value[i] === '(') depth++;
        else if (value[i] === ')') depth--;
      }
      if (depth > 0) throw new Error('an unterminated comment');
      i--;
      gap();
    } else if (/[ \t\r\n]/.test(c)) {
      if (c === '\r' && value[i + 1] !== '\n') throw new Error('a bare CR');
      gap();
    } else if (c === ';') {
      flush();
      parts.push([]);
    } else if (c === '=' || c === '.') {
      // Separators of methodspec and propspec, words of their own (a value joins them back).
      flush();
      parts.at(-1)?.push(c);
    } else {
      word += c;
    }
  }
  flush();
  const trim = (words: string[]): string[] => {
    const out = [...words];
    while (out[0] === GAP) out.shift();
    while (out.at(-1) === GAP) out.pop();
    return out;
  };
  const [head = [], ...resinfos] = parts.map(trim);
  // The authserv-id is a value (a token, dots included, or a quoted string); we write no version.
  const id = head.join('');
  if (!TOKEN.test(id) && !QUOTED.test(id)) throw new Error(`a malformed authserv-id ${JSON.stringify(id)}`);
  if (resinfos.length === 1 && resinfos[0]?.join('') === 'none') return { authservId: id, methods: [] };
  const methods: string[] = [];
  for (const words of resinfos) {
    let i = 0;
    /** The next word, GAPs before it skipped. */
    const next = (): string | undefined => {
      while (words[i] === GAP) i++;
      return words[i++];
    };
    const method = next();
    const eq = next();
    const result = next();
    if (!method || !KEYWORD.test(method) || eq !== '=' || !result || !KEYWORD.test(result)) {
      throw new Error(`a resinfo that is not method=result: ${JSON.stringify(words.join(''))}`);
    }
    const allowed = RESULTS[method.toLowerCase()];
    if (allowed && !allowed.includes(result.toLowerCase())) throw new Error(`${method}=${result}`);
    methods.push(method.toLowerCase());
    for (let name = next(); name !== undefined; name = next()) {
      const reason = name === 'reason';
      const dot = reason ? '.' : next();
      const property = reason ? 'reason' : next();
      if (!KEYWORD.test(name) || dot !== '.' || !property || !KEYWORD.test(property) || next() !== '=') {
        throw new Error(`a propspec that is not ptype.property=pvalue: ${JSON.stringify(words.join(''))}`);
      }
      while (words[i] === GAP) i++;
      // A pvalue runs to the next gap: its dots and @ are part of it.
      let text = '';
      for (; i < words.length && words[i] !== GAP; i++) text += words[i];
      checkPvalue(text, reason);
    }
  }
  return { authservId: id, methods };
}

/** A reason is a value; a pvalue is a value or a mailbox or domain (`[local-part] @ domain`). */
function checkPvalue(text: string, reason: boolean): void {
  const at = text.lastIndexOf('@');
  const local = text.slice(0, at);
  const mailbox =
    !reason &&
    at !== -1 &&
    (local === '' || DOT_ATOM.test(local) || QUOTED.test(local)) &&
    DOMAIN.test(text.slice(at + 1));
  if (text === '' || !(QUOTED.test(text) || mailbox || TOKEN.test(text))) {
    throw new Error(
      `a ${reason ? 'reason' : 'pvalue'} that is neither a value nor an address: ${JSON.stringify(text)}`,
    );
  }
}

test('the Authentication-Results parser takes good fields and refuses bad ones', () => {
  expect(
    parseAuthenticationResults(
      'mx.tern.test;\r\n\tspf=pass (mx.tern.test: 192.0.2.1 is allowed) smtp.mailfrom=alice@example.test;\r\n\tdkim=pass header.d=example.test header.s=sel header.b="AbC+/d";\r\n\tdmarc=fail (p=REJECT) header.from=example.test',
    ),
  ).toEqual({ authservId: 'mx.tern.test', methods: ['spf', 'dkim', 'dmarc'] });
  expect(parseAuthenticationResults('mx.tern.test; none').methods).toEqual([]);
  for (const bad of [
    '',
    'mx.tern.test; spf',
    'mx.tern.test; spf=maybe',
    'mx.tern.test; dkim=pass header.d=a b',
    'mx.tern.test; dkim=pass header.b="unterminated',
    'mx.tern.test; dkim=pass (open comment',
    'mx.tern.test; dkim=pass header.d=é.test',
  ]) {
    expect(() => parseAuthenticationResults(bad), bad).toThrow();
  }
});

const HELOS = [
  'mail.example.test',
  'localhost',
  '[192.0.2.1]',
  'x'.repeat(300),
  'é.test',
  'a..b',
  'example.test.',
];
const SENDERS = [
  'alice@example.test',
  '',
  'x@quarantine.test',
  'x@broken.test',
  'x@nodmarc.test',
  'üser@é.test',
  'a@[192.0.2.1]',
  '"quoted local"@example.test',
];
const ADDRESSES = ['192.0.2.1', '203.0.113.9', '::1', '2001:db8::1', '::ffff:192.0.2.1'];

/**
 * A message to judge as the intake hands it over: fuzzed, sometimes with a real signature, sometimes
 * mutated after signing.
 */
function candidate(random: Random): Buffer {
  return asIntakeHandsIt(fuzzed(random));
}

function fuzzed(random: Random): Buffer {
  if (!random.chance(0.35)) return fuzzMessage(random, { domains: DOMAINS, selector: 'sel' });
  const clean = fuzzMessage(random, { domains: ['example.test'], selector: 'sel', mutation: 0 })
    .toString('latin1')
    .replace(/\r?\n/g, '\r\n');
  if (!clean.includes('\r\n\r\n')) return Buffer.from(clean, 'latin1');
  const signed = Buffer.from(dkimSign(clean, { domain: 'example.test', selector: 'sel', key }), 'latin1');
  return random.chance(0.5) ? mutate(random, signed) : signed;
}

interface Tally {
  judged: number;
  refused: number;
  methods: Record<string, number>;
}

async function judge(
  plugin: SpamPlugin,
  raw: Buffer,
  random: Random,
  where: string,
  tally: Tally,
): Promise<void> {
  const session = testPlugins(plugin, { remoteAddress: random.pick(ADDRESSES) });
  const failures = (): string[] =>
    session.logs
      .filter((r: LogRecord) => r.level === 'error')
      .map((r) => `${r.message} ${String(r.fields.err ?? '')}`);
  const started = performance.now();
  const run = async (): Promise<void> => {
    await session.connect();
    await session.helo(random.pick(HELOS));
    if ((await session.mailFrom(random.pick(SENDERS))).kind !== 'continue') return;
    await session.rcptTo('bob@example.test');
    const result = await session.data(raw);
    tally.judged++;
    const { verdict, message } = result;
    if (verdict.kind === 'reject' || verdict.kind === 'tempfail') {
      tally.refused++;
      expect(verdict.reply.enhanced, where).not.toBe('4.3.0');
      return;
    }
    expect(verdict.kind, where).toMatch(/^(continue|accept)$/);
    // What the checks wrote reads back as the same fields: nothing smuggled in through a value.
    const reparsed = Headers.parse(message.headers.toBuffer());
    expect(reparsed.size, `${where}: fields written`).toBe(message.headers.size);
    // No line made longer than RFC 5322's 998 octets (a next hop may refuse the message for it).
    const longest = (headers: Headers): number =>
      Math.max(
        0,
        ...headers
          .toString()
          .split('\r\n')
          .map((l) => l.length),
      );
    if (longest(MessageContent.parse(raw).headers) <= 998) {
      const line = message.headers
        .toString()
        .split('\r\n')
        .find((l) => l.length > 998);
      expect(
        line?.slice(0, 200),
        `${where}: a header line of ${line?.length} octets written`,
      ).toBeUndefined();
    }
    // Ours on top, well formed; no other field claims to be ours (forged ones are removed).
    const results = message.headers.getAll('Authentication-Results');
    const ours = results.filter((v) => {
      try {
        return parseAuthenticationResults(v).authservId.toLowerCase() === AUTHSERV_ID;
      } catch {
        return false;
      }
    });
    expect(results[0], `${where}: no Authentication-Results of ours on top`).toBeDefined();
    let parsed: { authservId: string; methods: string[] };
    try {
      parsed = parseAuthenticationResults(results[0] ?? '');
    } catch (error) {
      throw new Error(
        `${where}: our Authentication-Results does not parse (${String(error)}):\n${results[0]}`,
      );
    }
    expect(parsed.authservId, where).toBe(AUTHSERV_ID);
    expect(ours.length, `${where}: forged Authentication-Results left in:\n${results.join('\n')}`).toBe(1);
    for (const method of parsed.methods) tally.methods[method] = (tally.methods[method] ?? 0) + 1;
  };
  await withinDeadline(run(), CALL_BOUND_MS, where).catch((error: unknown) => {
    throw new Error(`${where}: ${String(error)}\nhook failures: ${failures().join('; ')}`, { cause: error });
  });
  const elapsed = performance.now() - started;
  expect(elapsed, `${where}: took ${Math.round(elapsed)} ms`).toBeLessThan(CALL_BOUND_MS);
  expect(failures(), `${where}: hook failures (each a 451)`).toEqual([]);
}

describe.each(SEEDS)('mutated messages through the spam checks, seed %i', (seed) => {
  test(`${MESSAGES} messages judged`, async () => {
    const random = new Random(seed);
    const baseline = await retainedMemory();
    const tally: Tally = { judged: 0, refused: 0, methods: {} };
    for (let done = 0; done < MESSAGES; done += BATCH) {
      // A few at a time, as several connections would be.
      for (let i = 0; i < BATCH; i += 4) {
        await Promise.all(
          [0, 1, 2, 3].map((n) => {
            const where = `seed ${seed}, message ${done + i + n}`;
            const own = new Random(random.int(0, 2 ** 31));
            return judge(own.pick(plugins), candidate(own), own, where, tally);
          }),
        );
      }
      const grown = (await retainedMemory()) - baseline;
      expect(grown, `seed ${seed}: retained memory grew by ${grown} bytes`).toBeLessThan(32 * 2 ** 20);
    }
    console.info(`seed ${seed}: ${JSON.stringify(tally)}`);
    expect(tally.judged).toBeGreaterThan(MESSAGES / 2);
    for (const method of ['spf', 'dkim', 'dmarc']) expect(tally.methods[method] ?? 0).toBeGreaterThan(0);
  }, 180_000);
});
