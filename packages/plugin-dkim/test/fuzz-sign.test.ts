// Fuzzing the DKIM signer with seeded, mutated messages (folded and unfolded fields, missing
// colons, huge fields, duplicate From, encoded words, DKIM-Signature fields with garbage tags,
// broken MIME, 8-bit, invalid UTF-8, NUL, long lines) through the queue stage of the plugin test
// kit, under every canonicalization. No hook fails (a failure would be a 451), every call ends
// within a bound, what is added is a well-formed signature, memory stays bounded; and a sample of
// each batch is verified by dkimpy and mailauth, which must accept every signature we made.
// Reproduce a failure with TERN_FUZZ_SEED=<seed>; run longer with TERN_FUZZ_ROUNDS=<factor>.
import type { Plugin } from '@tern/plugin-api';
import { MessageContent } from '@tern/plugin-api/host';
import { type LogRecord, testPlugins } from '@tern/plugin-api/testing';
import {
  asIntakeHandsIt,
  fuzzMessage,
  fuzzRounds,
  fuzzSeeds,
  Random,
  retainedMemory,
  startDnsServer,
  type TestDns,
  withinDeadline,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Canonicalization, dkim, generateKey } from '../src/index.js';
import { parseTags } from '../src/sign.js';
import { dkimpyPython, verifyWithDkimpy, verifyWithMailauth } from './helpers.js';

const SEEDS = fuzzSeeds([1, 2, 3]);
const MESSAGES = fuzzRounds(120);
const BATCH = 60;
/** Signed messages per batch that the independent verifiers check. */
const SAMPLE = 2;
const CALL_BOUND_MS = 5000;

const rsa = generateKey({ domain: 'example.com', selector: 'rsa1', type: 'rsa', bits: 2048 });
const ed = generateKey({ domain: 'example.com', selector: 'ed1', type: 'ed25519' });
const relay = generateKey({ domain: 'relay.example', selector: 'relay', type: 'rsa', bits: 2048 });
const OURS = new Set(['example.com/rsa1', 'example.com/ed1', 'relay.example/relay']);

let dns: TestDns;
beforeAll(async () => {
  dkimpyPython();
  dns = await startDnsServer({
    [rsa.dnsName]: { TXT: [rsa.txtRecord] },
    [ed.dnsName]: { TXT: [ed.txtRecord] },
    [relay.dnsName]: { TXT: [relay.txtRecord] },
  });
});
afterAll(async () => {
  await dns?.stop();
});

const signers: Plugin[] = (
  ['relaxed/relaxed', 'simple/simple', 'relaxed/simple', 'simple/relaxed'] as Canonicalization[]
).map((canonicalization) =>
  dkim({
    canonicalization,
    domains: {
      'example.com': [
        { selector: 'rsa1', key: rsa.privateKeyPem },
        { selector: 'ed1', key: ed.privateKeyPem },
      ],
    },
    fallback: { domain: 'relay.example', selector: 'relay', key: relay.privateKeyPem },
    matchParentDomain: true,
    expiresIn: 3600,
  }),
);

interface Signed {
  readonly raw: Buffer;
  /** Signatures we added: the topmost fields. */
  readonly added: number;
  readonly where: string;
}

/** One message through the queue stage; checks what the signer added and returns the result. */
async function signOne(signer: Plugin, input: Buffer, where: string): Promise<Signed> {
  const session = testPlugins(signer, { trusted: true });
  await session.connect();
  await session.helo('client.example.com');
  await session.mailFrom('alice@example.com');
  await session.rcptTo('bob@example.net');
  const before = MessageContent.parse(input).headers.count('DKIM-Signature');
  const started = performance.now();
  const result = await withinDeadline(session.data(input), CALL_BOUND_MS, where).catch((error: unknown) => {
    throw new Error(`${where}: the queue stage failed: ${String(error)}`, { cause: error });
  });
  const elapsed = performance.now() - started;
  expect(elapsed, `${where}: signing took ${Math.round(elapsed)} ms`).toBeLessThan(CALL_BOUND_MS);
  const failures = session.logs.filter((r: LogRecord) => r.level === 'error');
  expect(
    failures.map((r) => r.message),
    where,
  ).toEqual([]);
  const added = result.message.headers.count('DKIM-Signature') - before;
  // Ours are prepended: the topmost fields.
  const top = result.message.headers.fields().slice(0, added);
  expect(
    top.map((f) => f.key),
    where,
  ).toEqual(top.map(() => 'dkim-signature'));
  for (const value of result.message.headers.getAll('DKIM-Signature').slice(0, added)) {
    const tags = parseTags(value);
    expect(OURS.has(`${tags.get('d')}/${tags.get('s')}`), `${where}: ${value}`).toBe(true);
    for (const tag of ['v', 'a', 'c', 'd', 's', 't', 'x', 'h', 'bh', 'b']) {
      expect(tags.get(tag), `${where}: no ${tag}= in ${value}`).toBeTruthy();
    }
    expect(tags.get('h')?.split(':'), where).toContain('from');
    expect(tags.get('b'), where).toMatch(/^[A-Za-z0-9+/]+=*$/);
  }
  return { raw: result.message.toBuffer(), added, where };
}

