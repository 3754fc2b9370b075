// tern dkim keygen / check: make a signing key and its DNS record; check DNS against a key.

import type { KeyObject } from 'node:crypto';
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { checkDnsRecord, type DkimKeyType, generateKey, signingKeysOf, writeKey } from '@tern/plugin-dkim';
import { deliveryDnsServers, type ResolvedConfig, withConfig } from '../config.js';
import { UsageProblem } from '../ops/admin-client.js';
import { pluginInstances } from '../plugins.js';
import { txtStrings, zoneLine } from './zone.js';

export interface KeygenOptions {
  readonly domain: string;
  readonly selector: string;
  readonly type: DkimKeyType;
  readonly bits?: number | undefined;
  readonly out?: string | undefined;
  readonly overwrite?: boolean | undefined;
}

export async function runDkimKeygen(options: KeygenOptions): Promise<number> {
  const key = generateKey({
    domain: options.domain,
    selector: options.selector,
    type: options.type,
    ...(options.bits !== undefined ? { bits: options.bits } : {}),
  });
  const out = await keyPath(options);
  await writeKey(out, key.privateKeyPem, { overwrite: options.overwrite === true });
  process.stderr.write(`private key written to ${out} (mode 0600); publish this TXT record:\n`);
  process.stdout.write(`${zoneLine(key.dnsName, 'TXT', txtStrings(key.txtRecord))}\n`);
  return 0;
}

/**
 * Where keygen writes: `--out` as a file, or as a folder (one that exists, or written with a
 * trailing slash) for the default name SELECTOR.DOMAIN.TYPE.pem. Missing folders are made, readable
 * by the owner only, as the key is.
 */
async function keyPath(options: KeygenOptions): Promise<string> {
  const name = `${options.selector}.${options.domain}.${options.type}.pem`;
  const out = options.out;
  if (out === undefined) return name;
  const isFolder = /[\\/]$/.test(out) || (await stat(out).catch(() => undefined))?.isDirectory() === true;
  const path = isFolder ? join(out, name) : out;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  return path;
}

export interface DkimCheckOptions {
  readonly domain: string;
  readonly selector: string;
  readonly config?: string | undefined;
  readonly key?: string | undefined;
  readonly dns?: readonly string[] | undefined;
}

export async function runDkimCheck(options: DkimCheckOptions): Promise<number> {
  const { config: file, domain, selector } = options;
  if (options.key !== undefined) return check(options, options.key, options.dns);
  if (file === undefined) {
    throw new UsageProblem('dkim check needs --config FILE (the key tern signs with) or --key FILE');
  }
  return withConfig(file, async (config) => {
    const key = configuredKey(config, file, domain, selector);
    return check(options, key, options.dns ?? deliveryDnsServers(config));
  });
}

async function check(
  options: DkimCheckOptions,
  key: KeyObject | string,
  servers: readonly string[] | undefined,
): Promise<number> {
  const result = await checkDnsRecord({
    domain: options.domain,
    selector: options.selector,
    ...(typeof key === 'string' ? { keyFile: key } : { key }),
    ...(servers ? { resolver: { servers } } : {}),
  });
  if (result.ok) {
    process.stdout.write(
      `${result.dnsName}: ok, DNS publishes this key${result.testing ? ' (t=y: testing mode)' : ''}\n`,
    );
    return 0;
  }
  process.stdout.write(`${result.dnsName}: mismatch: ${result.reason}\n`);
  return 1;
}

/** The private key a config's dkim() plugins sign `domain` with under `selector`. */
function configuredKey(config: ResolvedConfig, file: string, domain: string, selector: string): KeyObject {
  const keys = pluginInstances(config).flatMap((p) => signingKeysOf(p) ?? []);
  const wanted = domain.toLowerCase();
  const found = keys.find((k) => k.domain === wanted && k.selector === selector);
  if (!found) {
    const known = keys.map((k) => `${k.selector}._domainkey.${k.domain}`).join(', ') || 'none';
    throw new UsageProblem(
      `${file} has no DKIM key for selector ${selector} of ${domain} (configured: ${known})`,
    );
  }
  return found.privateKey;
}
