// The hook runner: orders plugins, runs each hook by its kind, enforces timeouts and turns a
// throwing or hanging hook into a logged failure and a 451, never into a decision.
import type { NextHop } from './envelope.js';
import { HookFailure, PluginRegistrationError } from './errors.js';
import {
  type BouncedAdvice,
  type DeferredAdvice,
  HOOK_KINDS,
  HOOK_NAMES,
  HOOK_SCOPES,
  type HookContexts,
  type HookHandler,
  type HookName,
  type HookOptions,
  type Plugin,
  type SessionContext,
} from './hooks.js';
import { type Logger, silentLogger } from './logger.js';
import { checkPluginShape } from './registration.js';
import { Replies } from './reply.js';
import { isResultKey, ResultStore, type Results } from './results.js';
import {
  bouncedAdviceProblem,
  deferredAdviceProblem,
  describe,
  nextHopProblem,
  verdictProblem,
} from './returns.js';
import { TIMED_OUT, within } from './timeout.js';
import type { Verdict } from './verdict.js';

export const DEFAULT_HOOK_TIMEOUT_MS = 30_000;

type KindOf<K extends HookName> = (typeof HOOK_KINDS)[K];
type HooksOfKind<Kind> = { [K in HookName]: KindOf<K> extends Kind ? K : never }[HookName];
export type VerdictHook = HooksOfKind<'verdict'>;
export type TransformHook = HooksOfKind<'transform'>;
export type ObserveHook = HooksOfKind<'observe'>;

/**
 * The context fields a caller provides; the runner adds log, hook name, the abort signal, the
 * plugin's state and, in an SMTP session, the results channel. (Delivery contexts have their own `results`, the
 * per-recipient replies, which the caller provides.)
 */
export type HookInput<K extends HookName> = Omit<
  HookContexts[K],
  | 'log'
  | 'hook'
  | 'signal'
  | 'sessionState'
  | 'transactionState'
  | (HookContexts[K] extends SessionContext<unknown> ? 'results' : never)
>;

/** One finished hook call, for metrics and message timelines. */
export interface HookEvent {
  readonly plugin: string;
  readonly hook: HookName;
  readonly durationMs: number;
  /** The verdict kind for verdict hooks, `ok` for others, or why it failed. */
  readonly outcome: Verdict['kind'] | 'ok' | 'error' | 'timeout';
  readonly code?: number;
  readonly enhanced?: string;
  readonly text?: string;
  readonly sessionId?: string;
}

export interface HostOptions {
  readonly logger?: Logger;
  readonly defaultTimeoutMs?: number;
  readonly onHookEvent?: (event: HookEvent) => void;
}

/** The outcome of a verdict stage: the deciding verdict and who gave it (none when all continued). */
export interface StageOutcome {
  readonly verdict: Verdict;
  readonly plugin?: string;
  /** A hook failed; the verdict is the 451 4.3.0 that stands in for it. */
  readonly failed?: boolean;
}

interface RegisteredHook {
  readonly plugin: Plugin;
  readonly pluginIndex: number;
  readonly handler: HookHandler<HookName>;
  readonly timeoutMs: number;
  readonly log: Logger;
}

/**
 * Per-connection plugin state, results and abort signal. Core keeps one per SMTP session; delivery
 * hooks have none.
 */
export class StateScope {
  readonly sessionId: string | undefined;
  /** What plugins published on `ctx.results` in this session. */
  readonly results = new ResultStore();
  // Made when a plugin with per-session or per-transaction state first reads it (most sessions never).
  #session: Map<number, unknown> | undefined;
  #transaction: Map<number, unknown> | undefined;
  // Made when a hook first reads the signal (most never do): a session that ends with nobody
  // listening builds no controller and no DOMException.
  #ended: AbortController | undefined;
  #endedWith: { reason: unknown } | undefined;

  constructor(sessionId?: string) {
    this.sessionId = sessionId;
  }

