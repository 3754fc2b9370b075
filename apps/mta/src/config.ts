// The tern config: its schema (with defaults), `defineConfig` for typed config files, loading
// TS or JS (ESM) config files under a deadline, and errors that name the field and the fix.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { hostnameSchema, intakeSchema, LISTENER_DEFAULTS, listenerShape, parseUsersFile } from '@tern/core';
import {
  deliveryDnsShape,
  deliveryShape,
  deliveryTlsShape,
  TLS_POLICY_LEVELS,
  type TlsPolicyLevel,
} from '@tern/delivery';
import {
  BOUNCE_CATEGORIES,
  dnsServerSchema,
  domainSchema,
  durationSchema,
  issuePath,
  type ListenerKind,
  networkSchema,
  type Plugin,
  parseDuration,
  portSchema,
  TAG_PATTERN,
  withTimeout,
} from '@tern/plugin-api';
import { withConfigDir } from '@tern/plugin-api/host';
import {
  BounceRuleError,
  checkBounceRules,
  embeddedQueueShape,
  redisQueueShape,
  retrySchema,
  workerShape,
} from '@tern/queue';
import { redisConnectionSchema } from '@tern/redis';
import { createJiti, type TransformOptions, type TransformResult } from 'jiti';
import { z } from 'zod';
import { parseApiKeysFile } from './http/api-keys.js';
import { pluginInstances, shutdownPlugins } from './plugins.js';
import { webhooksSchema } from './webhooks/schema.js';

// The config schema is composed from the packages' own option schemas (core: listeners and intake;
// delivery: routes, DNS, limits, timeouts; queue: backends, retry, the worker): each rule and each
// default lives beside the code it configures. What is only the app's is here: files (TLS, users,
// tokens), plugins and the admin API.

const tlsFiles = z.strictObject({
  key: z.string().min(1, 'the path of a PEM private key'),
  cert: z.string().min(1, 'the path of a PEM certificate chain'),
  /** Extra certificates chosen by SNI server name. */
  sni: z.record(z.string(), z.strictObject({ key: z.string(), cert: z.string() })).optional(),
});

const pluginSchema = z.custom<Plugin>(
  (value) =>
    typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string',
  'a plugin: an object with a name, usually made by a plugin factory such as dkim({...})',
);

const listener = z.strictObject({
  ...listenerShape,
  name: z.string().min(1).optional(),
  tls: tlsFiles.optional(),
  /** Plugins for this listener only, replacing the global list. */
  plugins: z.array(pluginSchema).optional(),
});

const retry = retrySchema.optional();

const queue = z
  .discriminatedUnion('backend', [
    z.strictObject({
      backend: z.literal('embedded'),
      /** The SQLite file (default .tern-data/queue.db beside the config). */
      ...embeddedQueueShape,
      path: embeddedQueueShape.path.optional(),
      retry,
    }),
    z
      .strictObject({
        backend: z.literal('redis'),
        ...redisQueueShape,
        /** One Redis server; or `redis` for Sentinel or a Cluster. */
        url: redisQueueShape.url.optional(),
        /**
         * Where Redis is: `{ url }`, `{ sentinels: [{ host, port }...], name }` or
         * `{ cluster: [{ host, port }...] }`. Pass the same object to plugins' `redis` options.
         */
        redis: redisConnectionSchema.optional(),
        retry,
      })
      .superRefine((value, ctx) => {
        if ((value.url === undefined) === (value.redis === undefined)) {
          ctx.addIssue({
            code: 'custom',
            path: ['url'],
            message:
              'give either url (one Redis server) or redis ({ sentinels, name } or { cluster }), exactly one',
          });
        }
      }),
  ])
  .optional();

const positiveMs = durationSchema({ positive: true });

/** The most worker processes `processes` may ask for: far above any core count we run on, below a fork bomb. */
export const MAX_PROCESSES = 64;
const PROCESSES = `a whole number from 1 to ${MAX_PROCESSES}, or 'auto' (one process per core), or { intake: n, delivery: m } (each at least 1, together at most ${MAX_PROCESSES})`;
const ROLE_COUNT = z.number().int(PROCESSES).min(1, PROCESSES).max(MAX_PROCESSES, PROCESSES);
/**
 * `processes: { intake, delivery }`: worker processes with a role each (src/cluster.ts): intake
 * workers run the listeners and HTTP injection and no delivery worker; delivery workers run the
 * delivery worker (feedback, TLS-RPT) and bind no listener.
 */
const processRoles = z
  .strictObject({ intake: ROLE_COUNT, delivery: ROLE_COUNT }, { error: PROCESSES })
  .refine((roles) => roles.intake + roles.delivery <= MAX_PROCESSES, { error: PROCESSES });

// ---- Outbound TLS and reporting (issue 13): MTA-STS, DANE, the TLS policy table, TLS-RPT. ----
// Kept together so the keys can move as one block: `delivery` spreads `outboundTlsKeys`, the DNS
// block takes `dnssec`, and the top level takes `publish` (what `tern dns` prints for our domains).

/** `delivery.dns.dnssec`: true (the `servers` validate) or the validating resolvers themselves. */
const dnssec = z.union([z.boolean(), z.array(dnsServerSchema()).min(1)], {
  error: () =>
    "true when delivery.dns.servers are DNSSEC-validating resolvers, or their addresses, e.g. dnssec: ['127.0.0.1:53'] (a local unbound)",
});

