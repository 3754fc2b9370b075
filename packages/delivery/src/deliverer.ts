// The Deliver function of the queue contract: route a job, resolve its next hop to addresses, take
// the destination's throttles, reuse or open a session, run one transaction, and report an outcome
// per recipient. Remote failures are outcomes; only bugs throw, and even those become 4.3.0 here.
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { createLimiter } from '@tern/limiter';
import {
  type Envelope,
  type EnvelopeRecipient,
  encodeXtext,
  envidProblem,
  type Logger,
  lazyChild,
  type NextHop,
  orcptParameter,
  orcptProblem,
  parseWith,
  type SmtpReply,
  silentLogger,
  splitOrcpt,
  type TlsMode,
} from '@tern/plugin-api';
import type { PluginHost } from '@tern/plugin-api/host';
import type {
  AttemptResult,
  Deliver,
  DeliveryJob,
  DeliveryReport,
  LimitWait,
  RecipientOutcome,
  RecipientState,
  ShapingNote,
} from '@tern/queue';
import type { Redis } from 'ioredis';
import { type ActiveBackoff, Backoff, type BackoffRule, type CircuitBreakerOptions } from './backoff.js';
import { DEFAULT_BACKOFF_RULES } from './default-rules.js';
import { Egress, type EgressOptions } from './egress.js';
import { isNonAscii } from './encode.js';
import { deliverToMaildir } from './maildir.js';
import { MtaSts, type MtaStsOptions } from './mta-sts.js';
import { type DnsOptions, type MxHost, MxResolver } from './mx.js';
import {
  DEFAULT_MAX_HEADER_BYTES,
  HeaderBlockTooLarge,
  type OpenMessage,
  type OutboundMessage,
  prepareOutbound,
  readHeaderField,
} from './outbound.js';
import { MemoryPolicyStore, type PolicyStore } from './policy-store.js';
import { ConnectionPool, type PoolOptions } from './pool.js';
import { type ProviderDefinition, Providers } from './providers.js';
import { classify, DeliveryReplies } from './reply.js';
import { type ReturnPathOptions, returnPathFor } from './return-path.js';
import { deliveryOptionsSchema } from './schema.js';
import {
  DEFAULT_REPLY_LIMITS,
  DEFAULT_TIMEOUTS,
  type ReplyLimits,
  SessionError,
  type SessionSettings,
  type SessionTarget,
  type SessionTimeouts,
  SmtpSession,
  StaleConnection,
  type TlsSettings,
} from './session.js';
import { type Admission, admit, type DestinationLimit, type Throttle } from './throttle.js';
import {
  type DeliveryTls,
  defaultTlsLevel,
  type TargetPolicy,
  TLS_POLICY_LEVELS,
  type TlsPlan,
  TlsPolicy,
  type TlsPolicyLevel,
  type TlsPolicyTable,
} from './tls-policy.js';
import type { TlsPolicyOutcome, TlsReportSink } from './tls-report.js';
import { Warmup, type WarmupStatus } from './warmup.js';

/** Per-destination limits. A job takes its domain's limit first, then the limit of each host it connects to. */
export interface LimitOptions {
  /** Every recipient domain without an entry of its own (default: unlimited). */
  readonly default?: DestinationLimit;
  /** By recipient domain (lower case). */
  readonly domains?: Readonly<Record<string, DestinationLimit>>;
  /** By MX or smarthost name; a key starting with '.' matches every name ending in it. */
  readonly hosts?: Readonly<Record<string, DestinationLimit>>;
  /** By provider (see `providers`): one budget shared by every domain the provider hosts. */
  readonly providers?: Readonly<Record<string, DestinationLimit>>;
  /**
   * How long a job may wait inside a worker for a slot or rate token (default 0). Past it, the job is
   * reported with a 4.7.0 placeholder and `wait`: the queue puts it back as it was and lets its
   * domain through at the limit's pace; waiting for a limit is never an attempt.
   */
  readonly waitMs?: number;
  /**
   * Limits on each (egress source, destination) pair, e.g. 5 connections from every address to
   * every destination: `default` for each pair, `destinations` by recipient domain or provider.
   */
  readonly perSource?: {
    readonly default?: DestinationLimit;
    readonly destinations?: Readonly<Record<string, DestinationLimit>>;
  };
  /** With `redis`: a slot of a node that died comes back after this long (default 60 000 ms; live ones renew). */
  readonly leaseTtlMs?: number;
}

/** Automatic back-off: rules on what destinations answer, and the circuit breaker. */
export interface ShapingOptions {
  /** Tried before the shipped rules; the first rule a reply matches acts. */
  readonly rules?: readonly BackoffRule[];
  /** The shipped rules for Gmail, Microsoft, Yahoo and common replies (default true). */
  readonly defaultRules?: boolean;
  readonly circuitBreaker?: CircuitBreakerOptions;
}

export interface LocalDelivery {
  /** Domains delivered over LMTP (lower case). */
  readonly domains: readonly string[];
  readonly lmtp: Omit<Extract<NextHop, { type: 'lmtp' }>, 'type'>;
}

