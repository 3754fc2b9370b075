// tern queue export / import: move unfinished mail between backends (embedded -> Redis).
import { parseArgs } from 'node:util';
import { exportQueue, importQueue } from '@tern/queue';
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { embeddedQueuePath, openQueue } from '../mta.js';
import { isQueueOperation, runQueueOperation } from '../ops/queue-cli.js';

export async function runQueue(argv: string[]): Promise<number> {
  const [action, ...rest] = argv;
  // Operator actions go through the admin API of a running tern (src/ops/queue-cli.ts).
  if (isQueueOperation(action)) return runQueueOperation(action, rest);
  const { values } = parseArgs({
    args: rest,
    options: { config: { type: 'string', short: 'c' }, out: { type: 'string' }, in: { type: 'string' } },
  });
  if (!values.config)
    throw Object.assign(new Error('queue needs --config FILE'), { code: 'ERR_PARSE_ARGS_USAGE' });
  const config = await loadConfig(values.config);
  if (action === 'export') {
    if (!values.out)
      throw Object.assign(new Error('export needs --out FILE'), { code: 'ERR_PARSE_ARGS_USAGE' });
    if ((config.queue?.backend ?? 'embedded') !== 'embedded') {
      process.stderr.write(
        'tern queue export: only the embedded backend exports; a Redis queue is already shared\n',
      );
      return 2;
    }
    // The store must not be in use: opening it fails with a clear error while tern runs.
    const summary = await exportQueue(embeddedQueuePath(config), values.out);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  }
  const logger = createLogger(config.log?.level ?? 'warn');
  const queue = await openQueue(config, logger);
  try {
    if (action === 'import') {
      if (!values.in)
        throw Object.assign(new Error('import needs --in FILE'), { code: 'ERR_PARSE_ARGS_USAGE' });
      const summary = await importQueue(values.in, queue);
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      return 0;
    }
    throw Object.assign(
      new Error(
        'queue takes summary, list, inspect, retry, hold, release, delete, bounce, reroute, suspend, resume, export or import',
      ),
      { code: 'ERR_PARSE_ARGS_USAGE' },
    );
  } finally {
    await queue.close();
  }
}
