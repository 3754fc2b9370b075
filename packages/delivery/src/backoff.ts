// Automatic back-off: rules that match what a destination answers (reply code, enhanced code, text)
// and act on that (source, destination) for a while: a lower rate or concurrency, a suspension, or
// another egress pool, until a quiet period passes. A circuit breaker suspends a destination after
// consecutive connection failures. Like KumoMTA's traffic shaping automation, but in process: each
// node learns from the replies it gets itself (the limits it then applies are counted cluster-wide).
import type { SmtpReply } from '@tern/plugin-api';
import type { DestinationLimit, ThrottleRate } from './throttle.js';

/** What a rule does while it is in force. */
export type BackoffAction =
  | { readonly kind: 'suspend' }
  | { readonly kind: 'rate'; readonly messageRate: ThrottleRate }
  | { readonly kind: 'connections'; readonly maxConnections: number }
  | { readonly kind: 'pool'; readonly pool: string };

/** The closed set of action kinds, for metrics labels; `circuit` is the circuit breaker's suspension. */
export const BACKOFF_ACTIONS = ['suspend', 'rate', 'connections', 'pool', 'circuit'] as const;
export type BackoffActionKind = (typeof BACKOFF_ACTIONS)[number];

export interface BackoffRule {
  /** Shown in timelines, logs and `tern shaping`. */
  readonly name: string;
  /** Every field given must match; at least one is required. */
  readonly match: {
    /** Reply codes, e.g. [421, 451]. */
    readonly codes?: readonly number[];
    /** An enhanced code (`4.7.28`) or a prefix ending in a dot (`5.7.`). */
    readonly enhanced?: string;
    /** A regular expression on the reply text (case-insensitive). */
    readonly text?: string;
  };
  /** Only for destinations (domain or provider) ending in one of these, e.g. `gmail.com` or `google`. */
  readonly destinations?: readonly string[];
  readonly action: BackoffAction;
  /** How long the action stays after the last matching reply (the quiet period), in ms. */
  readonly durationMs: number;
}

export interface CircuitBreakerOptions {
  /** Consecutive attempts that reached no server before the destination is suspended (default 5). */
  readonly failures?: number;
  /** How long it stays suspended (default 5 minutes). */
  readonly suspendMs?: number;
}

/** One action in force now, for timelines, the dashboard and the CLI. */
export interface ActiveBackoff {
  /** The egress source (`default` without egress pools). */
  readonly source: string;
  /** The recipient domain, or the provider the domain belongs to. */
  readonly destination: string;
  readonly rule: string;
  readonly action: BackoffActionKind;
  /** ms since epoch; extended by every further matching reply. */
  readonly until: number;
  readonly since: number;
  /** The reply that set it off (or the last connection failure). */
  readonly reply: SmtpReply;
  /** The lowered rate, concurrency or the pool moved to. */
  readonly detail?: string;
  /** For `rate` and `connections`: the limit that applies meanwhile. */
  readonly limit?: DestinationLimit;
  /** For `pool`: the egress pool used meanwhile. */
  readonly pool?: string;
}

interface CompiledRule extends BackoffRule {
  readonly textPattern?: RegExp;
}

const DEFAULT_FAILURES = 5;
const DEFAULT_CIRCUIT_MS = 5 * 60_000;
/** Most (source, destination) pairs with an action at once; the oldest go first past it. */
const MAX_ACTIVE = 10_000;

