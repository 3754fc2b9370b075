// What a plugin object may hold, checked when a host is built: a JavaScript plugin has no compiler
// to tell it that `mailfrom` is not a hook, so an unknown key is refused with a suggestion instead
// of being a hook that silently never runs.
import { PluginRegistrationError } from './errors.js';
import { HOOK_NAMES, type Plugin, type PluginMeta } from './hooks.js';

/**
 * The keys of a plugin object that are not hooks. `api` is the plugin's own: Tern never reads it
 * (after Rollup's `api`, for what a plugin offers other plugins or tools).
 */
export const PLUGIN_META_KEYS = [
  'name',
  'enforce',
  'timeout',
  'state',
  'publishes',
  'api',
] as const satisfies readonly (keyof PluginMeta<unknown, unknown>)[];

const HOOK_OPTION_KEYS = ['handler', 'order', 'timeout'] as const;

const HOOKS = new Set<string>(HOOK_NAMES);
const META = new Set<string>(PLUGIN_META_KEYS);

/**
 * Checks one plugin object: every key is a hook or a metadata key, each hook is a function or
 * `{ handler, order?, timeout? }`, and the metadata has its documented shape. Throws
 * PluginRegistrationError naming the plugin, the key and the fix.
 */
export function checkPluginShape(plugin: Plugin): void {
  const fail = (problem: string): never => {
    throw new PluginRegistrationError(`plugin ${plugin.name}: ${problem}`);
  };
  for (const key of Object.keys(plugin)) {
    if (HOOKS.has(key)) {
      checkHookSpec((plugin as unknown as Record<string, unknown>)[key], key, fail);
      continue;
    }
    if (META.has(key)) continue;
    const suggestion = didYouMean(key, [...HOOK_NAMES, ...PLUGIN_META_KEYS]);
    fail(
      suggestion
        ? `unknown hook "${key}"; did you mean "${suggestion}"?`
        : `unknown key "${key}": a plugin holds hooks (${HOOK_NAMES.join(', ')}) and ${PLUGIN_META_KEYS.join(', ')}; keep data of your own under api`,
    );
  }
  if (plugin.enforce !== undefined && plugin.enforce !== 'pre' && plugin.enforce !== 'post') {
    fail(`enforce must be 'pre' or 'post', not ${JSON.stringify(plugin.enforce)}`);
  }
  if (plugin.timeout !== undefined && !isTimeout(plugin.timeout)) {
    fail(`timeout must be a whole number of milliseconds above 0, not ${String(plugin.timeout)}`);
  }
  const state: unknown = plugin.state;
  if (state !== undefined) {
    const factories = state as { session?: unknown; transaction?: unknown } | null;
    if (
      typeof factories !== 'object' ||
      factories === null ||
      Object.keys(factories).some((k) => k !== 'session' && k !== 'transaction') ||
      (factories.session !== undefined && typeof factories.session !== 'function') ||
      (factories.transaction !== undefined && typeof factories.transaction !== 'function')
    ) {
      fail(
        'state must be { session?: () => S, transaction?: () => T } (factories, called per connection and per transaction)',
      );
    }
  }
}

function checkHookSpec(spec: unknown, hook: string, fail: (problem: string) => never): void {
  if (typeof spec === 'function') return;
  if (
    typeof spec !== 'object' ||
    spec === null ||
    typeof (spec as { handler?: unknown }).handler !== 'function'
  ) {
    fail(`hook ${hook} must be a function or { handler, order?, timeout? }`);
  }
  const options = spec as { order?: unknown; timeout?: unknown };
  for (const key of Object.keys(options)) {
    if ((HOOK_OPTION_KEYS as readonly string[]).includes(key)) continue;
    const suggestion = didYouMean(key, HOOK_OPTION_KEYS);
    fail(
      `hook ${hook}: unknown option "${key}"${suggestion ? `; did you mean "${suggestion}"?` : ` (options are ${HOOK_OPTION_KEYS.join(', ')})`}`,
    );
  }
  if (options.order !== undefined && options.order !== 'pre' && options.order !== 'post') {
    fail(`hook ${hook}: order must be 'pre' or 'post', not ${JSON.stringify(options.order)}`);
  }
  if (options.timeout !== undefined && !isTimeout(options.timeout)) {
    fail(
      `hook ${hook}: timeout must be a whole number of milliseconds above 0, not ${String(options.timeout)}`,
    );
  }
}

function isTimeout(value: unknown): boolean {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

/**
 * The known name a mistyped one most likely meant: the same letters in another case or spelling
 * (`mailfrom`, `mail_from`), the same after Haraka's or a DOM habit's prefix (`hook_rcpt`,
 * `onConnect`), the start of one (`rcpt`), or one or two typing slips away (`conect`).
 */
export function didYouMean(given: string, known: readonly string[]): string | undefined {
  const plain = normalise(given);
  if (plain === '') return undefined;
  const candidates = known.map((name) => ({ name, plain: normalise(name) }));
  const exact = candidates.find((c) => c.plain === plain);
  if (exact) return exact.name;
  const alias = ALIASES[plain];
  if (alias !== undefined && known.includes(alias)) return alias;
  if (plain.length >= 3) {
    const prefix = candidates.find((c) => c.plain.startsWith(plain) || plain.startsWith(c.plain));
    if (prefix) return prefix.name;
  }
  let best: { name: string; distance: number } | undefined;
  for (const c of candidates) {
    const distance = editDistance(plain, c.plain);
    if (distance <= Math.min(2, Math.floor(c.plain.length / 3)) && (!best || distance < best.distance)) {
      best = { name: c.name, distance };
    }
  }
  return best?.name;
}

/** SMTP verbs and other MTAs' hook names, by the Tern hook that does their job. */
const ALIASES: Readonly<Record<string, string>> = {
  ehlo: 'helo',
  lhlo: 'helo',
  mail: 'mailFrom',
  rcpt: 'rcptTo',
  data: 'message',
  datapost: 'message',
  quit: 'close',
  disconnect: 'close',
  queueoutbound: 'queue',
  getmx: 'route',
};

function normalise(name: string): string {
  return name
    .toLowerCase()
    .replace(/[-_\s]/g, '')
    .replace(/^(hook|on)(?=[a-z]{3})/, '');
}

/** Levenshtein distance; names are short, so the quadratic table is fine. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
