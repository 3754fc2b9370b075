// Paths in plugin options mean what a user expects: relative to the folder of the config file
// that names them, not to wherever tern was started. The app loads a config inside
// withConfigDir, and plugin factories (run while the config is evaluated) resolve through here.
import { AsyncLocalStorage } from 'node:async_hooks';
import { isAbsolute, resolve } from 'node:path';

const configDir = new AsyncLocalStorage<string>();
/** Loads running now: the storage is switched off when the last one settles. */
let loading = 0;

/**
 * Runs `load` (importing a config file) with relative option paths starting at `dir`. Once it has
 * settled (and no other load runs) the storage is disabled: on Node 20 and 22 an enabled
 * AsyncLocalStorage keeps async hooks on for the whole process, which costs a hook call on every
 * promise and socket of every SMTP session. Work a factory leaves running after the load resolves
 * paths from the working directory.
 */
export function withConfigDir<T>(dir: string, load: () => T): T {
  loading += 1;
  let result: T;
  try {
    result = configDir.run(dir, load);
  } catch (error) {
    loaded();
    throw error;
  }
  const pending = result as { then?: unknown } | null | undefined;
  if (typeof pending?.then === 'function') (result as PromiseLike<unknown>).then(loaded, loaded);
  else loaded();
  return result;
}

function loaded(): void {
  loading -= 1;
  if (loading === 0) configDir.disable();
}

/**
 * A file named in plugin options, as an absolute path: a relative one starts at the folder of
 * the config file being loaded (the working directory when no config is loading, as in a test).
 */
export function resolveConfigPath(path: string): string {
  return isAbsolute(path) ? path : resolve(configDir.getStore() ?? process.cwd(), path);
}
