// Wiring: one running MTA from a validated config. Start order: plugins' init, the queue, the
// delivery worker, then listeners (so nothing is accepted before it can be made durable).
// Stop order is the reverse: listeners first (open transactions finish), then the worker, then
// the plugins' shutdown. The plugin registry owns every plugin instance and host throughout.
import { resolve } from 'node:path';
import {
  createListener,
  FileUserStore,
  IntakeSpool,
  type Listener,
  ListenerConfigError,
  type ListenerOptions,
  resolveListenerOptions,
} from '@tern/core';
import {
  createDeliverer,
  type Deliverer,
  type DelivererOptions,
  StoreTlsReportSink,
  type TlsReportSender,
  type TlsReportSink,
} from '@tern/delivery';
import { createLimiter, type Limiter } from '@tern/limiter';
import { type Logger, type NextHop, silentLogger } from '@tern/plugin-api';
import type { HostOptions, PluginHost } from '@tern/plugin-api/host';
import {
  BounceClassifier,
  type BounceRule,
  type IncomingMessage,
  openEmbeddedQueue,
  openRedisQueue,
  type QueueBackend,
  type RedisQueue,
  type RedisQueueOptions,
  type SuppressionStore,
  type TlsStore,
} from '@tern/queue';
import { isClusterConnection, keyBase, type RedisConnection } from '@tern/redis';
import type { ClusterRole } from './cluster-worker.js';
import {
  ConfigError,
  configPath,
  listenerPort,
  loadConfig,
  type ResolvedConfig,
  readConfigFile,
  readKeyPair,
  serverHostname,
} from './config.js';
import { PlatformEvents } from './events.js';
import {
  FEEDBACK_PLUGIN_NAME,
  FeedbackProcessor,
  feedbackPlugin,
  feedbackSettings,
  withBounceDomain,
} from './feedback/feedback.js';
import type { InjectionServer } from './http/server.js';
import { startHttpInjection } from './http/start.js';
import { noticeHooks } from './notices.js';
import { OpsRuntime } from './ops/runtime.js';
import { dnsOptions, tlsReportSender } from './outbound-tls.js';
import { PluginRegistry } from './plugin-registry.js';
import { pluginInstances, shutdownPlugins } from './plugins.js';
import {
  SUPPRESSION_PLUGIN_NAME,
  suppressionPlugin,
  suppressionSettings,
  tagSuppressionGate,
} from './suppression.js';
import { WebhookDispatcher, webhookEndpoints } from './webhooks/dispatcher.js';

export interface RunningListener {
  readonly name: string;
  readonly kind: string;
  readonly host: string;
  readonly port: number;
}

export interface RunningMta {
  readonly hostname: string;
  readonly listeners: readonly RunningListener[];
  readonly queue: QueueBackend;
  /** The current global plugin host (the delivery worker's). */
  readonly plugins: PluginHost;
  /** The admin API and dashboard (`http://host:port`), when config.admin is set. */
  readonly adminUrl: string | undefined;
  /** HTTP injection (`http(s)://host:port`), when config.http is set. */
  readonly injectionUrl: string | undefined;
  /**
   * What happened to mail, one event per recipient (queued, delivered, deferred, bounced, held,
   * suppressed, complained): webhooks subscribe here; producers outside the MTA (HTTP injection,
   * async bounces) emit here.
   */
  readonly events: PlatformEvents;
  /**
   * Applies a new config without dropping connections (SIGHUP): plugins and their options, listener
   * limits and policies, routes and delivery limits. Open sessions and delivery attempts finish with
   * the plugins they started with; replaced plugins are shut down once nothing uses them. What
   * needs a restart (ports, certificates, the queue, new or removed listeners) is listed, not
   * applied. Reloads run one at a time.
   */
  reload(next: ResolvedConfig): Promise<ReloadResult>;
  /** Stops accepting, lets open transactions finish (up to `timeoutMs`), stops delivery, closes the queue. */
  close(timeoutMs?: number): Promise<void>;
  /**
   * For rolling restarts: readiness turns false, the listeners close (new connections are
   * refused, idle sessions get 421), open transactions and active deliveries finish (up to
   * `timeoutMs`, then they are aborted and their jobs run again elsewhere), queued mail is left
   * to the other nodes, and everything closes.
   */
  drain(timeoutMs?: number): Promise<void>;
  /** What the admin API's POST /api/drain calls: `tern start` drains and exits. */
  onDrainRequest(handler: () => void): void;
}

