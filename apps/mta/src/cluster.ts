// `processes: n` (or `tern start --processes n`): the primary of a node:cluster. It runs no MTA of
// its own: it forks n workers, each a full MTA (listeners, HTTP injection, delivery worker) on the
// shared Redis queue, sharing the listening sockets (each worker accepts from them itself: the
// kernel picks the worker, see SCHED_NONE below). It restarts a worker that dies (with back-off), passes SIGTERM/SIGINT/SIGUSR2 and
// SIGHUP on to every worker, and gathers every worker's metrics for the one admin server (worker
// 1's), summed as prom-client's AggregatorRegistry sums them.
// `processes: { intake, delivery }` gives each slot a role, kept across its restarts: intake
// workers (slots 1..intake, the admin worker among them) run the listeners and HTTP injection and
// no delivery worker; delivery workers run the delivery worker and bind no listener. The Redis
// queue carries the mail from one to the other, as it does between nodes.
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from '@tern/plugin-api';
import { AggregatorRegistry, Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** One registry's metrics as getMetricsAsJSON gives them: what workers send the primary. */
type RegistryJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** The worker that runs the admin server and reads the shared queue's gauges. */
export const ADMIN_SLOT = 1;
/** The environment variable that tells a forked worker its slot (1..n): kept across restarts, unlike cluster's worker id. */
export const SLOT_ENV = 'TERN_WORKER';
/** The environment variable that tells a forked worker its role (see WorkerRole). */
export const ROLE_ENV = 'TERN_ROLE';

/** What a worker runs: everything (`processes: n`), or one side of `processes: { intake, delivery }`. */
export type WorkerRole = 'all' | 'intake' | 'delivery';

/** `processes` as the config and `--processes` take it. */
export type Processes = number | 'auto' | { readonly intake: number; readonly delivery: number };
/** A worker that dies sooner than this after starting counts as failing again: its restart waits longer. */
const STABLE_MS = 30_000;
const FIRST_RESTART_MS = 500;
const MAX_RESTART_MS = 30_000;
/** How long the primary waits for one worker's metrics; one that does not answer is left out of the scrape. */
export const METRICS_TIMEOUT_MS = 2000;

/** What a worker tells the primary once it listens: the primary prints one banner for all. */
export interface WorkerStarted {
  readonly lines: readonly string[];
  readonly fields: Record<string, unknown>;
}

/** Messages between the primary and its workers (each has `tern:` in its type, beside cluster's own). */
export type WorkerMessage =
  | { readonly type: 'tern:started'; readonly started: WorkerStarted }
  /** An admin API reload applied in this worker: reload the others. */
  | { readonly type: 'tern:reload-others' }
  /** The admin API asked for a drain: drain every worker. */
  | { readonly type: 'tern:drain' }
  /** The admin worker's /metrics: every worker's, summed. */
  | { readonly type: 'tern:cluster-metrics'; readonly id: number }
  /** A worker's own metrics, answering `tern:metrics`. */
  | { readonly type: 'tern:metrics-json'; readonly id: number; readonly metrics: RegistryJson };

export type PrimaryMessage =
  | { readonly type: 'tern:metrics'; readonly id: number }
  | {
      readonly type: 'tern:cluster-metrics';
      readonly id: number;
      readonly body?: string;
      readonly error?: string;
    };

/** The role of each slot (slot i + 1 has roles[i]): 'auto' is one per core; intake slots come first, so the admin slot is an intake worker. */
export function slotRoles(processes: Processes | undefined): WorkerRole[] {
  if (typeof processes === 'object') {
    return [
      ...Array<WorkerRole>(processes.intake).fill('intake'),
      ...Array<WorkerRole>(processes.delivery).fill('delivery'),
    ];
  }
  const count = processes === 'auto' ? availableParallelism() : (processes ?? 1);
  return Array<WorkerRole>(count).fill('all');
}

/** The back-off before restarting a worker that has died `failures` times in a row. */
export function restartDelayMs(failures: number): number {
  return Math.min(MAX_RESTART_MS, FIRST_RESTART_MS * 2 ** Math.max(0, failures - 1));
}

interface Slot {
  readonly index: number;
  readonly role: WorkerRole;
  worker: Worker | undefined;
  started: boolean;
  /** What it said when it started: the admin worker's banner is the one printed. */
  banner: WorkerStarted | undefined;
  startedAt: number;
  /** Deaths in a row, each within STABLE_MS of its start. */
  failures: number;
  /** A SIGHUP came while it was starting (before its handler): it reloads once started. */
  reloadPending: boolean;
  restart: NodeJS.Timeout | undefined;
}

export interface PrimaryOptions {
  /** Each slot's role (slotRoles). */
  readonly roles: readonly WorkerRole[];
  readonly logger: Logger;
}

/**
 * Runs the primary until its workers have stopped; exits the process then. Resolves at once (the
 * workers keep it running); a worker that cannot start the first time stops them all (its own
 * error is on stderr) and the primary exits with its code.
 */
export function runPrimary({ roles, logger }: PrimaryOptions): void {
  const log = logger.child({ process: 'primary' });
  const processes = roles.length;
  const intake = roles.filter((r) => r === 'intake').length;
  const split = intake > 0 ? { intake, delivery: processes - intake } : undefined;
  const described = split
    ? `${processes} processes: ${split.intake} intake, ${split.delivery} delivery`
    : `${processes} processes`;
  const slots: Slot[] = roles.map((role, i) => ({
    index: i + 1,
    role,
    worker: undefined,
    started: false,
    banner: undefined,
    startedAt: 0,
    failures: 0,
    reloadPending: false,
    restart: undefined,
  }));
  const metrics = new PrimaryMetrics(processes, () => slots.filter((s) => s.started).length);
  let everyoneStarted = false;
  let stopping: NodeJS.Signals | undefined;
  let exitCode = 0;

  const fork = (slot: Slot): void => {
    slot.restart = undefined;
    slot.started = false;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ [SLOT_ENV]: String(slot.index), [ROLE_ENV]: slot.role });
    slot.worker = worker;
    worker.on('message', (message: WorkerMessage) => onMessage(slot, worker, message));
    worker.on('exit', (code, signal) => onExit(slot, worker, code, signal));
  };

  const onMessage = (slot: Slot, worker: Worker, message: WorkerMessage): void => {
    switch (message?.type) {
      case 'tern:started': {
        slot.started = true;
        slot.banner = message.started;
        if (slot.reloadPending) reload(slot);
        if (everyoneStarted) {
          log.info(
            { worker: slot.index, role: slot.role, workerPid: worker.process.pid },
            'worker restarted',
          );
          return;
        }
        if (slots.some((s) => !s.started)) return;
        everyoneStarted = true;
        const { lines, fields } = slots[ADMIN_SLOT - 1]?.banner ?? message.started;
        log.info({ ...fields, processes, ...(split ? { roles: split } : {}) }, 'tern started');
        const [first, ...rest] = lines;
        process.stderr.write(`${[`${first} (${described})`, ...rest].join('\n')}\n`);
        return;
      }
      case 'tern:reload-others':
        for (const other of slots) if (other !== slot) reload(other);
        return;
      case 'tern:drain':
        stop('SIGUSR2');
        return;
      case 'tern:cluster-metrics':
        gather().then(
          (body) => send(worker, { type: 'tern:cluster-metrics', id: message.id, body }),
          (error: unknown) =>
            send(worker, { type: 'tern:cluster-metrics', id: message.id, error: String(error) }),
        );
        return;
      case 'tern:metrics-json':
        replies.get(message.id)?.(message.metrics);
        return;
      default:
        return;
    }
  };

  // A worker still starting has no SIGHUP handler yet (the signal would kill it): it is told later.
  const reload = (slot: Slot): void => {
    slot.reloadPending = !slot.started;
    if (slot.started) slot.worker?.process.kill('SIGHUP');
  };

  const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null): void => {
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    const wasStarted = slot.started;
    slot.started = false;
    slot.reloadPending = false;
    if (stopping) {
      if (code !== 0 && exitCode === 0) exitCode = 1;
      log.info({ worker: slot.index, role: slot.role, code, signal }, 'worker stopped');
      if (slots.every((s) => s.worker === undefined)) {
        log.info('stopped');
        process.exit(exitCode);
      }
      return;
    }
    if (!everyoneStarted && !wasStarted) {
      // It could not start (its error is on stderr): the others would fail the same way.
      log.error({ worker: slot.index, code, signal }, 'a worker could not start: stopping');
      stop('SIGTERM', code === null || code === 0 ? 1 : code);
      return;
    }
    slot.failures = Date.now() - slot.startedAt < STABLE_MS ? slot.failures + 1 : 1;
    const delay = restartDelayMs(slot.failures);
    metrics.restarts.inc();
    log.error(
      {
        worker: slot.index,
        role: slot.role,
        workerPid: worker.process.pid,
        code,
        signal,
        restartInMs: delay,
      },
      `worker ${slot.index}${slot.role === 'all' ? '' : ` (${slot.role})`} died (${signal ?? `exit code ${code}`}): restarting in ${delay} ms`,
    );
    slot.restart = setTimeout(() => fork(slot), delay);
  };

  const stop = (signal: NodeJS.Signals, code = 0): void => {
    if (stopping) return;
    stopping = signal;
    exitCode = code;
    log.info(
      { signal },
      signal === 'SIGUSR2'
        ? 'draining every worker'
        : 'stopping every worker: no new connections, finishing open transactions',
    );
    for (const slot of slots) {
      clearTimeout(slot.restart);
      // Each worker stops as one tern process does on the same signal (commands/start.ts).
      slot.worker?.process.kill(signal === 'SIGUSR2' ? 'SIGUSR2' : 'SIGTERM');
    }
    if (slots.every((s) => s.worker === undefined)) process.exit(exitCode);
  };

  // Scrapes: ask every running worker for its registry (as JSON), sum them with the primary's own.
  let nextId = 0;
  const replies = new Map<number, (metrics: RegistryJson) => void>();
  const ask = (worker: Worker): Promise<RegistryJson | undefined> => {
    const id = nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        replies.delete(id);
        resolve(undefined);
      }, METRICS_TIMEOUT_MS);
      replies.set(id, (metrics) => {
        clearTimeout(timer);
        replies.delete(id);
        resolve(metrics);
      });
      send(worker, { type: 'tern:metrics', id });
    });
  };
  const gather = async (): Promise<string> => {
    const running = slots.flatMap((s) => (s.started && s.worker?.isConnected() ? [s.worker] : []));
    const answers = await Promise.all(running.map(ask));
    const all = answers.filter((a): a is RegistryJson => a !== undefined);
    metrics.reporting = all.length;
    all.push(await metrics.registry.getMetricsAsJSON());
    return AggregatorRegistry.aggregate(all).metrics();
  };

  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGUSR2', () => stop('SIGUSR2'));
  process.on('SIGHUP', () => {
    log.info('SIGHUP: every worker reloads its config');
    for (const slot of slots) if (slot.worker) reload(slot);
  });
  // Each worker accepts from the shared socket itself (the kernel picks one), not round-robin
  // through the primary: with round-robin, a connection handed to a worker that dies in that moment
  // stays open with no banner (Node keeps the primary's copy of the handle until the worker says it
  // took it), and the primary would spend CPU on every accept and descriptor pass.
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  log.info({ processes, ...(split ? { roles: split } : {}) }, `starting ${described}`);
  for (const slot of slots) fork(slot);
}

