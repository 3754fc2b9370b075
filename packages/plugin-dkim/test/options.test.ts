// Start-up errors: every bad option or key stops the factory with a PluginOptionError that names
// the field, and for keys the domain and the file.
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PluginOptionError } from '@tern/plugin-api';
import { withConfigDir } from '@tern/plugin-api/host';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type DkimOptions, dkim, generateKey, loadSigningKeys } from '../src/index.js';

const rsa = generateKey({ domain: 'example.com', selector: 's1', type: 'rsa', bits: 2048 });
const ed = generateKey({ domain: 'example.com', selector: 's2', type: 'ed25519' });
const pem = (type: 'rsa', bits: number): string =>
  generateKeyPairSync(type, { modulusLength: bits })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tern-dkim-options-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Calls the factory and returns the PluginOptionError it throws. */
function optionError(options: unknown): PluginOptionError {
  try {
    dkim(options as DkimOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(PluginOptionError);
    return error as PluginOptionError;
  }
  throw new Error('dkim() accepted the options');
}

describe('option shape', () => {
  test.each<[string, unknown, string, RegExp]>([
    ['nothing to sign with', {}, 'domains', /configure domains or a fallback/],
    ['not an object', 'example.com', '(options)', /expected an object/],
    [
      'unknown option',
      { domains: {}, canonicalisation: 'simple/simple' },
      'canonicalisation',
      /unknown option/,
    ],
    [
      'bad canonicalization',
      { domains: {}, canonicalization: 'relaxed' },
      'canonicalization',
      /relaxed\/relaxed/,
    ],
    ['no From in headers', { domains: {}, headers: ['To', 'Subject'] }, 'headers', /must include From/],
    [
      'DKIM-Signature in headers',
      { domains: {}, headers: ['From', 'DKIM-Signature'] },
      'headers[1]',
      /cannot be signed/,
    ],
    ['bad expiresIn', { domains: {}, expiresIn: -5 }, 'expiresIn', /above 0/],
    ['negative signingThreads', { domains: {}, signingThreads: -1 }, 'signingThreads', /from 0/],
    ['fractional signingThreads', { domains: {}, signingThreads: 1.5 }, 'signingThreads', /whole number/],
    ['signingNice above 19', { domains: {}, signingNice: 20 }, 'signingNice', /0 to 19/],
    [
      'key and keyFile both',
      { domains: { 'example.com': { selector: 's', key: 'x', keyFile: '/x' } } },
      'domains["example.com"]',
      /exactly one/,
    ],
    [
      'neither key nor keyFile',
      { domains: { 'example.com': [{ selector: 's' }] } },
      'domains["example.com"][0]',
      /exactly one/,
    ],
    [
      'bad selector',
      { domains: { 'example.com': { selector: 'a b', key: 'x' } } },
      'domains["example.com"].selector',
      /selector/,
    ],
    [
      'bad algorithm',
      { domains: { 'example.com': { selector: 's', key: 'x', algorithm: 'rsa-sha1' } } },
      'domains["example.com"].algorithm',
      /rsa-sha256 or ed25519-sha256/,
    ],
    [
      'bad domain',
      { domains: { localhost: { selector: 's', key: 'x' } } },
      'domains.localhost',
      /not a domain/,
    ],
    ['fallback without domain', { fallback: { selector: 's', key: 'x' } }, 'fallback.domain', /domain name/],
  ])('%s', (_name, options, field, problem) => {
    const error = optionError(options);
    expect(error.field).toBe(field);
    expect(error.plugin).toBe('dkim');
    expect(error.message).toMatch(problem);
  });
});

describe('keys at start-up', () => {
  test('a missing key file names the field, the domain and the file', () => {
    const file = join(dir, 'missing.pem');
    const error = optionError({ domains: { 'example.com': { selector: 's1', keyFile: file } } });
    expect(error.field).toBe('domains["example.com"].keyFile');
    expect(error.message).toContain(file);
    expect(error.message).toContain('example.com');
    expect(error.message).toMatch(/no such file/);
  });

  test('an unreadable key file', async () => {
    if (process.getuid?.() === 0) {
      // root reads any file whatever its mode: a directory in place of the file is unreadable for root too.
      const error = optionError({ domains: { 'example.com': { selector: 's1', keyFile: dir } } });
      expect(error.message).toMatch(new RegExp(`cannot read key file ${dir} of example.com`));
      return;
    }
    const file = join(dir, 'locked.pem');
    await writeFile(file, rsa.privateKeyPem);
    await chmod(file, 0o000);
    const error = optionError({ domains: { 'example.com': { selector: 's1', keyFile: file } } });
    expect(error.message).toMatch(/permission denied/);
  });

  test('a file that holds no private key', async () => {
    const file = join(dir, 'public.pem');
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    await writeFile(file, publicKey.export({ type: 'spki', format: 'pem' }));
    const error = optionError({ domains: { 'example.org': [{ selector: 'a', keyFile: file }] } });
    expect(error.field).toBe('domains["example.org"][0].keyFile');
    expect(error.message).toContain(`key file ${file} of example.org is not a usable PEM private key`);
  });

  test('a key of the wrong type (EC)', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    const error = optionError({ domains: { 'example.com': { selector: 's1', key: ec } } });
    expect(error.field).toBe('domains["example.com"].key');
    expect(error.message).toMatch(/a ec key cannot sign DKIM/);
  });

  test('an algorithm that does not match the key', () => {
    const error = optionError({
      domains: { 'example.com': { selector: 's1', key: ed.privateKeyPem, algorithm: 'rsa-sha256' } },
    });
    expect(error.field).toBe('domains["example.com"].algorithm');
    expect(error.message).toMatch(/rsa-sha256 does not match the ed25519 key of example.com/);
  });

  test('an RSA key under 1024 bits is refused', async () => {
    const file = join(dir, 'small.pem');
    await writeFile(file, pem('rsa', 768));
    const error = optionError({ fallback: { domain: 'relay.example', selector: 'x', keyFile: file } });
    expect(error.field).toBe('fallback.keyFile');
    expect(error.message).toContain(`key file ${file} of relay.example: RSA key of 768 bits is too small`);
  });

  test('a selector configured twice for one domain', () => {
    const error = optionError({
      domains: {
        'example.com': [
          { selector: 's1', key: rsa.privateKeyPem },
          { selector: 'S1', key: ed.privateKeyPem },
        ],
      },
    });
    expect(error.field).toBe('domains["example.com"][1].selector');
  });

  test('loadSigningKeys lists every key, active or not, for tern dkim check', async () => {
    const file = join(dir, 'ed.pem');
    await writeFile(file, ed.privateKeyPem);
    const keys = loadSigningKeys({
      domains: {
        'Example.COM': [
          { selector: 's1', key: rsa.privateKeyPem },
          { selector: 's2', keyFile: file, active: false },
        ],
      },
      fallback: { domain: 'relay.example', selector: 'r', key: rsa.privateKeyPem },
    });
    expect(keys.map((k) => [k.domain, k.selector, k.algorithm, k.bits, k.active, k.source])).toEqual([
      ['example.com', 's1', 'rsa-sha256', 2048, true, 'inline'],
      ['example.com', 's2', 'ed25519-sha256', undefined, false, file],
      ['relay.example', 'r', 'rsa-sha256', 2048, true, 'inline'],
    ]);
  });

  test('a relative keyFile starts at the folder of the config being loaded', async () => {
    const conf = join(dir, 'conf');
    await mkdir(join(conf, 'keys'), { recursive: true });
    await writeFile(join(conf, 'keys', 'k.pem'), rsa.privateKeyPem);
    const options = { domains: { 'example.com': { selector: 's1', keyFile: 'keys/k.pem' } } };
    const keys = withConfigDir(conf, () => loadSigningKeys(options));
    expect(keys.map((k) => k.source)).toEqual([join(conf, 'keys', 'k.pem')]);
    // With no config loading (a plugin's own test), the working directory; the error shows both forms.
    const error = optionError(options);
    expect(error.message).toContain(
      `cannot read key file keys/k.pem (${resolve('keys/k.pem')}) of example.com`,
    );
  });

  test('the plugin signs last: enforce post and a post queue hook', () => {
    const plugin = dkim({ domains: { 'example.com': { selector: 's1', key: rsa.privateKeyPem } } });
    expect(plugin.name).toBe('dkim');
    expect(plugin.enforce).toBe('post');
    expect(plugin.queue).toMatchObject({ order: 'post' });
  });
});