const tlsPolicyLevel = z.enum(TLS_POLICY_LEVELS as [TlsPolicyLevel, ...TlsPolicyLevel[]], {
  error: (issue) =>
    `${JSON.stringify(issue.input)} is not a TLS policy level: use one of ${TLS_POLICY_LEVELS.join(', ')}`,
});
const tlsPolicyKey =
  /^(\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[a-z0-9.:-]+\](:\d{1,5})?)$/i;

const outboundTlsKeys = {
  /**
   * TLS per recipient domain (`example.com`), every domain below one (`.example.com`) or fixed next
   * hop (`[relay.example.net]`, `[relay.example.net]:587`): a level, or `{ level, match }` with the
   * certificate names `verify`/`secure` accept (`hostname`, `nexthop`, `dot-nexthop` or names).
   */
  tlsPolicy: z
    .record(
      z
        .string()
        .regex(
          tlsPolicyKey,
          "a domain ('example.com', '.example.com') or a next hop ('[relay.example.net]:587')",
        ),
      z.union(
        [
          tlsPolicyLevel,
          z.strictObject({ level: tlsPolicyLevel, match: z.array(z.string().min(1)).min(1).optional() }),
        ],
        {
          error: (issue) => {
            const input = issue.input as { level?: unknown } | string | undefined;
            const level = typeof input === 'object' && input !== null ? input.level : input;
            const levels = TLS_POLICY_LEVELS.join(', ');
            return typeof level === 'string' && !TLS_POLICY_LEVELS.includes(level as TlsPolicyLevel)
              ? `${JSON.stringify(level)} is not a TLS policy level: use one of ${levels}`
              : `a level (${levels}) or { level, match: ['hostname'] } with the certificate names to accept`;
          },
        },
      ),
    )
    .optional(),
  /** MTA-STS (RFC 8461), on by default; policies are cached in the queue's store. */
  mtaSts: z
    .union([
      z.literal(false),
      z.strictObject({
        enabled: z.boolean().optional(),
        /** A PEM file of CAs trusted for policy hosts (default: Node's bundled roots; tests use their own CA). */
        ca: z.string().min(1).optional(),
        /** HTTPS port of mta-sts.<domain> (443; tests use others). */
        port: portSchema().optional(),
        /** The whole policy fetch (default 20 000 ms). */
        timeoutMs: positiveMs.optional(),
        /** Largest policy accepted (default 65 536 bytes). */
        maxBytes: z
          .number()
          .int()
          .positive()
          .max(1024 * 1024, 'at most 1 MiB')
          .optional(),
      }),
    ])
    .optional(),
  /** TLS-RPT (RFC 8460): count every policy outcome and send each domain's daily report to its rua. */
  tlsReports: z
    .strictObject({
      enabled: z.boolean().optional(),
      /** organization-name in the reports, e.g. 'Example Inc.'. */
      organizationName: z.string().min(1, "the name of your organisation, e.g. 'Example Inc.'"),
      /** contact-info in the reports: an address or URL for questions about them. */
      contactInfo: z.string().min(1, "an address or URL, e.g. 'mailto:postmaster@example.com'"),
      /** From address and return path of mailed reports (default noreply-smtp-tls-reporting@<hostname>). */
      from: z.email('an email address, e.g. tls-reports@example.com').optional(),
      /** UTC time from which the previous day's reports go out (default '01:00'). */
      sendAt: z
        .string()
        .regex(/^([01]\d|2[0-3]):[0-5]\d$/, "a UTC time of day as HH:MM, e.g. '01:00'")
        .optional(),
      /** How often the schedule looks for reports due (default 600 000 ms). */
      checkIntervalMs: positiveMs.optional(),
      /** Distinct failure detail rows kept per policy domain and day (default 100). */
      maxFailureDetails: z.number().int().positive().max(10_000).optional(),
      /** A PEM file of CAs trusted for https: report URIs (default: Node's bundled roots). */
      ca: z.string().min(1).optional(),
    })
    .optional(),
};

/** What `tern dns` prints for the domains this config receives, besides MX, SPF, DKIM and DMARC. */
const publish = z
  .strictObject({
    /** Our MTA-STS policy (RFC 8461): `_mta-sts` TXT and the file at https://mta-sts.<domain>/.well-known/mta-sts.txt. */
    mtaSts: z
      .strictObject({
        mode: z.enum(['enforce', 'testing', 'none']),
        /** Seconds senders may cache the policy (default 604 800, a week). */
        maxAge: z
          .number()
          .int()
          .positive()
          .max(31_557_600, 'at most 31 557 600 seconds (RFC 8461)')
          .optional(),
        /** MX patterns (default: the host names of the mx listeners receiving for the domain). */
        mx: z
          .array(z.string().regex(/^(\*\.)?[a-z0-9.-]+$/i, "a host name or '*.example.com'"))
          .min(1)
          .optional(),
      })
      .optional(),
    /** Where senders send TLS reports about our domains (RFC 8460 §3): mailto: or https: URIs. */
    tlsRpt: z
      .strictObject({
        rua: z
          .array(
            z
              .string()
              .regex(
                /^(mailto:[^@\s,;]+@[^@\s,;]+|https:\/\/[^\s,;]+)$/i,
                'a mailto: or https: URI without , or ;',
              ),
          )
          .min(1),
      })
      .optional(),
  })
  .optional();

