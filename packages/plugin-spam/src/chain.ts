// Several checks run as one plugin: spamFilter() is its checks in a fixed order under one name,
// with one timeout, one pair of state objects and the union of what they publish. Each hook runs
// the checks' hooks by the hook's kind, as the runner would run separate plugins.
import {
  type AnyResultKey,
  HOOK_KINDS,
  HOOK_NAMES,
  type HookName,
  type HookOptions,
  isVerdict,
  type Plugin,
  type PluginHooks,
} from '@tern/plugin-api';

/** Each check's own state, by position: what the chain keeps inside the plugin's state. */
export interface CheckStates {
  readonly checks: unknown[];
}

type Handler = (ctx: object) => unknown;

interface Step {
  readonly index: number;
  readonly check: Plugin;
  readonly order: HookOptions['order'];
  readonly handler: Handler;
}

const RANK = { pre: 0, normal: 1, post: 2 } as const;

interface ChainedHook {
  readonly order?: 'pre' | 'post';
  readonly handler: Handler;
}

export class CheckChain {
  readonly checks: readonly Plugin[];
  /** Every key a check publishes: the chained plugin declares them all. */
  readonly publishes: readonly AnyResultKey[];
  readonly #steps = new Map<HookName, Step[]>();

  constructor(checks: readonly Plugin[]) {
    this.checks = checks;
    this.publishes = checks.flatMap((c) => c.publishes ?? []);
    for (const hook of HOOK_NAMES) {
      const steps: Step[] = [];
      checks.forEach((check, index) => {
        const spec = check[hook] as unknown;
        if (spec === undefined) return;
        const kind = HOOK_KINDS[hook];
        if (kind !== 'verdict' && kind !== 'transform' && kind !== 'observe') {
          throw new TypeError(`check ${check.name}: ${hook} hooks cannot be chained`);
        }
        const { order, handler } =
          typeof spec === 'function' ? { order: undefined, handler: spec } : (spec as ChainedHook);
        steps.push({ index, check, order, handler: handler as Handler });
      });
      // Stable: checks keep their given order within one rank.
      steps.sort((a, b) => RANK[a.order ?? 'normal'] - RANK[b.order ?? 'normal']);
      if (steps.length > 0) this.#steps.set(hook, steps);
    }
  }

  /** Fresh per-connection states of every check. */
  sessionStates(): CheckStates {
    return { checks: this.checks.map((c) => c.state?.session?.()) };
  }

  /** Fresh per-transaction states of every check. */
  transactionStates(): CheckStates {
    return { checks: this.checks.map((c) => c.state?.transaction?.()) };
  }

  /**
   * One `{ order, handler }` per hook any check has. The chained hook runs as early as its
   * earliest check asks ('pre' when one says 'pre'; 'post' only when all say 'post').
   */
  hooks<S extends CheckStates, T extends CheckStates>(): PluginHooks<S, T> {
    const hooks: Partial<Record<HookName, ChainedHook>> = {};
    for (const [hook, steps] of this.#steps) {
      const orders = steps.map((s) => s.order);
      const order = orders.includes('pre') ? 'pre' : orders.every((o) => o === 'post') ? 'post' : undefined;
      const handler = (ctx: object): Promise<unknown> => this.#run(hook, steps, ctx);
      hooks[hook] = order ? { order, handler } : { handler };
    }
    // Each handler returns what its checks' hooks return: the same hook, so the same result type.
    return hooks as PluginHooks<S, T>;
  }

  async #run(hook: HookName, steps: readonly Step[], ctx: object): Promise<unknown> {
    const c = ctx as {
      log?: { child(b: Record<string, unknown>): unknown };
      sessionState?: CheckStates;
      transactionState?: CheckStates;
    };
    const contextOf = (step: Step): object => ({
      ...ctx,
      ...(c.log ? { log: c.log.child({ check: step.check.name }) } : {}),
      sessionState: c.sessionState?.checks[step.index],
      transactionState: c.transactionState?.checks[step.index],
    });
    const kind = HOOK_KINDS[hook];
    if (kind === 'observe') {
      // All at once, as the runner runs observers; the first failure is reported after all ended.
      const settled = await Promise.allSettled(steps.map(async (s) => s.handler(contextOf(s))));
      const failure = settled.find((r) => r.status === 'rejected');
      if (failure) throw failure.reason;
      return undefined;
    }
    for (const step of steps) {
      const value = await step.handler(contextOf(step));
      // A verdict other than continue ends the stage, as it would between plugins; anything that
      // is not a verdict goes up for the runner to refuse.
      if (kind === 'verdict' && value !== undefined && (!isVerdict(value) || value.kind !== 'continue')) {
        return value;
      }
    }
    return undefined;
  }
}