export interface DelivererOptions {
  /** Our name in EHLO/LHLO. */
  readonly hostname: string;
  /** Static routes by recipient domain; '*' is the default route (a smarthost). */
  readonly routes?: Readonly<Record<string, NextHop>>;
  /** Local domains go to an LMTP server (after an exact static route, before '*'). */
  readonly local?: LocalDelivery;
  readonly dns?: DnsOptions;
  /** SMTP port for MX hosts and for smtp hops without a port (default 25). */
  readonly port?: number;
  /**
   * TLS mode for MX and smtp hops that name none, CAs and versions. Without a mode the default policy
   * level is `dane` with `dns.dnssec`, else `mta-sts`; a mode stands for a level (`opportunistic` is
   * `may`, `require` is `verify`, `none` is `none`).
   */
  readonly tls?: TlsSettings & {
    readonly mode?: TlsMode;
    /** Send AUTH over a connection without TLS (default false). */
    readonly allowInsecureAuth?: boolean;
  };
  /**
   * TLS policy per recipient domain (`example.com`, `.example.com` for every domain below) or fixed
   * next hop (`[relay.example.net]`, `[relay.example.net]:587`): a level or `{ level, match }`. It
   * wins over a hop's own `tls` and over `tls.mode`.
   */
  readonly tlsPolicy?: TlsPolicyTable;
  /**
   * MTA-STS (RFC 8461), on by default: `store` caches policies (default: this process's memory; give
   * the queue's store so every node shares it and restarts keep it), `port` (443), `timeoutMs` (20 s),
   * `maxBytes` (64 KiB). `false` turns it off.
   */
  readonly mtaSts?:
    | false
    | (MtaStsOptions & {
        readonly store?: PolicyStore;
        /** CAs trusted for policy hosts (default: `tls.ca`, else Node's bundled roots). */
        readonly ca?: string | Buffer | readonly (string | Buffer)[];
      });
  /** Receives every TLS policy outcome per connection, for TLS-RPT (RFC 8460) reports. */
  readonly tlsReports?: TlsReportSink;
  /** Addresses tried per attempt, over all MX hosts, before deferring (default 5). */
  readonly maxAddresses?: number;
  readonly pool?: Partial<PoolOptions>;
  readonly limits?: LimitOptions;
  readonly shaping?: ShapingOptions;
  /**
   * Provider grouping: domains whose most preferred MX host ends in a provider's suffix (or that it
   * lists) share its limits and back-off state. Entries over the shipped ones (google, microsoft,
   * yahoo, apple); `false` turns grouping off.
   */
  readonly providers?: false | Readonly<Record<string, ProviderDefinition>>;
  /** Source addresses (with their EHLO names) in weighted pools; without it, the system picks the address. */
  readonly egress?: EgressOptions;
  /**
   * Where limits are counted, e.g. a limiter from @tern/limiter shared with the rate-limit plugin
   * (the caller closes it). Default: a limiter of our own over `redis` when given, else in this
   * process, failing open (a Redis outage lets mail out unthrottled rather than stopping it).
   */
  readonly throttle?: Throttle;
  /** Shares limits across nodes (the caller owns and closes the client). */
  readonly redis?: Redis;
  /** Runs the `route` and `beforeSend` hooks, unless the worker gives an attempt its own host. */
  readonly plugins?: PluginHost;
  readonly logger?: Logger;
  readonly timeouts?: SessionTimeouts;
  /**
   * Bounds on one server reply: `maxLines` (default 100) and `maxBytes` (default 64 KiB). A server
   * that sends more, or replies nobody asked for, is disconnected and the attempt deferred with 4.5.0.
   */
  readonly replyLimits?: ReplyLimits;
  /**
   * Largest header block read to run `beforeSend` hooks (default 1 MiB); only the header block is
   * held, the body streams. A message whose header block is larger is deferred with 4.3.0.
   */
  readonly maxHeaderBytes?: number;
  /**
   * VERP: each recipient's transaction carries its own signed return path at this bounce domain
   * (src/return-path.ts), so a later bounce or complaint names message and recipient. The job's
   * own return path stays what DSNs Tern generates go to; `<>` (notices) is never rewritten, and
   * neither is an LMTP or Maildir hop (local mail bounces to us at once). Off when absent.
   */
  readonly returnPath?: ReturnPathOptions;
}

export interface Deliverer {
  readonly deliver: Deliver;
  /** The back-off actions in force now (for the admin API, the dashboard and `tern shaping`). */
  backoffs(): ActiveBackoff[];
  /** Each warming source's day, today's cap and use (empty without warm-up schedules). */
  warmup(): WarmupStatus[];
  /** Quits idle connections. In-flight deliveries finish; their connections close afterwards. */
  close(): Promise<void>;
}

/** One address to try, with the TLS policy that applies to it (none for LMTP). */
interface AttemptTarget {
  readonly target: SessionTarget;
  readonly policy?: TargetPolicy;
}

/** A resolved list of addresses to try (with the TLS plan for SMTP), or an outcome for every recipient. */
type Targets =
  | {
      readonly ok: true;
      readonly targets: readonly AttemptTarget[];
      readonly plan?: TlsPlan;
      /** MX delivery: the MX RRset was DNSSEC-validated. */
      readonly mxSecure?: boolean;
    }
  | { readonly ok: false; readonly result: AttemptResult; readonly reply: SmtpReply };

/** Fixed-hop TLS plans kept per hop (one per policy entry, TLS-Required: No and address set). */
const FIXED_PLANS_PER_HOP = 256;

const DEFAULT_POOL: PoolOptions = {
  idleMs: 5000,
  maxMessagesPerConnection: Number.POSITIVE_INFINITY,
  maxConnectionAgeMs: 300_000,
  maxIdlePerKey: 20,
};