  /** Fires when the session ends (`end`): hooks still deciding something for its client are aborted. */
  get signal(): AbortSignal {
    if (this.#ended === undefined) {
      this.#ended = new AbortController();
      if (this.#endedWith) this.#ended.abort(this.#endedWith.reason ?? sessionClosed());
    }
    return this.#ended.signal;
  }

  /** The session has ended (`end` was called). */
  get ended(): boolean {
    return this.#endedWith !== undefined;
  }

  /**
   * The connection is gone: aborts the hooks that answer its client (connect to queue) with
   * `reason`. The `queued` and `close` hooks, which run after the client has its answer, are not.
   */
  end(reason?: unknown): void {
    if (this.#endedWith) return;
    this.#endedWith = { reason };
    this.#ended?.abort(reason ?? sessionClosed());
  }

  /** Forgets per-transaction state and results (at MAIL FROM, RSET and after DATA). */
  resetTransaction(): void {
    this.#transaction = undefined;
    this.results.resetTransaction();
  }

  sessionStateOf(index: number, plugin: Plugin): unknown {
    const make = plugin.state?.session;
    if (!make) return undefined;
    this.#session ??= new Map();
    return lazily(this.#session, index, make);
  }

  transactionStateOf(index: number, plugin: Plugin): unknown {
    const make = plugin.state?.transaction;
    if (!make) return undefined;
    this.#transaction ??= new Map();
    return lazily(this.#transaction, index, make);
  }
}

function sessionClosed(): DOMException {
  return new DOMException('the SMTP session closed', 'AbortError');
}

function lazily(map: Map<number, unknown>, index: number, make: () => unknown): unknown {
  if (!map.has(index)) map.set(index, make());
  return map.get(index);
}

/** Hooks whose outcome a connected client waits for: the end of its session aborts them. */
const ANSWERS_CLIENT: ReadonlySet<HookName> = new Set<HookName>([
  'connect',
  'helo',
  'auth',
  'mailFrom',
  'rcptTo',
  'headers',
  'message',
  'queue',
]);

/**
 * One hook call's AbortSignal, made only when the hook reads `ctx.signal` (most never do). It fires
 * at the call's timeout, and follows the outer signals (the session's end, the host's abort) while
 * the call runs.
 */
class CallSignal {
  /** The signals it follows, read only when the call's own signal is made. */
  readonly #outer: () => readonly AbortSignal[];
  #controller: AbortController | undefined;
  #aborted: { reason: unknown } | undefined;
  #unlink: (() => void)[] = [];
  #finished = false;

  constructor(outer: () => readonly AbortSignal[]) {
    this.#outer = outer;
  }

  get signal(): AbortSignal {
    if (this.#controller) return this.#controller.signal;
    const controller = new AbortController();
    this.#controller = controller;
    const outer = this.#outer();
    const fired = this.#aborted ?? outer.find((s) => s.aborted);
    if (fired) {
      controller.abort(fired.reason);
    } else if (!this.#finished) {
      for (const signal of outer) {
        const follow = (): void => this.abort(signal.reason);
        signal.addEventListener('abort', follow, { once: true });
        this.#unlink.push(() => signal.removeEventListener('abort', follow));
      }
    }
    return controller.signal;
  }

  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = { reason };
    this.#controller?.abort(reason);
  }

  /** The call is over (or given up on): stop following the outer signals. */
  finish(): void {
    this.#finished = true;
    for (const unlink of this.#unlink.splice(0)) unlink();
  }
}

const CALL_SIGNAL = Symbol('call signal');

function readSignal(this: { [CALL_SIGNAL]: CallSignal }): AbortSignal {
  return this[CALL_SIGNAL].signal;
}

const RANK = { pre: 0, normal: 1, post: 2 } as const;

export class PluginHost {
  readonly plugins: readonly Plugin[];
  readonly #hooks = new Map<HookName, RegisteredHook[]>();
  readonly #log: Logger;
  readonly #onEvent: ((event: HookEvent) => void) | undefined;
  /** Aborted by `abort()`: the process is shutting down. */
  readonly #closing = new AbortController();
  /** Users (sessions, delivery attempts) that retain this host, and hook calls running now. */
  #users = 0;
  #calls = 0;
  #idleWaiters: (() => void)[] = [];

  constructor(plugins: readonly Plugin[], options: HostOptions = {}) {
    const names = new Set<string>();
    for (const [i, plugin] of plugins.entries()) {
      if (
        typeof plugin !== 'object' ||
        plugin === null ||
        typeof plugin.name !== 'string' ||
        plugin.name === ''
      ) {
        throw new PluginRegistrationError(`plugins[${i}] is not a plugin: expected an object with a name`);
      }
      if (names.has(plugin.name)) {
        throw new PluginRegistrationError(
          `plugins[${i}]: a plugin named ${plugin.name} is already registered`,
        );
      }
      names.add(plugin.name);
      checkPluginShape(plugin);
    }
    checkPublishers(plugins);
    this.plugins = plugins;
    this.#log = options.logger ?? silentLogger;
    this.#onEvent = options.onHookEvent;
    const defaultTimeout = options.defaultTimeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS;

    for (const hook of HOOK_NAMES) {
      const registered: (RegisteredHook & { rank: number })[] = [];
      plugins.forEach((plugin, pluginIndex) => {
        const spec = plugin[hook] as unknown;
        if (spec === undefined) return;
        // checkPluginShape made sure of the shape.
        const options = (typeof spec === 'function' ? { handler: spec } : spec) as HookOptions & {
          handler: HookHandler<HookName>;
        };
        const rank = RANK[plugin.enforce ?? 'normal'] * 3 + RANK[options.order ?? 'normal'];
        registered.push({
          plugin,
          pluginIndex,
          handler: options.handler,
          timeoutMs: options.timeout ?? plugin.timeout ?? defaultTimeout,
          log: this.#log.child({ plugin: plugin.name, hook }),
          rank,
        });
      });
      // Array.prototype.sort is stable, so config order breaks ties.
      registered.sort((a, b) => a.rank - b.rank);
      if (registered.length > 0) this.#hooks.set(hook, registered);
    }
  }

  /** Whether any plugin implements this hook (callers skip work, such as buffering, when none does). */
  has(hook: HookName): boolean {
    return this.#hooks.has(hook);
  }

  /** Plugin names in the order this hook runs them. */
  order(hook: HookName): string[] {
    return (this.#hooks.get(hook) ?? []).map((h) => h.plugin.name);
  }

  /**
   * Marks this host in use by one user (an SMTP session, a delivery attempt) until the returned
   * function is called. A registry replacing this host shuts its plugins down only once it is idle.
   */
  retain(): () => void {
    this.#users += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#users -= 1;
      this.#wakeIfIdle();
    };
  }

  /** Nothing retains this host and no hook of it is running. */
  get idle(): boolean {
    return this.#users === 0 && this.#calls === 0;
  }

  /** Resolves once the host is idle (at once when it is). */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Aborts every hook running now or later with `reason` (their `ctx.signal` fires): the process
   * is shutting down. `init` and `shutdown` are not aborted: shutdown still has to run.
   */
  abort(reason: unknown = new DOMException('tern is shutting down', 'AbortError')): void {
    this.#closing.abort(reason);
  }

  /** Runs a verdict hook: in order, until a verdict other than continue. Never throws. */
  async runVerdict<K extends VerdictHook>(
    hook: K,
    input: HookInput<K>,
    scope?: StateScope,
  ): Promise<StageOutcome> {
    for (const entry of this.#hooks.get(hook) ?? []) {
      const call = await this.#call(entry, hook, input, scope);
      if (call.failure) return { verdict: localErrorVerdict, plugin: entry.plugin.name, failed: true };
      if (call.value === undefined) {
        this.#emit(entry, hook, call.ms, 'continue', scope);
        continue;
      }
      const problem = verdictProblem(call.value);
      if (problem !== undefined) {
        this.#invalid(entry, hook, call.ms, problem, scope);
        return { verdict: localErrorVerdict, plugin: entry.plugin.name, failed: true };
      }
      const verdict = call.value as Verdict;
      this.#emit(entry, hook, call.ms, verdict.kind, scope, verdict);
      if (verdict.kind !== 'continue') return { verdict, plugin: entry.plugin.name };
    }
    return { verdict: { kind: 'continue' } };
  }

  /**
   * Runs a transform hook: each in order over the same context, which it changes in place.
   * Throws HookFailure when one fails or returns something (a transform cannot decide).
   */
  async runTransform<K extends TransformHook>(
    hook: K,
    input: HookInput<K>,
    scope?: StateScope,
  ): Promise<void> {
    for (const entry of this.#hooks.get(hook) ?? []) {
      const call = await this.#call(entry, hook, input, scope);
      if (call.failure) throw call.failure;
      if (call.value !== undefined) {
        throw this.#invalid(
          entry,
          hook,
          call.ms,
          `${describe(call.value)}; a ${hook} hook changes the context in place and returns nothing`,
          scope,
        );
      }
      this.#emit(entry, hook, call.ms, 'ok', scope);
    }
  }

  /**
   * Runs the route hook: the first plugin that names a next hop wins. Throws HookFailure when one
   * fails or names a next hop that is not one.
   */
  async runRoute(input: HookInput<'route'>): Promise<NextHop | undefined> {
    for (const entry of this.#hooks.get('route') ?? []) {
      const call = await this.#call(entry, 'route', input, undefined);
      if (call.failure) throw call.failure;
      if (call.value === undefined) {
        this.#emit(entry, 'route', call.ms, 'ok');
        continue;
      }
      const problem = nextHopProblem(call.value);
      if (problem !== undefined) throw this.#invalid(entry, 'route', call.ms, problem);
      this.#emit(entry, 'route', call.ms, 'ok');
      return call.value as NextHop;
    }
    return undefined;
  }

  /**
   * Runs an advise hook (deferred, bounced): later advice overrides earlier. A hook that fails or
   * gives advice of the wrong shape is logged and its advice left out: what the retry schedule and
   * the bounce rules decided stands.
   */
  async runAdvise(hook: 'deferred', input: HookInput<'deferred'>): Promise<DeferredAdvice>;
  async runAdvise(hook: 'bounced', input: HookInput<'bounced'>): Promise<BouncedAdvice>;
  async runAdvise(
    hook: 'deferred' | 'bounced',
    input: HookInput<'deferred'> | HookInput<'bounced'>,
  ): Promise<DeferredAdvice | BouncedAdvice> {
    const check = hook === 'deferred' ? deferredAdviceProblem : bouncedAdviceProblem;
    let advice: DeferredAdvice & BouncedAdvice = {};
    for (const entry of this.#hooks.get(hook) ?? []) {
      const call = await this.#call(entry, hook, input, undefined);
      if (call.failure) continue;
      if (call.value !== undefined) {
        const problem = check(call.value);
        if (problem !== undefined) {
          this.#invalid(entry, hook, call.ms, problem);
          continue;
        }
        advice = { ...advice, ...(call.value as object) };
      }
      this.#emit(entry, hook, call.ms, 'ok');
    }
    return advice;
  }

  /** Runs an observe hook: all at once; what they return and their failures never change anything. */
  async runObserve<K extends ObserveHook>(hook: K, input: HookInput<K>, scope?: StateScope): Promise<void> {
    await this.#observe(hook, input, scope);
  }

  /**
   * Runs `init` or `shutdown` as an observe hook and returns the failures (also logged): the app
   * stops start-up when a plugin's init fails.
   */
  async runLifecycle(hook: 'init' | 'shutdown'): Promise<HookFailure[]> {
    return this.#observe(hook, {});
  }

  async #observe<K extends ObserveHook>(
    hook: K,
    input: HookInput<K>,
    scope?: StateScope,
  ): Promise<HookFailure[]> {
    const calls = await Promise.all(
      (this.#hooks.get(hook) ?? []).map(async (entry) => {
        const call = await this.#call(entry, hook, input, scope);
        if (!call.failure) this.#emit(entry, hook, call.ms, 'ok', scope);
        return call.failure;
      }),
    );
    return calls.filter((failure) => failure !== undefined);
  }

  /**
   * Calls one hook with its context, under its timeout; at the timeout its signal is aborted and
   * the call given up. A failure is logged and comes back as a value.
   */
  async #call(
    entry: RegisteredHook,
    hook: HookName,
    input: object,
    scope: StateScope | undefined,
  ): Promise<CallResult> {
    const abort = new CallSignal(() => {
      const outer: AbortSignal[] = [];
      if (hook !== 'init' && hook !== 'shutdown') outer.push(this.#closing.signal);
      if (scope && ANSWERS_CLIENT.has(hook)) outer.push(scope.signal);
      return outer;
    });
    // Built by assignment, not as `{ ...input, log, ... }`: on Node 20 every property added after
    // a spread makes a new hidden class, which cost about 15 µs and much garbage per hook call.
    const ctx: Record<PropertyKey, unknown> = Object.assign({}, input as Record<string, unknown>);
    ctx.log = entry.log;
    ctx.hook = hook;
    ctx.sessionState = scope?.sessionStateOf(entry.pluginIndex, entry.plugin);
    ctx.transactionState = scope?.transactionStateOf(entry.pluginIndex, entry.plugin);
    if (HOOK_SCOPES[hook] === 'session' || HOOK_SCOPES[hook] === 'transaction') {
      ctx.results = resultsFor(scope, entry, hook);
    }
    // `signal` stays an own, enumerable getter (a plugin that spreads ctx keeps it), with one
    // shared getter function: a getter written in a literal is a new function every call.
    Object.defineProperty(ctx, CALL_SIGNAL, { value: abort });
    Object.defineProperty(ctx, 'signal', { get: readSignal, enumerable: true, configurable: true });
    this.#calls += 1;
    const started = performance.now();
    try {
      // Observe hooks start on a later microtask (their caller carries on first); the others are
      // called at once. Only a hook that returns a promise gets a timer: one that answered
      // synchronously (most: the internal plugins' on every RCPT) is done already.
      if (HOOK_KINDS[hook] === 'observe') await Promise.resolve();
      let value: unknown = entry.handler(ctx as unknown as HookContexts[HookName]);
      if (isThenable(value)) value = await within(value, entry.timeoutMs);
      const ms = performance.now() - started;
      if (value === TIMED_OUT) {
        const reason = `timed out after ${entry.timeoutMs} ms`;
        abort.abort(new DOMException(`plugin ${entry.plugin.name}: hook ${hook} ${reason}`, 'TimeoutError'));
        const failure = new HookFailure(entry.plugin.name, hook, reason);
        this.#fail(entry, hook, failure, 'timeout', ms, scope);
        return { failure, ms };
      }
      return { value, ms };
    } catch (error) {
      const ms = performance.now() - started;
      const failure = new HookFailure(entry.plugin.name, hook, 'threw', error);
      this.#fail(entry, hook, failure, 'error', ms, scope);
      return { failure, ms };
    } finally {
      abort.finish();
      this.#calls -= 1;
      this.#wakeIfIdle();
    }
  }

  #wakeIfIdle(): void {
    if (!this.idle || this.#idleWaiters.length === 0) return;
    for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /** A hook returned something it may not: logged as a failure like a throw; returned for callers that throw it. */
  #invalid(
    entry: RegisteredHook,
    hook: HookName,
    ms: number,
    problem: string,
    scope?: StateScope,
  ): HookFailure {
    const failure = new HookFailure(entry.plugin.name, hook, `returned something it may not: ${problem}`);
    this.#fail(entry, hook, failure, 'error', ms, scope);
    return failure;
  }

  #fail(
    entry: RegisteredHook,
    hook: HookName,
    failure: HookFailure,
    outcome: 'error' | 'timeout',
    ms: number,
    scope: StateScope | undefined,
  ): void {
    entry.log.error(
      {
        err: failure.cause ?? failure,
        plugin: entry.plugin.name,
        hook,
        outcome,
        sessionId: scope?.sessionId,
      },
      failure.message,
    );
    this.#emit(entry, hook, ms, outcome, scope);
  }

  #emit(
    entry: RegisteredHook,
    hook: HookName,
    durationMs: number,
    outcome: HookEvent['outcome'],
    scope?: StateScope,
    verdict?: Verdict,
  ): void {
    if (!this.#onEvent) return;
    const reply = verdict && 'reply' in verdict ? verdict.reply : undefined;
    try {
      this.#onEvent({
        plugin: entry.plugin.name,
        hook,
        durationMs,
        outcome,
        ...(reply ? { code: reply.code, enhanced: reply.enhanced, text: reply.text } : {}),
        ...(scope?.sessionId ? { sessionId: scope.sessionId } : {}),
      });
    } catch (error) {
      this.#log.error({ err: error }, 'hook event listener threw');
    }
  }
}

