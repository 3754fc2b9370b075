// API keys for HTTP injection: each names the sender domains it may use. The file holds one key
// a line, `id:scrypt$N$r$p$salt$hash:domain,domain` (or `*` for any sender domain), hashed like
// the users file; applications hold `tern_<id>_<secret>`, shown once when the key is made.
import { createHash, randomBytes } from 'node:crypto';
import {
  DEFAULT_SCRYPT_PARAMS,
  hashPassword,
  rewriteLines,
  type ScryptParams,
  SecretChecker,
  WatchedFile,
} from '@tern/core';
import { TernError } from '@tern/plugin-api';

/** One key as the file has it (without its hash). */
export interface ApiKey {
  readonly id: string;
  /** Sender domains the key may send from, lower-cased; `*` for any. */
  readonly domains: readonly string[];
}

export class ApiKeysFileError extends TernError {
  constructor(message: string) {
    super('TERN_ERR_API_KEYS_FILE', message);
  }
}

const ID = /^[A-Za-z0-9-]{1,64}$/;
const DOMAIN = /^(?:\*|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)$/;
const TOKEN = /^tern_([A-Za-z0-9-]{1,64})_([A-Za-z0-9_-]{43})$/;
/** Tokens checked with scrypt are remembered this long (by their SHA-256), so requests stay fast. */
const VERIFIED_TTL_MS = 5 * 60_000;
const VERIFIED_MAX = 1000;

interface Entry extends ApiKey {
  readonly hash: string;
}

/** Parses an API keys file; throws ApiKeysFileError naming the file and line of the first bad entry. */
export function parseApiKeysFile(text: string, file = 'API keys file'): Map<string, Entry> {
  const keys = new Map<string, Entry>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const first = line.indexOf(':');
    const last = line.lastIndexOf(':');
    const id = line.slice(0, first);
    const hash = line.slice(first + 1, last);
    const domains = line
      .slice(last + 1)
      .split(',')
      .map((d) => d.trim().toLowerCase());
    if (
      first < 1 ||
      last === first ||
      !ID.test(id) ||
      !hash.startsWith('scrypt$') ||
      !domains.every((d) => DOMAIN.test(d))
    ) {
      throw new ApiKeysFileError(
        `${file}:${index + 1}: expected id:scrypt$N$r$p$salt$hash:domain,domain (or *)`,
      );
    }
    keys.set(id, { id, hash, domains });
  });
  return keys;
}

/** Whether `key` may send mail from `mailFrom` (its domain is one of the key's, or the key has `*`). */
export function keyMaySend(key: ApiKey, mailFrom: string): boolean {
  if (key.domains.includes('*')) return true;
  const domain = mailFrom.slice(mailFrom.lastIndexOf('@') + 1).toLowerCase();
  return mailFrom.includes('@') && key.domains.includes(domain);
}

/** The keys of a file, read again whenever the file changes (so `tern apikey` takes effect at once). */
export class ApiKeyStore {
  readonly #keys: WatchedFile<Map<string, Entry>>;
  readonly #checker = new SecretChecker();
  #last = new Map<string, Entry>();
  readonly #verified = new Map<string, { id: string; until: number }>();

  private constructor(file: string) {
    this.#keys = new WatchedFile(file, parseApiKeysFile, (message) => new ApiKeysFileError(message));
  }

  get file(): string {
    return this.#keys.file;
  }

  /** Loads the file now, so a missing or malformed file fails at start-up. */
  static async open(file: string): Promise<ApiKeyStore> {
    const store = new ApiKeyStore(file);
    store.#last = await store.#keys.current();
    return store;
  }

  /** The key a token belongs to, or undefined for a wrong or unknown token. */
  async authenticate(token: string): Promise<ApiKey | undefined> {
    try {
      const keys = await this.#keys.current();
      // A removed or replaced key must stop working at once, not when its cache entry lapses.
      if (keys !== this.#last) this.#verified.clear();
      this.#last = keys;
    } catch {
      // A file broken mid-edit keeps the last good keys rather than locking every application out.
    }
    const match = TOKEN.exec(token);
    const entry = match ? this.#last.get(match[1] as string) : undefined;
    const digest = createHash('sha256').update(token).digest('base64');
    const known = this.#verified.get(digest);
    if (entry !== undefined && known?.id === entry.id && known.until > Date.now()) {
      return { id: entry.id, domains: entry.domains };
    }
    // Unknown keys cost one scrypt like known ones, so timing does not tell them apart.
    const valid = await this.#checker.verify(match?.[2] ?? token, entry?.hash);
    if (!valid || entry === undefined) return undefined;
    if (this.#verified.size >= VERIFIED_MAX) this.#verified.clear();
    this.#verified.set(digest, { id: entry.id, until: Date.now() + VERIFIED_TTL_MS });
    return { id: entry.id, domains: entry.domains };
  }

  /** Every key (without hashes). */
  async list(): Promise<ApiKey[]> {
    this.#last = await this.#keys.current();
    return [...this.#last.values()].map(({ id, domains }) => ({ id, domains }));
  }
}

/** A file we cannot read back is not rewritten. */
function check(file: string): (text: string) => void {
  return (text) => void parseApiKeysFile(text, file);
}

/**
 * Makes a key (or replaces the one with this id) for `domains`; resolves with the token the
 * application sends, which is stored nowhere.
 */
export async function addApiKey(
  file: string,
  id: string,
  domains: readonly string[],
  params: ScryptParams = DEFAULT_SCRYPT_PARAMS,
): Promise<string> {
  if (!ID.test(id))
    throw new ApiKeysFileError(`key id ${JSON.stringify(id)}: 1 to 64 letters, digits and dashes`);
  const scopes = domains.map((d) => d.trim().toLowerCase());
  const bad = scopes.find((d) => !DOMAIN.test(d));
  if (scopes.length === 0 || bad !== undefined) {
    throw new ApiKeysFileError(
      `domains: ${bad === undefined ? 'none given' : JSON.stringify(bad)}: sender domains like example.com, or * for any`,
    );
  }
  const secret = randomBytes(32).toString('base64url');
  const line = `${id}:${await hashPassword(secret, params)}:${scopes.join(',')}`;
  await rewriteLines(file, check(file), (lines) => [
    ...lines.filter((l) => !l.trim().startsWith(`${id}:`)),
    line,
  ]);
  return `tern_${id}_${secret}`;
}

/** Removes a key; false when the file had none with this id. */
export async function removeApiKey(file: string, id: string): Promise<boolean> {
  let found = false;
  await rewriteLines(file, check(file), (lines) =>
    lines.filter((l) => {
      const match = l.trim().startsWith(`${id}:`);
      found ||= match;
      return !match;
    }),
  );
  return found;
}
