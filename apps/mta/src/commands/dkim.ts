// tern dkim keygen / check: make a signing key and its DNS record; check DNS against a key.
import { parseArgs } from 'node:util';
import { checkDnsRecord, type DkimKeyType, generateKey, writeKey } from '@tern/plugin-dkim';

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
    if (!values.key) throw usage('dkim check needs --key FILE (the private key the signer uses)');
    const result = await checkDnsRecord({
      domain: values.domain,
      selector: values.selector,
      keyFile: values.key,
      ...(values.dns ? { resolver: { servers: values.dns } } : {}),
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

function usage(message: string): Error {
  return Object.assign(new Error(message), { code: 'ERR_PARSE_ARGS_USAGE' });
}
