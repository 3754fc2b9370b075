// tern start: load and validate the config, start the MTA, reload on SIGHUP (and with --watch
// when a config source changes), stop cleanly on SIGTERM/SIGINT, drain for a rolling restart on
// SIGUSR2. With `processes` above 1 this process becomes the primary of a cluster (cluster.ts)
// and each worker runs this same command as one MTA (cluster-worker.ts), or, with
// `processes: { intake, delivery }`, one side of it: its listeners or its delivery worker.
import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Processes } from '../cluster.js';
import { clusterWorker } from '../cluster-worker.js';
import { ConfigError, checkProcesses, loadConfig, type ResolvedConfig } from '../config.js';
import { createLogger } from '../log.js';
import { isInternalPlugin, type StartOptions, startMta } from '../mta.js';
import { pluginInstances, shutdownPlugins } from '../plugins.js';

export interface RunStartOptions extends StartOptions {
  /** Reload when the config file or a local file it imports changes. */
  readonly watch?: boolean;
  /** Worker processes (`--processes`): in place of config.processes. */
  readonly processes?: Processes;
}

export async function runStart(file: string, options: RunStartOptions = {}): Promise<number> {
  const sources = new Set<string>();
  const config = await loadConfig(file, options.watch ? { sources } : {});
  const worker = clusterWorker();
  if (!worker && (await startedCluster(file, config, options))) return -1;
  const logger = worker
    ? createLogger(config.log?.level).child({ worker: worker.slot })
    : createLogger(config.log?.level);
  const { watch: watching, processes: _processes, ...startOptions } = options;
  const role = worker?.role ?? 'all';
  const mta = await startMta(config, logger, {
    ...startOptions,
    // A role is the slot's, whatever the command line said (startedCluster refuses --no-worker with roles).
    ...(role === 'intake' ? { worker: false } : role === 'delivery' ? { worker: true, listen: false } : {}),
    configFile: file,
    ...(worker ? { cluster: worker } : {}),
  });

  const queue = { backend: mta.queue.kind, location: mta.queue.location };
  const plugins = mta.plugins.plugins.map((p) => p.name).filter((name) => !isInternalPlugin(name));
  const fields = {
    listeners: mta.listeners,
    queue,
    plugins,
    hostname: mta.hostname,
    admin: mta.adminUrl,
    injection: mta.injectionUrl,
  };
  const lines = [
    `tern ${mta.hostname}: started`,
    ...mta.listeners.map(
      (l) =>
        `  listening: ${l.name} (${l.kind}) on ${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`,
    ),
    `  queue: ${queue.backend} at ${queue.location}${role === 'intake' ? ' (delivery in separate processes)' : options.worker === false ? ' (intake only: no delivery worker)' : ''}`,
    `  plugins: ${plugins.length > 0 ? plugins.join(', ') : '(none)'}`,
    mta.adminUrl
      ? `  dashboard: ${mta.adminUrl}/ (admin API ${mta.adminUrl}/api/, metrics ${mta.adminUrl}/metrics; token from config.admin)`
      : '  dashboard: off (add admin: { tokenFile: "admin.token" } to the config for the dashboard, admin API and /metrics)',
    ...(mta.injectionUrl
      ? [`  HTTP injection: POST ${mta.injectionUrl}/v1/messages (API keys from config.http.apiKeysFile)`]
      : []),
  ];
  if (worker) {
    // The primary says "tern started" once every worker listens, with the admin worker's banner.
    logger.info({ ...fields, role }, 'worker started');
    if (worker.admin) worker.started({ lines, fields });
    else worker.started({ lines: [], fields: {} });
  } else {
    logger.info(fields, 'tern started');
    process.stderr.write(`${lines.join('\n')}\n`);
  }

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    const drain = signal === 'SIGUSR2';
    logger.info(
      { signal },
      drain
        ? 'draining: no new connections, finishing open transactions and active deliveries; queued mail stays for the other nodes'
        : 'stopping: no new connections, finishing open transactions',
    );
    (drain ? mta.drain() : mta.close()).then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'unclean stop');
        process.exit(1);
      },
    );
  };
  // SIGHUP: read the config again and apply what can change live; a bad config changes nothing.
  // Reloads run one at a time; loading has a deadline (loadConfig), so a config whose top-level
  // await never settles is refused and the next SIGHUP is still heard.
  // --watch reloads the same way when a file the last load read changes, and then watches what
  // that load read (a plugin may import a new file; a refused config is watched for its fix).
  let reloading = Promise.resolve();
  let watcher: SourceWatcher | undefined;
  const reload = (): void => {
    reloading = reloading.then(async () => {
      const read = new Set<string>();
      try {
        const next = await loadConfig(file, watching ? { sources: read } : {});
        const result = await mta.reload(next);
        for (const note of result.needsRestart) logger.warn(`reload: ${note}`);
      } catch (error) {
        logger.error(
          { err: error },
          `reload refused, still running the previous config: ${(error as Error).message}`,
        );
      } finally {
        watcher?.watch(read);
      }
    });
  };
  process.on('SIGHUP', reload);
  if (watching) {
    watcher = new SourceWatcher((changed) => {
      logger.info({ file: changed }, 'watch: a config source changed, reloading');
      reload();
    });
    watcher.watch(sources);
    logger.info({ files: [...sources] }, 'watch: reloading when one of these files changes');
  }
  process.on('SIGTERM', () => {
    watcher?.close();
    stop('SIGTERM');
  });
  process.on('SIGINT', () => stop('SIGINT'));
  // A drain for rolling restarts (systemctl reload-or-restart is not it: see deploy/tern.service).
  process.on('SIGUSR2', () => stop('SIGUSR2'));
  // In a cluster the admin API's drain is every worker's: the primary passes SIGUSR2 on.
  mta.onDrainRequest(() => (worker ? worker.drainAll() : stop('SIGUSR2')));
  // Keep running: the listeners hold the event loop open.
  return -1;
}