export interface ReloadResult {
  /** Plugin names now running. */
  readonly plugins: readonly string[];
  /** Changes that were not applied, each saying what to do. */
  readonly needsRestart: readonly string[];
}

export interface StartOptions {
  /** Run the delivery worker in this process (default true). */
  readonly worker?: boolean;
  /**
   * Bind the SMTP listeners and the HTTP injection listener (default true): false in a delivery
   * worker of `processes: { intake, delivery }`, which only delivers.
   */
  readonly listen?: boolean;
  /** The file the config came from: the admin API's reload reads it again. */
  readonly configFile?: string;
  /** Set in a worker of `processes: n` (cluster-worker.ts): one admin server, metrics of all. */
  readonly cluster?: ClusterRole;
}

/** Opens the configured queue backend: embedded (the default) or Redis. */
export async function openQueue(config: ResolvedConfig, logger: Logger): Promise<QueueBackend> {
  // The backend's own options, as queue's schema checked them in the config.
  const { backend, retry: _retry, ...options } = config.queue ?? { backend: 'embedded' as const };
  if (backend === 'redis') {
    // `url` or `redis` (Sentinel, Cluster) in the config say where Redis is: the queue's `connection`.
    const { url: _url, redis: _where, ...rest } = options as RedisQueueConfig;
    const redis: RedisQueue = await openRedisQueue({
      ...(rest as RedisQueueOptions),
      connection: redisConnection(config.queue as RedisQueueConfig),
      logger,
    });
    for (const warning of await redis.checkSafety())
      logger.warn({ redis: redis.location }, `unsafe Redis: ${warning}`);
    return redis;
  }
  return openEmbeddedQueue({ ...options, path: embeddedQueuePath(config), logger });
}

type RedisQueueConfig = Extract<NonNullable<ResolvedConfig['queue']>, { backend: 'redis' }>;

/** Where the queue's Redis is (`url` or `redis`, the config allows exactly one). */
export function redisConnection(queue: RedisQueueConfig): RedisConnection {
  return queue.redis ?? { url: queue.url as string };
}

/** The embedded store's file: the config's, or `.tern-data/queue.db` beside the config file. */
export function embeddedQueuePath(config: ResolvedConfig): string {
  const queue = config.queue;
  return queue?.backend === 'embedded' && queue.path
    ? configPath(config, queue.path)
    : resolve(config.baseDir, '.tern-data/queue.db');
}

/** Relative Maildir folders and LMTP sockets in the config start at the config file's folder, as every other path does. */
function withPaths(config: ResolvedConfig, hop: NextHop): NextHop {
  if (hop.type === 'maildir') return { ...hop, path: configPath(config, hop.path) };
  if (hop.type === 'lmtp' && hop.path !== undefined) return { ...hop, path: configPath(config, hop.path) };
  return hop;
}

/** What the queue lends delivery: the shared store of MTA-STS policies, and the TLS-RPT sink over it. */
interface OutboundTlsState {
  readonly store?: TlsStore | undefined;
  readonly tlsReports?: TlsReportSink | undefined;
}

/** `delivery.mtaSts` as the deliverer takes it: on unless turned off, caching in the queue's store. */
function mtaStsOptions(config: ResolvedConfig, store: TlsStore | undefined): DelivererOptions['mtaSts'] {
  const given = config.delivery?.mtaSts;
  if (given === false || given?.enabled === false) return false;
  const { enabled: _enabled, ca, ...limits } = given ?? {};
  return {
    ...limits,
    ...(store ? { store } : {}),
    ...(ca !== undefined ? { ca: readConfigFile(config, ca, 'config.delivery.mtaSts.ca') } : {}),
  };
}

