// A worker's side of `processes: n` (cluster.ts is the primary's): its slot, what it tells the
// primary (started, an admin API reload or drain) and its metrics for the primary's gathering.
import cluster from 'node:cluster';
import type { Registry } from 'prom-client';
import {
  ADMIN_SLOT,
  METRICS_TIMEOUT_MS,
  type PrimaryMessage,
  ROLE_ENV,
  SLOT_ENV,
  type WorkerMessage,
  type WorkerRole,
  type WorkerStarted,
} from './cluster.js';

/** What startMta needs to know of the cluster it runs in. */
export interface ClusterRole {
  /** This worker's slot, 1..n. */
  readonly slot: number;
  /** What this worker runs: everything, or one side of `processes: { intake, delivery }`. */
  readonly role: WorkerRole;
  /** Whether this worker runs the admin server and reads the shared queue's gauges (one per cluster). */
  readonly admin: boolean;
  /** Offers this worker's registry to the primary's scrapes. */
  share(registry: Registry): void;
  /** Every worker's metrics summed, in the text format (the admin worker's /metrics). */
  metrics(): Promise<string>;
  /** After the admin API applied a reload here: the others reload too. */
  reloaded(): void;
}

export interface ClusterWorker extends ClusterRole {
  /** Listening: the primary prints one banner when every worker is. */
  started(started: WorkerStarted): void;
  /** The admin API's drain: the primary drains every worker. */
  drainAll(): void;
}

/** This process's part in a cluster, or undefined when it is not a cluster worker. */
export function clusterWorker(): ClusterWorker | undefined {
  if (!cluster.isWorker) return undefined;
  const slot = Number(process.env[SLOT_ENV] ?? cluster.worker?.id ?? 0);
  const given = process.env[ROLE_ENV];
  const role: WorkerRole = given === 'intake' || given === 'delivery' ? given : 'all';
  const tell = (message: WorkerMessage): void => {
    if (process.connected) process.send?.(message);
  };
  let registry: Registry | undefined;
  let nextId = 0;
  const pending = new Map<number, (answer: { body?: string; error?: string }) => void>();
  process.on('message', (message: PrimaryMessage) => {
    if (message?.type === 'tern:metrics') {
      const answer = registry?.getMetricsAsJSON() ?? Promise.resolve([]);
      answer.then(
        (metrics) => tell({ type: 'tern:metrics-json', id: message.id, metrics }),
        () => tell({ type: 'tern:metrics-json', id: message.id, metrics: [] }),
      );
    } else if (message?.type === 'tern:cluster-metrics') {
      pending.get(message.id)?.(message);
    }
  });
  return {
    slot,
    role,
    admin: slot === ADMIN_SLOT,
    share(shared) {
      registry = shared;
    },
    metrics() {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        // The primary waits METRICS_TIMEOUT_MS for each worker; past twice that it is gone.
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error('the primary process did not answer for the cluster metrics'));
        }, 2 * METRICS_TIMEOUT_MS);
        pending.set(id, (answer) => {
          clearTimeout(timer);
          pending.delete(id);
          if (answer.body !== undefined) resolve(answer.body);
          else reject(new Error(answer.error ?? 'no metrics'));
        });
        tell({ type: 'tern:cluster-metrics', id });
      });
    },
    reloaded: () => tell({ type: 'tern:reload-others' }),
    started: (started) => tell({ type: 'tern:started', started }),
    drainAll: () => tell({ type: 'tern:drain' }),
  };
}