function send(worker: Worker, message: PrimaryMessage): void {
  if (worker.isConnected()) worker.send(message);
}

/** The primary's own series: its process (it forks, watches and relays; it takes no connection) and the workers' state. */
class PrimaryMetrics {
  readonly registry = new Registry();
  readonly restarts: Counter;
  /** Workers that answered the last scrape (set just before the primary's registry is read). */
  reporting = 0;

  constructor(processes: number, running: () => number) {
    const registers = [this.registry];
    const primary = this;
    collectDefaultMetrics({ register: this.registry, prefix: 'tern_' });
    new Gauge({
      name: 'tern_cluster_processes',
      help: 'Worker processes configured (processes, or tern start --processes)',
      registers,
      collect() {
        this.set(processes);
      },
    });
    new Gauge({
      name: 'tern_cluster_workers_running',
      help: 'Worker processes started and running now',
      registers,
      collect() {
        this.set(running());
      },
    });
    new Gauge({
      name: 'tern_cluster_workers_reporting',
      help: 'Worker processes whose metrics this scrape sums (one that does not answer in 2 s is left out)',
      registers,
      collect() {
        this.set(primary.reporting);
      },
    });
    this.restarts = new Counter({
      name: 'tern_cluster_worker_restarts_total',
      help: 'Workers that died and were started again',
      registers,
    });
  }
}
