import { createHash } from 'node:crypto';
import { Headers } from '@tern/plugin-api';
import { MessageContent } from '@tern/plugin-api/testing';
import { describe, expect, test } from 'vitest';
import { BodyCanonicalizer, type CanonicalizationMode, canonicalizeHeader } from '../src/canonicalize.js';
import { generateKey } from '../src/keys.js';
import { loadDkimSettings } from '../src/options.js';
import { bodyHash, bodyHashOfChunks, parseTags, signMessage } from '../src/sign.js';

// The RFC 6376 §3.4 rules written the obvious way, over a whole body held in memory: the streaming
// state machine must agree with it at every chunk boundary.
function reference(body: string, mode: CanonicalizationMode): string {
  let text = body;
  if (mode === 'relaxed') {
    text = text
      .split('\r\n')
      .map((line) => line.replace(/[ \t]+/g, ' ').replace(/ $/, ''))
      .join('\r\n');
  }
  // A loop, not /(\r\n)*$/: that regex is quadratic on long runs of empty lines.
  while (text.endsWith('\r\n')) text = text.slice(0, -2);
  if (text === '') return mode === 'simple' ? '\r\n' : '';
  return `${text}\r\n`;
}

function canonicalize(chunks: string[], mode: CanonicalizationMode): string {
  const out: Buffer[] = [];
  const canon = new BodyCanonicalizer(mode, (b) => out.push(Buffer.from(b)));
  for (const chunk of chunks) canon.update(Buffer.from(chunk, 'latin1'));
  canon.finish();
  return Buffer.concat(out).toString('latin1');
}

// A small seeded generator, so a failure can be replayed.
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const MODES: CanonicalizationMode[] = ['simple', 'relaxed'];

