// The rate-limit plugin's options: their zod (Standard Schema) schema, defaults and replies,
// validated when the factory is called so a bad rule stops start-up with its field named
// (`rules[2].per`) and the fix.

import type { FailMode, Limiter } from '@tern/limiter';
import {
  choiceSchema,
  type Duration,
  isValidReply,
  networkSchema,
  numberSchema,
  parseDuration,
  wholeNumberSchema,
} from '@tern/plugin-api';
import { type RedisClient, type RedisConnection, redisConnectionSchema } from '@tern/redis';
import { z } from 'zod';

export const PLUGIN_NAME = 'ratelimit';

/**
 * What a rule counts under:
 * - `ip`: the client address (IPv4 /32, IPv6 /64: one host can use a whole /64);
 * - `subnet`: the client network (IPv4 /24, IPv6 /48);
 * - `user`: the authenticated user (for `authFailures`: the user name tried);
 * - `sender` / `senderDomain`: the envelope sender (the null sender `<>` is not counted);
 * - `recipientDomain`: each recipient's domain;
 * - `listener`: the listener the client connected to (one budget for everyone on it).
 */
export type RuleKey = 'ip' | 'subnet' | 'user' | 'sender' | 'senderDomain' | 'recipientDomain' | 'listener';

/**
 * What a rule counts:
 * - `connections`: open connections (no `per`: a concurrency limit) or new ones (with `per`);
 * - `messages`: messages at end of DATA (checked early at MAIL FROM / RCPT TO);
 * - `recipients`: RCPT TO commands;
 * - `bytes`: message size at end of DATA (checked early against MAIL FROM SIZE=);
 * - `authFailures`: failed AUTH attempts; once over the limit, AUTH is refused.
 */
export type RuleCount = 'connections' | 'messages' | 'recipients' | 'bytes' | 'authFailures';

/** `tempfail` (4xx, the client retries), `reject` (5xx: a hard quota), `disconnect` (421 and close). */
export type RuleAction = 'tempfail' | 'reject' | 'disconnect';

export interface RuleReply {
  readonly code?: number;
  readonly enhanced?: string;
  /** May use {subject} (who hit the limit), {retry} ("37 s"), {limit} and {per}. */
  readonly text?: string;
}

export interface RateLimitRule {
  readonly key: RuleKey;
  readonly count: RuleCount;
  /** How many per window (or open at once, for `connections` without `per`). */
  readonly limit: number;
  /** The window: '30s', '10m', '1h', '1d'. Required except for concurrent `connections`. */
  readonly per?: Duration;
  /** Apply only on these listeners (by name). Default: every listener. */
  readonly listeners?: readonly string[];
  readonly action?: RuleAction;
  readonly reply?: RuleReply;
  /** Identifies the rule's counters; needed only to tell apart two rules that would share them. */
  readonly name?: string;
  /** IPv4 prefix length for `ip` (default 32) and `subnet` (default 24). */
  readonly ipv4Prefix?: number;
  /** IPv6 prefix length for `ip` (default 64) and `subnet` (default 48). */
  readonly ipv6Prefix?: number;
}

export interface RateLimitExemptions {
  /** Client networks no rule applies to (CIDR or bare addresses). */
  readonly networks?: readonly string[];
  /** Authenticated users no message, recipient or byte rule applies to. */
  readonly users?: readonly string[];
}

export interface RateLimitOptions {
  readonly rules: readonly RateLimitRule[];
  /** A limiter from createLimiter (share one with @tern/delivery). */
  readonly limiter?: Limiter;
  /** Or a Redis URL / connection for a limiter of the plugin's own. Neither: in-process limits. */
  readonly redis?: RedisClient | RedisConnection | string;
  /** Required with `redis`: allow (`open`) or refuse with 451 4.3.0 (`closed`) while it is down. */
  readonly failMode?: FailMode;
  /** Key prefix for the plugin's own limiter (default `tern:rl:`). */
  readonly prefix?: string;
  readonly exempt?: RateLimitExemptions;
}

/** A validated rule with its defaults applied. */
export interface ResolvedRule {
  readonly index: number;
  /** Names this rule's counters (with the window): `<name>` or `<count>/<key>[@listeners]`. */
  readonly id: string;
  readonly key: RuleKey;
  readonly count: RuleCount;
  readonly limit: number;
  /** Undefined for a concurrency limit. */
  readonly periodMs: number | undefined;
  readonly per: Duration | undefined;
  readonly listeners: ReadonlySet<string> | undefined;
  readonly action: RuleAction;
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
  readonly ipv4Prefix: number;
  readonly ipv6Prefix: number;
}

export interface ResolvedOptions {
  readonly rules: readonly ResolvedRule[];
  readonly limiter: Limiter | undefined;
  readonly redis: RedisClient | RedisConnection | string | undefined;
  readonly failMode: FailMode;
  readonly prefix: string | undefined;
  readonly exemptNetworks: readonly string[];
  readonly exemptUsers: ReadonlySet<string>;
}

