// The tern config: its schema (with defaults), `defineConfig` for typed config files, loading
// TS or JS (ESM) config files under a deadline, and errors that name the field and the fix.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { Resolver } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseUsersFile } from '@tern/core';
import { TLS_POLICY_LEVELS, type TlsPolicyLevel } from '@tern/delivery';
import { NetworkList, type NextHop, type Plugin } from '@tern/plugin-api';
import { type Duration, durationMs } from '@tern/queue';
import { createJiti } from 'jiti';
import { z } from 'zod';
import { pluginInstances, shutdownPlugins } from './plugins.js';

const port = z.number().int('a port is a whole number').min(0).max(65535, 'a port is 0 to 65535');
const domain = z
  .string()
  .min(1)
  .regex(
    /^[a-z0-9.-]+$|^\[[0-9a-f.:]+\]$/i,
    'a domain name like example.com (or an address literal like [192.0.2.1])',
  )
  .transform((d) => d.toLowerCase());
// Parsed by the NetworkList the listeners use, so what passes here also passes at start.
const cidr = z.string().superRefine((value, ctx) => {
  try {
    NetworkList.parse([value]);
  } catch (error) {
    ctx.addIssue({
      code: 'custom',
      message: `${(error as Error).message} (write a network in CIDR form, like 10.0.0.0/8, 192.0.2.7 or ::1/128)`,
    });
  }
});
/** What `net.Server#listen` binds: an address, or a name that resolves to one (checked by loadConfig). */
const listenHost = z
  .string()
  .refine(
    (host) => isIP(host) !== 0 || (!/^[\d.]+$/.test(host) && /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host)),
    {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not an IP address or host name: use an address of this machine, 0.0.0.0 (every IPv4 address) or :: (every address)`,
    },
  );
// Checked by node's own resolver, which tern's DNS lookups use: what passes here works at start.
const dnsServer = z.string().refine(
  (server) => {
    try {
      new Resolver().setServers([server]);
      return true;
    } catch {
      return false;
    }
  },
  {
    error: (issue) =>
      `${JSON.stringify(issue.input)} is not a name server address: give an IP address, with a port if not 53: '192.0.2.53', '127.0.0.1:5353', '[2001:db8::53]:53'`,
  },
);
const duration = z.number().int().positive('a duration in milliseconds, above 0');

const tlsFiles = z.strictObject({
  key: z.string().min(1, 'the path of a PEM private key'),
  cert: z.string().min(1, 'the path of a PEM certificate chain'),
  /** Extra certificates chosen by SNI server name. */
  sni: z.record(z.string(), z.strictObject({ key: z.string(), cert: z.string() })).optional(),
});

const limits = z
  .strictObject({
    maxMessageSize: z.number().int().positive().optional(),
    maxRecipients: z.number().int().positive().optional(),
    maxLineLength: z.number().int().positive().optional(),
    maxConnections: z.number().int().positive().optional(),
    maxConnectionsPerIp: z.number().int().positive().optional(),
    maxErrors: z.number().int().positive().optional(),
    maxAuthFailures: z.number().int().positive().optional(),
    maxReceivedHeaders: z.number().int().positive().optional(),
    maxHeaderBytes: z.number().int().positive().optional(),
    /** Share of maxConnections open at which the stress timeouts apply (default 0.8). */
    stressThreshold: z.number().gt(0, 'a share above 0').max(1, 'a share of at most 1').optional(),
    timeouts: z
      .strictObject({
        socket: duration.optional(),
        data: duration.optional(),
        enqueue: duration.optional(),
        dns: duration.optional(),
        /** One command line, PROXY header or TLS handshake, from its first byte (default 60 s). */
        command: duration.optional(),
        /** The longest connection (default 1 h). */
        session: duration.optional(),
        /** Shorter limits under stress (defaults: socket 10 s, command 10 s, session 5 min). */
        stress: z
          .strictObject({
            socket: duration.optional(),
            command: duration.optional(),
            session: duration.optional(),
          })
          .optional(),
      })
      .optional(),
  })
  .optional();

const pluginSchema = z.custom<Plugin>(
  (value) =>
    typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string',
  'a plugin: an object with a name, usually made by a plugin factory such as dkim({...})',
);

const listener = z.strictObject({
  name: z.string().min(1).optional(),
  kind: z.enum(['mx', 'submission', 'smtps'], 'one of mx (port 25), submission (587) or smtps (465)'),
  /** Address to bind (default :: — IPv4 and IPv6 — or 0.0.0.0 where the machine has no IPv6). */
  host: listenHost.optional(),
  port: port.optional(),
  hostname: z.string().min(1).optional(),
  tls: tlsFiles.optional(),
  localDomains: z.array(domain).optional(),
  trustedNetworks: z.array(cidr).optional(),
  requireTls: z.boolean().optional(),
  requireAuth: z.boolean().optional(),
  auth: z.boolean().optional(),
  allowInsecureAuth: z.boolean().optional(),
  reverseLookup: z.boolean().optional(),
  authFailureDelayMs: z.number().int().nonnegative().optional(),
  /** Wait before the banner to catch early talkers (default 100 ms on mx, 0 on submission/smtps and for trusted networks). */
  greetingDelayMs: z.number().int().min(0).max(60_000).optional(),
  bareLineEndings: z.enum(['reject', 'normalize']).optional(),
  /** Lines over 998 octets: refuse with 550 5.6.0 (default), or wrap body lines before any hook. */
  longLines: z.enum(['reject', 'wrap']).optional(),
  proxy: z.boolean().optional(),
  xclient: z.boolean().optional(),
  limits,
  /** Plugins for this listener only, replacing the global list. */
  plugins: z.array(pluginSchema).optional(),
});

const tlsMode = z.enum(['opportunistic', 'require', 'none', 'implicit']);
/** Exported for the admin API, whose reroute takes the same next hops as routes do. */
export const nextHop: z.ZodType<NextHop> = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('mx'), domain, tls: tlsMode.optional() }),
  z.strictObject({
    type: z.literal('smtp'),
    host: z.string().min(1),
    port: port.optional(),
    tls: tlsMode.optional(),
    auth: z.strictObject({ user: z.string(), pass: z.string() }).optional(),
  }),
  z.strictObject({
    type: z.literal('lmtp'),
    host: z.string().optional(),
    port: port.optional(),
    path: z.string().optional(),
    tls: tlsMode.optional(),
  }),
  z.strictObject({ type: z.literal('maildir'), path: z.string().min(1) }),
]) as z.ZodType<NextHop>;

const span = z.union(
  [z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?(ms|s|m|h|d)$/)],
  "milliseconds, or a string like '30s', '5m', '4h', '5d'",
) as z.ZodType<Duration>;
const retry = z
  .strictObject({
    /** Waits after the 1st, 2nd, ... failed attempt; the last repeats (default 5m, 10m, 20m, 40m, 1h, 2h, 4h). */
    intervals: z.array(span).min(1).optional(),
    /** Give up (bounce) after this long (default 5d). */
    maxAge: span.optional(),
    /** Delay notices: after this long (default 4h) to recipients with NOTIFY=DELAY; set, also to those without NOTIFY. */
    delayNoticeAfter: span.optional(),
    /** Shortest wait between two attempts (default 1s). */
    minInterval: span.optional(),
  })
  .optional();

const queue = z
  .discriminatedUnion('backend', [
    z.strictObject({
      backend: z.literal('embedded'),
      /** The SQLite file (default .tern-data/queue.db beside the config). */
      path: z.string().min(1).optional(),
      retry,
    }),
    z.strictObject({
      backend: z.literal('redis'),
      url: z.string().regex(/^rediss?:\/\//, 'a Redis URL like redis://127.0.0.1:6379'),
      prefix: z.string().min(1).optional(),
      queueName: z.string().min(1).optional(),
      enqueueTimeoutMs: duration.optional(),
      stalledIntervalMs: duration.optional(),
      lockDurationMs: duration.optional(),
      /** Longest wait between two write probes while Redis refuses writes (default 5000 ms). */
      probeIntervalMs: duration.optional(),
      retry,
    }),
  ])
  .optional();

// ---- Outbound TLS and reporting (issue 13): MTA-STS, DANE, the TLS policy table, TLS-RPT. ----
// Kept together so the keys can move as one block: `delivery` spreads `outboundTlsKeys`, the DNS
// block takes `dnssec`, and the top level takes `publish` (what `tern dns` prints for our domains).

/** `delivery.dns.dnssec`: true (the `servers` validate) or the validating resolvers themselves. */
const dnssec = z.union([z.boolean(), z.array(dnsServer).min(1)], {
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
        port: port.optional(),
        /** The whole policy fetch (default 20 000 ms). */
        timeoutMs: duration.optional(),
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
      checkIntervalMs: duration.optional(),
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

const destinationLimit = z.strictObject({
  /** Deliveries in flight at once towards this destination. */
  maxConnections: z.number().int().positive().optional(),
  /** Messages per window, e.g. { limit: 10, per: 1000 } for 10 a second. */
  messageRate: z.strictObject({ limit: z.number().int().positive(), per: duration }).optional(),
});

const replyCode = z
  .number()
  .int()
  .min(200, 'an SMTP reply code (200-599)')
  .max(599, 'an SMTP reply code (200-599)');

/** Source addresses with their EHLO names, in weighted pools; messages pick a pool by domain. */
const egress = z
  .strictObject({
    sources: z.record(
      z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'a source name: letters, digits, . _ -'),
      z.strictObject({
        /** The local address to connect from (it must be configured on this machine). */
        address: z
          .string()
          .refine((a) => isIP(a) !== 0, 'an IPv4 or IPv6 address of this machine')
          .optional(),
        /** Our name in EHLO from this address (should match its PTR record). */
        ehlo: z
          .string()
          .regex(/^[A-Za-z0-9.-]+$/, 'a host name')
          .optional(),
        /** A new address: daily caps per destination (provider or domain), rising day by day from `since`. */
        warmup: z
          .strictObject({
            since: z
              .string()
              .regex(/^\d{4}-\d{2}-\d{2}$/, 'the first day as YYYY-MM-DD (UTC)')
              .refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)), 'a real date, YYYY-MM-DD'),
            caps: z
              .array(z.number().int().positive())
              .min(1, 'daily caps for day 1, 2, ... like [50, 100, 500]'),
            destinations: z.record(z.string(), z.array(z.number().int().positive()).min(1)).optional(),
          })
          .optional(),
      }),
    ),
    pools: z.record(
      z.string().min(1),
      z.strictObject({ sources: z.record(z.string(), z.number().int().positive('a weight of at least 1')) }),
    ),
    select: z
      .array(
        z.strictObject({
          pool: z.string().min(1),
          domains: z.array(z.string().min(1)).min(1).optional(),
          senderDomains: z.array(z.string().min(1)).min(1).optional(),
          /** Values of the tag header (tagHeader) a sending application sets. */
          tags: z.array(z.string().min(1)).min(1).optional(),
        }),
      )
      .optional(),
    defaultPool: z.string().min(1).optional(),
    /** The header `select[].tags` match (default X-Tern-Tag). */
    tagHeader: z
      .string()
      .regex(/^[\x21-\x39\x3b-\x7e]+$/, 'a header field name')
      .optional(),
  })
  .superRefine((e, ctx) => {
    for (const [name, pool] of Object.entries(e.pools)) {
      for (const source of Object.keys(pool.sources)) {
        if (e.sources[source] === undefined) {
          ctx.addIssue({
            code: 'custom',
            path: ['pools', name, 'sources', source],
            message: `no source named ${source}: add it under delivery.egress.sources or remove it here`,
          });
        }
      }
    }
    const pools = new Set(Object.keys(e.pools));
    const check = (pool: string | undefined, path: (string | number)[]): void => {
      if (pool !== undefined && !pools.has(pool)) {
        ctx.addIssue({ code: 'custom', path, message: `no pool named ${pool} in delivery.egress.pools` });
      }
    };
    check(e.defaultPool, ['defaultPool']);
    e.select?.forEach((s, i) => {
      check(s.pool, ['select', i, 'pool']);
    });
  });

/** A back-off rule: what a destination answers, and what to do about it for a while. */
const backoffRule = z.strictObject({
  name: z.string().min(1, 'name the rule (timelines and `tern queue shaping` show it)'),
  match: z
    .strictObject({
      codes: z.array(replyCode).min(1).optional(),
      enhanced: z
        .string()
        .regex(/^[245](\.\d{1,3}){0,2}\.?$/, "an enhanced code like '4.7.28' or a prefix like '5.7.'")
        .optional(),
      text: z
        .string()
        .min(1)
        .refine((text) => {
          try {
            new RegExp(text, 'i');
            return true;
          } catch {
            return false;
          }
        }, 'a regular expression (matched case-insensitively against the reply text)')
        .optional(),
    })
    .refine((m) => m.codes !== undefined || m.enhanced !== undefined || m.text !== undefined, {
      message: 'give at least one of codes, enhanced or text',
    }),
  destinations: z.array(z.string().min(1)).min(1).optional(),
  action: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('suspend') }),
    z.strictObject({
      kind: z.literal('rate'),
      messageRate: z.strictObject({ limit: z.number().int().positive(), per: duration }),
    }),
    z.strictObject({ kind: z.literal('connections'), maxConnections: z.number().int().positive() }),
    z.strictObject({ kind: z.literal('pool'), pool: z.string().min(1, 'the egress pool to move to') }),
  ]),
  /** How long the action lasts after the last matching reply (the quiet period). */
  durationMs: duration,
});

const delivery = z
  .strictObject({
    /** Static routes by recipient domain; '*' routes everything else (a smarthost). */
    routes: z.record(z.string(), nextHop).optional(),
    /** Local domains delivered to a mailbox server over LMTP. */
    local: z
      .strictObject({
        domains: z.array(domain).min(1),
        lmtp: z.strictObject({
          host: z.string().optional(),
          port: port.optional(),
          path: z.string().optional(),
          tls: tlsMode.optional(),
        }),
      })
      .optional(),
    dns: z
      .strictObject({
        servers: z.array(dnsServer).min(1).optional(),
        /** DNSSEC for DANE (RFC 7672): only answers a validating resolver vouched for (AD bit) are secure. */
        dnssec: dnssec.optional(),
        timeoutMs: duration.optional(),
        /** MX hosts of one domain looked up, most preferred first (default 10). */
        maxMxHosts: z.number().int().positive().optional(),
      })
      .optional(),
    /** What a next hop's reply may be before the connection is dropped as hostile (default 100 lines, 64 KiB). */
    replyLimits: z
      .strictObject({
        maxLines: z.number().int().positive().optional(),
        maxBytes: z.number().int().positive().optional(),
      })
      .optional(),
    /** Largest header block read from a stored message for beforeSend hooks (default 1 MiB). */
    maxHeaderBytes: z.number().int().positive().optional(),
    /** The SMTP port MX hosts are reached on (25; tests use others). */
    port: port.optional(),
    /** Jobs this process delivers at once (default 20). */
    concurrency: z.number().int().positive().optional(),
    ...outboundTlsKeys,
    tls: z
      .strictObject({
        mode: tlsMode.optional(),
        /** A PEM file of CAs trusted for `require` (default: Node's bundled roots). */
        ca: z.string().optional(),
        allowInsecureAuth: z.boolean().optional(),
      })
      .optional(),
    maxAddresses: z.number().int().positive().optional(),
    limits: z
      .strictObject({
        default: destinationLimit.optional(),
        domains: z.record(z.string(), destinationLimit).optional(),
        hosts: z.record(z.string(), destinationLimit).optional(),
        /** By provider (delivery.providers): one budget for every domain the provider hosts. */
        providers: z.record(z.string(), destinationLimit).optional(),
        waitMs: z.number().int().nonnegative('a duration in milliseconds, 0 or more').optional(),
        /** Limits on each (egress source, destination) pair: `default`, or by destination. */
        perSource: z
          .strictObject({
            default: destinationLimit.optional(),
            destinations: z.record(z.string(), destinationLimit).optional(),
          })
          .optional(),
        leaseTtlMs: duration.optional(),
      })
      .optional(),
    egress: egress.optional(),
    /**
     * Provider grouping: domains whose most preferred MX host ends in a provider's suffix share its
     * limits and back-off state. Over the shipped google, microsoft, yahoo and apple; false: off.
     */
    providers: z
      .union([
        z.literal(false),
        z.record(
          z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'a provider name: lower-case letters, digits, _ -'),
          z
            .strictObject({
              mx: z.array(z.string().min(1)).optional(),
              domains: z.array(z.string().min(1)).optional(),
            })
            .refine((p) => (p.mx?.length ?? 0) + (p.domains?.length ?? 0) > 0, 'give mx suffixes or domains'),
        ),
      ])
      .optional(),
    /** Automatic back-off on what destinations answer, and the circuit breaker. */
    shaping: z
      .strictObject({
        /** Tried before the shipped rules; the first a reply matches acts. */
        rules: z.array(backoffRule).optional(),
        /** The shipped rules for Gmail, Microsoft, Yahoo and common replies (default true). */
        defaultRules: z.boolean().optional(),
        circuitBreaker: z
          .strictObject({
            /** Consecutive attempts that reach no server before the destination is suspended (default 5). */
            failures: z.number().int().positive().optional(),
            /** How long it stays suspended (default 300 000 ms). */
            suspendMs: duration.optional(),
          })
          .optional(),
      })
      .optional(),
    timeouts: z
      .strictObject({
        connectMs: duration.optional(),
        greetingMs: duration.optional(),
        commandMs: duration.optional(),
        dataInitMs: duration.optional(),
        dataBlockMs: duration.optional(),
        dataEndMs: duration.optional(),
        /** Bytes per second a next hop must take DATA at, on top of dataBlockMs (default 4096). */
        dataMinRate: z.number().int().positive().optional(),
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
    sampleIntervalMs: duration.optional(),
  })
  .optional();

// Where message bodies wait between the socket and the queue (one budget for every listener).
const intake = z
  .strictObject({
    /** Folder for bodies that outgrow memory (default .tern-data/spool beside the config); false: never spool, refuse with 451 4.3.1 past the budget. */
    spoolDir: z.union([z.string().min(1), z.literal(false)]).optional(),
    /** Bytes one message's body may hold in memory before it goes to the spool folder (default 256 KiB). */
    memoryPerMessage: z.number().int().positive().optional(),
    /** Bytes all messages being received may hold in memory together (default 64 MiB). */
    memoryBudget: z.number().int().positive().optional(),
  })
  .optional();

export const configSchema = z.strictObject({
  /** Our name in banners, EHLO and Received headers (default: the machine's host name). */
  hostname: z.string().min(1).optional(),
  listeners: z
    .array(listener, {
      error: (issue) =>
        issue.input === undefined
          ? "missing: tern needs at least one listener, e.g. listeners: [{ kind: 'mx', port: 25 }]"
          : undefined,
    })
    .min(1, 'at least one listener, e.g. { kind: "mx", port: 25 }'),
  /** Domains this server receives mail for. */
  localDomains: z.array(domain).default([]),
  /** Networks that may relay without AUTH. */
  trustedNetworks: z.array(cidr).default(['127.0.0.1/32', '::1/128']),
  users: z.strictObject({ file: z.string().min(1) }).optional(),
  queue,
  delivery,
  plugins: z.array(pluginSchema).default([]),
  intake,
  log: z.strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') }).optional(),
  /** How long SIGTERM waits for open transactions (ms). */
  shutdownTimeoutMs: duration.optional(),
  admin,
  publish,
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
  return path.reduce<string>(
    (acc, key) =>
      typeof key === 'number'
        ? `${acc}[${key}]`
        : /^[a-z_$][\w$]*$/i.test(String(key))
          ? `${acc}.${String(key)}`
          : `${acc}[${JSON.stringify(String(key))}]`,
    'config',
  );
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

const DEFAULT_PORTS = { mx: 25, submission: 587, smtps: 465 } as const;

/** A listener's port: its own, or the standard one of its kind. */
export function listenerPort(l: { kind: keyof typeof DEFAULT_PORTS; port?: number | undefined }): number {
  return l.port ?? DEFAULT_PORTS[l.kind];
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
  const ca = config.delivery?.tls?.ca;
  if (ca !== undefined) collect(problems, () => readCertificates(config, ca, 'config.delivery.tls.ca'));
  problems.push(...checkOutboundTls(config));
  return problems;
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
  try {
    const ms = durationMs((/^\d+$/.test(text) ? Number(text) : text) as Duration, 'TERN_CONFIG_TIMEOUT');
    if (ms > 0) return ms;
  } catch {}
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
async function importFresh(path: string, source: string): Promise<{ default?: unknown }> {
  if (path.endsWith('.json')) return { default: JSON.parse(source) };
  if (fromSources) {
    // tern itself runs through jiti, which maps @tern/* to sources: the config must too, and must
    // share its module instances (jiti's module cache), so only the config file is evaluated anew.
    const jiti = createJiti(import.meta.url, { fsCache: false, interopDefault: false });
    return (await jiti.evalModule(source, { filename: path, async: true, forceTranspile: true })) as {
      default?: unknown;
    };
  }
  if (/\.[cm]?ts$/.test(path)) {
    const jiti = createJiti(import.meta.url, { moduleCache: false, fsCache: false, interopDefault: false });
    return jiti.import<{ default?: unknown }>(path);
  }
  loads += 1;
  return (await import(`${pathToFileURL(path).href}?load=${loads}`)) as { default?: unknown };
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
  const source = readFileSync(path, 'utf8');
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new ConfigError(
          file,
          [
            `loading took longer than ${timeoutMs} ms and was given up: a top-level await in the config (or in a module it imports) never settled. Fix it, or allow more time with --config-timeout or TERN_CONFIG_TIMEOUT`,
          ],
          'cannot load',
        ),
      );
    }, timeoutMs);
  });
  let module: { default?: unknown };
  try {
    module = await Promise.race([importFresh(path, source), deadline]);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw loadFailure(file, path, source, error);
  } finally {
    clearTimeout(timer);
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
