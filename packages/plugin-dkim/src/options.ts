// The dkim plugin's options: their types, their defaults, and loading the keys they name (the
// schema that checks them is schema.ts), so every mistake stops start-up with the field named.
import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { issuePath, PluginOptionError, parseOptions, resolveConfigPath } from '@tern/plugin-api';
import type { CanonicalizationMode } from './canonicalize.js';
import { ALGORITHM_OF, checkKey, type DkimAlgorithm, parsePrivateKey } from './keys.js';
import { dkimOptionsSchema, domainName } from './schema.js';
import type { SignFunction } from './signer.js';

export const PLUGIN_NAME = 'dkim';

export type Canonicalization = `${CanonicalizationMode}/${CanonicalizationMode}`;

/** One signing key of a domain. Give `key` (PEM text) or `keyFile` (a path), not both. */
export interface DkimKeyOptions {
  readonly selector: string;
  readonly key?: string;
  /** A PEM file; a relative path starts at the folder of the config file. */
  readonly keyFile?: string;
  /** Checked against the key's type; taken from it when left out. */
  readonly algorithm?: DkimAlgorithm;
  /** Default true. A key with `active: false` stays configured (and checkable) but does not sign. */
  readonly active?: boolean;
}

export interface DkimFallbackOptions extends DkimKeyOptions {
  /** The relay's own domain, used as d= when the From domain has no key. */
  readonly domain: string;
}

export interface DkimOptions {
  /** Domain → its key, or its keys (rotation, or RSA and Ed25519 side by side for dual signing). */
  readonly domains?: Readonly<Record<string, DkimKeyOptions | readonly DkimKeyOptions[]>>;
  /** Sign as this domain when the From domain has no key. */
  readonly fallback?: DkimFallbackOptions | readonly DkimFallbackOptions[];
  /** header/body, default 'relaxed/relaxed' (survives the refolding some relays do). */
  readonly canonicalization?: Canonicalization;
  /** Fields to sign when present. Must include From. */
  readonly headers?: readonly string[];
  /** Fields signed once more than they occur (RFC 6376 §8.15), so a field added later breaks the signature. */
  readonly oversign?: readonly string[];
  /** Seconds from signing until the signature expires (x=). No x= when left out. */
  readonly expiresIn?: number;
  /** Sign mail from sub.example.com with example.com's key when sub.example.com has none. Default false. */
  readonly matchParentDomain?: boolean;
  /**
   * Also sign mail from clients that neither authenticated nor come from a trusted network. Default
   * false: signing whatever arrives at the MX would lend our domains' signatures to forged mail.
   */
  readonly signUntrusted?: boolean;
  /**
   * Worker threads of the plugin's own that make the signatures. Default 0: libuv's thread pool
   * signs (shared with the embedded queue's fsync, file I/O and dns.lookup). Threads of its own keep
   * that pool free, at the price of a postMessage each way per signature.
   */
  readonly signingThreads?: number;
  /** Nice value added to the signing threads (Linux), so intake is scheduled first. Default 0. */
  readonly signingNice?: number;
}

/**
 * 0: libuv's thread pool signs. Measured, it costs the event loop less than worker threads (0.05 vs
 * 0.07–0.10 ms per message: postMessage and the message event cost more than queueing a crypto job).
 */
export const DEFAULT_SIGNING_THREADS = 0;

// Fields a reader trusts and that appear once: oversigning them stops anyone adding a second one.
export const DEFAULT_OVERSIGN: readonly string[] = [
  'From',
  'Sender',
  'Reply-To',
  'To',
  'Cc',
  'Subject',
  'Date',
  'Message-ID',
  'MIME-Version',
  'Content-Type',
  'Content-Transfer-Encoding',
  // RFC 8058 §4: one-click unsubscribe works only when both fields are covered by a valid signature.
  'List-Unsubscribe',
  'List-Unsubscribe-Post',
];