/** The deliverer's options; its plugin host comes with each attempt, from the worker. */
function delivererOptions(
  config: ResolvedConfig,
  hostname: string,
  logger: Logger,
  throttle?: Limiter,
  tls: OutboundTlsState = {},
): DelivererOptions {
  const d = config.delivery ?? {};
  const dns = dnsOptions(config);
  const verp = feedbackSettings(config);
  return {
    hostname,
    ...(verp?.sign ? { returnPath: verp.returnPath } : {}),
    logger,
    ...(throttle ? { throttle } : {}),
    ...(d.tlsPolicy ? { tlsPolicy: d.tlsPolicy } : {}),
    mtaSts: mtaStsOptions(config, tls.store),
    ...(tls.tlsReports ? { tlsReports: tls.tlsReports } : {}),
    ...(d.routes
      ? {
          routes: Object.fromEntries(Object.entries(d.routes).map(([k, hop]) => [k, withPaths(config, hop)])),
        }
      : {}),
    ...(d.local
      ? {
          local: {
            domains: d.local.domains,
            lmtp:
              d.local.lmtp.path !== undefined
                ? { ...d.local.lmtp, path: configPath(config, d.local.lmtp.path) }
                : d.local.lmtp,
          },
        }
      : {}),
    ...(dns ? { dns } : {}),
    ...(d.port !== undefined ? { port: d.port } : {}),
    ...(d.maxAddresses !== undefined ? { maxAddresses: d.maxAddresses } : {}),
    ...(d.replyLimits ? { replyLimits: d.replyLimits } : {}),
    ...(d.maxHeaderBytes !== undefined ? { maxHeaderBytes: d.maxHeaderBytes } : {}),
    ...(d.limits ? { limits: d.limits } : {}),
    ...(d.shaping ? { shaping: d.shaping } : {}),
    ...(d.egress ? { egress: d.egress } : {}),
    ...(d.providers !== undefined ? { providers: d.providers } : {}),
    ...(d.timeouts ? { timeouts: d.timeouts } : {}),
    // Every job in flight may hold a connection to one destination: a pool keeping fewer idle than
    // that closes the surplus after each burst and the next burst opens them again (the Redis
    // worker's bursts of 50 opened 300 connections per 1000 messages to the bench's sink).
    ...(d.concurrency !== undefined && d.concurrency > 20 ? { pool: { maxIdlePerKey: d.concurrency } } : {}),
    ...(d.tls
      ? {
          tls: {
            ...(d.tls.mode ? { mode: d.tls.mode } : {}),
            ...(d.tls.allowInsecureAuth !== undefined ? { allowInsecureAuth: d.tls.allowInsecureAuth } : {}),
            ...(d.tls.ca ? { ca: readConfigFile(config, d.tls.ca, 'config.delivery.tls.ca') } : {}),
          },
        }
      : {}),
  };
}

/** The queue's TLS store for MTA-STS policies, and a TLS-RPT sink counting into it when reports are on. */
function outboundTlsState(config: ResolvedConfig, queue: QueueBackend, logger: Logger): OutboundTlsState {
  const reports = config.delivery?.tlsReports;
  const store = queue.tlsStore;
  const on = reports !== undefined && reports.enabled !== false && store !== undefined;
  return {
    store,
    ...(on
      ? {
          tlsReports: new StoreTlsReportSink(store, {
            logger: logger.child({ component: 'tls-report' }),
            ...(reports.maxFailureDetails !== undefined ? { maxDetails: reports.maxFailureDetails } : {}),
          }),
        }
      : {}),
  };
}

/** Starts the daily TLS-RPT schedule on a node that delivers (every such node runs it; claims pick one sender). */
function startTlsReports(
  config: ResolvedConfig,
  hostname: string,
  queue: QueueBackend,
  logger: Logger,
  prepare: ((message: IncomingMessage) => Promise<IncomingMessage>) | undefined,
): TlsReportSender | undefined {
  const sender = tlsReportSender(config, hostname, queue, logger, prepare);
  sender?.start();
  return sender;
}

