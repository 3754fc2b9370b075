// The built-in user store: a users file of `name:scrypt$N$r$p$salt$hash` lines, salted scrypt from
// node:crypto, constant-time comparison, and the same work for unknown users as for known ones.
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';
import { TernError } from '@tern/plugin-api';
import { rewriteLines, SecretChecker, WatchedFile } from './secret-file.js';

/** What the listener asks when no auth hook decided. */
export interface UserStore {
  /** True only for a known user with this password. Never throws for a wrong password. */
  authenticate(username: string, password: string): Promise<boolean>;
}

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** 32 MiB of memory and ~50–100 ms per hash on current hardware; raising them later only needs new hashes. */
export const DEFAULT_SCRYPT_PARAMS: ScryptParams = { N: 32768, r: 8, p: 1 };

const KEY_LENGTH = 32;
const SALT_LENGTH = 16;
const USERNAME = /^[^\s:\x00-\x1f\x7f]{1,256}$/;

export class UsersFileError extends TernError {
  constructor(message: string) {
    super('TERN_ERR_USERS_FILE', message);
  }
}

function scryptAsync(
  password: string,
  salt: Buffer,
  length: number,
  options: ScryptOptions,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, length, options, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

function scryptOptions({ N, r, p }: ScryptParams): ScryptOptions {
  // node refuses anything above maxmem (32 MiB by default); scrypt needs 128·N·r bytes plus slack.
  return { N, r, p, maxmem: 128 * N * r * p + 16 * 1024 * 1024 };
}

/** Hashes a password as `scrypt$N$r$p$salt$hash` (salt and hash in base64). */
export async function hashPassword(
  password: string,
  params: ScryptParams = DEFAULT_SCRYPT_PARAMS,
): Promise<string> {
  const salt = randomBytes(SALT_LENGTH);
  const hash = await scryptAsync(password, salt, KEY_LENGTH, scryptOptions(params));
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

interface ParsedHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

function parseHash(encoded: string): ParsedHash | undefined {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const isPowerOfTwo = Number.isInteger(N) && N > 1 && (N & (N - 1)) === 0;
  if (!isPowerOfTwo || !Number.isInteger(r) || r < 1 || !Number.isInteger(p) || p < 1) return undefined;
  // Bounds keep a hand-edited line from making one AUTH cost gigabytes.
  if (N > 1 << 20 || r > 32 || p > 16) return undefined;
  const salt = Buffer.from(parts[4] ?? '', 'base64');
  const hash = Buffer.from(parts[5] ?? '', 'base64');
  if (salt.length < 8 || hash.length < 16) return undefined;
  return { params: { N, r, p }, salt, hash };
}

/** Checks a password against an encoded hash in constant time (for hashes of equal length). */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const parsed = parseHash(encoded);
  if (!parsed) return false;
  const candidate = await scryptAsync(
    password,
    parsed.salt,
    parsed.hash.length,
    scryptOptions(parsed.params),
  );
  return timingSafeEqual(candidate, parsed.hash);
}

/** Parses a users file; throws UsersFileError naming the file and line of the first bad entry. */
export function parseUsersFile(text: string, file = 'users file'): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon < 1 || !USERNAME.test(name) || !parseHash(hash)) {
      throw new UsersFileError(`${file}:${index + 1}: expected user:scrypt$N$r$p$salt$hash`);
    }
    users.set(name, hash);
  });
  return users;
}

/**
 * Users from a file, re-read whenever the file changes (so `tern user add` takes effect without
 * a restart). Unknown users cost one scrypt like known ones, so timing does not tell them apart.
 */
export class FileUserStore implements UserStore {
  readonly #users: WatchedFile<Map<string, string>>;
  readonly #checker = new SecretChecker();
  #last = new Map<string, string>();

  private constructor(file: string) {
    this.#users = new WatchedFile(file, parseUsersFile, (message) => new UsersFileError(message));
  }

  get file(): string {
    return this.#users.file;
  }

  /** Loads the file now, so a missing or malformed file fails at start-up. */
  static async open(file: string): Promise<FileUserStore> {
    const store = new FileUserStore(file);
    store.#last = await store.#users.current();
    return store;
  }

  get size(): number {
    return this.#last.size;
  }

  async authenticate(username: string, password: string): Promise<boolean> {
    try {
      this.#last = await this.#users.current();
    } catch {
      // A file broken mid-edit keeps the last good user list rather than locking everyone out.
    }
    return this.#checker.verify(password, this.#last.get(username));
  }
}

/**
 * Adds a user to a users file, or changes the password of an existing one. Creates the file
 * (mode 0600) when missing and replaces it atomically, so a running listener never reads half a file.
 */
export async function addUser(
  file: string,
  username: string,
  password: string,
  params: ScryptParams = DEFAULT_SCRYPT_PARAMS,
): Promise<void> {
  if (!USERNAME.test(username)) {
    throw new UsersFileError(
      `user name ${JSON.stringify(username)}: 1 to 256 characters without spaces, colons or control characters`,
    );
  }
  if (password === '') throw new UsersFileError('the password must not be empty');
  const line = `${username}:${await hashPassword(password, params)}`;
  await rewriteLines(
    file,
    (text) => parseUsersFile(text, file), // refuse to rewrite a file we cannot read back
    (lines) => {
      const index = lines.findIndex((l) => l.trim().startsWith(`${username}:`));
      return index === -1 ? [...lines, line] : lines.map((l, i) => (i === index ? line : l));
    },
  );
}