const delivery = z
  .strictObject({
    ...deliveryShape,
    ...workerShape,
    ...outboundTlsKeys,
    dns: z
      .strictObject({
        ...deliveryDnsShape,
        /** DNSSEC for DANE (RFC 7672): only answers a validating resolver vouched for (AD bit) are secure. */
        dnssec: dnssec.optional(),
      })
      .optional(),
    tls: z
      .strictObject({
        ...deliveryTlsShape,
        /** A PEM file of CAs trusted for `require` (default: Node's bundled roots). */
        ca: z.string().optional(),
      })
      .optional(),
  })
  .optional();

// The admin HTTP API (operator actions, /metrics, the dashboard); see src/ops/. Off unless set.
const admin = z
  .strictObject({
    /** host:port to listen on (default loopback 127.0.0.1:8025). */
    listen: z
      .string()
      .regex(/^(\[[0-9a-f:.]+\]|[^\s:[\]]+):\d{1,5}$/i, "host:port, like '127.0.0.1:8025' or '[::1]:8025'")
      .default('127.0.0.1:8025'),
    /** The bearer token API clients send; or `tokenFile`, a file holding it. */
    token: z.string().min(16, 'at least 16 characters (it guards operator actions)').optional(),
    tokenFile: z.string().min(1).optional(),
    /** Require the token on /metrics too (default false: Prometheus scrapes without one). */
    metricsAuth: z.boolean().optional(),
    /** How often the dashboard's queue-depth history is sampled (default 15 000 ms). */
    sampleIntervalMs: positiveMs.optional(),
  })
  .optional();

// HTTP injection (src/http/): POST /v1/messages on a listener of its own, API keys by file. Off unless set.
const http = z
  .strictObject({
    /** host:port to listen on (default loopback 127.0.0.1:8026; the admin API is 8025). */
    listen: z
      .string()
      .regex(/^(\[[0-9a-f:.]+\]|[^\s:[\]]+):\d{1,5}$/i, "host:port, like '0.0.0.0:8026' or '[::]:8026'")
      .default('127.0.0.1:8026'),
    /** HTTPS with this key and certificate (PEM files); plain HTTP without. */
    tls: z.strictObject({ key: z.string().min(1), cert: z.string().min(1) }).optional(),
    /** The API keys file `tern apikey add --file` writes (hashed keys and their sender domains). */
    apiKeysFile: z.string().min(1, 'the path of the API keys file, e.g. api-keys'),
    /** Largest message built from one request, in bytes (default 10 MiB); JSON bodies may be 4/3 of it (base64) plus 256 KiB. */
    maxMessageSize: z
      .number()
      .int()
      .positive()
      .max(1024 * 1024 * 1024, 'at most 1 GiB')
      .optional(),
    /** Envelope recipients per request (default 100). */
    maxRecipients: z.number().int().positive().max(10_000).optional(),
    /** How long an Idempotency-Key holds its queue id (default '24h'). */
    idempotencyWindow: positiveMs.optional(),
    /** Requests whose bodies are read at once (default 16); more get 503 with Retry-After. */
    maxConcurrentRequests: z.number().int().positive().max(10_000).optional(),
    /** The whole request, headers and body, must arrive within this (default '2m'). */
    requestTimeout: positiveMs.optional(),
  })
  .optional();

// Bounce classification (packages/queue/src/bounce-classifier.ts): the operator's rules, tried in
// order before the shipped ones. Checked by the classifier itself, so what passes here works at start.
const bounces = z
  .strictObject({
    /** Rules like { category: 'quota', code: '55x', enhanced: 'x.7.1', text: 'mailbox is full', name: 'my-isp' }. */
    rules: z
      .array(z.unknown())
      .default([])
      .superRefine((rules, ctx) => {
        try {
          checkBounceRules(rules);
        } catch (error) {
          if (!(error instanceof BounceRuleError)) throw error;
          ctx.addIssue({ code: 'custom', path: [...error.path], message: error.problem });
        }
      }),
    /** Try the shipped rules (providers, RFC 3463 codes, common texts) after these (default true). */
    shippedRules: z.boolean().default(true),
    /**
     * VERP (src/feedback): outbound mail's return path becomes a signed address at `domain` per
     * recipient; DSNs and ARF reports sent there are matched to message and recipient.
     */
    returnPath: z
      .strictObject({
        /** The bounce domain (its MX points at Tern); mail to it is read, never relayed. */
        domain: domainSchema(),
        /** The signing key, or `secretFile`, a file holding it (at least 16 characters). */
        secret: z.string().min(16, 'at least 16 characters (it makes return paths unforgeable)').optional(),
        secretFile: z.string().min(1).optional(),
        /** Default true; false keeps reading reports at the domain but sends the plain return path. */
        enabled: z.boolean().optional(),
        /** Largest part of a report read (default 256 KiB); the rest is not looked at. */
        maxReportBytes: z.number().int().min(4096).max(16_777_216).optional(),
      })
      .refine((r) => (r.secret === undefined) !== (r.secretFile === undefined), {
        message: 'give exactly one of secret and secretFile',
      })
      .optional(),
  })
  .optional();

// Mail Tern writes itself (DSNs, TLS reports) and the global plugins' queue hooks (src/notices.ts).
const notices = z
  .strictObject({
    /** Run the global plugin list's queue hooks on generated notices, so DKIM signs them (default true). */
    queueHooks: z.boolean().default(true),
  })
  .optional();