/** One spool for every listener of this process: they share its memory budget. */
function intakeSpool(config: ResolvedConfig): IntakeSpool {
  const given = config.intake ?? {};
  const dir =
    given.spoolDir === false
      ? false
      : given.spoolDir !== undefined
        ? configPath(config, given.spoolDir)
        : resolve(config.baseDir, '.tern-data/spool');
  return new IntakeSpool({
    dir,
    ...(given.memoryPerMessage !== undefined ? { memoryPerMessage: given.memoryPerMessage } : {}),
    ...(given.memoryBudget !== undefined ? { memoryBudget: given.memoryBudget } : {}),
  });
}

function listenerOptions(config: ResolvedConfig, index: number, hostname: string): ListenerOptions {
  const l = config.listeners[index]!;
  const field = `config.listeners[${index}]`;
  const { plugins: _plugins, tls, localDomains, trustedNetworks, ...rest } = l;
  return {
    ...rest,
    name: l.name ?? `${l.kind}-${listenerPort(l)}`,
    port: listenerPort(l),
    hostname: l.hostname ?? hostname,
    localDomains: withBounceDomain(localDomains ?? config.localDomains, feedbackSettings(config)),
    trustedNetworks: trustedNetworks ?? config.trustedNetworks,
    ...(tls
      ? {
          tls: {
            ...readKeyPair(config, tls, `${field}.tls`),
            ...(tls.sni
              ? {
                  sni: Object.fromEntries(
                    Object.entries(tls.sni).map(([name, pair]) => [
                      name,
                      readKeyPair(config, pair, `${field}.tls.sni.${name}`),
                    ]),
                  ),
                }
              : {}),
          },
        }
      : {}),
  } as ListenerOptions;
}

/**
 * Builds what start builds from a config before it opens the queue or binds a port, and throws
 * ConfigError with every problem: each listener's options as core resolves them, the delivery
 * options as the deliverer takes them. (loadConfig has checked the schema and the files.) A
 * refused config has its plugins shut down: they were made when its file was read, never started,
 * and may hold connections.
 */
export async function preflight(config: ResolvedConfig, hostOptions: HostOptions = {}): Promise<void> {
  try {
    await checkBuild(config);
  } catch (error) {
    await shutdownPlugins(pluginInstances(config), hostOptions);
    throw error;
  }
}

async function checkBuild(config: ResolvedConfig): Promise<void> {
  const hostname = serverHostname(config);
  // Listeners and the deliverer read it too: a secret file that cannot be read is said once, first.
  feedbackSettings(config);
  const problems: string[] = [];
  config.listeners.forEach((_, i) => {
    try {
      const options = listenerOptions(config, i, hostname);
      try {
        resolveListenerOptions(options);
      } catch (error) {
        if (!(error instanceof ListenerConfigError)) throw error;
        // "listener NAME: FIELD: problem", as a field of this config.
        const problem = error.message.slice(`listener ${options.name}: ${error.field}: `.length);
        problems.push(`config.listeners[${i}].${error.field}: ${problem}`);
      }
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
    }
  });
  try {
    const deliverer = createDeliverer(delivererOptions(config, hostname, silentLogger));
    await deliverer.close();
  } catch (error) {
    if (error instanceof ConfigError) problems.push(...error.problems);
    // The deliverer names the option it refuses from `delivery.`, as the config does.
    else if (error instanceof TypeError && error.message.startsWith('delivery.'))
      problems.push(`config.${error.message}`);
    else throw error;
  }
  if (problems.length > 0) throw new ConfigError('config', problems);
}

/**
 * `tern check-config`: every check `tern start` makes without opening the queue or binding a port:
 * preflight, then the plugin hosts (unknown hooks) and each plugin's init (and shutdown, so what it
 * opened is closed again).
 */
export async function checkMta(config: ResolvedConfig, logger: Logger): Promise<void> {
  await preflight(config, { logger });
  const registry = new PluginRegistry({ hostOptions: { logger } });
  await registry.prepare(config);
  await registry.close();
}

/** Tern's own plugins, in every host but not the operator's to list. */
export function isInternalPlugin(name: string): boolean {
  return name === SUPPRESSION_PLUGIN_NAME || name === FEEDBACK_PLUGIN_NAME;
}