/** Signed when present: the oversigned fields and these, which lists and threads may legitimately add. */
export const DEFAULT_HEADERS: readonly string[] = [
  ...DEFAULT_OVERSIGN,
  'In-Reply-To',
  'References',
  'Content-Disposition',
  'List-Id',
  'List-Help',
  'List-Subscribe',
  'List-Post',
  'List-Owner',
  'List-Archive',
  'Feedback-ID',
];

/** A key ready to sign: read, parsed and checked. */
export interface SigningKey {
  /** The d= domain: lower case, A-labels. */
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: DkimAlgorithm;
  readonly privateKey: KeyObject;
  /** RSA modulus size; undefined for Ed25519. */
  readonly bits: number | undefined;
  readonly active: boolean;
  /** Where the key came from: the file path, or 'inline'. For messages. */
  readonly source: string;
  /** The option path of this key, e.g. `domains.example.com[1]`. */
  readonly field: string;
}

/** Options with defaults applied and every key loaded. */
export interface DkimSettings {
  readonly keys: readonly SigningKey[];
  /** Keys by d= domain (fallback keys are not here). */
  readonly byDomain: ReadonlyMap<string, readonly SigningKey[]>;
  readonly fallback: readonly SigningKey[];
  readonly headerCanon: CanonicalizationMode;
  readonly bodyCanon: CanonicalizationMode;
  /** Field names to sign when present, lower case, without repeats. */
  readonly headers: readonly string[];
  /** Lower-case names to sign once more than they occur. */
  readonly oversign: ReadonlySet<string>;
  readonly expiresIn: number | undefined;
  readonly matchParentDomain: boolean;
  readonly signUntrusted: boolean;
  readonly signingThreads: number;
  readonly signingNice: number;
  /** Makes the signatures; libuv's pool when left out (the plugin sets its worker threads here). */
  readonly signer?: SignFunction | undefined;
  /** Things worth a warning at start-up (weak keys, domains without an active key). */
  readonly warnings: readonly string[];
}

/**
 * Validates the options and loads every key. Throws PluginOptionError naming the field, the
 * domain and the file for: bad shapes, unreadable or unparsable keys, keys too small or of the
 * wrong type, an algorithm that does not match its key, and selectors configured twice.
 */
export function loadDkimSettings(input: unknown): DkimSettings {
  const options = parseOptions(PLUGIN_NAME, dkimOptionsSchema, input) as DkimOptions;
  const warnings: string[] = [];
  const byDomain = new Map<string, SigningKey[]>();
  const keys: SigningKey[] = [];

  for (const [configured, entry] of Object.entries(options.domains ?? {})) {
    const domain = domainName(configured) as string;
    const entries: readonly DkimKeyOptions[] = Array.isArray(entry) ? entry : [entry as DkimKeyOptions];
    if (byDomain.has(domain)) {
      throw new PluginOptionError(
        PLUGIN_NAME,
        issuePath(['domains', configured]),
        `domain ${domain} is configured twice: merge its keys into one list`,
      );
    }
    const loaded = entries.map((e, i) =>
      loadKey(
        domain,
        e,
        issuePath(Array.isArray(entry) ? ['domains', configured, i] : ['domains', configured]),
      ),
    );
    checkSelectorsUnique(loaded);
    if (!loaded.some((k) => k.active))
      warnings.push(
        `${issuePath(['domains', configured])}: no active key; mail from ${domain} is signed with the fallback key, if any`,
      );
    byDomain.set(domain, loaded);
    keys.push(...loaded);
  }

  const fallbackEntries: readonly DkimFallbackOptions[] =
    options.fallback === undefined
      ? []
      : Array.isArray(options.fallback)
        ? options.fallback
        : [options.fallback];
  const fallback = fallbackEntries.map((e, i) =>
    loadKey(
      domainName(e.domain) as string,
      e,
      issuePath(Array.isArray(options.fallback) ? ['fallback', i] : ['fallback']),
    ),
  );
  checkSelectorsUnique(fallback);
  keys.push(...fallback);

  for (const key of keys) {
    const check = checkKey(key.privateKey);
    if (check.ok && check.warning)
      warnings.push(`${key.field}: ${key.domain} (${key.source}): ${check.warning}`);
  }

  const [headerCanon, bodyCanon] = (options.canonicalization ?? 'relaxed/relaxed').split('/') as [
    CanonicalizationMode,
    CanonicalizationMode,
  ];
  const oversign = new Set((options.oversign ?? DEFAULT_OVERSIGN).map((h) => h.toLowerCase()));
  // An oversigned field is a signed field: sign it even when the headers list leaves it out.
  const headers = [
    ...new Set([...(options.headers ?? DEFAULT_HEADERS).map((h) => h.toLowerCase()), ...oversign]),
  ];

  return {
    keys,
    byDomain,
    fallback,
    headerCanon,
    bodyCanon,
    headers,
    oversign,
    expiresIn: options.expiresIn,
    matchParentDomain: options.matchParentDomain ?? false,
    signUntrusted: options.signUntrusted ?? false,
    signingThreads: options.signingThreads ?? DEFAULT_SIGNING_THREADS,
    signingNice: options.signingNice ?? 0,
    warnings,
  };
}

