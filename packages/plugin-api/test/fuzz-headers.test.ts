// Fuzzing the header parser every plugin reads messages through: seeded, mutated messages (folded
// and unfolded fields, missing colons, huge fields, duplicate From, encoded words, broken MIME,
// 8-bit, invalid UTF-8, NUL, long lines) and random edits through the API. Parsing never throws
// and gives back every byte; edits either refuse with a TypeError or add exactly the field asked
// for (never a second one smuggled in a value); each call ends within a bound; memory stays
// bounded. Reproduce a failure with TERN_FUZZ_SEED=<seed>; run longer with TERN_FUZZ_ROUNDS.
import { fuzzMessage, fuzzRounds, fuzzSeeds, mutate, Random, retainedMemory } from '@tern/testkit';
import { describe, expect, test } from 'vitest';
import { findHeaderEnd, MessageContent, makeField } from '../src/host.js';
import { Headers } from '../src/index.js';

const SEEDS = fuzzSeeds([1, 2, 3]);
const MESSAGES = fuzzRounds(240);
const BATCH = 80;
/** Parsing and editing one header block, however hostile, must take less than this. */
const CALL_BOUND_MS = 1000;

/** The header block as Headers keeps it: line ends made CRLF, a final one added. */
function normalised(block: Buffer): Buffer {
  const lines = block.toString('latin1').split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  return Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1');
}

const NAMES = ['Subject', 'X-Fuzz', 'From', 'DKIM-Signature', 'Bad Name', '', 'X:Colon', 'é', 'X-\0'];
const VALUES = [
  'plain',
  '',
  'folded\r\n value',
  'injected\r\nBcc: victim@example.test',
  'bare LF\ninside',
  'bare CR\rinside',
  'trailing CRLF\r\n',
  'café 😀',
  '\ud800 lone surrogate',
  'NUL\0inside',
  'x'.repeat(5000),
];

/** Random edits through the API; each either refuses with a TypeError or does exactly what it says. */
function edit(random: Random, headers: Headers, where: string): 'refused' | 'done' {
  const name = random.pick(NAMES);
  const value = random.pick(VALUES);
  const before = headers.size;
  const op = random.pick(['prepend', 'append', 'set', 'remove'] as const);
  if (op === 'remove') {
    const removed = headers.remove(name);
    expect(headers.size, where).toBe(before - removed);
    expect(headers.has(name), where).toBe(false);
    return 'done';
  }
  const present = headers.count(name);
  try {
    headers[op](name, value);
  } catch (error) {
    expect(error, where).toBeInstanceOf(TypeError);
    expect(headers.size, `${where}: a refused edit changed the block`).toBe(before);
    return 'refused';
  }
  const expected = op === 'set' ? before - Math.max(0, present - 1) + (present === 0 ? 1 : 0) : before + 1;
  expect(headers.size, `${where}: ${op} ${name}`).toBe(expected);
  // What is written is read back as the same fields: a value cannot start a field of its own.
  const reparsed = Headers.parse(headers.toBuffer());
  expect(reparsed.size, `${where}: ${op} ${JSON.stringify(name)} ${JSON.stringify(value)}`).toBe(
    headers.size,
  );
  if (!value.includes('\ud800')) {
    const written = op === 'append' ? reparsed.getAll(name).at(-1) : reparsed.get(name);
    expect(written, where).toBe(value.replace(/\r\n(?=[ \t])/g, '').trim());
  }
  return 'done';
}

function checkMessage(
  raw: Buffer,
  random: Random,
  where: string,
  edits: Record<'refused' | 'done', number>,
): void {
  const started = performance.now();
  const { headerEnd, bodyStart } = findHeaderEnd(raw);
  const block = headerEnd === -1 ? raw : raw.subarray(0, headerEnd);
  const headers = Headers.parse(block);
  // Nothing is dropped: every byte comes back, line ends as CRLF.
  expect(headers.toBuffer().equals(normalised(block)), `${where}: the block did not survive parsing`).toBe(
    true,
  );
  for (const field of headers.fields()) {
    expect(field.key, where).toBe(field.name.toLowerCase());
    expect(field.name.includes(':'), where).toBe(false);
    if (field.name !== '') expect(field.raw.startsWith(field.name), where).toBe(true);
  }
  for (const name of ['from', 'subject', 'dkim-signature', 'content-type', 'x-huge']) {
    const values = headers.getAll(name);
    expect(values.length, where).toBe(headers.count(name));
    expect(headers.get(name), where).toBe(values[0]);
    for (const value of values)
      expect(value.includes('\n'), `${where}: ${name} unfolded to a line break`).toBe(false);
  }
  // The whole message: the body goes through untouched, the block as above.
  const message = MessageContent.parse(raw);
  const body = headerEnd === -1 ? Buffer.alloc(0) : raw.subarray(bodyStart);
  expect(Buffer.concat(message.bodySource().chunks() ?? []).equals(body), `${where}: body changed`).toBe(
    true,
  );
  expect(message.bodySize, where).toBe(body.length);
  for (let n = random.int(0, 6); n > 0; n--) edits[edit(random, headers, where)]++;
  const elapsed = performance.now() - started;
  expect(elapsed, `${where}: one message took ${Math.round(elapsed)} ms`).toBeLessThan(CALL_BOUND_MS);
}

test('the checks catch what they are for', () => {
  // A parser that dropped a line, or a field that let a value start a new field, must be seen.
  const block = Buffer.from('A: 1\r\nB: 2\r\n');
  expect(Headers.parse(Buffer.from('A: 1\r\n')).toBuffer().equals(normalised(block))).toBe(false);
  const smuggled = new Headers([{ name: 'X', key: 'x', raw: 'X: a\r\nBcc: b' }]);
  expect(Headers.parse(smuggled.toBuffer()).size).not.toBe(smuggled.size);
  expect(() => makeField('X', 'a\r\nBcc: b')).toThrow(TypeError);
});

describe.each(SEEDS)('mutated header blocks, seed %i', (seed) => {
  test(`${MESSAGES} messages parsed and edited`, async () => {
    const random = new Random(seed);
    const baseline = await retainedMemory();
    let fields = 0;
    const edits = { refused: 0, done: 0 };
    for (let done = 0; done < MESSAGES; done += BATCH) {
      for (let i = 0; i < BATCH; i++) {
        const where = `seed ${seed}, message ${done + i}`;
        let raw = fuzzMessage(random, { domains: ['example.test', 'other.test'] });
        if (random.chance(0.2)) raw = mutate(random, mutate(random, raw));
        checkMessage(raw, random, where, edits);
        fields += Headers.parse(raw.subarray(0, Math.max(0, findHeaderEnd(raw).headerEnd))).size;
      }
      const grown = (await retainedMemory()) - baseline;
      expect(grown, `seed ${seed}: retained memory grew by ${grown} bytes`).toBeLessThan(32 * 2 ** 20);
    }
    console.info(`seed ${seed}: ${MESSAGES} messages, ${fields} fields, edits ${JSON.stringify(edits)}`);
    expect(fields).toBeGreaterThan(MESSAGES * 5);
    expect(edits.refused).toBeGreaterThan(0);
    expect(edits.done).toBeGreaterThan(0);
  }, 120_000);
});
