// tern dkim keygen / check: make a signing key and its DNS record; check DNS against a key.

import type { KeyObject } from 'node:crypto';
import { parseArgs } from 'node:util';
import { checkDnsRecord, type DkimKeyType, generateKey, signingKeysOf, writeKey } from '@tern/plugin-dkim';
import { loadConfig } from '../config.js';

export async function runDkim(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      domain: { type: 'string' },
      selector: { type: 'string' },
      type: { type: 'string' },
      bits: { type: 'string' },
      out: { type: 'string' },
      key: { type: 'string' },
      config: { type: 'string', short: 'c' },
      dns: { type: 'string', multiple: true },
      overwrite: { type: 'boolean' },
    },
  });
  if (!values.domain || !values.selector) throw usage(`dkim ${action ?? ''} needs --domain D --selector S`);

  if (action === 'keygen') {
    const type = (values.type ?? 'rsa') as DkimKeyType;
    if (type !== 'rsa' && type !== 'ed25519') throw usage('--type is rsa or ed25519');
    const key = generateKey({
      domain: values.domain,
      selector: values.selector,
      type,
      ...(values.bits !== undefined ? { bits: Number(values.bits) } : {}),
    });
    const out = values.out ?? `${values.selector}.${values.domain}.${type}.pem`;
    await writeKey(out, key.privateKeyPem, { overwrite: values.overwrite === true });
    process.stderr.write(`private key written to ${out} (mode 0600); publish this TXT record:\n`);
    process.stdout.write(`${key.dnsName}. IN TXT "${key.txtRecord}"\n`);
    return 0;
  }
  if (action === 'check') {
    const key =
      values.key ??
      (values.config ? await configuredKey(values.config, values.domain, values.selector) : undefined);
    if (!key) throw usage('dkim check needs --config FILE (the key tern signs with) or --key FILE');
    const servers =
      values.dns ?? (values.config ? (await loadConfig(values.config)).delivery?.dns?.servers : undefined);
    const result = await checkDnsRecord({
      domain: values.domain,
      selector: values.selector,
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
  throw usage('dkim takes keygen or check');
}

/** The private key a config's dkim() plugins sign `domain` with under `selector`. */
async function configuredKey(file: string, domain: string, selector: string): Promise<KeyObject> {
  const config = await loadConfig(file);
  const plugins = [...config.plugins, ...config.listeners.flatMap((l) => l.plugins ?? [])];
  const keys = plugins.flatMap((p) => signingKeysOf(p) ?? []);
  const wanted = domain.toLowerCase();
  const found = keys.find((k) => k.domain === wanted && k.selector === selector);
  if (!found) {
    const known = keys.map((k) => `${k.selector}._domainkey.${k.domain}`).join(', ') || 'none';
    throw usage(`${file} has no DKIM key for selector ${selector} of ${domain} (configured: ${known})`);
  }
  return found.privateKey;
}

function usage(message: string): Error {
  return Object.assign(new Error(message), { code: 'ERR_PARSE_ARGS_USAGE' });
}
