// The rateLimit plugin: turns the configured rules into limiter calls at each SMTP stage and
// the limiter's answers into SMTP replies: one limiter round trip per stage (two at connect).

import { createLimiter, type Limiter, type RateRequest, type RateResult } from '@tern/limiter';
import {
  type AuthContext,
  definePlugin,
  disconnect,
  domainOf,
  formatWait,
  type Logger,
  NetworkList,
  type Plugin,
  parseOptions,
  reject,
  type SessionContext,
  type SessionInfo,
  silentLogger,
  tempfail,
  type Verdict,
} from '@tern/plugin-api';
import { addressGroup } from './address.js';
import {
  optionsSchema,
  PLUGIN_NAME,
  type RateLimitOptions,
  type ResolvedRule,
  type RuleCount,
} from './options.js';

interface SessionState {
  /** Releases for the connection leases this session holds. */
  readonly releases: (() => Promise<void>)[];
  /** The user name of an AUTH whose outcome is not known yet (the hook runs before the check). */
  authAttempt: string | undefined;
}

/** What is known at a stage, to resolve rule keys. */
interface Facts {
  readonly session: SessionInfo;
  readonly sender?: string;
  readonly recipientDomain?: string;
  /** For authFailures: the user name tried. */
  readonly username?: string;
}

interface Subject {
  /** Goes into the counter key. */
  readonly value: string;
  /** Goes into the reply text. */
  readonly label: string;
}

interface Planned {
  readonly rule: ResolvedRule;
  readonly subject: Subject;
  readonly request: RateRequest;
}

// SMTP replies for "could not ask the store" in fail-closed mode. 4.3.0 (mail system failure), not
// 4.7.1: the client did nothing wrong, and operators should not read an outage as abuse.
const STORE_DOWN_TEXT = 'Temporary local problem, please try again later';

/**
 * Cluster-wide rate limits and quotas. Validates its options now: a bad rule throws
 * PluginOptionError naming the field (`rules[2].per`).
 */