/** Checks and compiles rules; a bad rule names its field and what would be right. */
export function compileRules(rules: readonly BackoffRule[], where: string): CompiledRule[] {
  return rules.map((rule, i) => {
    const at = `${where}[${i}]`;
    if (typeof rule.name !== 'string' || rule.name === '')
      throw new TypeError(`${at}.name: give the rule a name`);
    const { codes, enhanced, text } = rule.match ?? {};
    if (codes === undefined && enhanced === undefined && text === undefined) {
      throw new TypeError(`${at}.match: give at least one of codes, enhanced or text`);
    }
    for (const code of codes ?? []) {
      if (!Number.isInteger(code) || code < 200 || code > 599) {
        throw new TypeError(`${at}.match.codes: ${code} is not an SMTP reply code (200-599)`);
      }
    }
    if (enhanced !== undefined && !/^[245](\.\d{1,3}){0,2}\.?$/.test(enhanced)) {
      throw new TypeError(
        `${at}.match.enhanced: expected a code like 4.7.28 or a prefix like 5.7., got ${enhanced}`,
      );
    }
    let textPattern: RegExp | undefined;
    if (text !== undefined) {
      try {
        textPattern = new RegExp(text, 'i');
      } catch (error) {
        throw new TypeError(`${at}.match.text: not a regular expression: ${(error as Error).message}`);
      }
    }
    if (!Number.isSafeInteger(rule.durationMs) || rule.durationMs < 1) {
      throw new TypeError(`${at}.durationMs: expected how long the action lasts, in ms (at least 1)`);
    }
    const action = rule.action;
    if (action?.kind === 'rate') {
      const r = action.messageRate;
      if (!Number.isSafeInteger(r?.limit) || r.limit < 1 || !Number.isSafeInteger(r?.per) || r.per < 1) {
        throw new TypeError(
          `${at}.action.messageRate: expected { limit, per } as whole numbers of at least 1`,
        );
      }
    } else if (action?.kind === 'connections') {
      if (!Number.isSafeInteger(action.maxConnections) || action.maxConnections < 1) {
        throw new TypeError(`${at}.action.maxConnections: expected a whole number of at least 1`);
      }
    } else if (action?.kind === 'pool') {
      if (typeof action.pool !== 'string' || action.pool === '') {
        throw new TypeError(`${at}.action.pool: name the egress pool to move to`);
      }
    } else if (action?.kind !== 'suspend') {
      throw new TypeError(`${at}.action.kind: expected suspend, rate, connections or pool`);
    }
    return textPattern === undefined ? { ...rule } : { ...rule, textPattern };
  });
}

function matches(rule: CompiledRule, reply: SmtpReply, destination: string): boolean {
  const { codes, enhanced } = rule.match;
  if (codes !== undefined && !codes.includes(reply.code)) return false;
  if (enhanced !== undefined) {
    if (enhanced.endsWith('.') ? !reply.enhanced.startsWith(enhanced) : reply.enhanced !== enhanced)
      return false;
  }
  if (rule.textPattern !== undefined && !rule.textPattern.test(reply.text)) return false;
  if (rule.destinations !== undefined) {
    const d = destination.toLowerCase();
    if (!rule.destinations.some((s) => d === s || d.endsWith(`.${s}`))) return false;
  }
  return true;
}

/** The back-off state of one process: which actions are in force on which (source, destination). */
export class Backoff {
  readonly #rules: CompiledRule[];
  readonly #failuresToTrip: number;
  readonly #circuitMs: number;
  /** By `source|destination`, then by action kind: the newest action of each kind. */
  readonly #active = new Map<string, Map<BackoffActionKind, ActiveBackoff>>();
  /** Consecutive attempts without a connection, by destination. */
  readonly #failures = new Map<string, number>();

