// `tern dkim check`: is the key we sign with the one DNS publishes? Looks the TXT record up the way
// a receiver would and compares its p= with the configured key.
import type { KeyObject } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { dnsNameFor, publicKeyBase64, toPublicKey } from './keys.js';
import { parseTags } from './sign.js';

export interface DnsResolverOptions {
  /** Name servers, as node's Resolver#setServers takes them: '192.0.2.53', '127.0.0.1:5353', '[::1]:53'. */
  readonly servers?: readonly string[];
  /** Per-try timeout in milliseconds (default 5000). */
  readonly timeout?: number;
  readonly tries?: number;
}

export interface CheckDnsRecordOptions {
  readonly domain: string;
  readonly selector: string;
  /** The configured key: a KeyObject or PEM (private or public). Or give keyFile. */
  readonly key?: KeyObject | string;
  readonly keyFile?: string;
  /** Default: the system's resolvers. */
  readonly resolver?: DnsResolverOptions;
}

export type DnsRecordCheck =
  | {
      readonly ok: true;
      readonly dnsName: string;
      /** The DKIM record found. */
      readonly found: string;
      /** t=y: receivers may treat failures as if unsigned; remove the flag once mail verifies. */
      readonly testing: boolean;
    }
  | {
      readonly ok: false;
      readonly dnsName: string;
      /** The DKIM record found, if any (undefined when there is none or the lookup failed). */
      readonly found: string | undefined;
      /** What is wrong and, where it helps, what to do. */
      readonly reason: string;
    };

/** Looks up `selector._domainkey.domain` and checks that it publishes `key` for DKIM. */
export async function checkDnsRecord(options: CheckDnsRecordOptions): Promise<DnsRecordCheck> {
  const dnsName = dnsNameFor(options.domain, options.selector);
  const keyText =
    options.key ?? (options.keyFile !== undefined ? await readFile(options.keyFile, 'utf8') : undefined);
  if (keyText === undefined) throw new TypeError('checkDnsRecord: give key or keyFile');
  const publicKey = toPublicKey(keyText);
  const expected = publicKeyBase64(publicKey);
  const expectedType = publicKey.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa';

  const resolver = new Resolver({
    timeout: options.resolver?.timeout ?? 5000,
    tries: options.resolver?.tries ?? 2,
  });
  if (options.resolver?.servers) resolver.setServers([...options.resolver.servers]);

  let records: string[];
  try {
    records = (await resolver.resolveTxt(dnsName)).map((chunks) => chunks.join(''));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') {
      return {
        ok: false,
        dnsName,
        found: undefined,
        reason: `no TXT record at ${dnsName}; publish: ${recordHint(expected, expectedType)}`,
      };
    }
    return {
      ok: false,
      dnsName,
      found: undefined,
      reason: `DNS lookup of ${dnsName} failed: ${code ?? (error as Error).message}`,
    };
  }

  // Other TXT records may share the name; a DKIM record starts with v=DKIM1 or, without v=, has p=.
  const dkimRecords = records.filter((r) => {
    const tags = parseTags(r);
    return tags.get('v') === 'DKIM1' || (!tags.has('v') && tags.has('p'));
  });
  const [found] = dkimRecords;
  if (found === undefined) {
    return {
      ok: false,
      dnsName,
      found: undefined,
      reason: `TXT records at ${dnsName} hold no DKIM key; publish: ${recordHint(expected, expectedType)}`,
    };
  }
  if (dkimRecords.length > 1) {
    return {
      ok: false,
      dnsName,
      found,
      reason: `${dkimRecords.length} DKIM records at ${dnsName}; receivers may pick either, keep one`,
    };
  }
  const tags = parseTags(found);
  const k = tags.get('k') ?? 'rsa';
  const p = tags.get('p');
  if (p === undefined) return { ok: false, dnsName, found, reason: 'the record has no p= tag' };
  if (p === '') return { ok: false, dnsName, found, reason: 'the key is revoked (empty p=)' };
  if (k !== expectedType) {
    return {
      ok: false,
      dnsName,
      found,
      reason: `the record is for a k=${k} key, the configured key is ${expectedType}`,
    };
  }
  const h = tags.get('h');
  if (h !== undefined && !h.split(':').includes('sha256')) {
    return { ok: false, dnsName, found, reason: `h=${h} does not allow sha256, which every signature uses` };
  }
  const s = tags.get('s');
  if (s !== undefined && !s.split(':').some((x) => x === '*' || x === 'email')) {
    return { ok: false, dnsName, found, reason: `s=${s} does not allow email` };
  }
  if (p !== expected) {
    return {
      ok: false,
      dnsName,
      found,
      reason: `the published key differs from the configured key; publish: ${recordHint(expected, expectedType)}`,
    };
  }
  const flags = (tags.get('t') ?? '').split(':');
  return { ok: true, dnsName, found, testing: flags.includes('y') };
}

function recordHint(p: string, type: string): string {
  return `v=DKIM1; k=${type}; p=${p}`;
}
