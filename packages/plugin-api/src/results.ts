// The results channel: plugins publish typed outcomes (an SPF result, DNSBL hits, a score) on the
// context, and later hooks of the same SMTP session read them, so checks compose instead of living
// in one plugin. Haraka calls this `results`; here each result has a typed key, declared by the
// plugin that publishes it and exported for the plugins that read it.
//
// Results live in memory for the SMTP session: every later hook of the session reads them, the
// `queue` and `queued` hooks of a message included. They are not stored with the queued message:
// a plugin that wants one on record writes it into the message (Authentication-Results, X-Spam-*),
// into a hold reason, or into a timeline from its `queued` hook (`ctx.results.snapshot()`).
import { TernError } from './errors.js';
import { HOOK_SCOPES, type HookName } from './hooks.js';
import type { Logger } from './logger.js';

/**
 * How long a result lives. `session`: the whole SMTP connection (connect, HELO, AUTH outcomes,
 * DNS list lookups). `transaction`: one message, from MAIL FROM until the next MAIL FROM, RSET or
 * the end of DATA; still readable by that message's `queue` and `queued` hooks.
 */
export type ResultScope = 'session' | 'transaction';

declare const VALUE: unique symbol;

/** A typed name for one kind of result. Create it with defineResult() and export it for readers. */
export interface ResultKey<T> {
  /** Namespaced by the publishing package: `spam.dmarc`, `ratelimit.sender`. */
  readonly name: string;
  readonly scope: ResultScope;
  /** Type only: the value this key carries. Never set. */
  readonly [VALUE]?: T;
}

// biome-ignore lint/suspicious/noExplicitAny: a key list holds keys of any value type
export type AnyResultKey = ResultKey<any>;

/** The value type of a key. */
export type ResultValue<K> = K extends ResultKey<infer T> ? T : never;

/** A key is misused, published by a plugin that did not declare it, or set where its scope has no life. */
export class ResultError extends TernError {
  constructor(message: string) {
    super('TERN_ERR_RESULT', message);
  }
}

const RESULT_NAME = /^[a-z][a-z0-9-]*(?:\.[a-z0-9][a-z0-9-]*)+$/;

/**
 * Declares a result key. The publishing plugin lists it in its `publishes` and exports it, so
 * readers get the value with its type:
 *
 * ```ts
 * export const dmarcResult = defineResult<DmarcOutcome>('spam.dmarc');
 * // publisher: definePlugin({ name: 'spam-dmarc', publishes: [dmarcResult], message(ctx) { ctx.results.set(dmarcResult, check()) } })
 * // reader:    const dmarc = await ctx.results.wait(dmarcResult); // DmarcOutcome | undefined
 * ```
 */
export function defineResult<T>(name: string, options: { readonly scope?: ResultScope } = {}): ResultKey<T> {
  if (!RESULT_NAME.test(name)) {
    throw new ResultError(
      `result name ${JSON.stringify(name)}: expected lower-case words joined by dots, starting with the package (spam.dmarc)`,
    );
  }
  const scope = options.scope ?? 'transaction';
  if (scope !== 'session' && scope !== 'transaction') {
    throw new ResultError(`result ${name}: scope must be 'session' or 'transaction', not ${String(scope)}`);
  }
  return Object.freeze({ name, scope });
}

/** Whether a value is a key made by defineResult (checked when plugins register). */
export function isResultKey(value: unknown): value is AnyResultKey {
  const key = value as { name?: unknown; scope?: unknown } | null;
  return (
    typeof key === 'object' &&
    key !== null &&
    typeof key.name === 'string' &&
    RESULT_NAME.test(key.name) &&
    (key.scope === 'session' || key.scope === 'transaction')
  );
}

/** One published result as observers see it (for a timeline or a debug dump). */
export interface PublishedResult {
  readonly name: string;
  readonly scope: ResultScope;
  /** The plugin that published it. */
  readonly plugin: string;
  /** `pending` until a published promise settles; `failed` when it rejected (read as absent). */
  readonly status: 'pending' | 'settled' | 'failed';
  readonly value?: unknown;
}

/** Reading results: what every session hook and the test kit get. */
export interface ResultsReader {
  /** The value, once known: undefined when nobody published it (yet) or it is still pending. */
  get<T>(key: ResultKey<T>): T | undefined;
  /**
   * The value, waiting for it when it was published as a promise. Undefined when nobody has
   * published it by now (a reader placed before the publisher sees nothing) or when the
   * publisher's promise rejected (logged once for the publisher).
   */
  wait<T>(key: ResultKey<T>): Promise<T | undefined>;
  /** Whether it was published (pending, settled or failed). */
  has(key: AnyResultKey): boolean;
  /** Everything published in this session and transaction, in publication order. */
  snapshot(): PublishedResult[];
}

/** The results channel on a hook context. */
export interface Results extends ResultsReader {
  /**
   * Publishes a value, or a promise of one so slow checks overlap with later stages (readers
   * `wait` for it). Only a plugin that lists the key in its `publishes` may set it; it may
   * replace its own value (adding a recipient's outcome at each RCPT, say). A transaction key can
   * be set from MAIL FROM on, not in connect, helo, auth or close.
   */
  set<T>(key: ResultKey<T>, value: NoInfer<T> | PromiseLike<NoInfer<T>>): void;
}