/** A closed list of message tags (X-Tern-Tag syntax), matched without regard to case. */
function tagList() {
  return z
    .array(z.string().regex(TAG_PATTERN, 'a tag of letters, digits, _ . - (at most 64), as in X-Tern-Tag'))
    .max(100, 'at most 100 tags (each becomes a list or a metric series)')
    .transform((tags) => [...new Set(tags.map((t) => t.toLowerCase()))]);
}

// Suppression lists (src/suppression.ts): refused at RCPT when relayed, fed by hard bounces.
const suppression = z
  .strictObject({
    /** Check relayed recipients at RCPT and add hard-bounced ones (default true). */
    enabled: z.boolean().optional(),
    /** Bounce categories that add a recipient to its sender domain's list (default bad-mailbox, inactive). */
    categories: z.array(z.enum(BOUNCE_CATEGORIES)).optional(),
    /** How long an entry from a bounce counts (default: until removed). */
    expireAfter: positiveMs.optional(),
    /**
     * Tags that are streams of their own (Postmark's message streams): a message carrying one is
     * also checked against `tag:<name>`, and a complaint about it suppresses for `tag:<name>` only.
     */
    tagScopes: tagList().optional(),
  })
  .optional();

// Prometheus metrics (src/ops/metrics.ts) beyond the fixed set.
const metrics = z
  .strictObject({
    /** Tags counted under their own `tag` label of tern_tag_events_total; other tags count as `other`. */
    tags: tagList().optional(),
  })
  .optional();

export const configSchema = z.strictObject({
  /** Our name in banners, EHLO and Received headers (default: the machine's host name). */
  hostname: hostnameSchema.optional(),
  listeners: z
    .array(listener, {
      error: (issue) =>
        issue.input === undefined
          ? "missing: tern needs at least one listener, e.g. listeners: [{ kind: 'mx', port: 25 }]"
          : undefined,
    })
    .min(1, 'at least one listener, e.g. { kind: "mx", port: 25 }'),
  /** Domains this server receives mail for. */
  localDomains: z.array(domainSchema()).default([]),
  /** Networks that may relay without AUTH. */
  trustedNetworks: z.array(networkSchema()).default(['127.0.0.1/32', '::1/128']),
  users: z.strictObject({ file: z.string().min(1) }).optional(),
  queue,
  delivery,
  plugins: z.array(pluginSchema).default([]),
  /** Where message bodies wait between the socket and the queue (one budget for every listener). */
  intake: intakeSchema.optional(),
  log: z.strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') }).optional(),
  /** How long SIGTERM waits for open transactions. */
  shutdownTimeoutMs: positiveMs.optional(),
  /**
   * How many processes run the MTA (node:cluster, src/cluster.ts): 1 (the default), a number, or
   * 'auto' (one per core), or { intake, delivery } (workers with a role each). More than one needs
   * the Redis queue: workers share its queue and the listening sockets.
   */
  processes: z.union([ROLE_COUNT, z.literal('auto'), processRoles], { error: PROCESSES }).optional(),
  admin,
  publish,
  bounces,
  notices,
  suppression,
  metrics,
  http,
  /** Delivery webhooks (src/webhooks/): endpoints that hear what happened to mail. */
  webhooks: webhooksSchema,
});

/** The config as written (defaults optional). */
export type TernConfig = z.input<typeof configSchema>;
/** The config after validation and defaults. */
export type ResolvedConfig = z.output<typeof configSchema> & { readonly baseDir: string };

/** Declares a config; it only returns its argument, so editors check the config as you type. */
export function defineConfig(config: TernConfig): TernConfig {
  return config;
}

export class ConfigError extends Error {
  readonly problems: readonly string[];
  /**
   * `source: summary`, then one line per problem. A load failure has no list: its source is
   * `file:line:column` and its summary the cause, as compilers print them.
   */
  constructor(source: string, problems: readonly string[], summary = 'invalid config') {
    super(`${source}: ${summary}${problems.map((p) => `\n  - ${p}`).join('')}`);
    this.name = 'ConfigError';
    this.problems = problems.length > 0 ? problems : [summary];
  }
}

/** `config.listeners[0].tls`, `config.delivery.routes["*"]`: a field as the config file spells it. */
function fieldPath(path: readonly PropertyKey[]): string {
  return issuePath(path, 'config');
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) value = (value as Record<PropertyKey, unknown> | null | undefined)?.[key];
  return value;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const at = fieldPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    return `${at}: unknown key ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}: remove it or check its spelling`;
  }
  // A record key that is refused (a policy table's): say why, in the key's own words.
  if (issue.code === 'invalid_key' && issue.issues[0]) {
    return `${at}: not a valid key: ${issue.issues[0].message}`;
  }
  // A mistyped member of a union (`type: 'smpt'`): name what was written and every allowed value.
  if (issue.code === 'invalid_union' && 'options' in issue && Array.isArray(issue.options)) {
    const allowed = (issue.options as unknown[]).map((o) => JSON.stringify(o)).join(', ');
    return `${at}: ${JSON.stringify(valueAt(input, issue.path))} is not one of ${allowed}`;
  }
  // A required field left out; fields with their own wording for this (listeners) start "missing".
  if (
    issue.code === 'invalid_type' &&
    valueAt(input, issue.path) === undefined &&
    !/^missing/.test(issue.message)
  ) {
    return `${at}: missing: expected ${issue.expected}`;
  }
  return `${at}: ${issue.message}`;
}

