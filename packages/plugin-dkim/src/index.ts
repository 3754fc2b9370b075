// @tern/plugin-dkim: DKIM signing (RSA-SHA256, Ed25519-SHA256) at the queue stage, and the key and
// DNS functions behind `tern dkim keygen` and `tern dkim check`.
export type { CanonicalizationMode } from './canonicalize.js';
export { BodyCanonicalizer } from './canonicalize.js';
export type { CheckDnsRecordOptions, DnsRecordCheck, DnsResolverOptions } from './dns-check.js';
export { checkDnsRecord } from './dns-check.js';
export type {
  DkimAlgorithm,
  DkimKeyType,
  GeneratedKey,
  GenerateKeyOptions,
  WriteKeyOptions,
} from './keys.js';
export {
  dnsNameFor,
  dnsRecordFor,
  generateKey,
  publicKeyBase64,
  RSA_MAX_BITS,
  RSA_MIN_BITS,
  RSA_RECOMMENDED_BITS,
  writeKey,
} from './keys.js';
export type {
  Canonicalization,
  DkimFallbackOptions,
  DkimKeyOptions,
  DkimOptions,
  DkimSettings,
  SigningKey,
} from './options.js';
export { DEFAULT_HEADERS, DEFAULT_OVERSIGN, loadDkimSettings, loadSigningKeys } from './options.js';
export { dkim, signingKeysOf } from './plugin.js';
export { dkimOptionsSchema } from './schema.js';
export type { AddedSignature, SignatureSettings } from './sign.js';
export { bodyHash, signMessage } from './sign.js';
