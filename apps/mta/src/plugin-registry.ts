// The one owner of a running tern's plugin instances and hosts. Each config (at start, then at
// each reload) becomes a generation: a host for the global list and one for each listener with a
// list of its own. An instance's `init` runs once, when it first appears in a generation, and its
// `shutdown` once, when no generation holds it any more, after every host that ran it is idle:
// SMTP sessions and delivery attempts keep the host they started with until they end.
import { type Plugin, PluginRegistrationError } from '@tern/plugin-api';
import { type HostOptions, PluginHost } from '@tern/plugin-api/host';
import { PluginInitError, pluginInstances, runLifecycle, shutdownPlugins } from './plugins.js';

/** The plugin lists of a config: the global one, and each listener's own (which replaces it there). */
export interface PluginLists {
  readonly plugins: readonly Plugin[];
  readonly listeners: readonly { readonly plugins?: readonly unknown[] | undefined }[];
}

/** The hosts built from one config. */
export interface PluginGeneration {
  /** The global list's host: the delivery worker's, and intake's on listeners without a list of their own. */
  readonly global: PluginHost;
  /** Each listener's host, by its position in the config's `listeners`. */
  readonly listeners: readonly PluginHost[];
  /** Every plugin instance the hosts run, each once. */
  readonly instances: ReadonlySet<Plugin>;
}

export interface RegistryOptions {
  readonly hostOptions: HostOptions;
  /** Plugins of the app itself, first in every host (the operations plugin). */
  readonly internal?: readonly Plugin[];
}

export class PluginRegistry {
  readonly #hostOptions: HostOptions;
  readonly #internal: readonly Plugin[];
  /** Started instances, with how many generations (the current one, draining ones) hold each. */
  readonly #holders = new Map<Plugin, number>();
  /** Instances shut down by this registry: they cannot start again. */
  readonly #stopped = new WeakSet<Plugin>();
  /** Generations whose hosts may still run hooks: the current one and those draining. */
  readonly #live = new Set<PluginGeneration>();
  readonly #retiring = new Set<Promise<void>>();
  #current: PluginGeneration | undefined;
  #closed = false;

  constructor(options: RegistryOptions) {
    this.#hostOptions = options.hostOptions;
    this.#internal = options.internal ?? [];
  }

  /** The generation new sessions and delivery attempts use. */
  get current(): PluginGeneration {
    if (!this.#current) throw new Error('no plugin generation is active: activate one first');
    return this.#current;
  }

  /** For the delivery worker, asked at the start of each attempt: the current global host. */
  readonly deliveryHost = (): PluginHost => this.current.global;

  /**
   * Builds the hosts for `lists` and runs `init` on each instance new to this registry. Throws
   * PluginRegistrationError (a plugin that is not one, an unknown hook: nothing was started) or
   * PluginInitError; either way the instances of `lists` this registry does not run are shut down
   * (closing what their factories opened). The generation holds its instances from now on:
   * `activate` it, or `abandon` it.
   */
  async prepare(lists: PluginLists): Promise<PluginGeneration> {
    if (this.#closed) throw new Error('the plugin registry is closed');
    let generation: PluginGeneration;
    try {
      generation = this.#build(lists);
    } catch (error) {
      // Nothing started: close what the factories of this config opened (not what we run).
      await shutdownPlugins(pluginInstances(lists), this.#hostOptions);
      throw error;
    }
    const fresh = [...generation.instances].filter((p) => !this.#holders.has(p));
    const reused = fresh.find((p) => this.#stopped.has(p));
    if (reused) {
      await shutdownPlugins(
        fresh.filter((p) => !this.#stopped.has(p)),
        this.#hostOptions,
      );
      throw new PluginRegistrationError(
        `plugin ${reused.name}: this instance was shut down when an earlier config replaced it and cannot start again; make plugins in the config file itself (call the plugin's factory there), not in a module it imports`,
      );
    }
    const failures = await runLifecycle(fresh, 'init', this.#hostOptions);
    // Closed while these started (tern stopping during a reload): nobody would shut them down.
    if (failures.length > 0 || this.#closed) {
      await runLifecycle(fresh, 'shutdown', this.#hostOptions);
      for (const p of fresh) this.#stopped.add(p);
      throw failures.length > 0 ? new PluginInitError(failures) : new Error('the plugin registry is closed');
    }
    for (const p of generation.instances) this.#holders.set(p, (this.#holders.get(p) ?? 0) + 1);
    this.#live.add(generation);
    return generation;
  }

  /**
   * Makes a prepared generation current. The one it replaces drains: once every host of it is
   * idle, its instances that no other generation holds are shut down. The returned promise
   * settles then (nobody has to wait for it).
   */
  activate(next: PluginGeneration): Promise<void> {
    const previous = this.#current;
    this.#current = next;
    return previous ? this.#retire(previous, true) : Promise.resolve();
  }

  /** Gives up a prepared generation that was never activated (the reload failed after `prepare`). */
  abandon(generation: PluginGeneration): Promise<void> {
    return this.#retire(generation, false);
  }

  /** Whether this registry started `plugin` and has not shut it down. */
  owns(plugin: Plugin): boolean {
    return this.#holders.has(plugin);
  }

  /** Resolves when every replaced generation has drained and been shut down (for tests and close). */
  async settled(): Promise<void> {
    while (this.#retiring.size > 0) await Promise.all([...this.#retiring]);
  }

  /**
   * Aborts the hooks running on every live host, and those that start later (not `shutdown`):
   * the process is shutting down.
   */
  abort(reason?: unknown): void {
    for (const generation of this.#live) for (const host of hostsOf(generation)) host.abort(reason);
  }

  /**
   * Shuts down every instance still held, without waiting for hosts to drain: the caller has
   * stopped the listeners and the worker first.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const held = [...this.#holders.keys()];
    this.#holders.clear();
    this.#live.clear();
    this.#current = undefined;
    for (const p of held) this.#stopped.add(p);
    await runLifecycle(held, 'shutdown', this.#hostOptions);
  }

  #build(lists: PluginLists): PluginGeneration {
    const hostOf = (plugins: readonly unknown[]): PluginHost =>
      new PluginHost([...this.#internal, ...(plugins as Plugin[])], this.#hostOptions);
    const global = hostOf(lists.plugins);
    // A listener's own list replaces the global one there, with its own ordering.
    const listeners = lists.listeners.map((l) => (l.plugins ? hostOf(l.plugins) : global));
    const instances = new Set<Plugin>();
    for (const host of new Set([global, ...listeners])) for (const p of host.plugins) instances.add(p);
    return { global, listeners, instances };
  }

  #retire(generation: PluginGeneration, drain: boolean): Promise<void> {
    const retiring = (async () => {
      if (drain) await Promise.all([...hostsOf(generation)].map((h) => h.whenIdle()));
      this.#live.delete(generation);
      if (this.#closed) return;
      const done: Plugin[] = [];
      for (const p of generation.instances) {
        const holders = (this.#holders.get(p) ?? 1) - 1;
        if (holders > 0) {
          this.#holders.set(p, holders);
          continue;
        }
        this.#holders.delete(p);
        this.#stopped.add(p);
        done.push(p);
      }
      await runLifecycle(done, 'shutdown', this.#hostOptions);
    })();
    this.#retiring.add(retiring);
    return retiring.finally(() => this.#retiring.delete(retiring));
  }
}

function hostsOf(generation: PluginGeneration): Set<PluginHost> {
  return new Set([generation.global, ...generation.listeners]);
}
