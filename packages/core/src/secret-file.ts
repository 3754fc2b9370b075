// Files of hashed secrets (the users file, the API keys file): read again whenever they change,
// rewritten atomically with mode 0600, and checked with the same work whether a name is known.
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hashPassword, verifyPassword } from './users.js';

/** A file parsed by `parse`, read again whenever its modification time, size or inode change. */
export class WatchedFile<T> {
  readonly file: string;
  readonly #parse: (text: string, file: string) => T;
  readonly #failure: (message: string) => Error;
  #value: T | undefined;
  #version = '';

  /** `failure` makes the error for a file that cannot be read (the message names the file). */
  constructor(file: string, parse: (text: string, file: string) => T, failure: (message: string) => Error) {
    this.file = file;
    this.#parse = parse;
    this.#failure = failure;
  }

  /** The parsed file as it is now (a new object after each change); throws when it cannot be read or parsed. */
  async current(): Promise<T> {
    const info = await stat(this.file).catch((error: NodeJS.ErrnoException) => {
      throw this.#failure(`${this.file}: ${error.code === 'ENOENT' ? 'file not found' : error.message}`);
    });
    const version = `${info.mtimeMs}:${info.size}:${info.ino}`;
    if (version !== this.#version || this.#value === undefined) {
      this.#value = this.#parse(await readFile(this.file, 'utf8'), this.file);
      this.#version = version;
    }
    return this.#value;
  }
}

/**
 * Rewrites a file of one entry a line: `check` must accept what is there (a file we cannot read
 * back is not overwritten), `change` maps its lines to the new ones. Created 0600 when missing;
 * replaced by a rename, so a reader never sees half a file.
 */
export async function rewriteLines(
  file: string,
  check: (text: string) => void,
  change: (lines: string[]) => string[],
): Promise<void> {
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  check(text);
  const lines = text.split(/\r?\n/).filter((l, i, all) => !(i === all.length - 1 && l === ''));
  const temporary = join(dirname(file), `.${basename(file)}.${process.pid}.${Date.now()}.tmp`);
  await writeFile(temporary, `${change(lines).join('\n')}\n`, { mode: 0o600 });
  await rename(temporary, file);
}

/**
 * Checks a secret against a hash, or against a decoy when there is none (an unknown name), so
 * the time taken does not tell known names from unknown ones. False for the decoy.
 */
export class SecretChecker {
  #decoy: Promise<string> | undefined;

  async verify(secret: string, hash: string | undefined): Promise<boolean> {
    if (hash !== undefined) return verifyPassword(secret, hash);
    this.#decoy ??= hashPassword('decoy secret for unknown names');
    await verifyPassword(secret, await this.#decoy);
    return false;
  }
}