/** Validates a config object; file references are resolved against `baseDir`. Throws ConfigError. */
export function validateConfig(input: unknown, baseDir: string, source = 'config'): ResolvedConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(source, [
      `the config is ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}, not an object: export default defineConfig({ listeners: [...] })`,
    ]);
  }
  const result = configSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => describeIssue(issue, input)),
    );
  }
  const config = { ...result.data, baseDir };
  const problems = checkSemantics(config);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** A listener's port: its own, or the standard one of its kind. */
export function listenerPort(l: { kind: ListenerKind; port?: number | undefined }): number {
  return l.port ?? LISTENER_DEFAULTS.byKind[l.kind].port;
}

/** Resolves a path in the config against the config file's folder. */
export function configPath(config: ResolvedConfig, path: string): string {
  return isAbsolute(path) ? path : resolve(config.baseDir, path);
}

/** Runs `check`; a ConfigError it throws becomes problems in the list instead. */
function collect(problems: string[], check: () => void): void {
  try {
    check();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems);
  }
}

function checkSemantics(config: ResolvedConfig): string[] {
  const problems: string[] = [];
  const seen = new Map<string, number>();
  config.listeners.forEach((l, i) => {
    const at = `config.listeners[${i}]`;
    const host = l.host ?? '::';
    const key = `${host.includes(':') ? `[${host}]` : host}:${listenerPort(l)}`;
    const other = seen.get(key);
    if (other !== undefined && listenerPort(l) !== 0) {
      problems.push(
        `${at}.port: ${key} is already used by listeners[${other}]: give each listener its own port`,
      );
    }
    seen.set(key, i);
    if (l.kind !== 'mx' && !l.tls) {
      problems.push(
        `${at}.tls: a ${l.kind} listener takes passwords, so it needs a certificate: set tls: { key: 'key.pem', cert: 'cert.pem' }`,
      );
    }
    if (l.tls) {
      const { tls } = l;
      collect(problems, () => readKeyPair(config, tls, `${at}.tls`));
      for (const [name, pair] of Object.entries(tls.sni ?? {})) {
        collect(problems, () => readKeyPair(config, pair, `${at}.tls.sni${fieldPath([name]).slice(6)}`));
      }
    }
    const receives = (l.localDomains ?? config.localDomains).length > 0;
    const relays = (l.trustedNetworks ?? config.trustedNetworks).length > 0 || l.requireAuth === true;
    if (l.kind === 'mx' && !receives && !relays) {
      problems.push(
        `${at}.localDomains: this mx listener would refuse every recipient: set localDomains: ['example.com'] (the domains it receives for), or trustedNetworks for a relay`,
      );
    }
  });
  if (config.admin && (config.admin.token === undefined) === (config.admin.tokenFile === undefined)) {
    problems.push(
      "config.admin: set exactly one of token or tokenFile (the API takes operator actions), e.g. tokenFile: 'admin.token'",
    );
  } else if (config.admin?.tokenFile !== undefined) {
    collect(problems, () => adminToken(config));
  }
  if (config.users) collect(problems, () => readUsersFile(config));
  if (config.http) problems.push(...checkHttp(config, config.http));
  const ca = config.delivery?.tls?.ca;
  if (ca !== undefined) collect(problems, () => readCertificates(config, ca, 'config.delivery.tls.ca'));
  problems.push(...checkOutboundTls(config));
  problems.push(...checkWebhooks(config));
  const processes = checkProcesses(config, config.processes, 'config.processes');
  if (processes) problems.push(processes);
  return problems;
}

/**
 * The problem with running `processes` worker processes on this config's queue, if any: the
 * embedded store is one SQLite file one process owns, so only the Redis queue can be shared.
 * `field` names where the number came from (the config key or `--processes`).
 */
export function checkProcesses(
  config: Pick<ResolvedConfig, 'queue'>,
  processes: ResolvedConfig['processes'],
  field: string,
): string | undefined {
  if (processes === undefined || processes === 1 || config.queue?.backend === 'redis') return undefined;
  const shown =
    typeof processes === 'object'
      ? `{ intake: ${processes.intake}, delivery: ${processes.delivery} }`
      : JSON.stringify(processes);
  const why =
    typeof processes === 'object'
      ? 'intake and delivery processes share mail only through the Redis queue'
      : 'the embedded queue is one file one process owns';
  return `${field}: ${shown} needs the Redis queue (queue: { backend: 'redis', url: 'redis://...' }): ${why}; remove ${field === 'config.processes' ? 'processes' : field} or set it to 1`;
}

/** The injection listener's files, read as start reads them: the API keys, the TLS pair. */
function checkHttp(config: ResolvedConfig, http: NonNullable<ResolvedConfig['http']>): string[] {
  const problems: string[] = [];
  const { apiKeysFile, tls } = http;
  collect(problems, () => {
    if (!existsSync(configPath(config, apiKeysFile))) {
      throw new ConfigError('config', [
        `config.http.apiKeysFile: file not found: ${apiKeysFile}: make the first key with tern apikey add --file ${apiKeysFile} ID --domains example.com`,
      ]);
    }
    try {
      parseApiKeysFile(readConfigFile(config, apiKeysFile, 'config.http.apiKeysFile'), apiKeysFile);
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      throw new ConfigError('config', [`config.http.apiKeysFile: ${(error as Error).message}`]);
    }
  });
  if (tls) collect(problems, () => readKeyPair(config, tls, 'config.http.tls'));
  if (config.admin && config.admin.listen === http.listen && !http.listen.endsWith(':0')) {
    problems.push(
      `config.http.listen: ${http.listen} is the admin API's address: give HTTP injection a port of its own`,
    );
  }
  return problems;
}