export function rateLimit(options: RateLimitOptions): Plugin<SessionState, undefined> {
  const config = parseOptions(PLUGIN_NAME, optionsSchema, options);
  const exemptNetworks = NetworkList.parse(config.exemptNetworks);
  const rules = config.rules;
  const byCount = (count: RuleCount, test: (r: ResolvedRule) => boolean = () => true): ResolvedRule[] =>
    rules.filter((r) => r.count === count && test(r));
  const connectionRates = byCount('connections', (r) => r.periodMs !== undefined);
  const connectionLeases = byCount('connections', (r) => r.periodMs === undefined);
  const authRules = byCount('authFailures');
  const perDomain = (r: ResolvedRule): boolean => r.key === 'recipientDomain';
  const messageRules = rules.filter((r) => (r.count === 'messages' || r.count === 'bytes') && !perDomain(r));
  const domainMessageRules = rules.filter(
    (r) => (r.count === 'messages' || r.count === 'bytes') && perDomain(r),
  );
  const recipientRules = byCount('recipients');

  // A limiter of our own logs through the host's logger, known from `init` on.
  let hostLog: Logger = silentLogger;
  const ownLimiter =
    config.limiter === undefined
      ? createLimiter({
          redis: config.redis,
          failMode: config.failMode,
          ...(config.prefix !== undefined ? { prefix: config.prefix } : {}),
          logger: forwardingLogger(() => hostLog),
        })
      : undefined;
  const limiter: Limiter = config.limiter ?? (ownLimiter as Limiter);

  const applies = (rule: ResolvedRule, session: SessionInfo): boolean =>
    rule.listeners === undefined || rule.listeners.has(session.listener.name);
  const networkExempt = (session: SessionInfo): boolean => exemptNetworks.contains(session.remoteAddress);
  const exempt = (session: SessionInfo): boolean =>
    networkExempt(session) ||
    (session.user !== undefined && config.exemptUsers.has(session.user.toLowerCase()));

  /** Builds the requests of `rules` that apply here and whose key is known. */
  const plan = (
    candidates: readonly ResolvedRule[],
    facts: Facts,
    cost: (rule: ResolvedRule) => number,
    peek: boolean,
  ): Planned[] => {
    const planned: Planned[] = [];
    for (const rule of candidates) {
      if (!applies(rule, facts.session)) continue;
      const subject = subjectOf(rule, facts);
      if (!subject) continue;
      planned.push({
        rule,
        subject,
        request: {
          key: `smtp:${rule.id}:${subject.value}`,
          rate: { limit: rule.limit, per: rule.periodMs ?? 0 },
          cost: cost(rule),
          peek,
        },
      });
    }
    return planned;
  };

  /** Asks the limiter about every planned request at once; a verdict when one is refused. */
  const decide = async (
    planned: readonly Planned[],
    log: Logger,
    atConnect = false,
  ): Promise<Verdict | undefined> => {
    if (planned.length === 0) return undefined;
    const results = await limiter.checkAll(planned.map((p) => p.request));
    return refusal(planned, results, log, atConnect);
  };

  const refusal = (
    planned: readonly Planned[],
    results: readonly RateResult[],
    log: Logger,
    atConnect: boolean,
  ): Verdict | undefined => {
    const refused = planned.flatMap((p, i) =>
      results[i]?.allowed === false ? [{ ...p, result: results[i]! }] : [],
    );
    const first = refused[0];
    if (!first) return undefined;
    if (first.result.degraded) return storeDown(atConnect);
    // The client must wait for every refusing rule, so the hint is the longest wait.
    const retryAfterMs = Math.max(...refused.map((r) => r.result.retryAfterMs));
    log.info(
      { rule: first.rule.id, subject: first.subject.label, retryAfterMs },
      `rate limit: ${first.rule.count} for ${first.subject.label} over ${first.rule.limit} per ${first.rule.per}`,
    );
    if (retryAfterMs === Number.POSITIVE_INFINITY && first.rule.count === 'bytes') {
      // Larger than the whole allowance: retrying can never help.
      return reject(
        552,
        '5.3.4',
        `Message exceeds the ${first.rule.limit}-byte allowance per ${first.rule.per} for ${first.subject.label}`,
      );
    }
    return verdictOf(first.rule, first.subject.label, retryAfterMs);
  };

  /** Records the outcome of the previous AUTH once it is known (the session has a user or not). */
  const settleAuth = async (ctx: SessionContext<SessionState>): Promise<void> => {
    const username = ctx.sessionState.authAttempt;
    if (username === undefined) return;
    ctx.sessionState.authAttempt = undefined;
    if (ctx.session.user !== undefined) return;
    const planned = plan(authRules, { session: ctx.session, username }, () => 1, false);
    // Each rule is charged on its own: one full counter must not spare the others a failure.
    await Promise.all(planned.map((p) => limiter.checkAll([p.request])));
  };

  return definePlugin<SessionState, undefined>({
    name: PLUGIN_NAME,
    state: { session: () => ({ releases: [], authAttempt: undefined }) },

    init(ctx) {
      hostLog = ctx.log;
    },

    async shutdown() {
      await ownLimiter?.close();
    },

    connect: {
      order: 'pre',
      async handler(ctx) {
        if (networkExempt(ctx.session)) return;
        const facts = { session: ctx.session };
        const rateVerdict = await decide(
          plan(connectionRates, facts, () => 1, false),
          ctx.log,
          true,
        );
        if (rateVerdict) return rateVerdict;
        const leases = plan(connectionLeases, facts, () => 1, false);
        if (leases.length === 0) return;
        const lease = await limiter.acquireAll(
          leases.map((p) => ({ key: p.request.key, limit: p.rule.limit })),
        );
        if (lease.acquired) {
          ctx.sessionState.releases.push(lease.release);
          return;
        }
        if (lease.degraded) return storeDown(true);
        const full = leases.find((p, i) => (lease.active[i] ?? 0) >= p.rule.limit) ?? leases[0]!;
        ctx.log.info(
          { rule: full.rule.id, subject: full.subject.label },
          `connection limit: ${full.subject.label} has ${full.rule.limit} open`,
        );
        return verdictOf(full.rule, full.subject.label, 0);
      },
    },

    auth: {
      order: 'pre',
      async handler(ctx: AuthContext<SessionState>) {
        await settleAuth(ctx);
        if (networkExempt(ctx.session) || authRules.length === 0) return;
        const verdict = await decide(
          plan(authRules, { session: ctx.session, username: ctx.username }, () => 1, true),
          ctx.log,
        );
        if (verdict) return verdict;
        ctx.sessionState.authAttempt = ctx.username;
      },
    },

    mailFrom: {
      order: 'pre',
      async handler(ctx) {
        await settleAuth(ctx);
        if (exempt(ctx.session)) return;
        const declared = Number(ctx.params.SIZE);
        const size = Number.isSafeInteger(declared) && declared > 0 ? declared : 1;
        const facts = { session: ctx.session, sender: ctx.address };
        return decide(
          plan(messageRules, facts, (r) => (r.count === 'bytes' ? size : 1), true),
          ctx.log,
        );
      },
    },

    rcptTo: {
      order: 'pre',
      async handler(ctx) {
        if (exempt(ctx.session)) return;
        const facts = {
          session: ctx.session,
          sender: ctx.transaction.mailFrom,
          recipientDomain: domainOf(ctx.recipient.address),
        };
        const declared = Number(ctx.transaction.mailParams.SIZE);
        const size = Number.isSafeInteger(declared) && declared > 0 ? declared : 1;
        return decide(
          [
            ...plan(recipientRules, facts, () => 1, false),
            ...plan(domainMessageRules, facts, (r) => (r.count === 'bytes' ? size : 1), true),
          ],
          ctx.log,
        );
      },
    },

    message: {
      order: 'pre',
      async handler(ctx) {
        if (exempt(ctx.session)) return;
        const size = ctx.message.headers.toBuffer().length + 2 + ctx.message.bodySize;
        const cost = (r: ResolvedRule): number => (r.count === 'bytes' ? size : 1);
        const base = { session: ctx.session, sender: ctx.transaction.mailFrom };
        const domains = new Set(ctx.transaction.recipients.map((r) => domainOf(r.address)));
        return decide(
          [
            ...plan(messageRules, base, cost, false),
            ...[...domains].flatMap((recipientDomain) =>
              plan(domainMessageRules, { ...base, recipientDomain }, cost, false),
            ),
          ],
          ctx.log,
        );
      },
    },

    async close(ctx) {
      const releases = ctx.sessionState.releases.splice(0);
      await Promise.all([settleAuth(ctx), ...releases.map((release) => release())]);
    },
  });
}

