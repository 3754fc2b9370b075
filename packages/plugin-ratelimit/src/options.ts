// The rate-limit plugin's options: their shape, defaults and replies, validated when the factory
// is called so a bad rule stops start-up with its field named (`rules[2].per`).

import type { FailMode, Limiter } from '@tern/limiter';
import { isValidReply, type StandardIssue, type StandardSchemaV1 } from '@tern/plugin-api';
import { type RedisClient, type RedisConnection, redisConnectionSchema } from '@tern/redis';
import { parseCidr } from './address.js';
import { type Duration, durationMs } from './duration.js';

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

const KEYS: readonly RuleKey[] = [
  'ip',
  'subnet',
  'user',
  'sender',
  'senderDomain',
  'recipientDomain',
  'listener',
];
const COUNTS: readonly RuleCount[] = ['connections', 'messages', 'recipients', 'bytes', 'authFailures'];
const ACTIONS: readonly RuleAction[] = ['tempfail', 'reject', 'disconnect'];

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

type Path = (string | number)[];

class Issues {
  readonly list: StandardIssue[] = [];
  add(path: Path, message: string): void {
    this.list.push({ path, message });
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function checkUnknown(
  value: Record<string, unknown>,
  known: readonly string[],
  path: Path,
  issues: Issues,
): void {
  for (const field of Object.keys(value)) {
    if (!known.includes(field))
      issues.add([...path, field], `unknown option (expected one of ${known.join(', ')})`);
  }
}

function oneOf<T extends string>(
  value: unknown,
  allowed: readonly T[],
  path: Path,
  issues: Issues,
): T | undefined {
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  issues.add(path, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`);
  return undefined;
}

function stringList(value: unknown, path: Path, issues: Issues): string[] | undefined {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '')) {
    issues.add(path, 'must be a list of non-empty strings');
    return undefined;
  }
  return value as string[];
}

function prefixLength(value: unknown, fallback: number, max: number, path: Path, issues: Issues): number {
  if (value === undefined) return fallback;
  if (Number.isInteger(value) && (value as number) >= 0 && (value as number) <= max) return value as number;
  issues.add(path, `must be a whole number from 0 to ${max}`);
  return fallback;
}

function resolveRule(input: unknown, index: number, issues: Issues): ResolvedRule | undefined {
  const path: Path = ['rules', index];
  if (!isObject(input)) {
    issues.add(path, 'must be an object like { key: "user", count: "messages", limit: 100, per: "1h" }');
    return undefined;
  }
  checkUnknown(
    input,
    ['key', 'count', 'limit', 'per', 'listeners', 'action', 'reply', 'name', 'ipv4Prefix', 'ipv6Prefix'],
    path,
    issues,
  );
  const before = issues.list.length;
  const count = oneOf(input.count, COUNTS, [...path, 'count'], issues);
  const key = oneOf(input.key, KEYS, [...path, 'key'], issues);
  if (count && key && !KEYS_FOR[count].includes(key)) {
    issues.add(
      [...path, 'key'],
      `'${count}' can be counted by ${KEYS_FOR[count].join(', ')}, not by '${key}'`,
    );
  }
  const limit = input.limit;
  if (!Number.isSafeInteger(limit) || (limit as number) < 1) {
    issues.add([...path, 'limit'], 'must be a whole number of at least 1');
  }
  let periodMs: number | undefined;
  if (input.per !== undefined) {
    periodMs = durationMs(input.per);
    if (periodMs === undefined) {
      issues.add(
        [...path, 'per'],
        `not a window: ${JSON.stringify(input.per)} (use e.g. '30s', '10m', '1h', '1d')`,
      );
    }
  } else if (count !== undefined && count !== 'connections') {
    issues.add([...path, 'per'], `required for '${count}' (e.g. '1h')`);
  }
  let listeners: Set<string> | undefined;
  if (input.listeners !== undefined) {
    const names = stringList(input.listeners, [...path, 'listeners'], issues);
    if (names?.length === 0)
      issues.add([...path, 'listeners'], 'must name at least one listener (leave it out for all)');
    if (names) listeners = new Set(names);
  }
  const action =
    input.action === undefined
      ? count && DEFAULT_ACTION[count]
      : oneOf(input.action, ACTIONS, [...path, 'action'], issues);
  if (count === 'connections' && action !== undefined && action !== 'disconnect') {
    issues.add(
      [...path, 'action'],
      "connection limits answer at connect time, so the action must be 'disconnect'",
    );
  }
  if (input.name !== undefined && (typeof input.name !== 'string' || !/^[\w.@/-]{1,64}$/.test(input.name))) {
    issues.add([...path, 'name'], 'must be 1 to 64 letters, digits or . _ - / @');
  }
  const concurrent = count === 'connections' && periodMs === undefined;
  const reply = {
    ...(count && action ? defaultReply(count, action, concurrent) : { code: 0, enhanced: '', text: '' }),
  };
  if (input.reply !== undefined) {
    const replyPath = [...path, 'reply'];
    if (!isObject(input.reply)) issues.add(replyPath, 'must be an object { code, enhanced, text }');
    else {
      checkUnknown(input.reply, ['code', 'enhanced', 'text'], replyPath, issues);
      if (input.reply.code !== undefined) reply.code = input.reply.code as number;
      if (input.reply.enhanced !== undefined) reply.enhanced = input.reply.enhanced as string;
      if (input.reply.text !== undefined) {
        if (
          typeof input.reply.text !== 'string' ||
          input.reply.text.trim() === '' ||
          /[\r\n]/.test(input.reply.text)
        ) {
          issues.add([...replyPath, 'text'], 'must be one non-empty line');
        } else reply.text = input.reply.text;
      }
      const classOk =
        action === 'tempfail'
          ? reply.code >= 400 && reply.code < 500
          : action === 'reject'
            ? reply.code >= 500 && reply.code < 600
            : reply.code >= 400 && reply.code < 600;
      if (!isValidReply(reply.code, String(reply.enhanced)) || !classOk) {
        issues.add(
          replyPath,
          `${reply.code} ${reply.enhanced} does not fit action '${action}' (tempfail: 4xx 4.x.x, reject: 5xx 5.x.x, disconnect: either)`,
        );
      }
    }
  }
  const isSubnet = key === 'subnet';
  const ipv4Prefix = prefixLength(input.ipv4Prefix, isSubnet ? 24 : 32, 32, [...path, 'ipv4Prefix'], issues);
  const ipv6Prefix = prefixLength(input.ipv6Prefix, isSubnet ? 48 : 64, 128, [...path, 'ipv6Prefix'], issues);
  if (issues.list.length > before || !count || !key || !action) return undefined;

  const listenerPart = listeners ? `@${[...listeners].sort().join(',')}` : '';
  const prefixPart = key === 'ip' || key === 'subnet' ? `/${ipv4Prefix}/${ipv6Prefix}` : '';
  return {
    index,
    id: (input.name as string | undefined) ?? `${count}/${key}${prefixPart}${listenerPart}`,
    key,
    count,
    limit: limit as number,
    periodMs,
    per: input.per as Duration | undefined,
    listeners,
    action,
    code: reply.code,
    enhanced: reply.enhanced,
    text: reply.text,
    ipv4Prefix,
    ipv6Prefix,
  };
}

function looksLikeRedis(value: unknown): boolean {
  if (typeof value === 'string') return /^rediss?:\/\//.test(value);
  if (redisConnectionSchema.safeParse(value).success) return true;
  return isObject(value) && typeof value.evalsha === 'function' && typeof value.eval === 'function';
}

function looksLikeLimiter(value: unknown): value is Limiter {
  return isObject(value) && typeof value.checkAll === 'function' && typeof value.acquireAll === 'function';
}

function resolve(input: unknown): { value: ResolvedOptions } | { issues: StandardIssue[] } {
  const issues = new Issues();
  if (!isObject(input)) return { issues: [{ message: 'must be an object with a `rules` list' }] };
  checkUnknown(input, ['rules', 'limiter', 'redis', 'failMode', 'prefix', 'exempt'], [], issues);

  const rules: ResolvedRule[] = [];
  if (!Array.isArray(input.rules)) issues.add(['rules'], 'must be a list of rules');
  else {
    const seen = new Map<string, number>();
    input.rules.forEach((raw, i) => {
      const rule = resolveRule(raw, i, issues);
      if (!rule) return;
      // Two rules with one id and window would read and write the same counters.
      const counters = `${rule.id}|${rule.periodMs ?? 'concurrent'}`;
      const other = seen.get(counters);
      if (other !== undefined) {
        issues.add(
          ['rules', i, 'name'],
          `would share counters with rules[${other}]; give one of them a distinct name`,
        );
      } else seen.set(counters, i);
      rules.push(rule);
    });
  }

  const limiter = input.limiter;
  if (limiter !== undefined && !looksLikeLimiter(limiter)) {
    issues.add(['limiter'], 'must be a limiter from createLimiter()');
  }
  if (input.redis !== undefined) {
    if (!looksLikeRedis(input.redis))
      issues.add(
        ['redis'],
        'must be a redis:// or rediss:// URL, { sentinels, name }, { cluster } or an ioredis connection',
      );
    if (limiter !== undefined)
      issues.add(['redis'], 'give `limiter` or `redis`, not both (the limiter has its own connection)');
    if (input.failMode === undefined) {
      issues.add(
        ['failMode'],
        "required with `redis`: 'open' (allow mail while Redis is down) or 'closed' (answer 451 4.3.0)",
      );
    }
  }
  let failMode: FailMode = 'open';
  if (input.failMode !== undefined) {
    failMode = oneOf(input.failMode, ['open', 'closed'] as const, ['failMode'], issues) ?? 'open';
    if (limiter !== undefined)
      issues.add(['failMode'], 'belongs to the limiter given in `limiter` (set it in createLimiter)');
  }
  if (input.prefix !== undefined && (typeof input.prefix !== 'string' || input.prefix === '')) {
    issues.add(['prefix'], 'must be a non-empty string');
  }

  let exemptNetworks: string[] = [];
  let exemptUsers: string[] = [];
  if (input.exempt !== undefined) {
    if (!isObject(input.exempt)) issues.add(['exempt'], 'must be an object { networks, users }');
    else {
      checkUnknown(input.exempt, ['networks', 'users'], ['exempt'], issues);
      if (input.exempt.networks !== undefined) {
        const networks = stringList(input.exempt.networks, ['exempt', 'networks'], issues) ?? [];
        networks.forEach((cidr, i) => {
          if (!parseCidr(cidr))
            issues.add(['exempt', 'networks', i], `not an address or CIDR network: ${cidr}`);
        });
        exemptNetworks = networks;
      }
      if (input.exempt.users !== undefined)
        exemptUsers = stringList(input.exempt.users, ['exempt', 'users'], issues) ?? [];
    }
  }

  if (issues.list.length > 0) return { issues: issues.list };
  return {
    value: {
      rules,
      limiter: limiter as Limiter | undefined,
      redis: input.redis as RedisClient | RedisConnection | string | undefined,
      failMode,
      prefix: input.prefix as string | undefined,
      exemptNetworks,
      exemptUsers: new Set(exemptUsers.map((u) => u.toLowerCase())),
    },
  };
}

/** The options as a Standard Schema, for parseOptions. */
export const optionsSchema: StandardSchemaV1<unknown, ResolvedOptions> = {
  '~standard': { version: 1, vendor: 'tern', validate: resolve },
};