// Why one publisher per key (checked when the host is built) rather than "last write wins": a
// result is a fact established by one check, and every reader (the score, Authentication-Results,
// the timeline, a policy plugin) must see the same fact for the whole message. Two plugins
// publishing the same key is a configuration mistake (a preset plus a standalone copy of one of
// its checks, say) that start-up reports; it must not become a race that silently changes what
// later hooks read. Ownership is by declaration, not by first write, so a publisher's own
// updates are always allowed and a reader can never publish by accident.

interface Entry {
  readonly key: AnyResultKey;
  readonly plugin: string;
  status: PublishedResult['status'];
  value: unknown;
  /** While pending, and afterwards so waiting stays one code path. */
  readonly settled: Promise<unknown>;
}

/**
 * The results of one SMTP session. StateScope owns one; resetTransaction swaps the transaction
 * map rather than clearing it, so hooks still running for the previous message (queued runs after
 * the 250) keep reading that message's results while the next MAIL FROM starts afresh.
 */
export class ResultStore {
  // Made when a channel first needs them: most sessions and transactions run no hook (a session
  // resets its transaction at the greeting, HELO, MAIL FROM and after DATA).
  #session: Map<string, Entry> | undefined;
  #transaction: Map<string, Entry> | undefined;

  resetTransaction(): void {
    this.#transaction = undefined;
  }

  /** The channel for one hook call of one plugin: reads everything, writes what `publishes` declares. */
  channel(plugin: PublisherInfo, hook: HookName, log: Logger): Results {
    this.#session ??= new Map();
    this.#transaction ??= new Map();
    return new Channel(this.#session, this.#transaction, plugin, hook, log);
  }

  /** Read-only access (the test kit, observers outside any plugin). */
  reader(): ResultsReader {
    this.#session ??= new Map();
    this.#transaction ??= new Map();
    return new Channel(this.#session, this.#transaction, undefined, undefined, undefined);
  }
}

/** What the channel needs to know about the plugin calling it. */
export interface PublisherInfo {
  readonly name: string;
  readonly publishes?: readonly AnyResultKey[] | undefined;
}

class Channel implements Results {
  readonly #session: Map<string, Entry>;
  readonly #transaction: Map<string, Entry>;
  readonly #plugin: PublisherInfo | undefined;
  readonly #hook: HookName | undefined;
  readonly #log: Logger | undefined;

  constructor(
    session: Map<string, Entry>,
    transaction: Map<string, Entry>,
    plugin: PublisherInfo | undefined,
    hook: HookName | undefined,
    log: Logger | undefined,
  ) {
    this.#session = session;
    this.#transaction = transaction;
    this.#plugin = plugin;
    this.#hook = hook;
    this.#log = log;
  }

  // A name is looked up in both maps: a reader holding another copy of a key (two installed
  // versions of one package) still finds the value.
  #entry(key: AnyResultKey): Entry | undefined {
    return this.#transaction.get(key.name) ?? this.#session.get(key.name);
  }

  get<T>(key: ResultKey<T>): T | undefined {
    const entry = this.#entry(key);
    return entry?.status === 'settled' ? (entry.value as T) : undefined;
  }

  async wait<T>(key: ResultKey<T>): Promise<T | undefined> {
    const entry = this.#entry(key);
    if (!entry) return undefined;
    await entry.settled;
    return entry.status === 'settled' ? (entry.value as T) : undefined;
  }

  has(key: AnyResultKey): boolean {
    return this.#entry(key) !== undefined;
  }

  snapshot(): PublishedResult[] {
    return [...this.#session.values(), ...this.#transaction.values()].map((e) => ({
      name: e.key.name,
      scope: e.key.scope,
      plugin: e.plugin,
      status: e.status,
      ...(e.status === 'settled' ? { value: e.value } : {}),
    }));
  }

  set<T>(key: ResultKey<T>, value: T | PromiseLike<T>): void {
    const plugin = this.#plugin;
    if (!plugin || !isResultKey(key)) {
      throw new ResultError(
        plugin ? 'results.set: expected a key made by defineResult()' : 'results are read-only here',
      );
    }
    if (!plugin.publishes?.some((k) => k.name === key.name)) {
      throw new ResultError(
        `plugin ${plugin.name} sets result ${key.name} without declaring it: add it to the plugin's publishes`,
      );
    }
    if (
      key.scope === 'transaction' &&
      this.#hook !== undefined &&
      HOOK_SCOPES[this.#hook] !== 'transaction'
    ) {
      throw new ResultError(
        `plugin ${plugin.name} sets transaction result ${key.name} in ${this.#hook}, outside any transaction: set it from mailFrom on, or declare it with scope 'session'`,
      );
    }
    const map = key.scope === 'session' ? this.#session : this.#transaction;
    if (!isThenable(value)) {
      map.set(key.name, { key, plugin: plugin.name, status: 'settled', value, settled: Promise.resolve() });
      return;
    }
    const log = this.#log;
    const entry: Entry = {
      key,
      plugin: plugin.name,
      status: 'pending',
      value: undefined,
      settled: Promise.resolve(value).then(
        (settledValue) => {
          // A newer value from the same publisher may have replaced this one meanwhile.
          if (map.get(key.name) !== entry) return;
          entry.status = 'settled';
          entry.value = settledValue;
        },
        (error: unknown) => {
          if (map.get(key.name) === entry) entry.status = 'failed';
          // A publisher's promise should not reject; when it does it is a bug in that plugin. It
          // is logged once, here, and readers see the result as absent, so one faulty check does
          // not turn into a 451 for every message its readers judge.
          log?.error({ err: error, result: key.name }, `result ${key.name} failed; read as not published`);
        },
      ),
    };
    map.set(key.name, entry);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}
