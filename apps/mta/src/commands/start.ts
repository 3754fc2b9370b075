// tern start: load and validate the config, start the MTA, reload on SIGHUP, stop cleanly on
// SIGTERM/SIGINT, drain for a rolling restart on SIGUSR2.
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { isInternalPlugin, type StartOptions, startMta } from '../mta.js';

export async function runStart(file: string, options: StartOptions = {}): Promise<number> {
  const config = await loadConfig(file);
  const logger = createLogger(config.log?.level);
  const mta = await startMta(config, logger, { ...options, configFile: file });

  const queue = { backend: mta.queue.kind, location: mta.queue.location };
  const plugins = mta.plugins.plugins.map((p) => p.name).filter((name) => !isInternalPlugin(name));
  logger.info(
    { listeners: mta.listeners, queue, plugins, hostname: mta.hostname, admin: mta.adminUrl },
    'tern started',
  );
  const lines = [
    `tern ${mta.hostname}: started`,
    ...mta.listeners.map(
      (l) =>
        `  listening: ${l.name} (${l.kind}) on ${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`,
    ),
    `  queue: ${queue.backend} at ${queue.location}${options.worker === false ? ' (intake only: no delivery worker)' : ''}`,
    `  plugins: ${plugins.length > 0 ? plugins.join(', ') : '(none)'}`,
    mta.adminUrl
      ? `  dashboard: ${mta.adminUrl}/ (admin API ${mta.adminUrl}/api/, metrics ${mta.adminUrl}/metrics; token from config.admin)`
      : '  dashboard: off (add admin: { tokenFile: "admin.token" } to the config for the dashboard, admin API and /metrics)',
  ];
  process.stderr.write(`${lines.join('\n')}\n`);

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
  let reloading = Promise.resolve();
  process.on('SIGHUP', () => {
    reloading = reloading.then(async () => {
      try {
        const next = await loadConfig(file);
        const result = await mta.reload(next);
        for (const note of result.needsRestart) logger.warn(`reload: ${note}`);
      } catch (error) {
        logger.error(
          { err: error },
          `reload refused, still running the previous config: ${(error as Error).message}`,
        );
      }
    });
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A drain for rolling restarts (systemctl reload-or-restart is not it: see deploy/tern.service).
  process.on('SIGUSR2', () => stop('SIGUSR2'));
  mta.onDrainRequest(() => stop('SIGUSR2'));
  // Keep running: the listeners hold the event loop open.
  return -1;
}
