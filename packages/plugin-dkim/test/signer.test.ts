// The signing threads: a signature made on a worker verifies with dkimpy; the pool's queue is
// bounded (past it, libuv's pool signs: nothing is refused); a worker that dies with a job does not
// lose it (libuv's pool signs it, and the message is signed before signMessage resolves).
import { createPublicKey, verify } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { MessageContent } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { dkim, generateKey, signMessage } from '../src/index.js';
import { loadDkimSettings } from '../src/options.js';
import { SignerPool, type SignFunction } from '../src/signer.js';
import { dkimpyPython, message, sendThrough, verifyWithDkimpy } from './helpers.js';

const rsa = generateKey({ domain: 'example.com', selector: 'rsa1', type: 'rsa', bits: 2048 });
const ed = generateKey({ domain: 'example.com', selector: 'ed1', type: 'ed25519' });
const settings = loadDkimSettings({
  domains: {
    'example.com': [
      { selector: 'rsa1', key: rsa.privateKeyPem },
      { selector: 'ed1', key: ed.privateKeyPem },
    ],
  },
  signingThreads: 0,
});
const [rsaKey, edKey] = settings.keys as [(typeof settings.keys)[0], (typeof settings.keys)[0]];

let dns: TestDns;
const pools: SignerPool[] = [];
const newPool = (threads: number, queueLimit: number, nice = 0): SignerPool => {
  const pool = new SignerPool({ threads, queueLimit, nice });
  pools.push(pool);
  return pool;
};

beforeAll(async () => {
  dkimpyPython();
  dns = await startDnsServer({
    [rsa.dnsName]: { TXT: [rsa.txtRecord] },
    [ed.dnsName]: { TXT: [ed.txtRecord] },
  });
});

afterAll(async () => {
  await Promise.all(pools.map((p) => p.close()));
  await dns?.stop();
});

/** Signs one message with both keys through `signer` and returns what dkimpy says of it. */
async function signAndVerify(signer: SignFunction): Promise<{ valid: boolean; selector: string }[]> {
  const msg = MessageContent.parse(message());
  await signMessage(msg, [rsaKey, edKey], { ...settings, signer });
  return verifyWithDkimpy(msg.toBuffer(), dns);
}

const rsaValid = (data: Buffer, signature: Buffer): boolean =>
  verify('sha256', data, createPublicKey(rsa.privateKeyPem), signature);

describe('SignerPool', () => {
  test('RSA and Ed25519 signatures made on a worker thread verify with dkimpy', async () => {
    const pool = newPool(2, 8);
    const results = await signAndVerify(pool.sign);
    expect(results).toMatchObject([
      { valid: true, selector: 'ed1' },
      { valid: true, selector: 'rsa1' },
    ]);
    expect(pool.stats()).toMatchObject({ signedInWorkers: 2, fallbacks: 0, workerExits: 0 });
  });

  test('the plugin with signingThreads signs through the queue stage; dkimpy verifies', async () => {
    const plugin = dkim({
      domains: { 'example.com': { selector: 'rsa1', key: rsa.privateKeyPem } },
      signingThreads: 2,
    });
    const { raw } = await sendThrough(plugin, message());
    expect(await verifyWithDkimpy(raw, dns)).toMatchObject([{ valid: true, selector: 'rsa1' }]);
  });

  test('the queue is bounded: past queueLimit a signature is made on libuv’s pool, none refused', async () => {
    const pool = newPool(1, 2);
    const data = Array.from({ length: 6 }, (_, i) => Buffer.from(`header block ${i}`));
    // One runs on the worker, two wait, three are over the limit.
    const signatures = await Promise.all(data.map((d) => pool.sign('sha256', d, rsaKey.privateKey)));
    expect(signatures.map((s, i) => rsaValid(data[i] as Buffer, s))).toEqual(Array(6).fill(true));
    expect(pool.stats()).toMatchObject({ signedInWorkers: 3, fallbacks: 3, maxQueued: 2, queued: 0 });
  });

  test('a worker that dies with a job: the job is signed on libuv’s pool, the message is signed and verifies', async () => {
    const pool = newPool(1, 8);
    // Kill the worker in the same tick as it is handed the job, before it can have answered.
    const dying: SignFunction = (algorithm, data, key) => {
      const signature = pool.sign(algorithm, data, key);
      void pool.workers()[0]?.terminate();
      return signature;
    };
    const results = await signAndVerify(dying);
    expect(results.map((r) => r.valid)).toEqual([true, true]);
    expect(pool.stats()).toMatchObject({ signedInWorkers: 0, fallbacks: 2, workerExits: 2 });
    // The pool recovers: a new worker takes the next job.
    const data = Buffer.from('after the crash');
    expect(rsaValid(data, await pool.sign('sha256', data, rsaKey.privateKey))).toBe(true);
    expect(pool.stats()).toMatchObject({ signedInWorkers: 1, workerExits: 2 });
  });

  test('close() signs what is still waiting on libuv’s pool', async () => {
    const pool = newPool(1, 8);
    const data = [Buffer.from('one'), Buffer.from('two'), Buffer.from('three')];
    const pending = data.map((d) => pool.sign('sha256', d, rsaKey.privateKey));
    await pool.close();
    const signatures = await Promise.all(pending);
    expect(signatures.map((s, i) => rsaValid(data[i] as Buffer, s))).toEqual([true, true, true]);
    expect(pool.stats().fallbacks).toBeGreaterThanOrEqual(2);
  });

  test('the workers run at the nice value asked for (Linux: per thread), the event loop does not', async () => {
    const niceOf = (tid: string): number =>
      Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]?.split(' ')[16]);
    const own = niceOf(String(process.pid));
    const before = new Set(readdirSync('/proc/self/task'));
    const pool = newPool(1, 8, 7);
    const data = Buffer.from('nice');
    expect(rsaValid(data, await pool.sign('sha256', data, rsaKey.privateKey))).toBe(true);
    const added = readdirSync('/proc/self/task').filter((t) => !before.has(t));
    expect(added.map(niceOf)).toContain(Math.min(19, own + 7));
    expect(niceOf(String(process.pid))).toBe(own);
  });
});