  constructor(
    rules: readonly BackoffRule[],
    circuit: CircuitBreakerOptions = {},
    where = 'delivery.shaping.rules',
  ) {
    this.#rules = compileRules(rules, where);
    this.#failuresToTrip = circuit.failures ?? DEFAULT_FAILURES;
    this.#circuitMs = circuit.suspendMs ?? DEFAULT_CIRCUIT_MS;
    if (!Number.isSafeInteger(this.#failuresToTrip) || this.#failuresToTrip < 1) {
      throw new TypeError('delivery.shaping.circuitBreaker.failures: expected a whole number of at least 1');
    }
    if (!Number.isSafeInteger(this.#circuitMs) || this.#circuitMs < 1) {
      throw new TypeError(
        'delivery.shaping.circuitBreaker.suspendMs: expected a duration in ms of at least 1',
      );
    }
  }

  /**
   * A destination answered `replies` (each at most once per rule): the first rule each reply
   * matches comes into force, or is extended. Returns the actions set or extended now.
   */
  observe(source: string, destination: string, replies: readonly SmtpReply[], now: number): ActiveBackoff[] {
    const fired: ActiveBackoff[] = [];
    const seen = new Set<string>();
    for (const reply of replies) {
      const rule = this.#rules.find((r) => matches(r, reply, destination));
      if (rule === undefined || seen.has(rule.name)) continue;
      seen.add(rule.name);
      fired.push(this.#set(source, destination, rule.name, rule.action, now + rule.durationMs, reply, now));
    }
    return fired;
  }

  /** An attempt reached a server: the circuit is whole again. */
  connected(destination: string): void {
    this.#failures.delete(destination);
  }

  /** An attempt reached no server: after enough in a row the destination is suspended. */
  connectionFailed(destination: string, reply: SmtpReply, now: number): ActiveBackoff | undefined {
    const count = (this.#failures.get(destination) ?? 0) + 1;
    if (count < this.#failuresToTrip) {
      this.#failures.set(destination, count);
      return undefined;
    }
    this.#failures.delete(destination);
    const detail = `${count} attempts in a row reached no server`;
    return this.#set(
      '*',
      destination,
      'circuit-breaker',
      { kind: 'suspend' },
      now + this.#circuitMs,
      reply,
      now,
      'circuit',
      detail,
    );
  }

  /** The actions in force on (source, destination) now: a source's own and those for every source. */
  active(source: string, destination: string, now: number): ActiveBackoff[] {
    const out: ActiveBackoff[] = [];
    const keys = source === '*' ? ['*'] : [source, '*'];
    for (const key of keys.map((k) => `${k}|${destination}`)) {
      const actions = this.#active.get(key);
      if (actions === undefined) continue;
      for (const [kind, action] of actions) {
        if (action.until > now) out.push(action);
        else actions.delete(kind);
      }
      if (actions.size === 0) this.#active.delete(key);
    }
    return out;
  }

  /** Every action in force now, for the admin API, the dashboard and `tern shaping`. */
  snapshot(now: number): ActiveBackoff[] {
    const out: ActiveBackoff[] = [];
    for (const [key, actions] of this.#active) {
      for (const [kind, action] of actions) {
        if (action.until > now) out.push(action);
        else actions.delete(kind);
      }
      if (actions.size === 0) this.#active.delete(key);
    }
    return out.sort((a, b) => a.since - b.since);
  }

  #set(
    source: string,
    destination: string,
    rule: string,
    action: BackoffAction,
    until: number,
    reply: SmtpReply,
    now: number,
    kind: BackoffActionKind = action.kind,
    note?: string,
  ): ActiveBackoff {
    const key = `${source}|${destination}`;
    let actions = this.#active.get(key);
    if (actions === undefined) {
      if (this.#active.size >= MAX_ACTIVE) {
        const oldest = this.#active.keys().next().value;
        if (oldest !== undefined) this.#active.delete(oldest);
      }
      actions = new Map();
      this.#active.set(key, actions);
    }
    const previous = actions.get(kind);
    const detail = note ?? describe(action);
    const limit: DestinationLimit | undefined =
      action.kind === 'rate'
        ? { messageRate: action.messageRate }
        : action.kind === 'connections'
          ? { maxConnections: action.maxConnections }
          : undefined;
    const entry: ActiveBackoff = {
      ...(limit === undefined ? {} : { limit }),
      ...(action.kind === 'pool' ? { pool: action.pool } : {}),
      source,
      destination,
      rule,
      action: kind,
      until: Math.max(until, previous?.until ?? 0),
      since: previous !== undefined && previous.until > now ? previous.since : now,
      reply,
      ...(detail === undefined ? {} : { detail }),
    };
    actions.set(kind, entry);
    return entry;
  }
}

function describe(action: BackoffAction): string | undefined {
  switch (action.kind) {
    case 'rate':
      return `${action.messageRate.limit} per ${action.messageRate.per} ms`;
    case 'connections':
      return `${action.maxConnections} connections`;
    case 'pool':
      return `pool ${action.pool}`;
    default:
      return undefined;
  }
}
