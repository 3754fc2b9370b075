// What a TLS connection must prove, and the check of a live connection against it. Every check runs
// after the handshake (node is told not to reject, so one code path sees every outcome) and before a
// single byte of mail is sent; a mandatory check that fails closes the connection.
import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { type TlsaRecord, verifyDane } from './dane.js';

/**
 * TLS-RPT (RFC 8460 §4.3) result types, the closed set every policy outcome is recorded with.
 * `success` is not among them: a verdict that is ok is a success.
 */
export type TlsFailureType =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'tlsa-invalid'
  | 'dnssec-invalid'
  | 'dane-required'
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

/**
 * What the server must prove once TLS is up:
 * - `encrypt`: nothing (TLS only);
 * - `pkix`: a chain to the trusted CAs, in date, naming one of `names` (a name starting with '.'
 *   matches any name below it);
 * - `dane`: a match with one of the usable TLSA `records` (RFC 7672 §3).
 */
export type TlsCheck =
  | { readonly kind: 'encrypt' }
  | { readonly kind: 'pkix'; readonly names: readonly string[] }
  | { readonly kind: 'dane'; readonly records: readonly TlsaRecord[]; readonly names: readonly string[] };

/** The outcome of a check: `authenticated` is false for `encrypt` (TLS without knowing who answered). */
export type TlsVerdict =
  | { readonly ok: true; readonly authenticated: boolean; readonly detail: string }
  | { readonly ok: false; readonly failure: TlsFailureType; readonly detail: string };

/** Checks an established TLS connection. */
export function verifyPeer(socket: TLSSocket, check: TlsCheck): TlsVerdict {
  switch (check.kind) {
    case 'encrypt':
      return { ok: true, authenticated: false, detail: 'encrypted, certificate not checked' };
    case 'dane':
      return verifyDane(peerChain(socket), check.records, check.names);
    case 'pkix':
      return verifyPkix(socket, check.names);
  }
}

function verifyPkix(socket: TLSSocket, names: readonly string[]): TlsVerdict {
  if (!socket.authorized) {
    // node gives the OpenSSL code as a string here, whatever its type says.
    const code = String(socket.authorizationError ?? 'UNKNOWN');
    const known = pkixFailure(code);
    return {
      ok: false,
      failure: known?.[0] ?? 'validation-failure',
      detail: `certificate not accepted: ${known?.[1] ?? code}`,
    };
  }
  const leaf = socket.getPeerX509Certificate();
  if (!leaf)
    return { ok: false, failure: 'validation-failure', detail: 'the server presented no certificate' };
  if (!names.some((name) => matchesName(leaf, name))) {
    const presented = leaf.subjectAltName ?? leaf.subject.replace(/\n/g, ', ');
    return {
      ok: false,
      failure: 'certificate-host-mismatch',
      detail: `certificate (${presented}) does not name ${names.join(' or ')}`,
    };
  }
  return { ok: true, authenticated: true, detail: 'certificate verified' };
}

const NOT_TRUSTED = 'certificate-not-trusted';
/** OpenSSL verification codes: the TLS-RPT result type and words for people. */
const PKIX_ERRORS: Readonly<Record<string, readonly [TlsFailureType, string]>> = {
  CERT_HAS_EXPIRED: ['certificate-expired', 'certificate has expired'],
  CERT_NOT_YET_VALID: ['certificate-expired', 'certificate is not yet valid'],
  DEPTH_ZERO_SELF_SIGNED_CERT: [NOT_TRUSTED, 'self-signed certificate'],
  SELF_SIGNED_CERT_IN_CHAIN: [NOT_TRUSTED, 'self-signed certificate in the chain'],
  UNABLE_TO_GET_ISSUER_CERT: [NOT_TRUSTED, 'issuer certificate not found'],
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: [NOT_TRUSTED, 'issuer is not a trusted CA'],
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: [NOT_TRUSTED, 'unable to verify the first certificate'],
  CERT_UNTRUSTED: [NOT_TRUSTED, 'certificate not trusted'],
  CERT_SIGNATURE_FAILURE: [NOT_TRUSTED, 'certificate signature failure'],
  CERT_REVOKED: [NOT_TRUSTED, 'certificate revoked'],
  INVALID_CA: [NOT_TRUSTED, 'invalid CA certificate'],
};

/** The TLS-RPT result type and words for an OpenSSL verification code, when it is one. */
export function pkixFailure(code: string): readonly [TlsFailureType, string] | undefined {
  return Object.hasOwn(PKIX_ERRORS, code) ? PKIX_ERRORS[code] : undefined;
}

/**
 * True when `cert` names `name`: exactly (a wildcard only as the whole left-most label, RFC 6125
 * §6.4.3 as RFC 7672 §3.2.3 allows), or, for a `.suffix` pattern, with any DNS name below it.
 */
export function matchesName(cert: X509Certificate, name: string): boolean {
  const wanted = name.toLowerCase().replace(/\.$/, '');
  if (!wanted.startsWith('.')) return cert.checkHost(wanted, { partialWildcards: false }) !== undefined;
  return dnsNames(cert).some((dns) => dns.toLowerCase().replace(/^\*\./, 'x.').endsWith(wanted));
}

function dnsNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4));
}

/** The chain as the server presented it (leaf first), without repeating a self-signed top. */
export function peerChain(socket: TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  // A chain is a handful of certificates; the bound only guards against a loop in what node built.
  while (cert?.raw && !seen.has(cert.fingerprint256) && chain.length < 16) {
    seen.add(cert.fingerprint256);
    chain.push(new X509Certificate(cert.raw));
    cert = cert.issuerCertificate;
  }
  return chain;
}
