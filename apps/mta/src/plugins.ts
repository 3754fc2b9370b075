// A config's plugin instances and their lifecycle hooks. The registry (plugin-registry.ts) decides
// when each instance starts and stops; this module finds the instances a config holds and runs
// their init or shutdown through the hook runner. A plugin whose init fails stops start-up: a
// plugin that could not start would otherwise answer 451 to every message it sees.
import { type HookFailure, type Plugin, TernError } from '@tern/plugin-api';
import { type HostOptions, PluginHost } from '@tern/plugin-api/host';

/** One or more plugins' init hook threw or timed out; the message names each plugin and its cause. */
export class PluginInitError extends TernError {
  readonly plugins: readonly string[];
  constructor(failures: readonly HookFailure[]) {
    // "plugin x: hook init threw" or "... timed out after N ms", then the plugin's own reason.
    const lines = failures.map((f) => {
      const cause = f.cause instanceof Error ? f.cause.message : f.cause;
      return `${f.message.replace(': hook init ', ': init ')}${cause === undefined ? '' : `: ${String(cause)}`}`;
    });
    super(
      'TERN_ERR_PLUGIN_INIT',
      `${lines.join('\n')}\n(fix what the plugin needs, such as its options or a service it connects to, or remove it from the config)`,
    );
    this.plugins = failures.map((f) => f.plugin);
  }
}

/**
 * Every distinct plugin object in a config: the global list, then the listeners' own lists. Takes
 * the config as loaded, before validation, so a config that fails validation can still have the
 * plugins its file made (Redis clients, timers) shut down.
 */
export function pluginInstances(config: unknown): Plugin[] {
  const isPlugin = (value: unknown): value is Plugin =>
    typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string';
  const lists: unknown[] = [];
  if (typeof config === 'object' && config !== null) {
    const { plugins, listeners } = config as { plugins?: unknown; listeners?: unknown };
    lists.push(plugins);
    if (Array.isArray(listeners)) {
      for (const listener of listeners) lists.push((listener as { plugins?: unknown } | null)?.plugins);
    }
  }
  const found = new Set<Plugin>();
  for (const list of lists) {
    if (!Array.isArray(list)) continue;
    for (const plugin of list) if (isPlugin(plugin)) found.add(plugin);
  }
  return [...found];
}

/**
 * Instances a running registry has started and not yet shut down (see plugin-registry.ts): only it
 * shuts them down, even when a refused config that holds them too is discarded.
 */
const started = new WeakSet<Plugin>();

/**
 * Runs `hook` on each plugin through the hook runner (its timeouts and logging). One host per
 * plugin: two instances of one plugin (a global and a listener's) may share a name.
 */
export async function runLifecycle(
  plugins: readonly Plugin[],
  hook: 'init' | 'shutdown',
  options: HostOptions,
): Promise<HookFailure[]> {
  const failures = await Promise.all(
    plugins.map(async (p) => {
      const failed = await new PluginHost([p], options).runLifecycle(hook);
      if (hook === 'init') started.add(p);
      else started.delete(p);
      return failed;
    }),
  );
  return failures.flat();
}

/**
 * Shuts down the plugins of a config that was never started (refused, or only read by a
 * command), closing what their factories opened. Instances a running registry started are left
 * to it: a cached module can hand the same instance to the running config and a refused one.
 */
export async function shutdownPlugins(plugins: readonly Plugin[], options: HostOptions): Promise<void> {
  await runLifecycle(
    plugins.filter((p) => !started.has(p)),
    'shutdown',
    options,
  );
}