/** Webhook endpoints: unique names, and exactly one readable secret each. */
function checkWebhooks(config: ResolvedConfig): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  config.webhooks?.endpoints.forEach((endpoint, i) => {
    const at = `config.webhooks.endpoints[${i}]`;
    if (seen.has(endpoint.name))
      problems.push(`${at}.name: ${endpoint.name} is used twice: give each endpoint its own name`);
    seen.add(endpoint.name);
    if ((endpoint.secret === undefined) === (endpoint.secretFile === undefined)) {
      problems.push(
        `${at}: set exactly one of secret or secretFile (it signs every post), e.g. secretFile: 'webhook.secret'`,
      );
    } else collect(problems, () => webhookSecret(config, i));
  });
  return problems;
}

/** The signing secret of webhook endpoint `index`: `secret`, or the content of `secretFile`. */
export function webhookSecret(config: ResolvedConfig, index: number): string {
  const endpoint = config.webhooks?.endpoints[index];
  if (endpoint?.secret !== undefined) return endpoint.secret;
  const field = `config.webhooks.endpoints[${index}].secretFile`;
  if (endpoint?.secretFile === undefined)
    throw new ConfigError('config', [`${field}: no secret or secretFile`]);
  const secret = readConfigFile(config, endpoint.secretFile, field).trim();
  if (secret.length < 16) {
    throw new ConfigError('config', [
      `${field}: ${endpoint.secretFile} holds ${secret.length === 0 ? 'no secret' : 'a secret shorter than 16 characters'}: write one, e.g. openssl rand -hex 32 > ${endpoint.secretFile}`,
    ]);
  }
  return secret;
}

/** The outbound TLS block: files it names, and settings that only make sense together. */
function checkOutboundTls(config: ResolvedConfig): string[] {
  const problems: string[] = [];
  const d = config.delivery;
  const dns = d?.dns;
  if (dns && Array.isArray(dns.dnssec) && dns.servers) {
    problems.push(
      'config.delivery.dns.dnssec: the validating resolvers are listed here and in servers: list them once, either as dnssec: [...] or as servers: [...] with dnssec: true',
    );
  }
  if (dns && dns.dnssec === true && !dns.servers) {
    problems.push(
      "config.delivery.dns.dnssec: true trusts the AD bit of the servers in delivery.dns.servers, and there are none: list your validating resolver, e.g. dnssec: ['127.0.0.1:53']",
    );
  }
  const mtaStsCa = d?.mtaSts ? d.mtaSts.ca : undefined;
  if (mtaStsCa !== undefined)
    collect(problems, () => readCertificates(config, mtaStsCa, 'config.delivery.mtaSts.ca'));
  const reportCa = d?.tlsReports?.ca;
  if (reportCa !== undefined)
    collect(problems, () => readCertificates(config, reportCa, 'config.delivery.tlsReports.ca'));
  return problems;
}

/** Reads a file named in the config, with an error that names the field. */
export function readConfigFile(config: ResolvedConfig, path: string, field: string): string {
  try {
    return readFileSync(configPath(config, path), 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ConfigError('config', [
      code === 'ENOENT'
        ? `${field}: file not found: ${path} (relative paths start at the config's folder)`
        : `${field}: cannot read ${path}: ${code ?? (error as Error).message}`,
    ]);
  }
}

/**
 * Reads a TLS key and certificate and checks them as the TLS stack will: a PEM private key, a PEM
 * certificate (chain), and the key belonging to the first certificate.
 */
export function readKeyPair(
  config: ResolvedConfig,
  pair: { readonly key: string; readonly cert: string },
  field: string,
): { key: string; cert: string } {
  const problems: string[] = [];
  const read = (path: string, at: string): string | undefined => {
    try {
      return readConfigFile(config, path, at);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
      return undefined;
    }
  };
  const key = read(pair.key, `${field}.key`);
  const cert = read(pair.cert, `${field}.cert`);
  if (key === undefined || cert === undefined) throw new ConfigError('config', problems);
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new ConfigError('config', [
      `${field}.key: ${pair.key} is not a PEM private key (${(error as Error).message}): give the key the certificate was made for`,
    ]);
  }
  const [leaf] = readCertificates(config, pair.cert, `${field}.cert`, cert);
  if (leaf && !leaf.checkPrivateKey(privateKey)) {
    throw new ConfigError('config', [
      `${field}.key: ${pair.key} does not belong to the certificate in ${pair.cert} (${leaf.subject.replace(/\n/g, ', ')}): give the matching key, or a certificate made for this key`,
    ]);
  }
  return { key, cert };
}

/** The certificates of a PEM file, first (the leaf, in a chain) first. */
function readCertificates(
  config: ResolvedConfig,
  path: string,
  field: string,
  text = readConfigFile(config, path, field),
): X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  try {
    if (blocks.length === 0) throw new Error('no BEGIN CERTIFICATE block');
    return blocks.map((block) => new X509Certificate(block));
  } catch (error) {
    throw new ConfigError('config', [
      `${field}: ${path} is not a PEM certificate (${(error as Error).message}): give the certificate file (-----BEGIN CERTIFICATE-----)`,
    ]);
  }
}