describe('body canonicalization', () => {
  test.each(MODES)('%s: the RFC 6376 examples and edge cases', (mode) => {
    const cases: [string, string, string][] = [
      // [body, simple, relaxed]
      ['', '\r\n', ''],
      ['\r\n', '\r\n', ''],
      ['\r\n\r\n\r\n', '\r\n', ''],
      ['a', 'a\r\n', 'a\r\n'],
      ['a\r\n', 'a\r\n', 'a\r\n'],
      ['a\r\n\r\n\r\n', 'a\r\n', 'a\r\n'],
      // RFC 6376 §3.4.5
      [' C \r\nD \t E\r\n\r\n\r\n', ' C \r\nD \t E\r\n', ' C\r\nD E\r\n'],
      ['a  \t\r\n  \r\nb', 'a  \t\r\n  \r\nb\r\n', 'a\r\n\r\nb\r\n'],
      ['  \r\n \t\r\n', '  \r\n \t\r\n', ''],
      // Bare CR and LF are not line ends: they are kept as they are.
      ['a\rb\nc\r\n', 'a\rb\nc\r\n', 'a\rb\nc\r\n'],
      ['a\r', 'a\r\r\n', 'a\r\r\n'],
      ['a \r', 'a \r\r\n', 'a \r\r\n'],
    ];
    for (const [body, simple, relaxed] of cases) {
      const want = mode === 'simple' ? simple : relaxed;
      expect(canonicalize([body], mode), JSON.stringify(body)).toBe(want);
    }
  });

  test.each(MODES)('%s: agrees with the whole-body rules at every chunk boundary', (mode) => {
    const random = prng(mode === 'simple' ? 1 : 2);
    const alphabet = ['a', 'b', ' ', '\t', '\r\n', '\r\n', '\r\n\r\n', '\r', '\n', ' \r\n', 'x'];
    for (let round = 0; round < 400; round++) {
      let body = '';
      const parts = Math.floor(random() * 40);
      for (let i = 0; i < parts; i++) body += alphabet[Math.floor(random() * alphabet.length)];
      const chunks: string[] = [];
      let at = 0;
      while (at < body.length) {
        const size = 1 + Math.floor(random() * 5);
        chunks.push(body.slice(at, at + size));
        at += size;
      }
      expect(canonicalize(chunks, mode), JSON.stringify(chunks)).toBe(reference(body, mode));
    }
  });

  test('output past one staging block is all hashed, in order', async () => {
    // 200 KB of lines with trailing spaces and 100 000 empty lines in the middle: more than the 16 KB block.
    const body = `${'line with  spaces  \r\n'.repeat(10_000)}${'\r\n'.repeat(100_000)}end\r\n`;
    const chunks = body.match(/[\s\S]{1,777}/g) as string[];
    for (const mode of MODES) {
      const want = createHash('sha256').update(reference(body, mode), 'latin1').digest('base64');
      expect(
        await bodyHash(
          chunks.map((c) => Buffer.from(c, 'latin1')),
          mode,
        ),
      ).toBe(want);
    }
  });

  test('a body held in memory (chunks, no stream) hashes as the streamed one', async () => {
    const random = prng(3);
    const alphabet = ['word', ' ', '\t', '\r\n', '\r\n\r\n', '\r', '\n', 'é'];
    for (let round = 0; round < 200; round++) {
      let body = '';
      const parts = Math.floor(random() * 60);
      for (let i = 0; i < parts; i++) body += alphabet[Math.floor(random() * alphabet.length)];
      const chunks = (body.match(/[\s\S]{1,7}/g) ?? []).map((c) => Buffer.from(c, 'latin1'));
      for (const mode of MODES) {
        const want = createHash('sha256').update(reference(body, mode), 'latin1').digest('base64');
        expect(bodyHashOfChunks(chunks, mode), JSON.stringify(body)).toBe(want);
        expect(await bodyHash(chunks, mode)).toBe(want);
      }
    }
  });

  test.each([
    ['small', 'body  line \r\n\r\n\tmore\r\n\r\n\r\n'],
    // Over the size hashed in one synchronous pass: streamed even when held in memory.
    ['300 KB', `${'a  line\t \r\n'.repeat(30_000)}\r\n\r\n`],
  ])('signMessage, %s body: held in memory or only streamable (spooled, another view), the same bh=', async (_, body) => {
    const key = generateKey({ domain: 'example.com', selector: 's', type: 'ed25519' });
    const settings = loadDkimSettings({
      domains: { 'example.com': { selector: 's', key: key.privateKeyPem } },
    });
    const raw = `From: <a@example.com>\r\nSubject: x\r\n\r\n${body}`;
    const held = MessageContent.parse(raw);
    const parsed = MessageContent.parse(raw);
    // Only the MessageView interface: no bodySource(), so the body must be streamed.
    const streamedOnly = {
      headers: parsed.headers,
      bodySize: parsed.bodySize,
      stream: () => parsed.stream(),
      body: () => parsed.body(),
      buffer: (max: number) => parsed.buffer(max),
    };
    const [a] = await signMessage(held, settings.keys, settings);
    const [b] = await signMessage(streamedOnly, settings.keys, settings);
    const bh = (value: string | undefined) => parseTags(value ?? '').get('bh');
    const want = createHash('sha256').update(reference(body, 'relaxed'), 'latin1').digest('base64');
    expect([bh(a?.value), bh(b?.value)]).toEqual([want, want]);
  });

  test('canonicalizers fed in turn (messages signed at once share the staging block) do not mix', () => {
    const bodies = ['one  line \r\n\r\nand\tmore\r\n\r\n', 'other\r\n  text  here\r\n', ''];
    for (const mode of MODES) {
      const outs = bodies.map(() => [] as Buffer[]);
      const canons = bodies.map((_, i) => new BodyCanonicalizer(mode, (b) => outs[i]?.push(Buffer.from(b))));
      // Byte by byte, round robin: every update of one message between two of another.
      for (let at = 0; at < Math.max(...bodies.map((b) => b.length)); at++) {
        for (const [i, body] of bodies.entries()) {
          if (at < body.length) canons[i]?.update(Buffer.from(body.slice(at, at + 1), 'latin1'));
        }
      }
      for (const canon of canons) canon.finish();
      expect(outs.map((o) => Buffer.concat(o).toString('latin1'))).toEqual(
        bodies.map((b) => reference(b, mode)),
      );
    }
  });

  test('the empty body hashes as RFC 6376 §3.4.3 and §3.4.4 say', async () => {
    // Known values: sha256("\r\n") and sha256("").
    expect(await bodyHash([], 'simple')).toBe('frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=');
    expect(await bodyHash([], 'relaxed')).toBe('47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=');
  });
});

describe('header canonicalization', () => {
  test('relaxed lower-cases the name, unfolds and squeezes whitespace; simple keeps the raw field', () => {
    const [field] = Headers.parse('SubJect \t:  Hello \r\n\t  there\t \r\n').fields();
    expect(field).toBeDefined();
    if (!field) return;
    expect(canonicalizeHeader(field, 'relaxed')).toBe('subject:Hello there\r\n');
    expect(canonicalizeHeader(field, 'simple')).toBe('SubJect \t:  Hello \r\n\t  there\t \r\n');
  });
});