/**
 * Starts the primary of a cluster when the config (or `--processes`) asks for more than one
 * process, and says whether it did. The primary runs no plugin: those the config file made are
 * shut down; each worker makes its own.
 */
async function startedCluster(
  file: string,
  config: ResolvedConfig,
  options: RunStartOptions,
): Promise<boolean> {
  const { slotRoles, runPrimary } = await import('../cluster.js');
  const override = options.processes;
  const field = override === undefined ? 'config.processes' : '--processes';
  const processes = override ?? config.processes;
  let problem = override === undefined ? undefined : checkProcesses(config, override, field);
  if (problem === undefined && typeof processes === 'object' && options.worker === false) {
    problem = `${field}: { intake, delivery } runs delivery processes, which --no-worker would leave idle; drop --no-worker, or give a number of processes`;
  }
  const roles = slotRoles(processes);
  if (problem === undefined && roles.length === 1) return false;
  const logger = createLogger(config.log?.level);
  await shutdownPlugins(pluginInstances(config), { logger });
  if (problem !== undefined) throw new ConfigError(file, [problem]);
  runPrimary({ roles, logger });
  return true;
}

/** How long a burst of changes (an editor writes a file in several steps) is gathered into one. */
const SETTLE_MS = 150;

/**
 * Watches a set of files through their folders, so a save that replaces the file (write to a
 * temporary name, rename over) is seen as well as one that writes it in place. Calls `changed`
 * once per burst of changes.
 */
class SourceWatcher {
  readonly #changed: (file: string) => void;
  #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(changed: (file: string) => void) {
    this.#changed = changed;
  }

  /** Watches `files` from now on, instead of the files watched before. */
  watch(files: ReadonlySet<string>): void {
    if (files.size === 0) return;
    this.#closeWatchers();
    const byFolder = new Map<string, Set<string>>();
    for (const file of files) {
      const names = byFolder.get(dirname(file)) ?? new Set<string>();
      names.add(basename(file));
      byFolder.set(dirname(file), names);
    }
    for (const [folder, names] of byFolder) {
      try {
        const watcher = watch(folder, { persistent: false }, (_event, name) => {
          if (name !== null && names.has(name)) this.#settle(join(folder, name));
        });
        watcher.on('error', () => {}); // a folder removed: the next reload watches what exists
        this.#watchers.push(watcher);
      } catch {
        // A folder that is gone cannot change; the next reload watches what exists.
      }
    }
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#closeWatchers();
  }

  #settle(file: string): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#changed(file), SETTLE_MS);
  }

  #closeWatchers(): void {
    for (const watcher of this.#watchers.splice(0)) watcher.close();
  }
}