/** The bearer token of the admin API: `admin.token`, or the content of `admin.tokenFile`. */
export function adminToken(config: ResolvedConfig): string {
  const admin = config.admin;
  if (admin?.token !== undefined) return admin.token;
  if (admin?.tokenFile === undefined)
    throw new ConfigError('config', ['config.admin: no token or tokenFile']);
  const token = readConfigFile(config, admin.tokenFile, 'config.admin.tokenFile').trim();
  if (token.length < 16) {
    throw new ConfigError('config', [
      `config.admin.tokenFile: ${admin.tokenFile} holds ${token.length === 0 ? 'no token' : 'a token shorter than 16 characters'} (it guards operator actions): write one, e.g. openssl rand -hex 24 > ${admin.tokenFile}`,
    ]);
  }
  return token;
}

/** Checks the users file as the listeners will read it: it exists and every line is a user. */
function readUsersFile(config: ResolvedConfig): void {
  const file = config.users?.file;
  if (file === undefined) return;
  const path = configPath(config, file);
  if (!existsSync(dirname(path))) {
    throw new ConfigError('config', [`config.users.file: the folder of ${file} does not exist`]);
  }
  if (!existsSync(path)) {
    throw new ConfigError('config', [
      `config.users.file: file not found: ${file}: add the first user with tern user add --file ${file} USER`,
    ]);
  }
  try {
    parseUsersFile(readConfigFile(config, file, 'config.users.file'), file);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError('config', [`config.users.file: ${(error as Error).message}`]);
  }
}

/**
 * Checks what needs the network: each listener host that is a name resolves (the listener binds to
 * what it resolves to). Run by loadConfig, so `check-config` and `start` both do.
 */
async function checkHosts(config: ResolvedConfig, source: string): Promise<void> {
  const problems = await Promise.all(
    config.listeners.map(async (l, i) => {
      if (l.host === undefined || isIP(l.host) !== 0) return undefined;
      try {
        await lookup(l.host);
        return undefined;
      } catch (error) {
        return `config.listeners[${i}].host: cannot resolve ${l.host} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): use an IP address of this machine, or leave host out to listen on all (::)`;
      }
    }),
  );
  const found = problems.filter((p) => p !== undefined);
  if (found.length > 0) throw new ConfigError(source, found);
}

/** How long loading a config may take unless TERN_CONFIG_TIMEOUT (or `tern --config-timeout`) says otherwise. */
export const DEFAULT_CONFIG_TIMEOUT_MS = 30_000;

/** The deadline for loading a config: TERN_CONFIG_TIMEOUT ('30s', '2m' or milliseconds), else the default. */
export function configTimeoutMs(): number {
  const text = process.env.TERN_CONFIG_TIMEOUT;
  if (text === undefined || text === '') return DEFAULT_CONFIG_TIMEOUT_MS;
  const ms = parseDuration(text, { positive: true, digitsAreMs: true });
  if (ms !== undefined) return ms;
  throw new ConfigError('TERN_CONFIG_TIMEOUT', [
    `${JSON.stringify(text)} is not a duration above 0: use milliseconds or '30s', '2m'`,
  ]);
}

/** Set by bin/tern.js when tern runs from its TypeScript sources (a clone that is not built yet). */
const fromSources = process.env.TERN_FROM_SOURCES === '1';

let loads = 0;

/**
 * Imports a config module as the file is now: a SIGHUP reload must not get the module cached at
 * start-up. Node caches ES modules by URL (a query makes a new one); TypeScript goes through jiti
 * without its caches. Resolves to the module's exports.
 */
async function importFresh(
  path: string,
  source: string,
  sources: Set<string> | undefined,
): Promise<{ default?: unknown }> {
  if (path.endsWith('.json')) return { default: JSON.parse(source) };
  const recording = sources ? { transform: recordingTransform(sources) } : {};
  if (fromSources) {
    // tern itself runs through jiti, which maps @tern/* to sources: the config must too, and must
    // share its module instances (jiti's module cache), so only the config file is evaluated anew.
    const jiti = createJiti(import.meta.url, { fsCache: false, interopDefault: false, ...recording });
    return (await jiti.evalModule(source, { filename: path, async: true, forceTranspile: true })) as {
      default?: unknown;
    };
  }
  if (/\.[cm]?ts$/.test(path)) {
    const jiti = createJiti(import.meta.url, {
      moduleCache: false,
      fsCache: false,
      interopDefault: false,
      ...recording,
    });
    return jiti.import<{ default?: unknown }>(path);
  }
  loads += 1;
  return (await import(`${pathToFileURL(path).href}?load=${loads}`)) as { default?: unknown };
}

/**
 * jiti's own transform, noting each file outside node_modules it compiles: the TypeScript (and
 * ES module) sources a config imports, which `tern start --watch` watches. Node caches the modules
 * a .js or .mjs config imports, so only the config file itself is read anew for those.
 */
function recordingTransform(sources: Set<string>): (options: TransformOptions) => TransformResult {
  const compiler = createJiti(import.meta.url, { fsCache: false });
  return (options) => {
    const file = options.filename;
    if (file !== undefined && !file.split(sep).includes('node_modules')) sources.add(resolve(file));
    return { code: compiler.transform(options) };
  };
}

/**
 * Where a config failed to load, as `file:line:column`: from the error (jiti's parse errors, a
 * stack frame in the config), or by parsing the source when node gave none (its SyntaxErrors).
 */
