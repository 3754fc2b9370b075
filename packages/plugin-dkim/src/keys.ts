// DKIM keys: reading and checking private keys, the public key as DNS publishes it (RFC 6376 §3.6.1,
// RFC 8463 §4), and key generation for `tern dkim keygen`.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';
export type DkimKeyType = 'rsa' | 'ed25519';

/** RFC 8301 §3.2: verifiers must handle 1024 to 4096 bits; below 1024 is refused, above may not verify. */
export const RSA_MIN_BITS = 1024;
export const RSA_MAX_BITS = 4096;
/** Below this we sign but warn: several large receivers treat 1024-bit keys as weak. */
export const RSA_RECOMMENDED_BITS = 2048;

export const ALGORITHM_OF: Record<DkimKeyType, DkimAlgorithm> = {
  rsa: 'rsa-sha256',
  ed25519: 'ed25519-sha256',
};

/** A private key's type and size, or why it cannot sign DKIM. */
export type KeyCheck =
  | {
      readonly ok: true;
      readonly type: DkimKeyType;
      readonly bits: number | undefined;
      readonly warning?: string;
    }
  | { readonly ok: false; readonly problem: string };

/** Whether a key can sign DKIM: RSA of 1024–4096 bits or Ed25519. */
export function checkKey(key: KeyObject): KeyCheck {
  const type = key.asymmetricKeyType;
  if (type === 'ed25519') return { ok: true, type, bits: undefined };
  if (type !== 'rsa') {
    return { ok: false, problem: `a ${type ?? 'symmetric'} key cannot sign DKIM; use an RSA or Ed25519 key` };
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < RSA_MIN_BITS) {
    return {
      ok: false,
      problem: `RSA key of ${bits} bits is too small (RFC 8301: at least ${RSA_MIN_BITS})`,
    };
  }
  if (bits > RSA_MAX_BITS) {
    return {
      ok: false,
      problem: `RSA key of ${bits} bits is larger than verifiers must support (RFC 8301: at most ${RSA_MAX_BITS})`,
    };
  }
  if (bits < RSA_RECOMMENDED_BITS) {
    return {
      ok: true,
      type,
      bits,
      warning: `RSA key of ${bits} bits is weak; use ${RSA_RECOMMENDED_BITS} bits (tern dkim keygen --bits ${RSA_RECOMMENDED_BITS})`,
    };
  }
  return { ok: true, type, bits };
}

/** Parses a PEM private key (PKCS#8 or PKCS#1). Throws with node's reason when it is not one. */
export function parsePrivateKey(pem: string): KeyObject {
  const key = createPrivateKey({ key: pem, format: 'pem' });
  if (key.type !== 'private') throw new Error('not a private key');
  return key;
}

/**
 * The p= value for a key: base64 of the DER SubjectPublicKeyInfo for RSA (what every verifier
 * accepts), the bare 32-byte public key for Ed25519 (RFC 8463 §4.2). Accepts a private or
 * public key, as a KeyObject or PEM.
 */
export function publicKeyBase64(key: KeyObject | string): string {
  const pub = toPublicKey(key);
  if (pub.asymmetricKeyType === 'ed25519') {
    const { x } = pub.export({ format: 'jwk' });
    if (typeof x !== 'string') throw new Error('Ed25519 key without a public part');
    return Buffer.from(x, 'base64url').toString('base64');
  }
  if (pub.asymmetricKeyType === 'rsa') return pub.export({ type: 'spki', format: 'der' }).toString('base64');
  throw new Error(`a ${pub.asymmetricKeyType ?? 'symmetric'} key cannot be published for DKIM`);
}

/** The TXT record that publishes a key: `v=DKIM1; k=rsa; p=…` or `v=DKIM1; k=ed25519; p=…`. */
export function dnsRecordFor(key: KeyObject | string): string {
  const pub = toPublicKey(key);
  const k = pub.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa';
  return `v=DKIM1; k=${k}; p=${publicKeyBase64(pub)}`;
}

/** Where a selector's key is published: `selector._domainkey.domain`. */
export function dnsNameFor(domain: string, selector: string): string {
  return `${selector}._domainkey.${domain.replace(/\.$/, '')}`.toLowerCase();
}

export interface GenerateKeyOptions {
  readonly domain: string;
  readonly selector: string;
  /** Default 'rsa': every receiver verifies RSA, not every one verifies Ed25519 yet. */
  readonly type?: DkimKeyType;
  /** RSA only; default 2048. */
  readonly bits?: number;
}

export interface GeneratedKey {
  readonly type: DkimKeyType;
  readonly algorithm: DkimAlgorithm;
  readonly bits: number | undefined;
  /** PKCS#8 PEM, to store with writeKey. */
  readonly privateKeyPem: string;
  /** The p= value. */
  readonly publicKeyBase64: string;
  /** The TXT record's name, `selector._domainkey.domain`. */
  readonly dnsName: string;
  /** The TXT record's value. */
  readonly txtRecord: string;
}

/** Makes a new signing key and the DNS record that publishes it (`tern dkim keygen`). */
export function generateKey(options: GenerateKeyOptions): GeneratedKey {
  const type = options.type ?? 'rsa';
  if (type !== 'rsa' && type !== 'ed25519')
    throw new RangeError(`key type must be rsa or ed25519, not ${type}`);
  if (type === 'ed25519' && options.bits !== undefined) {
    throw new RangeError('--bits applies to RSA keys only; Ed25519 keys have a fixed size');
  }
  const bits = type === 'rsa' ? (options.bits ?? RSA_RECOMMENDED_BITS) : undefined;
  if (bits !== undefined && (!Number.isInteger(bits) || bits < RSA_MIN_BITS || bits > RSA_MAX_BITS)) {
    throw new RangeError(`RSA key size must be ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits, not ${bits}`);
  }
  const { privateKey } =
    type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: bits as number })
      : generateKeyPairSync('ed25519');
  return {
    type,
    algorithm: ALGORITHM_OF[type],
    bits,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyBase64: publicKeyBase64(privateKey),
    dnsName: dnsNameFor(options.domain, options.selector),
    txtRecord: dnsRecordFor(privateKey),
  };
}

export interface WriteKeyOptions {
  /** Replace an existing file. Off by default: overwriting a live key breaks signing until DNS follows. */
  readonly overwrite?: boolean;
}

/** Stores a private key readable by its owner only (mode 0600). Refuses to replace a file unless told. */
export async function writeKey(
  path: string,
  privateKeyPem: string,
  options: WriteKeyOptions = {},
): Promise<void> {
  // Check the text first so a typo never leaves a half-useful file behind.
  parsePrivateKey(privateKeyPem);
  await writeFile(path, privateKeyPem, { mode: 0o600, flag: options.overwrite ? 'w' : 'wx' });
  // The mode above applies only to a new file; an overwritten one keeps its old mode otherwise.
  await chmod(path, 0o600);
}

/** The public half of a key given as a KeyObject or PEM, private or public. */
export function toPublicKey(key: KeyObject | string): KeyObject {
  if (typeof key === 'string') return createPublicKey(key);
  return key.type === 'public' ? key : createPublicKey(key);
}
