// tern check-config: every check `tern start` makes (the config, the files it names, listener and
// delivery options, each plugin's init), without opening the queue or binding a port.
import { loadConfig } from '../config.js';
import { warningLogger } from '../log.js';
import { checkMta } from '../mta.js';

export async function runCheckConfig(file: string): Promise<number> {
  const config = await loadConfig(file);
  await checkMta(config, warningLogger());
  process.stdout.write(
    `${file}: valid (${config.listeners.length} listener(s), ${config.plugins.length} plugin(s))\n`,
  );
  return 0;
}