/** Creates the outbound side: `deliver` for the queue worker, `close` for shut-down. */
export function createDeliverer(given: DelivererOptions): Deliverer {
  const options = checkOptions(given);
  if (typeof options.hostname !== 'string' || !/^[A-Za-z0-9.\-[\]:]+$/.test(options.hostname)) {
    throw new TypeError(
      `delivery.hostname: expected our host name for EHLO (letters, digits, dots, hyphens), got ${JSON.stringify(options.hostname)}`,
    );
  }
  const logger = options.logger ?? silentLogger;
  const port = options.port ?? 25;
  checkTlsPolicy(options);
  const maxAddresses = options.maxAddresses ?? 5;
  const limits = options.limits ?? {};
  const waitMs = limits.waitMs ?? 0;
  const replyLimits = { ...DEFAULT_REPLY_LIMITS, ...options.replyLimits };
  const maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const resolver = new MxResolver(options.dns);
  const defaultLevel = defaultTlsLevel(options.tls?.mode, options.dns?.dnssec === true);
  const mtaStsOptions = options.mtaSts === false ? undefined : (options.mtaSts ?? {});
  const tlsPolicy = new TlsPolicy({
    ...(options.tlsPolicy ? { table: options.tlsPolicy } : {}),
    defaultLevel,
    resolver,
    ...(mtaStsOptions
      ? {
          mtaSts: new MtaSts(resolver, mtaStsOptions.store ?? new MemoryPolicyStore(), {
            ...mtaStsOptions,
            ...(mtaStsOptions.ca === undefined && options.tls?.ca !== undefined
              ? { ca: options.tls.ca }
              : {}),
            logger: logger.child({ component: 'mta-sts' }),
          }),
        }
      : {}),
  });
  const tlsReports = options.tlsReports;
  const pool = new ConnectionPool({ ...DEFAULT_POOL, ...options.pool });
  // Only a limiter we made is ours to close; an injected one may be serving others too.
  const ownLimiter =
    options.throttle === undefined
      ? createLimiter({
          redis: options.redis,
          failMode: 'open',
          logger: logger.child({ component: 'throttle' }),
          leaseTtlMs: limits.leaseTtlMs,
        })
      : undefined;
  const throttle: Throttle = options.throttle ?? ownLimiter!;
  const egress = options.egress === undefined ? undefined : new Egress(options.egress);
  const providers = new Providers(options.providers, (domain) => resolver.mxNames(domain));
  const warmup = new Warmup(
    Object.fromEntries(
      Object.entries(egress?.sources() ?? {}).map(([name, source]) => [name, source.warmup]),
    ),
    throttle,
    'delivery.egress.sources',
  );
  for (const name of Object.keys(limits.providers ?? {})) {
    if (!providers.names().includes(name)) {
      throw new TypeError(
        `delivery.limits.providers.${name}: no provider named ${name} (known: ${providers.names().join(', ') || 'none'}); define it under delivery.providers`,
      );
    }
  }
  const backoff = new Backoff(
    [
      ...(options.shaping?.rules ?? []),
      ...(options.shaping?.defaultRules === false ? [] : DEFAULT_BACKOFF_RULES),
    ],
    options.shaping?.circuitBreaker,
  );
  // A rule that moves traffic to another pool must name one that exists.
  (options.shaping?.rules ?? []).forEach((rule, i) => {
    if (rule.action?.kind !== 'pool') return;
    const where = `delivery.shaping.rules[${i}].action.pool`;
    if (!egress) throw new TypeError(`${where}: moving to a pool needs delivery.egress with that pool`);
    egress.checkPool(rule.action.pool, where);
  });
  const settings: SessionSettings = {
    heloName: options.hostname,
    timeouts,
    replyLimits,
    tls: {
      ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {}),
      ...(options.tls?.minVersion !== undefined ? { minVersion: options.tls.minVersion } : {}),
      ...(options.tls?.ciphers !== undefined ? { ciphers: options.tls.ciphers } : {}),
    },
    allowInsecureAuth: options.tls?.allowInsecureAuth === true,
    logger: logger.child({ component: 'smtp-client' }),
  };
  const routes = new Map(Object.entries(options.routes ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const localDomains = new Set((options.local?.domains ?? []).map((d) => d.toLowerCase()));

  /**
   * Routing order: an operator's reroute of the job, route hook, static route for the domain,
   * local (LMTP) domains, '*', MX.
   */
  async function chooseNextHop(job: DeliveryJob, plugins: PluginHost | undefined): Promise<NextHop> {
    if (job.nextHop) return job.nextHop;
    const domain = job.domain.toLowerCase();
    if (plugins?.has('route')) {
      const hop = await plugins.runRoute({
        queueId: job.queueId,
        envelope: copyEnvelope(job.envelope),
        attempt: job.attempts,
        domain,
        recipients: job.recipients,
      });
      if (hop) return hop;
    }
    const exact = routes.get(domain);
    if (exact) return exact;
    if (options.local && localDomains.has(domain)) return { type: 'lmtp', ...options.local.lmtp };
    const fallback = routes.get('*');
    if (fallback) return fallback;
    return { type: 'mx', domain };
  }

  /**
   * TLS plans of fixed smtp hops (a relay to a smarthost) by hop: the inputs repeat for every
   * message, so the plan does too, and it is not made again. Plans at the DANE levels are made
   * afresh each time: they rest on TLSA lookups, whose answers have TTLs. A hop from a route hook
   * or an operator's reroute is a new object each time and keeps nothing (the map holds it weakly).
   */
  const fixedPlans = new WeakMap<object, Map<string, TlsPlan>>();

  async function targetsOf(
    hop: Exclude<NextHop, { type: 'maildir' }>,
    domain: string,
    envelope: Envelope,
  ): Promise<Targets> {
    // RFC 8689 §3: `TLS-Required: No` sets the recipient's policies aside; REQUIRETLS overrides it.
    const ignoreRecipientPolicy = envelope.tlsRequiredNo === true && envelope.requireTls !== true;
    if (hop.type === 'mx') {
      const mx = await resolver.resolveMx(hop.domain);
      if (!mx.ok) return mx;
      const plan = await tlsPolicy.plan({
        hop,
        domain,
        hosts: mx.hosts,
        mxSecure: mx.secure,
        port,
        ignoreRecipientPolicy,
      });
      return { ok: true, targets: plan.targets, plan, mxSecure: mx.secure };
    }
    if (hop.type === 'lmtp' && hop.path !== undefined) {
      return {
        ok: true,
        targets: [
          {
            target: {
              protocol: 'lmtp',
              hostname: hop.host ?? 'localhost',
              path: hop.path,
              tls: hop.tls ?? 'none',
            },
          },
        ],
      };
    }
    const host = hop.host ?? '127.0.0.1';
    const addresses = await resolver.resolveAddresses(host);
    if (!addresses.ok) {
      // A configured host that does not resolve is a configuration or DNS problem: keep the mail.
      return { ok: false, result: 'deferred', reply: DeliveryReplies.dnsTemporary(host, addresses.code) };
    }
    if (hop.type === 'lmtp') {
      const targets = addresses.value.map(
        (address): AttemptTarget => ({
          target: { protocol: 'lmtp', hostname: host, address, port: hop.port ?? 24, tls: hop.tls ?? 'none' },
        }),
      );
      return { ok: true, targets };
    }
    // The policy-table entry that applies, and everything else the plan rests on: equal keys, equal plans.
    const entry = tlsPolicy.entryFor(hop, domain);
    const key = `${entry?.level}|${entry?.match?.join(',')}|${ignoreRecipientPolicy}|${addresses.secure}|${addresses.value.join(',')}`;
    let plans = fixedPlans.get(hop);
    const kept = plans?.get(key);
    if (kept) return { ok: true, targets: kept.targets, plan: kept };
    const fixed: MxHost = {
      name: host.toLowerCase(),
      preference: 0,
      addresses: addresses.value,
      implicit: false,
      addressesSecure: addresses.secure,
    };
    const plan = await tlsPolicy.plan({
      hop,
      domain,
      hosts: [fixed],
      mxSecure: false,
      port: hop.port ?? port,
      ...(hop.auth ? { auth: hop.auth } : {}),
      ignoreRecipientPolicy,
    });
    if (plan.level !== 'dane' && plan.level !== 'dane-only') {
      if (!plans || plans.size >= FIXED_PLANS_PER_HOP) {
        plans = new Map();
        fixedPlans.set(hop, plans);
      }
      plans.set(key, plan);
    }
    return { ok: true, targets: plan.targets, plan };
  }

  /** Hands an outcome to the TLS report sink; a sink that throws must not cost a delivery. */
  function recordTls(
    domain: string,
    outcome: Omit<TlsPolicyOutcome, 'at' | 'policyDomain'>,
    log: Logger,
  ): void {
    if (!tlsReports) return;
    try {
      tlsReports.record({ at: Date.now(), policyDomain: domain, ...outcome });
    } catch (error) {
      log.warn({ err: error }, 'TLS report sink failed');
    }
  }

  /**
   * How TLS went on a connection (or its failed set-up), for the report, and the outcome TLS-RPT
   * counts (undefined under policy `none`, where no TLS was wanted).
   */
  function tlsResult(
    level: TlsPolicyLevel,
    planned: AttemptTarget,
    session: SmtpSession | undefined,
    error: SessionError | undefined,
  ): { summary: DeliveryTls; outcome?: Omit<TlsPolicyOutcome, 'at' | 'policyDomain'> } {
    const policy = planned.policy as TargetPolicy;
    const target = planned.target;
    const base = {
      policyType: policy.policyType,
      policyStrings: policy.policyStrings,
      ...(policy.mxHosts ? { mxHosts: policy.mxHosts } : {}),
      receivingMxHostname: target.hostname,
      ...(target.address !== undefined ? { receivingIp: target.address } : {}),
      ...(session?.localAddress ? { sendingMtaIp: session.localAddress } : {}),
    };
    const summary = (tls: boolean, validated: boolean, reason?: string): DeliveryTls => ({
      policy: level,
      applied: policy.applied,
      tls,
      validated,
      ...(reason !== undefined ? { reason } : {}),
    });
    if (error) {
      const reason = error.reply.text;
      return {
        summary: summary(false, false, reason),
        ...(error.tlsFailure ? { outcome: { ...base, result: error.tlsFailure, detail: reason } } : {}),
      };
    }
    const live = session as SmtpSession;
    const verdict = live.tlsVerdict;
    if (policy.applied === 'none') return { summary: summary(false, false, 'TLS policy none') };
    if (!verdict) {
      if (!live.secure) {
        const reason = `${target.hostname} does not offer STARTTLS (or refused it): sent in plain text`;
        return {
          summary: summary(false, false, reason),
          outcome: { ...base, result: 'starttls-not-supported', detail: reason },
        };
      }
      return {
        summary: summary(true, false, 'opportunistic TLS: certificate not checked'),
        outcome: { ...base, result: 'success' },
      };
    }
    if (!verdict.ok) {
      return {
        summary: summary(live.secure, false, verdict.detail),
        outcome: { ...base, result: verdict.failure, detail: verdict.detail },
      };
    }
    const reason = verdict.authenticated ? policy.note : verdict.detail;
    return {
      summary: summary(true, verdict.authenticated, reason),
      outcome: { ...base, result: 'success', ...(reason ? { detail: reason } : {}) },
    };
  }

  /**
   * The message as it goes onward (streamed on demand), after `beforeSend` when a plugin has it; or,
   * when it cannot be read or a hook failed, the reason logged and the deferral reply.
   */
  async function prepare(
    job: DeliveryJob,
    hop: NextHop,
    message: OpenMessage,
    log: Logger,
    plugins: PluginHost | undefined,
  ): Promise<{ ok: true; outbound: OutboundMessage } | { ok: false; reply: SmtpReply }> {
    try {
      const outbound = await prepareOutbound(job, message, {
        maxHeaderBytes,
        ...(plugins?.has('beforeSend')
          ? {
              beforeSend: async (view) => {
                await plugins.runTransform('beforeSend', {
                  queueId: job.queueId,
                  envelope: copyEnvelope(job.envelope),
                  attempt: job.attempts,
                  hop,
                  recipients: job.recipients,
                  message: view,
                });
              },
            }
          : {}),
      });
      return { ok: true, outbound };
    } catch (error) {
      if (error instanceof HeaderBlockTooLarge) {
        log.warn({ limit: error.limit }, error.message);
        return {
          ok: false,
          reply: DeliveryReplies.localError(`header block larger than ${error.limit} bytes`),
        };
      }
      log.error({ err: error }, 'message could not be read or the beforeSend hook failed; deferring');
      return { ok: false, reply: DeliveryReplies.localError('message not available for sending') };
    }
  }

  function limitOf(kind: 'domain' | 'host', name: string): DestinationLimit | undefined {
    if (kind === 'domain') return limits.domains?.[name] ?? limits.default;
    const table = limits.hosts ?? {};
    if (table[name]) return table[name];
    for (const [key, limit] of Object.entries(table)) {
      if (key.startsWith('.') && name.endsWith(key)) return limit;
    }
    return undefined;
  }

  /**
   * The egress source of a job: from its pool (by recipient and sender domain), by weight, leaving
   * out sources a back-off rule suspended for this destination. A `pool` action on a source of the
   * pool moves the destination's traffic to the pool it names. When no source is left, the job
   * waits for the first to come back.
   */
  async function chooseSource(
    job: DeliveryJob,
    message: OpenMessage,
    domain: string,
    destination: string,
    notes: ShapingNote[],
  ): Promise<{ ok: true; source: string; pool?: string } | { ok: false; reply: SmtpReply; wait: LimitWait }> {
    if (!egress) return { ok: true, source: DEFAULT_SOURCE };
    const now = Date.now();
    // Tags are on the envelope: intake takes them from the API or from X-Tern-Tag, which it removes.
    // The tag header is also read (its header block only) when some selector asks for tags: a custom
    // `tagHeader`, or mail queued before intake kept tags on the envelope.
    const tagHeader = egress.tagHeader;
    const headerTag =
      tagHeader === undefined
        ? undefined
        : await readHeaderField(message, tagHeader, maxHeaderBytes).catch(() => undefined);
    const tags = [...(job.envelope.tags ?? []), ...(headerTag === undefined ? [] : [headerTag])];
    let pool = egress.poolFor(domain, job.envelope.mailFrom, tags);
    const inForce = (pool: string): ActiveBackoff[] =>
      egress
        .members(pool)
        .flatMap(([name]) => backoff.active(name, destination, now).filter((a) => a.source === name));
    for (let moves = 0; moves < 3; moves++) {
      const move = inForce(pool).find((a) => a.action === 'pool' && a.pool !== undefined && a.pool !== pool);
      if (move?.pool === undefined) break;
      notes.push(shapingNote(move, 'applied'));
      pool = move.pool;
    }
    const held = inForce(pool).filter((a) => a.action === 'suspend');
    // A warming source over today's cap is left out too: its share spills to the others.
    const capped = new Set<string>();
    for (;;) {
      const source = egress.pick(pool, (name) => !held.some((a) => a.source === name) && !capped.has(name));
      if (source === undefined) break;
      if (await warmup.take(source, destination, now)) return { ok: true, source, pool };
      capped.add(source);
    }
    if (held.length === 0) {
      // Every source is warming and used its cap for today: wait for tomorrow's.
      return {
        ok: false,
        reply: DeliveryReplies.throttled(`warmup:${pool}|${destination}`),
        wait: {
          key: `warmup:${destination}`,
          retryAfterMs: poolWait(warmup.untilTomorrow(now)),
          spacingMs: 0,
          burst: 1,
        },
      };
    }
    const first = held.reduce((a, b) => (b.until < a.until ? b : a), held[0] as ActiveBackoff);
    notes.push(shapingNote(first, 'waiting'));
    return {
      ok: false,
      reply: DeliveryReplies.suspended(`${destination} from pool ${pool}`, first.rule),
      wait: {
        key: `backoff:${destination}`,
        retryAfterMs: poolWait(first.until - now),
        spacingMs: 0,
        burst: 1,
      },
    };
  }

  /**
   * Everything a job must pass before DNS and reading the message: a suspension in force, the
   * domain's limit, and the lowered limits back-off rules put on (source, destination). Either all
   * are held, or none and the wait for the one that refused.
   */
  async function admitDestination(
    source: string,
    domain: string,
    destination: string,
    notes: ShapingNote[],
  ): Promise<{ ok: true; release(): Promise<void> } | { ok: false; reply: SmtpReply; wait: LimitWait }> {
    const now = Date.now();
    const inForce = backoff.active(source, destination, now);
    const stop = inForce.find((a) => a.action === 'suspend' || a.action === 'circuit');
    if (stop) {
      notes.push(shapingNote(stop, 'waiting'));
      return {
        ok: false,
        reply: DeliveryReplies.suspended(destination, stop.rule),
        wait: { key: `backoff:${destination}`, retryAfterMs: stop.until - now, spacingMs: 0, burst: 1 },
      };
    }
    const steps: { key: string; limit: DestinationLimit; action?: ActiveBackoff }[] = [];
    const own = limitOf('domain', domain);
    if (own) steps.push({ key: `domain:${domain}`, limit: own });
    const shared = destination === domain ? undefined : limits.providers?.[destination];
    if (shared) steps.push({ key: `provider:${destination}`, limit: shared });
    const perSource = limits.perSource?.destinations?.[destination] ?? limits.perSource?.default;
    if (perSource) steps.push({ key: `source:${source}|${destination}`, limit: perSource });
    for (const action of inForce) {
      if (action.limit) {
        steps.push({
          key: `backoff:${action.source}|${action.destination}|${action.action}`,
          limit: action.limit,
          action,
        });
      }
    }
    const held: (() => Promise<void>)[] = [];
    const release = async (): Promise<void> => {
      for (const r of held.splice(0).reverse()) await r();
    };
    for (const step of steps) {
      const admission = await admit(throttle, step.key, step.limit, waitMs);
      if (!admission.ok) {
        await release();
        if (step.action) notes.push(shapingNote(step.action, 'waiting'));
        return { ok: false, reply: DeliveryReplies.throttled(admission.key), wait: limitWait(admission) };
      }
      held.push(admission.release);
    }
    return { ok: true, release };
  }

  async function admitTo(kind: 'domain' | 'host', name: string): Promise<Admission> {
    const limit = limitOf(kind, name);
    if (!limit) return { ok: true, release: async () => {} };
    return admit(throttle, `${kind}:${name}`, limit, waitMs);
  }

  /** An idle session still connected (its next transaction starts with RSET), or a new one. */
  async function sessionFor(
    target: SessionTarget,
    key: string,
    log: Logger,
  ): Promise<{ session: SmtpSession; fresh: boolean }> {
    for (let idle = pool.take(key); idle; idle = pool.take(key)) {
      if (!idle.usable) {
        idle.close();
        continue;
      }
      idle.reuse();
      if (log.isLevelEnabled?.('debug') !== false)
        log.debug({ remoteMta: idle.remoteMta }, 'reusing connection');
      return { session: idle, fresh: false };
    }
    return { session: await SmtpSession.open(target, settings), fresh: true };
  }

  async function attempt(
    job: DeliveryJob,
    message: () => Promise<Readable>,
    log: Logger,
    plugins: PluginHost | undefined,
  ): Promise<DeliveryReport> {
    const outcomes: (RecipientOutcome | undefined)[] = job.recipients.map(() => undefined);
    const notes: ShapingNote[] = [];
    let sourceOf: string | undefined;
    const spent = new AttemptClock();
    const report = (extra: Partial<DeliveryReport> = {}): DeliveryReport => ({
      recipients: outcomes.map(
        (o, i) =>
          o ?? {
            address: job.recipients[i]?.address ?? '',
            result: 'deferred',
            reply: DeliveryReplies.localError('no outcome'),
          },
      ),
      ...spent.report(),
      ...(notes.length > 0 ? { shaping: notes } : {}),
      ...(egress && sourceOf !== undefined ? { source: sourceOf } : {}),
      ...extra,
    });
    const settle = (
      indices: readonly number[],
      reply: SmtpReply,
      result: AttemptResult = classify(reply),
    ): void => {
      for (const i of indices) outcomes[i] = { address: job.recipients[i]?.address ?? '', result, reply };
    };

    if (job.recipients.length === 0) return { recipients: [] };
    const all = job.recipients.map((_, i) => i);
    const mailFrom = job.envelope.mailFrom;
    if (!sendable(mailFrom)) {
      settle(all, DeliveryReplies.badSender(mailFrom));
      return report();
    }
    const open: number[] = [];
    for (const i of all) {
      const address = job.recipients[i]?.address ?? '';
      if (sendable(address) && address !== '') open.push(i);
      else settle([i], DeliveryReplies.badRecipient(address));
    }
    if (open.length === 0) return report();

    let hop: NextHop;
    try {
      hop = await chooseNextHop(job, plugins);
    } catch (error) {
      log.error({ err: error }, 'route hook failed; deferring');
      settle(open, DeliveryReplies.localError('routing failed'), 'deferred');
      return report();
    }
    if (hop.type === 'maildir') return deliverLocally(job, hop, open, message, outcomes, log, plugins);
    const domain = job.domain.toLowerCase();
    // The provider the domain's MX hosts belong to, if any: its limits and back-off state are shared.
    const provider = hop.type === 'mx' ? await spent.connecting(() => providers.of(domain)) : undefined;
    const destination = provider ?? domain;
    const chosen = await chooseSource(job, message, domain, destination, notes);
    if (!chosen.ok) {
      settle(open, chosen.reply, 'deferred');
      return report({ hop, wait: chosen.wait });
    }
    const source = chosen.source;
    sourceOf = source;
    const bind = bindTo(egress?.source(source));
    // The destination's limits first, before DNS and reading the message: a job that must wait costs little.
    const gate = await admitDestination(source, domain, destination, notes);
    if (!gate.ok) {
      settle(open, gate.reply, 'deferred');
      return report({ hop, wait: gate.wait });
    }
    try {
      return await admitted(hop);
    } finally {
      await gate.release();
    }

    /** What the destination answered: back-off rules it sets off go into the report and the log. */
    function observe(replies: readonly SmtpReply[]): void {
      for (const action of backoff.observe(source, destination, replies, Date.now())) {
        log.warn(
          {
            rule: action.rule,
            action: action.action,
            source,
            destination,
            until: new Date(action.until).toISOString(),
          },
          'back-off rule in force',
        );
        notes.push(shapingNote(action, 'triggered'));
      }
    }

    /** The rest of the attempt, under the domain's limit. */
    async function admitted(hop: Exclude<NextHop, { type: 'maildir' }>): Promise<DeliveryReport> {
      const targets = await spent.connecting(() => targetsOf(hop, domain, job.envelope));
      if (!targets.ok) {
        settle(open, targets.reply, targets.result);
        log.info({ hop, code: targets.reply.code, enhanced: targets.reply.enhanced }, targets.reply.text);
        return report({ hop });
      }
      const plan = targets.plan;
      for (const outcome of plan?.outcomes ?? []) recordTls(domain, outcome, log);
      for (const skip of plan?.skipped ?? []) {
        recordTls(domain, skip.outcome, log);
        log.info({ host: skip.host, code: skip.reply.code, enhanced: skip.reply.enhanced }, skip.reply.text);
      }
      const firstSkip = plan?.skipped[0];
      if (plan && firstSkip && plan.targets.length === 0) {
        // Every host was ruled out by the TLS policy: never a plain-text fallback, the mail waits.
        settle(open, firstSkip.reply, 'deferred');
        const applied = firstSkip.outcome.policyType === 'sts' ? 'mta-sts-enforce' : 'dane';
        return report({
          hop,
          tls: { policy: plan.level, applied, tls: false, validated: false, reason: firstSkip.reply.text },
        });
      }

      // RFC 8689 §4.2.1: a REQUIRETLS message only to hosts whose TLS a policy authenticates.
      const strictTls = requiresTls(job.envelope);
      const usable = strictTls
        ? targets.targets.filter(
            (t) => t.policy === undefined || authenticatesByPolicy(t.policy, hop, targets),
          )
        : targets.targets;
      if (usable.length === 0) {
        // A policy host ruled out may come back (DNS, policy fetch); no policy at all will not.
        const skipped = plan?.skipped[0];
        if (skipped) settle(open, skipped.reply, 'deferred');
        else settle(open, DeliveryReplies.requireTlsNoPolicy(domain), 'failed');
        log.info({ hop, requireTls: true }, 'REQUIRETLS: no host whose TLS a policy authenticates');
        return report({ hop });
      }

      const prepared = await prepare(job, hop, message, log, plugins);
      if (!prepared.ok) {
        settle(open, prepared.reply, 'deferred');
        return report({ hop });
      }
      const outbound = prepared.outbound;
      const openRecipients = open.map((i) => job.recipients[i] as RecipientState);
      const recipients = openRecipients.map((r) => r.address);
      const needsUtf8 =
        job.envelope.smtputf8 === true || isNonAscii(mailFrom) || recipients.some((r) => isNonAscii(r));
      const needs8Bit =
        job.envelope.body === '8BITMIME' || job.envelope.body === 'BINARYMIME' || outbound.eightBit;

      {
        const problems: SessionError[] = [];
        let lastTls: DeliveryTls | undefined;
        /** The report's TLS part, and the TLS-RPT outcome of a new connection (not of a reused one). */
        const noteTls = (
          planned: AttemptTarget,
          session?: SmtpSession,
          error?: SessionError,
          fresh = true,
        ): void => {
          if (!plan || !planned.policy) return;
          const { summary, outcome } = tlsResult(plan.level, planned, session, error);
          lastTls = summary;
          if (outcome && fresh) recordTls(domain, outcome, log);
        };
        for (const planned of bind(usable).slice(0, maxAddresses)) {
          const target = planned.target;
          const hostAdmission = await admitTo('host', target.hostname);
          if (!hostAdmission.ok) {
            settle(open, DeliveryReplies.throttled(hostAdmission.key), 'deferred');
            return report({ hop, wait: limitWait(hostAdmission) });
          }
          try {
            const key = poolKey(target);
            let session: SmtpSession;
            let fresh: boolean;
            try {
              ({ session, fresh } = await spent.connecting(() => sessionFor(target, key, log)));
            } catch (error) {
              if (!(error instanceof SessionError)) throw error;
              noteTls(planned, undefined, error);
              problems.push(error);
              if (error.remote) observe([error.remote]);
              log.info(
                { host: target.hostname, address: target.address ?? target.path, reason: error.message },
                'next address',
              );
              continue;
            }
            try {
              const send = (via: SmtpSession): Promise<Transacted> =>
                spent.transferring(() => transact(via, job, openRecipients, outbound, needsUtf8, needs8Bit));
              let transacted: Transacted;
              try {
                transacted = await send(session);
              } catch (error) {
                if (!(error instanceof StaleConnection)) throw error;
                // The pooled connection died while idle; the server took nothing: once more, fresh.
                log.debug(
                  { remoteMta: session.remoteMta, reason: error.message },
                  'pooled connection was dead',
                );
                session.close();
                try {
                  session = await spent.connecting(() => SmtpSession.open(target, settings));
                  fresh = true;
                } catch (openError) {
                  if (!(openError instanceof SessionError)) throw openError;
                  noteTls(planned, undefined, openError);
                  problems.push(openError);
                  if (openError.remote) observe([openError.remote]);
                  continue;
                }
                transacted = await send(session);
              }
              noteTls(planned, session, undefined, fresh);
              backoff.connected(destination);
              if (transacted.passOver) {
                problems.push(new SessionError(transacted.passOver, { permanent: true }));
                log.info({ remoteMta: session.remoteMta, reason: transacted.passOver.text }, 'next address');
                continue;
              }
              const replies = transacted.replies;
              observe(replies);
              open.forEach((index, n) => {
                const reply = replies[n] ?? DeliveryReplies.noDataReply;
                settle([index], reply);
              });
              // Its fields are built only when the record is written (info is off in production set-ups).
              if (log.isLevelEnabled?.('info') !== false) {
                log.info(
                  {
                    remoteMta: session.remoteMta,
                    secure: session.secure,
                    ...(lastTls ? { tls: lastTls } : {}),
                    results: open.map((i) => ({
                      address: outcomes[i]?.address,
                      code: outcomes[i]?.reply.code,
                    })),
                  },
                  'delivery attempt finished',
                );
              }
              // The policy outcome, and the protocol and cipher of the session that carried the mail (for logs).
              const info = session.tlsInfo;
              const tls: DeliveryTls | undefined = lastTls
                ? { ...lastTls, ...(info ? { protocol: info.protocol, cipher: info.cipher } : {}) }
                : undefined;
              return report({
                hop,
                remoteMta: session.remoteMta,
                ...(tls ? { tls } : {}),
                successNotice: transacted.successNotice,
              });
            } finally {
              await pool.give(key, session);
            }
          } finally {
            await hostAdmission.release();
          }
        }
        // Every address failed before a transaction: permanent only when every server refused us with 5xx.
        const last = problems.at(-1);
        // No server answered at all (refused, unreachable, timed out): the circuit breaker counts it.
        if (last && problems.every((p) => p.remote === undefined && p.tlsFailure === undefined)) {
          const tripped = backoff.connectionFailed(destination, last.reply, Date.now());
          if (tripped) {
            log.warn(
              { destination, until: new Date(tripped.until).toISOString() },
              tripped.detail ?? 'circuit open',
            );
            notes.push(shapingNote(tripped, 'triggered'));
          }
        } else if (problems.some((p) => p.remote !== undefined)) {
          backoff.connected(destination);
        }
        const temporary = problems.filter((p) => !p.permanent).at(-1);
        // A host the TLS policy ruled out counts as one that could not be used: its reason is kept.
        const ruledOut = plan?.skipped[0]?.reply;
        if (last && problems.every((p) => p.permanent) && !ruledOut) settle(open, last.reply, 'failed');
        else {
          settle(
            open,
            temporary?.reply ?? ruledOut ?? DeliveryReplies.noConnection('no address to try'),
            'deferred',
          );
        }
        return report({ hop, ...(lastTls ? { tls: lastTls } : {}) });
      }
    }
  }

  /** A maildir hop: the message (after beforeSend) goes into folders under the hop's path. */
  async function deliverLocally(
    job: DeliveryJob,
    hop: Extract<NextHop, { type: 'maildir' }>,
    open: readonly number[],
    message: () => Promise<Readable>,
    outcomes: (RecipientOutcome | undefined)[],
    log: Logger,
    plugins: PluginHost | undefined,
  ): Promise<DeliveryReport> {
    const prepared = await prepare(job, hop, message, log, plugins);
    if (!prepared.ok) {
      for (const i of open) {
        outcomes[i] = {
          address: job.recipients[i]?.address ?? '',
          result: 'deferred',
          reply: prepared.reply,
        };
      }
      return { recipients: outcomes as RecipientOutcome[], hop };
    }
    const recipients = open.map((i) => job.recipients[i] as RecipientState);
    // Each mailbox file is written from a fresh stream of the message.
    const spent = new AttemptClock();
    const local = await spent.transferring(() =>
      deliverToMaildir(hop.path, { ...job, recipients }, prepared.outbound.open),
    );
    open.forEach((index, n) => {
      const outcome = local.recipients[n];
      if (outcome) outcomes[index] = outcome;
    });
    log.info(
      { hop, results: local.recipients.map((r) => ({ address: r.address, code: r.reply.code })) },
      'maildir delivery finished',
    );
    return {
      recipients: outcomes as RecipientOutcome[],
      hop,
      ...(local.remoteMta ? { remoteMta: local.remoteMta } : {}),
      ...spent.report(),
      successNotice: 'delivered',
    };
  }

  /** Checks what this server must support, then runs the transaction. */
  async function transact(
    session: SmtpSession,
    job: DeliveryJob,
    recipients: readonly EnvelopeRecipient[],
    outbound: OutboundMessage,
    needsUtf8: boolean,
    needs8Bit: boolean,
  ): Promise<Transacted> {
    const envelope = job.envelope;
    const caps = session.capabilities;
    const host = session.target.hostname;
    const lmtp = session.target.protocol === 'lmtp';
    const refuse = (reply: SmtpReply): Transacted => ({ replies: recipients.map(() => reply) });
    // RFC 8689 §4.2.1: authenticated TLS and REQUIRETLS offered, checked on the live session; a host
    // that falls short is passed over for the next one, like a host that refused us.
    if (requiresTls(envelope) && !lmtp) {
      const verdict = session.tlsVerdict;
      if (!session.secure || !verdict?.ok || !verdict.authenticated) {
        const detail = !session.secure ? 'no TLS' : (verdict?.detail ?? 'certificate not checked');
        return { replies: [], passOver: DeliveryReplies.requireTlsNotValidated(host, detail) };
      }
      if (!caps.requireTls) return { replies: [], passOver: DeliveryReplies.requireTlsNotOffered(host) };
    }
    // RFC 6531 §3.2: without SMTPUTF8 on the server, such mail must not be sent (no downgrade here).
    if (needsUtf8 && !caps.smtpUtf8) return refuse(DeliveryReplies.needsSmtpUtf8(host));
    // RFC 6152 §3: 8-bit data only to servers that offer 8BITMIME; we do not convert to 7-bit.
    if (needs8Bit && !caps.eightBitMime) return refuse(DeliveryReplies.needs8BitMime(host));
    if (caps.size !== undefined && caps.size > 0 && outbound.size > caps.size) {
      return refuse(DeliveryReplies.tooBig(host, outbound.size, caps.size));
    }
    const mailParams: string[] = [];
    if (caps.size !== undefined) mailParams.push(`SIZE=${outbound.size}`);
    if (needs8Bit) mailParams.push('BODY=8BITMIME');
    if (needsUtf8) mailParams.push('SMTPUTF8');
    // RFC 8689 §5: a notice about a REQUIRETLS message keeps the flag where the next hop takes it.
    if (envelope.requireTls === true && caps.requireTls && session.secure) mailParams.push('REQUIRETLS');
    // RFC 3461 §5.2: a relay passes DSN requests on to a next hop that supports DSN. LMTP is the last
    // hop: we report delivery ourselves, so its server is not asked to.
    const dsn = caps.dsn && !lmtp ? dsnParameters(envelope) : undefined;
    if (dsn) mailParams.push(...dsn.mail);
    const transaction = (mailFrom: string, batch: readonly EnvelopeRecipient[]): Promise<SmtpReply[]> =>
      session.send({
        mailFrom,
        mailParams,
        recipients: batch.map((r) => ({ address: r.address, params: dsn ? dsn.rcpt(r) : [] })),
        // Opened afresh by every transaction: a fallback MX or a retry after a stale connection reads it again.
        message: outbound.open,
      });
    const successNotice = lmtp ? 'delivered' : dsn ? 'next-hop' : 'relayed';
    const verp = options.returnPath;
    if (verp === undefined || lmtp || envelope.mailFrom === '') {
      return { replies: await transaction(envelope.mailFrom, recipients), successNotice };
    }
    // VERP: one transaction per recipient on this connection, each with its own return path.
    const replies: SmtpReply[] = [];
    for (const [n, r] of recipients.entries()) {
      if (n > 0) {
        if (!session.usable) {
          // The connection broke in an earlier transaction: the rest wait for the next attempt.
          const lost = DeliveryReplies.connectionLost(`${session.remoteMta}: connection closed`);
          replies.push(...recipients.slice(n).map(() => lost));
          break;
        }
        session.reuse();
      }
      try {
        replies.push(...(await transaction(returnPathFor(verp, job.queueId, r.address), [r])));
      } catch (error) {
        // Only the first transaction may start again on a fresh connection: later ones would send twice.
        if (n === 0 || !(error instanceof StaleConnection)) throw error;
        const lost = DeliveryReplies.connectionLost(`${session.remoteMta}: ${error.message}`);
        replies.push(...recipients.slice(n).map(() => lost));
        break;
      }
    }
    return { replies, successNotice };
  }

  const deliver: Deliver = async (job, message, given) => {
    // Made only if a record is written: a pino child per message costs microseconds at any level.
    const log = lazyChild(logger, { queueId: job.queueId, jobId: job.id, domain: job.domain });
    try {
      return await attempt(job, message, log, given?.plugins ?? options.plugins);
    } catch (error) {
      log.error({ err: error }, 'delivery attempt failed inside Tern; deferring every recipient');
      const reply = DeliveryReplies.localError('delivery attempt failed');
      return { recipients: job.recipients.map((r) => ({ address: r.address, result: 'deferred', reply })) };
    }
  };

  return {
    deliver,
    backoffs: () => backoff.snapshot(Date.now()),
    warmup: () => warmup.status(Date.now()),
    close: async () => {
      await pool.close();
      // Stops lease renewal and gives back what is still held; the caller's Redis stays open.
      await ownLimiter?.close();
    },
  };
}

/** The replies of one transaction, per recipient, and who reports success onward (DeliveryReport.successNotice). */
interface Transacted {
  readonly replies: SmtpReply[];
  readonly successNotice?: DeliveryReport['successNotice'];
  /** Nothing was sent: this host cannot take the message (REQUIRETLS); try the next one. */
  readonly passOver?: SmtpReply;
}

/**
 * REQUIRETLS binds (RFC 8689 §4.2.1). For a notice from `<>` it does not (§5: the flag must not get
 * a bounce discarded); such a notice still carries REQUIRETLS to a hop that takes it.
 */
function requiresTls(envelope: Envelope): boolean {
  return envelope.requireTls === true && envelope.mailFrom !== '';
}

/**
 * Whether a host's policy authenticates the next hop as RFC 8689 §4.2.1 asks: DANE (with a
 * DNSSEC-validated MX answer), MTA-STS, `secure` (the certificate names the recipient domain), or
 * `verify` for a fixed relay the operator named (no MX answer to forge).
 */
function authenticatesByPolicy(
  policy: TargetPolicy,
  hop: NextHop,
  targets: Extract<Targets, { ok: true }>,
): boolean {
  switch (policy.applied) {
    case 'dane':
      return hop.type !== 'mx' || targets.mxSecure === true;
    case 'mta-sts-enforce':
    case 'mta-sts-testing':
    case 'secure':
      return true;
    case 'verify':
      return hop.type === 'smtp';
    default:
      return false;
  }
}

/** Where one attempt's time went, for the report: session set-up (DNS included) and transactions. */
class AttemptClock {
  readonly #spent = { connectMs: 0, transferMs: 0 };

  connecting<T>(run: () => Promise<T>): Promise<T> {
    return this.#time('connectMs', run);
  }

  transferring<T>(run: () => Promise<T>): Promise<T> {
    return this.#time('transferMs', run);
  }

  report(): { connectMs: number; transferMs: number } {
    const ms = (value: number): number => Math.round(value * 10) / 10;
    return { connectMs: ms(this.#spent.connectMs), transferMs: ms(this.#spent.transferMs) };
  }

  async #time<T>(part: 'connectMs' | 'transferMs', run: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await run();
    } finally {
      this.#spent[part] += performance.now() - start;
    }
  }
}

/**
 * The options with their plain part checked against deliveryOptionsSchema (durations read into
 * ms, domains normalised); a bad one is a TypeError naming the field from `delivery.`, as the
 * config does.
 */
/**
 * Puts the egress source on every target it can reach: its address to connect from (only targets
 * of the same address family) and its EHLO name. LMTP over a UNIX socket stays as it is.
 */
function bindTo(
  source: { readonly address?: string; readonly ehlo?: string } | undefined,
): (targets: readonly AttemptTarget[]) => AttemptTarget[] {
  return (targets) => {
    if (source === undefined) return [...targets];
    const out: AttemptTarget[] = [];
    for (const planned of targets) {
      const target = planned.target;
      if (target.path !== undefined) {
        out.push(planned);
        continue;
      }
      if (
        source.address !== undefined &&
        target.address !== undefined &&
        isIP(source.address) !== isIP(target.address)
      )
        continue;
      out.push({
        ...planned,
        target: {
          ...target,
          ...(source.address === undefined ? {} : { localAddress: source.address }),
          ...(source.ehlo === undefined ? {} : { heloName: source.ehlo }),
        },
      });
    }
    return out;
  };
}

/**
 * The queue paces waits by recipient domain, not by pool: a wait only one pool's jobs have (its
 * sources capped or suspended) is looked at again within a minute, so the domain's jobs in other
 * pools are held back for no longer than that.
 */
const POOL_WAIT_MS = 60_000;

function poolWait(ms: number): number {
  return Math.min(Math.max(0, ms), POOL_WAIT_MS);
}

/** The source name used while no egress pools are configured. */
export const DEFAULT_SOURCE = 'default';

/** A back-off action as the timeline records it. */
function shapingNote(action: ActiveBackoff, cause: ShapingNote['cause']): ShapingNote {
  return {
    cause,
    rule: action.rule,
    action: action.action,
    source: action.source,
    destination: action.destination,
    until: action.until,
    ...(action.detail === undefined ? {} : { detail: action.detail }),
    reply: action.reply,
  };
}

/** What the queue needs of a refusal to keep the job waiting (the key, when, and the limit's pace). */
function limitWait(refusal: Extract<Admission, { ok: false }>): LimitWait {
  return {
    key: refusal.key,
    retryAfterMs: refusal.retryAfterMs,
    spacingMs: refusal.spacingMs,
    burst: refusal.burst,
  };
}

function checkOptions(options: DelivererOptions): DelivererOptions {
  const checked = parseWith(
    deliveryOptionsSchema,
    options,
    (field, problem) => {
      throw new TypeError(`${field}: ${problem}`);
    },
    'delivery',
  );
  return { ...options, ...(checked as Partial<DelivererOptions>) };
}

/** Hooks get their own copy: a hook changing it must not change the job the queue holds. */
function copyEnvelope(envelope: Envelope): Envelope {
  return { ...envelope, recipients: envelope.recipients.map((r) => ({ ...r })) };
}

const NOTIFY_VALUES: ReadonlySet<string> = new Set(['SUCCESS', 'FAILURE', 'DELAY', 'NEVER']);

/**
 * DSN parameters for the next hop, xtext-encoded again (envelopes hold them decoded). One that would
 * be malformed on the wire (a hook or a stored message may hold anything) is left out, not sent.
 */
function dsnParameters(envelope: Envelope): { mail: string[]; rcpt: (r: EnvelopeRecipient) => string[] } {
  const mail: string[] = [];
  if (envelope.ret === 'FULL' || envelope.ret === 'HDRS') mail.push(`RET=${envelope.ret}`);
  if (envelope.envid !== undefined && envidProblem(envelope.envid) === undefined) {
    mail.push(`ENVID=${encodeXtext(envelope.envid)}`);
  }
  const rcpt = (r: EnvelopeRecipient): string[] => {
    const params: string[] = [];
    const notify = (r.notify ?? []).filter((n) => NOTIFY_VALUES.has(n));
    if (notify.length > 0) params.push(`NOTIFY=${notify.join(',')}`);
    const orcpt = r.orcpt === undefined || orcptProblem(r.orcpt) ? undefined : splitOrcpt(r.orcpt);
    if (orcpt) params.push(orcptParameter(orcpt));
    return params;
  };
  return { mail, rcpt };
}

/** An address that can go between angle brackets on one command line without changing the command. */
function sendable(address: string): boolean {
  return !/[\r\n\0<>]/.test(address);
}

/**
 * Pool keys by target: a fixed hop's plan is kept (targetsOf), so its targets come back as the same
 * objects for every message and their key is not built again. Targets are never changed once made.
 */
const poolKeys = new WeakMap<SessionTarget, string>();

/** Sessions are shared only between targets that ask the same of the connection, TLS check included. */
function poolKey(target: SessionTarget): string {
  let key = poolKeys.get(target);
  if (key === undefined) {
    key = buildPoolKey(target);
    poolKeys.set(target, key);
  }
  return key;
}

function buildPoolKey(target: SessionTarget): string {
  const check = target.check;
  const checkKey =
    check === undefined
      ? ''
      : check.kind === 'encrypt'
        ? 'encrypt'
        : `${check.kind}:${check.names.join(',')}:${
            check.kind === 'dane'
              ? check.records
                  .map((r) => `${r.usage}${r.selector}${r.matchingType}${r.data.toString('hex')}`)
                  .join(',')
              : ''
          }`;
  return [
    target.protocol,
    target.hostname,
    target.address ?? '',
    target.port ?? '',
    target.path ?? '',
    target.tls,
    checkKey,
    target.auth?.user ?? '',
    target.localAddress ?? '',
    target.heloName ?? '',
  ].join('|');
}

/** The policy table names known levels, and `dane-only` has the validating resolver it needs. */
function checkTlsPolicy(options: DelivererOptions): void {
  for (const [key, value] of Object.entries(options.tlsPolicy ?? {})) {
    const where = `delivery.tlsPolicy[${JSON.stringify(key)}]`;
    const level = typeof value === 'string' ? value : value?.level;
    if (!TLS_POLICY_LEVELS.includes(level as TlsPolicyLevel)) {
      throw new TypeError(
        `${where}: expected one of ${TLS_POLICY_LEVELS.join(', ')}, got ${JSON.stringify(level)}`,
      );
    }
    if (level === 'dane-only' && options.dns?.dnssec !== true) {
      throw new TypeError(
        `${where}: dane-only needs DNSSEC: set delivery.dns.dnssec: true with a validating resolver in dns.servers`,
      );
    }
  }
}
