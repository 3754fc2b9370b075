// Paths in plugin options mean what a user expects: relative to the folder of the config file
// that names them, not to wherever tern was started. The app loads a config inside
// withConfigDir, and plugin factories (run while the config is evaluated) resolve through here.
import { AsyncLocalStorage } from 'node:async_hooks';
import { isAbsolute, resolve } from 'node:path';

const configDir = new AsyncLocalStorage<string>();

/** Runs `load` (importing a config file) with relative option paths starting at `dir`. */
export function withConfigDir<T>(dir: string, load: () => T): T {
  return configDir.run(dir, load);
}

/**
 * A file named in plugin options, as an absolute path: a relative one starts at the folder of
 * the config file being loaded (the working directory when no config is loading, as in a test).
 */
export function resolveConfigPath(path: string): string {
  return isAbsolute(path) ? path : resolve(configDir.getStore() ?? process.cwd(), path);
}