/** Validates the options and returns every configured key, for `tern dkim check` and key listings. */
export function loadSigningKeys(options: DkimOptions): SigningKey[] {
  return [...loadDkimSettings(options).keys];
}

function loadKey(domain: string, entry: DkimKeyOptions, field: string): SigningKey {
  const file = entry.keyFile === undefined ? undefined : resolveConfigPath(entry.keyFile);
  // The file as written, and where that is when it was relative.
  const shownFile = file === entry.keyFile ? file : `${entry.keyFile} (${file})`;
  const where = file === undefined ? `key of ${domain}` : `key file ${shownFile} of ${domain}`;
  const keyField = entry.keyFile === undefined ? `${field}.key` : `${field}.keyFile`;
  let pem: string;
  if (entry.keyFile !== undefined) {
    try {
      pem = readFileSync(file as string, 'utf8');
    } catch (error) {
      throw new PluginOptionError(PLUGIN_NAME, keyField, `cannot read ${where}: ${reason(error)}`);
    }
  } else {
    pem = entry.key as string;
  }
  let privateKey: KeyObject;
  try {
    privateKey = parsePrivateKey(pem);
  } catch (error) {
    throw new PluginOptionError(
      PLUGIN_NAME,
      keyField,
      `${where} is not a usable PEM private key (${reason(error)}); an encrypted key must be decrypted first (openssl pkey -in k.pem -out k.plain.pem)`,
    );
  }
  const check = checkKey(privateKey);
  if (!check.ok) throw new PluginOptionError(PLUGIN_NAME, keyField, `${where}: ${check.problem}`);
  const algorithm = ALGORITHM_OF[check.type];
  if (entry.algorithm !== undefined && entry.algorithm !== algorithm) {
    throw new PluginOptionError(
      PLUGIN_NAME,
      `${field}.algorithm`,
      `${entry.algorithm} does not match the ${check.type} ${where} (it signs ${algorithm})`,
    );
  }
  return {
    domain,
    selector: entry.selector.toLowerCase(),
    algorithm,
    privateKey,
    bits: check.bits,
    active: entry.active ?? true,
    source: file ?? 'inline',
    field,
  };
}

function checkSelectorsUnique(keys: readonly SigningKey[]): void {
  const seen = new Set<string>();
  for (const key of keys) {
    const id = `${key.domain} ${key.selector}`;
    if (seen.has(id)) {
      throw new PluginOptionError(
        PLUGIN_NAME,
        `${key.field}.selector`,
        `selector ${key.selector} of ${key.domain} is configured twice; each key needs its own selector`,
      );
    }
    seen.add(id);
  }
}

function reason(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT') return 'no such file';
  if (e?.code === 'EACCES') return 'permission denied';
  return e?.message ?? String(error);
}