/**
 * Every signature we added (the topmost `added` fields) must verify: with dkimpy, and with mailauth
 * for the first of the sample and for any message dkimpy cannot parse at all (a header line without
 * a colon makes it raise MessageFormatError before it looks at a signature).
 */
async function verifySample(sample: readonly Signed[]): Promise<number> {
  let unparsable = 0;
  for (const [i, signed] of sample.entries()) {
    const dump = `\n${signed.raw.toString('latin1').slice(0, 3000)}`;
    const dkimpy = await verifyWithDkimpy(signed.raw, dns).catch((error: unknown) => {
      if (String(error).includes('MessageFormatError')) return undefined;
      throw error;
    });
    if (dkimpy) {
      const ours = dkimpy.slice(0, signed.added);
      expect(
        ours.map((r) => `${r.domain}/${r.selector}: ${r.valid ? 'valid' : r.error}`),
        `${signed.where}: dkimpy${dump}`,
      ).toEqual(ours.map((r) => `${r.domain}/${r.selector}: valid`));
    } else {
      unparsable++;
    }
    // A node process per message is not cheap: mailauth checks one a batch, and what dkimpy cannot.
    if (i > 0 && dkimpy) continue;
    const mailauth = (await verifyWithMailauth(signed.raw, dns)).slice(0, signed.added);
    expect(
      mailauth.map((r) => `${r.domain}/${r.selector}: ${r.result} ${r.comment ?? ''}`.trim()),
      `${signed.where}: mailauth${dump}`,
    ).toEqual(mailauth.map((r) => `${r.domain}/${r.selector}: pass`));
  }
  return unparsable;
}

describe.each(SEEDS)('mutated messages signed, seed %i', (seed) => {
  test(`${MESSAGES} messages through the queue stage`, async () => {
    const random = new Random(seed);
    const baseline = await retainedMemory();
    let signedCount = 0;
    let verified = 0;
    let unparsable = 0;
    for (let done = 0; done < MESSAGES; done += BATCH) {
      const candidates: Signed[] = [];
      for (let i = 0; i < BATCH; i++) {
        const where = `seed ${seed}, message ${done + i}`;
        const raw = fuzzMessage(random, {
          domains: ['example.com', 'sub.example.com', 'other.example', 'EXAMPLE.COM'],
          selector: random.pick(['rsa1', 'other']),
        });
        const intake = random.chance(0.5);
        const signed = await signOne(random.pick(signers), intake ? asIntakeHandsIt(raw) : raw, where);
        if (signed.added > 0) {
          signedCount++;
          if (intake) candidates.push(signed);
        }
      }
      const sample = Array.from(
        { length: Math.min(SAMPLE, candidates.length) },
        () => candidates.splice(random.int(0, candidates.length - 1), 1)[0] as Signed,
      );
      unparsable += await verifySample(sample);
      verified += sample.length;
      const grown = (await retainedMemory()) - baseline;
      expect(grown, `seed ${seed}: retained memory grew by ${grown} bytes`).toBeLessThan(32 * 2 ** 20);
    }
    console.info(
      `seed ${seed}: ${MESSAGES} messages, ${signedCount} signed, ${verified} verified independently (${unparsable} by mailauth alone)`,
    );
    expect(signedCount).toBeGreaterThan(MESSAGES / 3);
    expect(verified).toBeGreaterThan(0);
  }, 180_000);
});