const KEYS = ['ip', 'subnet', 'user', 'sender', 'senderDomain', 'recipientDomain', 'listener'] as const;
const COUNTS = ['connections', 'messages', 'recipients', 'bytes', 'authFailures'] as const;
const ACTIONS = ['tempfail', 'reject', 'disconnect'] as const;

/** Which keys are known when each count is taken. */
const KEYS_FOR: Readonly<Record<RuleCount, readonly RuleKey[]>> = {
  connections: ['ip', 'subnet', 'listener'],
  authFailures: ['ip', 'subnet', 'listener', 'user'],
  messages: KEYS,
  recipients: KEYS,
  bytes: KEYS,
};

const DEFAULT_ACTION: Readonly<Record<RuleCount, RuleAction>> = {
  connections: 'disconnect',
  authFailures: 'disconnect',
  messages: 'tempfail',
  recipients: 'tempfail',
  bytes: 'tempfail',
};

function defaultReply(count: RuleCount, action: RuleAction, concurrent: boolean): Required<RuleReply> {
  if (action === 'reject') {
    const what = {
      connections: 'Connection',
      authFailures: 'Authentication',
      messages: 'Message',
      recipients: 'Recipient',
      bytes: 'Data',
    }[count];
    return { code: 550, enhanced: '5.7.1', text: `${what} quota exceeded for {subject} ({limit} per {per})` };
  }
  const code = action === 'disconnect' ? 421 : count === 'recipients' ? 452 : 451;
  const enhanced = action === 'disconnect' ? '4.7.0' : count === 'recipients' ? '4.5.3' : '4.7.1';
  const text = {
    connections: concurrent
      ? 'Too many connections from {subject}, try again later'
      : 'Too many connections from {subject}, try again in {retry}',
    authFailures: 'Too many authentication failures from {subject}, try again in {retry}',
    messages: 'Message rate limit exceeded for {subject}, try again in {retry}',
    recipients: 'Too many recipients for {subject}, try again in {retry}',
    bytes: 'Data rate limit exceeded for {subject}, try again in {retry}',
  }[count];
  return { code, enhanced, text };
}

const WINDOW = { positive: true, whole: true } as const;

const oneLine = z
  .string()
  .refine((text) => text.trim() !== '' && !/[\r\n]/.test(text), 'must be one non-empty line');

const prefixLength = (max: number): z.ZodType<number, number> =>
  numberSchema((n) => Number.isInteger(n) && n >= 0 && n <= max, `a whole number from 0 to ${max}`);

const ruleSchema = z
  .strictObject(
    {
      key: choiceSchema(KEYS, `one of ${KEYS.map((k) => `'${k}'`).join(', ')}`),
      count: choiceSchema(COUNTS, `one of ${COUNTS.map((c) => `'${c}'`).join(', ')}`),
      limit: wholeNumberSchema(1),
      // Kept as written ({per} in replies); its milliseconds are checked below and resolved after.
      per: z.union([z.string(), z.number()]).optional(),
      listeners: z
        .array(z.string().min(1, 'must be a listener name'))
        .min(1, 'must name at least one listener (leave it out for all)')
        .optional(),
      action: choiceSchema(ACTIONS, `one of ${ACTIONS.map((a) => `'${a}'`).join(', ')}`).optional(),
      reply: z
        .strictObject(
          {
            code: z.number().int().optional(),
            enhanced: z.string().optional(),
            text: oneLine.optional(),
          },
          'must be an object { code, enhanced, text }',
        )
        .optional(),
      name: z
        .string()
        .regex(/^[\w.@/-]{1,64}$/, 'must be 1 to 64 letters, digits or . _ - / @')
        .optional(),
      ipv4Prefix: prefixLength(32).optional(),
      ipv6Prefix: prefixLength(128).optional(),
    },
    'must be an object like { key: "user", count: "messages", limit: 100, per: "1h" }',
  )
  .superRefine((rule, ctx) => {
    if (!KEYS_FOR[rule.count].includes(rule.key)) {
      ctx.addIssue({
        code: 'custom',
        path: ['key'],
        message: `'${rule.count}' can be counted by ${KEYS_FOR[rule.count].join(', ')}, not by '${rule.key}'`,
      });
    }
    if (rule.per !== undefined && parseDuration(rule.per, WINDOW) === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['per'],
        message: `not a window: ${JSON.stringify(rule.per)} (use e.g. '30s', '10m', '1h', '1d')`,
      });
    } else if (rule.per === undefined && rule.count !== 'connections') {
      ctx.addIssue({ code: 'custom', path: ['per'], message: `required for '${rule.count}' (e.g. '1h')` });
    }
    const action = rule.action ?? DEFAULT_ACTION[rule.count];
    if (rule.count === 'connections' && action !== 'disconnect') {
      ctx.addIssue({
        code: 'custom',
        path: ['action'],
        message: "connection limits answer at connect time, so the action must be 'disconnect'",
      });
    }
    const { code, enhanced } = replyOf(rule, action);
    const classOk =
      action === 'tempfail'
        ? code >= 400 && code < 500
        : action === 'reject'
          ? code >= 500 && code < 600
          : code >= 400 && code < 600;
    if (rule.reply !== undefined && (!isValidReply(code, String(enhanced)) || !classOk)) {
      ctx.addIssue({
        code: 'custom',
        path: ['reply'],
        message: `${code} ${enhanced} does not fit action '${action}' (tempfail: 4xx 4.x.x, reject: 5xx 5.x.x, disconnect: either)`,
      });
    }
  });

