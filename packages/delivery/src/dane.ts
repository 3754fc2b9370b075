// DANE for SMTP (RFC 7672, RFC 6698): TLSA records of an MX host looked up through a validating
// resolver, and a server's certificate chain matched against them. Only DANE-TA(2) and DANE-EE(3) are
// usable for SMTP (RFC 7672 §3.1.3); PKIX-TA(0)/PKIX-EE(1) records are ignored.
import { createHash, createPublicKey, type KeyObject, type X509Certificate } from 'node:crypto';
import type { DnsClient } from './dns-client.js';
import { matchesName, type TlsVerdict } from './tls-check.js';

/** One TLSA record (RFC 6698 §2.1). */
export interface TlsaRecord {
  /** 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE. */
  readonly usage: number;
  /** 0 full certificate, 1 SubjectPublicKeyInfo. */
  readonly selector: number;
  /** 0 exact, 1 SHA-256, 2 SHA-512. */
  readonly matchingType: number;
  readonly data: Buffer;
}

/**
 * What the TLSA lookup of one host means for the connection (RFC 7672 §2.2):
 * - `usable`: secure TLSA records, some usable: TLS is mandatory and the certificate must match;
 * - `unusable`: secure TLSA records, none usable: TLS is still mandatory, without authentication;
 * - `none`: no DANE for this host (insecure answer, or securely no records);
 * - `failed`: the lookup failed or the answer was bogus: the host must not be used now.
 */
export type TlsaLookup =
  | { readonly kind: 'usable'; readonly records: readonly TlsaRecord[]; readonly all: readonly TlsaRecord[] }
  | { readonly kind: 'unusable'; readonly all: readonly TlsaRecord[] }
  | { readonly kind: 'none'; readonly reason: 'insecure' | 'absent' }
  | { readonly kind: 'failed'; readonly code: string };

/** Usage 2 or 3, selector 0 or 1, matching type 0, 1 or 2 with data of the digest's length. */
export function isUsable(record: TlsaRecord): boolean {
  if (record.usage !== 2 && record.usage !== 3) return false;
  if (record.selector !== 0 && record.selector !== 1) return false;
  if (record.matchingType === 0) return record.data.length > 0;
  if (record.matchingType === 1) return record.data.length === 32;
  if (record.matchingType === 2) return record.data.length === 64;
  return false;
}

/** Presentation form, `3 1 1 <hex>`: for logs and TLS-RPT policy strings. */
export function tlsaText(record: TlsaRecord): string {
  return `${record.usage} ${record.selector} ${record.matchingType} ${record.data.toString('hex')}`;
}

/** The TLSA records at `_<port>._tcp.<host>` and what they mean. */
export async function lookupTlsa(client: DnsClient, host: string, port: number): Promise<TlsaLookup> {
  const answer = await client.query(`_${port}._tcp.${host}`, 'TLSA');
  if (answer.kind === 'temporary') return { kind: 'failed', code: answer.code };
  // RFC 7672 §2.2: insecure TLSA records are not used (an attacker could have made them up).
  if (!answer.secure) return { kind: 'none', reason: 'insecure' };
  if (answer.kind !== 'records') return { kind: 'none', reason: 'absent' };
  const all = answer.records.flatMap((r): TlsaRecord[] => {
    const data = r.data as { usage?: number; selector?: number; matchingType?: number; certificate?: Buffer };
    if (!Buffer.isBuffer(data.certificate)) return [];
    return [
      {
        usage: data.usage ?? -1,
        selector: data.selector ?? -1,
        matchingType: data.matchingType ?? -1,
        data: data.certificate,
      },
    ];
  });
  const usable = all.filter(isUsable);
  if (usable.length === 0) return { kind: 'unusable', all };
  return { kind: 'usable', records: usable, all };
}

/**
 * Matches a server's chain (leaf first, as presented) against usable TLSA records (RFC 7672 §3.1):
 * DANE-EE(3) authenticates the leaf's key or certificate alone, without names or dates; DANE-TA(2)
 * names a trust anchor in the chain (or, as a bare public key, the key that signed its top), and
 * the leaf must chain to it, be in date, and carry one of `names` (RFC 7672 §3.2).
 */