function subjectOf(rule: ResolvedRule, facts: Facts): Subject | undefined {
  const { session } = facts;
  switch (rule.key) {
    case 'ip':
    case 'subnet': {
      const group = addressGroup(session.remoteAddress, rule.ipv4Prefix, rule.ipv6Prefix);
      return group === undefined ? undefined : { value: group, label: group };
    }
    case 'user': {
      const user = rule.count === 'authFailures' ? facts.username : session.user;
      return user === undefined || user === ''
        ? undefined
        : { value: user.toLowerCase(), label: `user ${user}` };
    }
    case 'sender':
      return facts.sender
        ? { value: facts.sender.toLowerCase(), label: `sender ${facts.sender}` }
        : undefined;
    case 'senderDomain': {
      const domain = facts.sender ? domainOf(facts.sender) : '';
      return domain === '' ? undefined : { value: domain, label: `sender domain ${domain}` };
    }
    case 'recipientDomain':
      return facts.recipientDomain
        ? { value: facts.recipientDomain, label: `domain ${facts.recipientDomain}` }
        : undefined;
    case 'listener':
      return { value: session.listener.name, label: 'this service' };
  }
}

function verdictOf(rule: ResolvedRule, subject: string, retryAfterMs: number): Verdict {
  const text = rule.text
    .replaceAll('{subject}', subject)
    .replaceAll('{retry}', formatWait(retryAfterMs))
    .replaceAll('{limit}', String(rule.limit))
    .replaceAll('{per}', String(rule.per ?? 'connection'));
  switch (rule.action) {
    case 'tempfail':
      return tempfail(rule.code, rule.enhanced, text);
    case 'reject':
      return reject(rule.code, rule.enhanced, text);
    case 'disconnect':
      return disconnect(rule.code, rule.enhanced, text);
  }
}

function storeDown(atConnect: boolean): Verdict {
  return atConnect ? disconnect(421, '4.3.0', STORE_DOWN_TEXT) : tempfail(451, '4.3.0', STORE_DOWN_TEXT);
}

/** A logger that writes to whatever `target()` is when called (the host's, once init ran). */
function forwardingLogger(target: () => Logger, bindings: Record<string, unknown> = {}): Logger {
  const at =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (a: string | Record<string, unknown>, b?: string): void => {
      const log = target();
      if (typeof a === 'string') log[level]({ ...bindings }, a);
      else log[level]({ ...bindings, ...a }, b);
    };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (more) => forwardingLogger(target, { ...bindings, ...more }),
  };
}