/** A hook run without a session scope (a unit test) gets results that live for that call only. */
function resultsFor(scope: StateScope | undefined, entry: RegisteredHook, hook: HookName): Results {
  return (scope?.results ?? new ResultStore()).channel(entry.plugin, hook, entry.log);
}

/** Every `publishes` entry is a result key, and each key has one publisher in a host. */
function checkPublishers(plugins: readonly Plugin[]): void {
  const publishers = new Map<string, string>();
  for (const [i, plugin] of plugins.entries()) {
    const publishes: unknown = plugin.publishes;
    if (publishes === undefined) continue;
    if (!Array.isArray(publishes)) {
      throw new PluginRegistrationError(
        `plugins[${i}] (${plugin.name}): publishes must be a list of keys from defineResult()`,
      );
    }
    for (const [j, key] of publishes.entries()) {
      if (!isResultKey(key)) {
        throw new PluginRegistrationError(
          `plugins[${i}] (${plugin.name}): publishes[${j}] is not a key from defineResult()`,
        );
      }
      const other = publishers.get(key.name);
      if (other !== undefined && other !== plugin.name) {
        throw new PluginRegistrationError(
          `plugins[${i}] (${plugin.name}): result ${key.name} is already published by plugin ${other}; keep one of the two`,
        );
      }
      publishers.set(key.name, plugin.name);
    }
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

type CallResult = { value?: unknown; failure?: undefined; ms: number } | { failure: HookFailure; ms: number };

const localErrorVerdict: Verdict = Object.freeze({ kind: 'tempfail', reply: Replies.localError });