/** The bounce classifier of a config: its `bounces.rules` before the shipped rules (validated already). */
export function bounceClassifier(config: ResolvedConfig): BounceClassifier {
  return new BounceClassifier({
    rules: (config.bounces?.rules ?? []) as BounceRule[],
    shippedRules: config.bounces?.shippedRules ?? true,
  });
}

export async function startMta(
  config: ResolvedConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<RunningMta> {
  const hostname = serverHostname(config);
  await preflight(config, { logger });
  // The operations side (src/ops): every host reports its hook calls to it (timelines, metrics),
  // and it observes sessions and delivery outcomes directly (intake tracing, delivery activity).
  const ops = new OpsRuntime(config, logger);
  const events = new PlatformEvents(logger);
  ops.events = events;
  const hostOptions: HostOptions = { logger, onHookEvent: ops.onHookEvent };
  // The suppression list is in the queue's store, which opens after the plugin hosts are made.
  let suppressions: SuppressionStore | undefined;
  let suppressing = suppressionSettings(config);
  const suppression = suppressionPlugin(
    () => suppressions,
    () => suppressing,
    logger,
    events,
  );
  // Recipients of a message with a tag scope are looked up again at each delivery attempt.
  const tagGate = tagSuppressionGate(
    () => suppressions,
    () => suppressing,
    logger,
    events,
  );
  let feedback = feedbackSettings(config);
  const feedbackCheck = feedbackPlugin(() => feedback, logger);
  const registry = new PluginRegistry({ hostOptions, internal: [suppression, feedbackCheck] });
  // Before the queue opens: a plugin that cannot start stops start-up (PluginInitError).
  const initial = await registry.prepare(config);
  void registry.activate(initial);

  let queue: QueueBackend;
  try {
    queue = await openQueue(config, logger);
  } catch (error) {
    await registry.close();
    throw error;
  }
  suppressions = queue.suppressions;
  // With a shared Redis queue, per-destination limits hold across every node: they are counted in
  // the same Redis, by the limiter the rate-limit plugin uses.
  const throttle =
    config.queue?.backend === 'redis'
      ? createLimiter({
          redis: redisConnection(config.queue),
          // Beside the queue's keys, in the same hash slot on a Cluster.
          prefix: `${keyBase(config.queue.prefix ?? 'tern', isClusterConnection(redisConnection(config.queue)))}:rl:`,
          failMode: 'open',
          logger: logger.child({ component: 'throttle' }),
          ...(config.delivery?.limits?.leaseTtlMs !== undefined
            ? { leaseTtlMs: config.delivery.limits.leaseTtlMs }
            : {}),
        })
      : undefined;
  let deliverer: Deliverer | undefined;
  let tlsReportSender: TlsReportSender | undefined;
  const outboundTls = outboundTlsState(config, queue, logger);
  let classifier = bounceClassifier(config);
  const spool = intakeSpool(config);
  let current = config;
  const listeners: Listener[] = [];
  let injection: InjectionServer | undefined;
  let draining = false;
  const listening = options.listen !== false;
  let webhooks: WebhookDispatcher | undefined;
  try {
    await ops.start({
      queue,
      hostname,
      connections: () => Object.fromEntries(listeners.map((l) => [l.name, l.connections])),
      spool: () => spool.stats(),
      listening: () => ({
        expected: listening ? config.listeners.length : 0,
        bound: listeners.filter((l) => l.address !== undefined).map((l) => l.name),
        draining,
      }),
      ...(options.cluster ? { cluster: options.cluster } : {}),
    });
    webhooks = startWebhooks(config, queue, events, ops, logger);
    if (options.worker !== false) {
      deliverer = createDeliverer(delivererOptions(config, hostname, logger, throttle, outboundTls));
      // Generated notices and reports go through the global plugins' queue hooks (DKIM signs them).
      const prepareNotice =
        config.notices?.queueHooks === false
          ? undefined
          : noticeHooks(registry.deliveryHost, hostname, logger.child({ component: 'notices' }));
      tlsReportSender = startTlsReports(config, hostname, queue, logger, prepareNotice);
      // The deliverer as it is now: a reload replaces it, and its back-off state with it.
      ops.shaping = () => ({ backoffs: deliverer?.backoffs() ?? [], warmup: deliverer?.warmup() ?? [] });
      const retry = config.queue?.retry;
      // Reports that reach the bounce domain are read here, in place of being delivered.
      const reports = new FeedbackProcessor({
        queue,
        settings: () => feedback,
        suppression: () => suppressing,
        classifier: () => classifier,
        events,
        logger,
        ...(ops.metrics ? { registry: ops.metrics.registry } : {}),
      });
      // Through `deliverer` as it is at each call, so a reload swaps routes and limits in place;
      // the worker asks the registry for the plugin host of each attempt.
      await queue.startWorker(
        async (job, message, attempt) => {
          if (reports.handles(job)) return reports.process(job, message);
          const report = await tagGate(job, (j) => (deliverer as Deliverer).deliver(j, message, attempt));
          if (report.wait !== undefined) ops.limitWait(report.wait.key);
          for (const note of report.shaping ?? []) ops.shapingAction(note.action, note.cause);
          return report;
        },
        {
          plugins: registry.deliveryHost,
          hostname,
          logger,
          ...(config.delivery?.concurrency !== undefined ? { concurrency: config.delivery.concurrency } : {}),
          ...(retry ? { retry } : {}),
          classifier: () => classifier,
          ...(prepareNotice ? { prepareNotice } : {}),
          observer: ops.outcomes,
        },
      );
    }
    const users = config.users ? await FileUserStore.open(configPath(config, config.users.file)) : undefined;
    for (const [i] of (listening ? config.listeners : []).entries()) {
      const listener = createListener(listenerOptions(config, i, hostname), {
        plugins: initial.listeners[i] as PluginHost,
        sink: ops.sink(queue),
        logger,
        onReply: ops.onReply,
        onSession: ops.sessions,
        spool,
        ...(users ? { users } : {}),
      });
      listeners.push(listener);
      await listener.listen();
    }
    if (listening)
      injection = await startHttpInjection(config, {
        queue,
        sink: ops.sink(queue),
        spool,
        plugins: () => registry.current.global,
        hostname,
        ops,
        logger,
        tagScopes: () => suppressing.tagScopes,
      });
  } catch (error) {
    await injection?.close();
    await Promise.allSettled(listeners.map((l) => l.close({ graceful: false })));
    await webhooks?.close();
    await ops.close();
    await tlsReportSender?.close();
    await deliverer?.close();
    await throttle?.close();
    await queue.close();
    await registry.close();
    throw error;
  }

  async function reload(next: ResolvedConfig): Promise<ReloadResult> {
    const needsRestart: string[] = [];
    await preflight(next, hostOptions);
    const generation = await registry.prepare(next);
    let nextDeliverer: Deliverer | undefined;
    const nextClassifier = bounceClassifier(next);
    try {
      if (deliverer)
        nextDeliverer = createDeliverer(delivererOptions(next, hostname, logger, throttle, outboundTls));
      const names = next.listeners.map((l) => l.name ?? `${l.kind}-${listenerPort(l)}`);
      for (const listener of listeners) {
        const index = names.indexOf(listener.name);
        if (index === -1) {
          needsRestart.push(`listener ${listener.name}: removed from the config; restart to stop it`);
          continue;
        }
        const options = listenerOptions(next, index, hostname);
        const result = listener.reconfigure(options, generation.listeners[index]);
        for (const field of result.needsRestart)
          needsRestart.push(`listener ${listener.name}: ${field} changed; restart to apply`);
      }
      // A delivery worker binds none: the intake workers say what is new.
      for (const name of names.filter((n) => listening && !listeners.some((l) => l.name === n))) {
        needsRestart.push(`listener ${name}: new in the config; restart to start it`);
      }
    } catch (error) {
      await nextDeliverer?.close();
      await registry.abandon(generation);
      throw error;
    }
    if (JSON.stringify(next.delivery?.tlsReports) !== JSON.stringify(current.delivery?.tlsReports))
      needsRestart.push('delivery.tlsReports changed; restart to apply');
    for (const key of ['queue', 'users', 'hostname', 'http', 'webhooks', 'metrics', 'processes'] as const) {
      if (JSON.stringify(next[key]) !== JSON.stringify(current[key]))
        needsRestart.push(`${key} changed; restart to apply`);
    }
    const replaced = deliverer;
    deliverer = nextDeliverer;
    classifier = nextClassifier;
    suppressing = suppressionSettings(next);
    feedback = feedbackSettings(next);
    current = next;
    // Sessions and delivery attempts that began before now keep the old hosts: the old plugins are
    // shut down, and the old deliverer's connections closed, once the last of them has ended.
    void registry.activate(generation).then(() => replaced?.close());
    const result = {
      plugins: generation.global.plugins.map((p) => p.name).filter((n) => !isInternalPlugin(n)),
      needsRestart,
    };
    logger.info(result, 'config reloaded');
    return result;
  }

  const running = listeners.map((l, i) => ({
    name: l.name,
    kind: config.listeners[i]!.kind,
    host: l.address?.host ?? '',
    port: l.address?.port ?? 0,
  }));
  let reloading: Promise<unknown> = Promise.resolve();
  const mta: RunningMta = {
    hostname,
    listeners: running,
    queue,
    events,
    adminUrl: ops.admin?.url,
    injectionUrl: injection?.url,
    get plugins() {
      return registry.current.global;
    },
    reload(next) {
      const applied = reloading.then(() => reload(next));
      reloading = applied.catch(() => {});
      return applied;
    },
    onDrainRequest(handler) {
      ops.drainer = handler;
    },
    async drain(timeoutMs = config.shutdownTimeoutMs ?? 30_000) {
      draining = true;
      const deadline = setTimeout(() => registry.abort(), timeoutMs);
      try {
        await injection?.close();
        await Promise.allSettled(listeners.map((l) => l.close({ graceful: true, timeoutMs })));
        await webhooks?.stopPosting();
        // The worker takes no new job and waits for its active ones; the queued stay for others.
        await queue.close();
      } finally {
        clearTimeout(deadline);
      }
      await webhooks?.close();
      await ops.close();
      await deliverer?.close();
      await throttle?.close();
      await registry.close();
    },
    async close(timeoutMs = config.shutdownTimeoutMs) {
      // Without a timeout of our own, the listener's default applies.
      const wait = timeoutMs === undefined ? {} : { timeoutMs };
      await injection?.close();
      await Promise.allSettled(listeners.map((l) => l.close({ graceful: true, ...wait })));
      // A hook still running (a delivery attempt's) is told to stop: its ctx.signal fires.
      registry.abort();
      await webhooks?.stopPosting();
      await ops.close();
      await tlsReportSender?.close();
      await queue.close();
      await webhooks?.close();
      await deliverer?.close();
      await throttle?.close();
      await registry.close();
    },
  };
  const { configFile, cluster } = options;
  if (configFile) {
    ops.reloader = async () => {
      const result = await mta.reload(await loadConfig(configFile));
      cluster?.reloaded();
      return result;
    };
  }
  return mta;
}

/**
 * The webhook dispatcher of a config with endpoints: subscribed to the MTA's events, posting from
 * the outbox in the queue's store, its metrics in the ops registry.
 */
function startWebhooks(
  config: ResolvedConfig,
  queue: QueueBackend,
  events: PlatformEvents,
  ops: OpsRuntime,
  logger: Logger,
): WebhookDispatcher | undefined {
  const endpoints = webhookEndpoints(config);
  if (endpoints.length === 0) return undefined;
  if (!queue.webhookOutbox) {
    logger.warn(
      { queue: queue.kind },
      'webhooks are configured but this queue backend keeps no outbox: none are sent',
    );
    return undefined;
  }
  const dispatcher = new WebhookDispatcher({
    endpoints,
    outbox: queue.webhookOutbox,
    logger,
    ...(ops.metrics ? { registry: ops.metrics.registry } : {}),
    ...(config.webhooks?.pollInterval !== undefined ? { pollIntervalMs: config.webhooks.pollInterval } : {}),
  });
  events.on(dispatcher.accept);
  ops.webhooks = dispatcher;
  dispatcher.start();
  return dispatcher;
}
