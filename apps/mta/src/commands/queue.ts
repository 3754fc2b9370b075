// tern queue export / import: move unfinished mail between backends (embedded -> Redis).
import { exportQueue, importQueue } from '@tern/queue';
import { withConfig } from '../config.js';
import { createLogger } from '../log.js';
import { embeddedQueuePath, openQueue } from '../mta.js';

export async function runQueueExport(file: string, out: string): Promise<number> {
  return withConfig(file, async (config) => {
    if ((config.queue?.backend ?? 'embedded') !== 'embedded') {
      process.stderr.write(
        'tern queue export: only the embedded backend exports; a Redis queue is already shared\n',
      );
      return 2;
    }
    // The store must not be in use: opening it fails with a clear error while tern runs.
    const summary = await exportQueue(embeddedQueuePath(config), out);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  });
}

export async function runQueueImport(file: string, input: string): Promise<number> {
  return withConfig(file, async (config) => {
    const logger = createLogger(config.log?.level ?? 'warn');
    const queue = await openQueue(config, logger);
    try {
      const summary = await importQueue(input, queue);
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      return 0;
    } finally {
      await queue.close();
    }
  });
}