type RuleInput = z.output<typeof ruleSchema>;

function replyOf(rule: RuleInput, action: RuleAction): Required<RuleReply> {
  const concurrent = rule.count === 'connections' && rule.per === undefined;
  return { ...defaultReply(rule.count, action, concurrent), ...rule.reply };
}

/** A checked rule with its defaults applied. */
function resolveRule(rule: RuleInput, index: number): ResolvedRule {
  const action = rule.action ?? DEFAULT_ACTION[rule.count];
  const isSubnet = rule.key === 'subnet';
  const ipv4Prefix = rule.ipv4Prefix ?? (isSubnet ? 24 : 32);
  const ipv6Prefix = rule.ipv6Prefix ?? (isSubnet ? 48 : 64);
  const listeners = rule.listeners ? new Set(rule.listeners) : undefined;
  const listenerPart = listeners ? `@${[...listeners].sort().join(',')}` : '';
  const prefixPart = rule.key === 'ip' || rule.key === 'subnet' ? `/${ipv4Prefix}/${ipv6Prefix}` : '';
  const reply = replyOf(rule, action);
  return {
    index,
    id: rule.name ?? `${rule.count}/${rule.key}${prefixPart}${listenerPart}`,
    key: rule.key,
    count: rule.count,
    limit: rule.limit,
    periodMs: rule.per === undefined ? undefined : parseDuration(rule.per, WINDOW),
    per: rule.per,
    listeners,
    action,
    code: reply.code,
    enhanced: reply.enhanced,
    text: reply.text,
    ipv4Prefix,
    ipv6Prefix,
  };
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function looksLikeRedis(value: unknown): boolean {
  if (typeof value === 'string') return /^rediss?:\/\//.test(value);
  if (redisConnectionSchema.safeParse(value).success) return true;
  return isObject(value) && typeof value.evalsha === 'function' && typeof value.eval === 'function';
}

function looksLikeLimiter(value: unknown): value is Limiter {
  return isObject(value) && typeof value.checkAll === 'function' && typeof value.acquireAll === 'function';
}

/** The options as a zod (Standard Schema) schema, for parseOptions: checked, then resolved. */
export const optionsSchema = z
  .strictObject(
    {
      rules: z.array(ruleSchema, {
        error: 'must be a list of rules, like [{ key: "ip", count: "connections", limit: 20 }]',
      }),
      limiter: z.custom<Limiter>(looksLikeLimiter, 'must be a limiter from createLimiter()').optional(),
      redis: z
        .custom<RedisClient | RedisConnection | string>(
          looksLikeRedis,
          'must be a redis:// or rediss:// URL, { sentinels, name }, { cluster } or an ioredis connection',
        )
        .optional(),
      failMode: choiceSchema(['open', 'closed'], "'open' or 'closed'").optional(),
      prefix: z.string().min(1, 'must be a non-empty string').optional(),
      exempt: z
        .strictObject(
          {
            /** Client networks no rule applies to (CIDR or bare addresses). */
            networks: z.array(networkSchema()).optional(),
            /** Authenticated users no message, recipient or byte rule applies to. */
            users: z.array(z.string().min(1, 'must be a user name')).optional(),
          },
          'must be an object { networks, users }',
        )
        .optional(),
    },
    'must be an object with a `rules` list',
  )
  .superRefine((options, ctx) => {
    // Two rules with one id and window would read and write the same counters.
    const seen = new Map<string, number>();
    options.rules.forEach((rule, i) => {
      const resolved = resolveRule(rule, i);
      const counters = `${resolved.id}|${resolved.periodMs ?? 'concurrent'}`;
      const other = seen.get(counters);
      if (other === undefined) seen.set(counters, i);
      else
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'name'],
          message: `would share counters with rules[${other}]; give one of them a distinct name`,
        });
    });
    if (options.redis !== undefined && options.limiter !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['redis'],
        message: 'give `limiter` or `redis`, not both (the limiter has its own connection)',
      });
    }
    if (options.redis !== undefined && options.failMode === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['failMode'],
        message:
          "required with `redis`: 'open' (allow mail while Redis is down) or 'closed' (answer 451 4.3.0)",
      });
    }
    if (options.failMode !== undefined && options.limiter !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['failMode'],
        message: 'belongs to the limiter given in `limiter` (set it in createLimiter)',
      });
    }
  })
  .transform(
    (options): ResolvedOptions => ({
      rules: options.rules.map(resolveRule),
      limiter: options.limiter,
      redis: options.redis,
      failMode: options.failMode ?? 'open',
      prefix: options.prefix,
      exemptNetworks: options.exempt?.networks ?? [],
      exemptUsers: new Set((options.exempt?.users ?? []).map((u) => u.toLowerCase())),
    }),
  );