function loadFailure(file: string, path: string, source: string, error: unknown): ConfigError {
  const message = error instanceof Error ? error.message : String(error);
  // jiti: "ParseError: <reason> \n <path>:<line>:<column0>".
  const parsed = /^\w*Error: ([\s\S]*?)\s*\n\s*(\S+):(\d+):(\d+)\s*$/.exec(message);
  if (parsed && resolve(parsed[2] as string) === path) {
    return new ConfigError(`${file}:${parsed[3]}:${Number(parsed[4]) + 1}`, [], `syntax error: ${parsed[1]}`);
  }
  if (path.endsWith('.json') && error instanceof SyntaxError) {
    const at = /at position (\d+)/.exec(message);
    if (at) {
      const before = source.slice(0, Number(at[1])).split('\n');
      const where = `${file}:${before.length}:${(before.at(-1)?.length ?? 0) + 1}`;
      return new ConfigError(
        where,
        [],
        `syntax error: ${message.replace(/ in JSON at position \d+.*$/, '')}`,
      );
    }
  }
  if (error instanceof SyntaxError && !path.endsWith('.json')) {
    const where = syntaxErrorAt(path, source);
    if (where) return new ConfigError(`${file}:${where}`, [], `syntax error: ${message}`);
  }
  const stack = error instanceof Error ? (error.stack ?? '') : '';
  const frame = new RegExp(`${escapeRegExp(pathToFileURL(path).href)}(?:\\?load=\\d+)?:(\\d+):(\\d+)`).exec(
    stack,
  );
  if (frame) return new ConfigError(`${file}:${frame[1]}:${frame[2]}`, [], message.split('\n')[0] ?? message);
  return new ConfigError(file, [message.split('\n')[0] ?? message], 'cannot load');
}

/** `line:column` of the first syntax error in a JS or TS source, by jiti's parser; undefined when it parses. */
function syntaxErrorAt(path: string, source: string): string | undefined {
  const code = createJiti(import.meta.url, { fsCache: false }).transform({
    source,
    filename: path,
    ts: /\.[cm]?ts$/.test(path),
    async: true,
  });
  const marker = 'exports.__JITI_ERROR__ = ';
  if (!code.startsWith(marker)) return undefined;
  const { line, column } = JSON.parse(code.slice(marker.length)) as { line: number; column: number };
  return `${line}:${column + 1}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface LoadOptions {
  /** Give up after this long (default: configTimeoutMs()): a top-level await that never settles. */
  readonly timeoutMs?: number;
  /**
   * Filled with the local files the config is made of, even when loading fails: the config file
   * and the sources it imports outside node_modules (see recordingTransform). For --watch.
   */
  readonly sources?: Set<string>;
}

/**
 * Loads a config file (.ts, .mts, .js, .mjs or .json) and validates it: the schema, the files it
 * names (keys, certificates, users, token) and the listener hosts. `tern start` and
 * `tern check-config` both go through here. A config that fails validation has the plugins it
 * made shut down, so their connections do not outlive it (a refused reload, a failed check).
 */
export async function loadConfig(file: string, options: LoadOptions = {}): Promise<ResolvedConfig> {
  const path = resolve(file);
  if (!existsSync(path)) throw new ConfigError(file, [`file not found: ${path}`], 'cannot load');
  const timeoutMs = options.timeoutMs ?? configTimeoutMs();
  options.sources?.add(path);
  const source = readFileSync(path, 'utf8');
  const gaveUp = (): ConfigError =>
    new ConfigError(
      file,
      [
        `loading took longer than ${timeoutMs} ms and was given up: a top-level await in the config (or in a module it imports) never settled. Fix it, or allow more time with --config-timeout or TERN_CONFIG_TIMEOUT`,
      ],
      'cannot load',
    );
  let module: { default?: unknown };
  try {
    // Plugins made by the config resolve relative paths in their options from its folder.
    module = await withTimeout(
      withConfigDir(dirname(path), () => importFresh(path, source, options.sources)),
      timeoutMs,
      gaveUp,
    );
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw loadFailure(file, path, source, error);
  }
  const loaded = module?.default;
  if (loaded === undefined) {
    throw new ConfigError(file, [
      'no default export: the config file must export it, as in export default defineConfig({ listeners: [...] })',
    ]);
  }
  try {
    const config = validateConfig(loaded, dirname(path), file);
    await checkHosts(config, file);
    return config;
  } catch (error) {
    await shutdownPlugins(pluginInstances(loaded), {});
    throw error;
  }
}

/**
 * Loads a config for a command that only reads it (dkim check, dns, queue export, the queue
 * operations' --config): runs `use`, then shuts down the plugins the file made, which may hold
 * connections (a rate limiter's Redis client) that would keep the command from exiting.
 */
export async function withConfig<T>(
  file: string,
  use: (config: ResolvedConfig) => Promise<T>,
  options: LoadOptions = {},
): Promise<T> {
  const config = await loadConfig(file, options);
  try {
    return await use(config);
  } finally {
    await shutdownPlugins(pluginInstances(config), {});
  }
}

/** Our host name: the config's, or the machine's. */
export function serverHostname(config: ResolvedConfig): string {
  return config.hostname ?? osHostname();
}

/** The name servers delivery asks: `delivery.dns.servers`, or the validating resolvers of `dnssec: [...]`. */
export function deliveryDnsServers(config: ResolvedConfig): readonly string[] | undefined {
  const dns = config.delivery?.dns;
  return dns?.servers ?? (Array.isArray(dns?.dnssec) ? dns.dnssec : undefined);
}