export function verifyDane(
  chain: readonly X509Certificate[],
  records: readonly TlsaRecord[],
  names: readonly string[],
  now: number = Date.now(),
): TlsVerdict {
  const leaf = chain[0];
  if (!leaf) return { ok: false, failure: 'tlsa-invalid', detail: 'the server presented no certificate' };
  for (const record of records) {
    if (record.usage === 3 && matches(record, leaf)) {
      return { ok: true, authenticated: true, detail: `DANE-EE matched (${describe(record)})` };
    }
  }
  let taProblem: TlsVerdict | undefined;
  for (const record of records) {
    if (record.usage !== 2) continue;
    const anchor = findAnchor(chain, record);
    if (anchor === undefined) continue;
    const problem = checkPath(chain, anchor, names, now);
    if (problem === undefined) {
      return { ok: true, authenticated: true, detail: `DANE-TA matched (${describe(record)})` };
    }
    taProblem ??= problem;
  }
  if (taProblem) return taProblem;
  return {
    ok: false,
    failure: 'tlsa-invalid',
    detail: `the certificate matches none of the ${records.length} usable TLSA record(s)`,
  };
}

function describe(record: TlsaRecord): string {
  return `${record.usage} ${record.selector} ${record.matchingType}`;
}

function selected(record: TlsaRecord, cert: X509Certificate): Buffer {
  return record.selector === 0 ? cert.raw : cert.publicKey.export({ type: 'spki', format: 'der' });
}

function digest(record: TlsaRecord, data: Buffer): Buffer {
  if (record.matchingType === 1) return createHash('sha256').update(data).digest();
  if (record.matchingType === 2) return createHash('sha512').update(data).digest();
  return data;
}

function matches(record: TlsaRecord, cert: X509Certificate): boolean {
  return digest(record, selected(record, cert)).equals(record.data);
}

/**
 * Where the trust anchor sits: the index of the matching certificate in the chain (not the leaf), or
 * `chain.length` when a full public key (2 1 0) signed the chain's top certificate.
 */
function findAnchor(chain: readonly X509Certificate[], record: TlsaRecord): number | undefined {
  for (let i = 1; i < chain.length; i++) {
    if (matches(record, chain[i] as X509Certificate)) return i;
  }
  if (record.selector === 1 && record.matchingType === 0) {
    let key: KeyObject;
    try {
      key = createPublicKey({ key: record.data, format: 'der', type: 'spki' });
    } catch {
      return undefined;
    }
    const top = chain.at(-1) as X509Certificate;
    if (top.verify(key)) return chain.length;
  }
  return undefined;
}

/** Every certificate below the anchor is signed by the next one and in date; the leaf names one of `names`. */
function checkPath(
  chain: readonly X509Certificate[],
  anchor: number,
  names: readonly string[],
  now: number,
): TlsVerdict | undefined {
  for (let i = 0; i < anchor; i++) {
    const cert = chain[i] as X509Certificate;
    const issuer = chain[i + 1];
    if (issuer && !(cert.checkIssued(issuer) && cert.verify(issuer.publicKey))) {
      return {
        ok: false,
        failure: 'tlsa-invalid',
        detail: `the chain is broken below the DANE-TA trust anchor (${cert.subject.replace(/\n/g, ', ')})`,
      };
    }
    if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) {
      return {
        ok: false,
        failure: 'certificate-expired',
        detail: `a certificate below the DANE-TA trust anchor is not valid now (${cert.validFrom} to ${cert.validTo})`,
      };
    }
  }
  const leaf = chain[0] as X509Certificate;
  if (!names.some((name) => matchesName(leaf, name))) {
    return {
      ok: false,
      failure: 'certificate-host-mismatch',
      detail: `the certificate chains to the DANE-TA anchor but names none of ${names.join(', ')}`,
    };
  }
  return undefined;
}
