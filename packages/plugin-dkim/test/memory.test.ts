// A 20 MB body is signed while it streams: memory the signer keeps stays flat. The body comes from a
// generator that never holds it, so what grows is the signer's own doing; a control that buffers
// proves the measurement would see it.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Headers, type MessageView } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { dkim, generateKey } from '../src/index.js';
import { bodyHash } from '../src/sign.js';
import { dkimpyPython, verifyWithDkimpy } from './helpers.js';

// Lets the test collect garbage on demand, so it measures what is kept rather than what is not yet freed.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MB = 1024 * 1024;
const BODY_BYTES = 20 * MB;
const CHUNK = 16 * 1024;
const key = generateKey({ domain: 'example.com', selector: 'big', type: 'rsa', bits: 2048 });
let dns: TestDns;

beforeAll(async () => {
  dkimpyPython();
  dns = await startDnsServer({ [key.dnsName]: { TXT: [key.txtRecord] } });
});
afterAll(async () => {
  await dns?.stop();
});

/** Line `n` of the body: varied text with runs of spaces, so relaxed canonicalization has work to do. */
function line(n: number): string {
  return `${String(n).padStart(8, '0')}  quick   brown fox\tjumps over the lazy dog  ${'x'.repeat(n % 50)}  \r\n`;
}

/** 20 MB of body in 16 KB chunks, made as they are read, with a probe called between chunks. */
async function* generatedBody(probe: () => void): AsyncGenerator<Buffer> {
  let sent = 0;
  let n = 0;
  let pending = '';
  while (sent < BODY_BYTES) {
    while (pending.length < CHUNK) pending += line(n++);
    const chunk = Buffer.from(pending.slice(0, CHUNK), 'latin1');
    pending = pending.slice(CHUNK);
    sent += chunk.length;
    if (sent % MB === 0) probe();
    yield chunk;
  }
}

interface Peak {
  growth: number;
}

/** A probe that records the highest growth of retained memory (after a full GC) over a baseline. */
function memoryProbe(): { probe: () => void; peak: Peak } {
  gc();
  const base = retained();
  const peak = { growth: 0 };
  return {
    peak,
    probe: () => {
      gc();
      peak.growth = Math.max(peak.growth, retained() - base);
    },
  };
}

function retained(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function viewOver(headers: string, body: () => Readable): MessageView {
  return {
    headers: Headers.parse(headers),
    bodySize: BODY_BYTES,
    body,
    stream: () => {
      throw new Error('the signer must read the body only');
    },
    buffer: () => {
      throw new Error('the signer must read the body as a stream');
    },
  };
}

test('signing a 20 MB streamed body keeps memory flat, and dkimpy verifies the result', async () => {
  const plugin = dkim({ domains: { 'example.com': { selector: 'big', key: key.privateKeyPem } } });
  const headers = 'From: a@example.com\r\nTo: b@example.net\r\nSubject: big\r\n';
  // The queue stage as core runs it, through the same host the test kit uses, over our own view.
  const kit = testPlugins(plugin, { trusted: true });
  const { probe, peak } = memoryProbe();
  const view = viewOver(headers, () => Readable.from(generatedBody(probe)));
  await kit.host.runTransform('queue', {
    session: kit.session,
    transaction: {
      id: 't1',
      mailFrom: 'a@example.com',
      mailParams: {},
      recipients: [{ address: 'b@example.net' }],
    },
    message: view,
    envelope: { mailFrom: 'a@example.com', recipients: [{ address: 'b@example.net' }] },
    hold: () => {},
  });
  // The body streamed through once and the signer kept a few hundred KB (its 64 KB staging block, stream
  // buffers, compiled code). The margin is for one-off spikes of about 1 MB seen from the test worker;
  // the control below shows that buffering the body would show up as 20 MB.
  console.info(`signer: retained memory grew at most ${(peak.growth / MB).toFixed(2)} MB over a 20 MB body`);
  expect(peak.growth).toBeLessThan(4 * MB);

  // The signature over those 20 MB is right: dkimpy recomputes the body hash from the same bytes.
  const signed = Readable.from(
    (async function* () {
      yield Buffer.from(`${view.headers.toString()}\r\n`, 'latin1');
      yield* generatedBody(() => {});
    })(),
  );
  expect(view.headers.count('DKIM-Signature')).toBe(1);
  const results = await verifyWithDkimpy(signed, dns);
  expect(results.map((r) => r.valid)).toEqual([true]);
}, 120_000);

test('control: the same probe sees a consumer that buffers the body', async () => {
  const { probe, peak } = memoryProbe();
  const held: Buffer[] = [];
  for await (const chunk of Readable.from(generatedBody(probe))) held.push(chunk as Buffer);
  const hash = createHash('sha256');
  for (const chunk of held) hash.update(chunk);
  // The body ends mid-line, and simple canonicalization ends it with a CRLF.
  expect(held.at(-1)?.subarray(-2).toString()).not.toBe('\r\n');
  hash.update('\r\n');
  console.info(`control: retained memory grew ${(peak.growth / MB).toFixed(2)} MB`);
  expect(peak.growth).toBeGreaterThan(15 * MB);
  expect(held.length).toBeGreaterThan(0);
  // And bodyHash over the same generator agrees with hashing it canonicalized in one piece.
  expect(
    await bodyHash(
      generatedBody(() => {}),
      'simple',
    ),
  ).toBe(hash.digest('base64'));
}, 120_000);
