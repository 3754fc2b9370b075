// The spam plugin's options: shape, defaults and cross-field rules, checked by parseOptions when
// spamFilter() is called so a mistake stops start-up with the field named.
import { isIP } from 'node:net';
import { parseOptions } from '@tern/plugin-api';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { SpamDecision } from './decision.js';
import { parseCidr } from './ip.js';
import { SYMBOL_NAMES, type SymbolName } from './symbols.js';

export const PLUGIN_NAME = 'spam';

const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/i;
const hostname = z.string().regex(HOSTNAME, 'expected a DNS name such as zen.spamhaus.org');
const symbolPart = z.string().regex(/^[A-Z0-9_]{1,40}$/, 'expected upper-case letters, digits and _');
const weight = z.number().finite();
const positiveInt = z.number().int().positive();
const network = z.string().refine((s) => parseCidr(s) !== undefined, 'expected an address or a CIDR network');
const listCode = z.string().regex(/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/, 'expected a 127.x.y.z return code');
const replyText = z
  .string()
  .min(1)
  .max(400)
  .refine((s) => !/[\r\n]/.test(s), 'must be one line');

const dnsServer = z
  .string()
  .refine(
    (s) => isIP(s) !== 0 || /^\[[0-9a-f:.]+\]:\d+$/i.test(s) || /^\d+\.\d+\.\d+\.\d+:\d+$/.test(s),
    "expected an address, '1.2.3.4:53' or '[::1]:53'",
  );

const codeMeaning = z.strictObject({
  /** Appended to the symbol name: RBL_<zone name>_<code name>. */
  name: symbolPart.optional(),
  weight: weight.optional(),
  action: z.enum(['score', 'reject']).optional(),
});

const dnsblZone = z.strictObject({
  zone: hostname,
  /** Symbol name part; default: the zone upper-cased with dots as underscores. */
  name: symbolPart.optional(),
  weight: weight.default(5),
  /** `reject` refuses the client (at connect or RCPT, see dnsbl.rejectAt); `score` only adds weight. */
  action: z.enum(['score', 'reject']).default('score'),
  /** What each return code means; codes not listed take the zone's weight and action. */
  codes: z.record(listCode, codeMeaning).optional(),
  /** Query IPv6 clients too (in reversed-nibble form). */
  ipv6: z.boolean().default(true),
});

const dnswlZone = z.strictObject({
  zone: hostname,
  name: symbolPart.optional(),
  weight: weight.default(-5),
  codes: z.record(listCode, codeMeaning.omit({ action: true })).optional(),
  ipv6: z.boolean().default(true),
});

const redisClient = z.custom<Redis>(
  (v) => typeof v === 'object' && v !== null && typeof (v as { evalsha?: unknown }).evalsha === 'function',
  'expected a redis:// URL or an ioredis client',
);

const thresholds = z
  .strictObject({
    tag: weight.nullable().default(5),
    quarantine: weight.nullable().default(10),
    tempfail: weight.nullable().default(null),
    reject: weight.nullable().default(15),
  })
  .prefault({})
  .superRefine((t, ctx) => {
    // Each action is harsher than the one before, so its threshold must be higher.
    const order = ['tag', 'quarantine', 'tempfail', 'reject'] as const;
    let previous: { name: string; value: number } | undefined;
    for (const name of order) {
      const value = t[name];
      if (value === null) continue;
      if (previous && value <= previous.value) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `must be above ${previous.name} (${previous.value}): actions go tag < quarantine < tempfail < reject`,
        });
      }
      previous = { name, value };
    }
  });

const scores = z.record(z.string(), weight).superRefine((record, ctx) => {
  for (const key of Object.keys(record)) {
    if (key === 'RSPAMD' || key === 'SPAMD') {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `a scanner's score is scaled by ${key.toLowerCase()}.weight`,
      });
    } else if (!(SYMBOL_NAMES as string[]).includes(key)) {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `unknown symbol (DNS list weights are set on their zone); known: ${SYMBOL_NAMES.join(', ')}`,
      });
    }
  }
});

export const spamOptionsSchema = z.strictObject({
  /** Listener names this filter runs on; default: every listener of kind 'mx'. */
  listeners: z.array(z.string().min(1)).min(1).optional(),
  /** Skip authenticated sessions (submission through an MX listener). */
  exemptAuthenticated: z.boolean().default(true),
  /** Skip clients from the core's trusted networks (our own relays). */
  exemptTrusted: z.boolean().default(true),
  dns: z
    .strictObject({
      /** Resolvers to ask; default: the system's. */
      servers: z.array(dnsServer).min(1).optional(),
      timeoutMs: positiveInt.default(2000),
      tries: positiveInt.max(10).default(2),
    })
    .prefault({}),
  dnsbl: z
    .strictObject({
      zones: z.array(dnsblZone).default([]),
      /** Where a `reject` listing answers: RCPT (after Postfix's smtpd_delay_reject) or connect. */
      rejectAt: z.enum(['connect', 'rcpt']).default('rcpt'),
    })
    .prefault({}),
  dnswl: z.strictObject({ zones: z.array(dnswlZone).default([]) }).prefault({}),
  spf: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** Also check the HELO identity (RFC 7208 §2.3). */
      helo: z.boolean().default(true),
      /** Whole-evaluation limit (RFC 7208 §4.6.4); past it the result is temperror. */
      timeoutMs: positiveInt.default(10_000),
    })
    .prefault({}),
  dkim: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** RSA keys shorter than this verify as policy (RFC 8301 asks for 1024 at least). */
      minBitLength: positiveInt.default(1024),
    })
    .prefault({}),
  dmarc: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** A failing message whose domain says p=reject: refuse it, hold it, or only score it. */
      onReject: z.enum(['reject', 'quarantine', 'score']).default('reject'),
      /** A failing message whose domain says p=quarantine. */
      onQuarantine: z.enum(['quarantine', 'score']).default('quarantine'),
    })
    .prefault({}),
  /** Add an Authentication-Results header (RFC 8601) with the SPF, DKIM and DMARC results. */
  authenticationResults: z.boolean().default(true),
  heuristics: z.strictObject({ enabled: z.boolean().default(true) }).prefault({}),
  /** Weight overrides for fixed symbols, e.g. `{ MISSING_DATE: 2, SPF_FAIL: 5 }`. */
  scores: scores.default({}),
  rspamd: z
    .strictObject({
      /** The normal worker, whose /checkv2 scans (default port 11333). */
      url: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:11333'),
      timeoutMs: positiveInt.default(15_000),
      /** open: a failed scan adds nothing; closed: the message is deferred (451). */
      failure: z.enum(['open', 'closed']).default('open'),
      /** Factor applied to rspamd's score before it adds in. */
      weight: weight.default(1),
      password: z.string().optional(),
      settingsId: z.string().optional(),
      /** Larger messages are not sent. */
      maxBytes: positiveInt.optional(),
    })
    .optional(),
  spamd: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: positiveInt.max(65535).default(783),
      /** A UNIX socket instead of host and port. */
      socketPath: z.string().min(1).optional(),
      timeoutMs: positiveInt.default(15_000),
      failure: z.enum(['open', 'closed']).default('open'),
      weight: weight.default(1),
      /** The SpamAssassin user whose preferences apply (spamc -u). */
      user: z.string().min(1).optional(),
      /** SYMBOLS also returns the rule names; CHECK only the score. */
      command: z.enum(['SYMBOLS', 'CHECK']).default('SYMBOLS'),
      /** Larger messages are not sent (spamc's default limit is 500 KiB). */
      maxBytes: positiveInt.default(512_000),
    })
    .optional(),
  greylist: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** Shared store: a redis:// URL or an ioredis client. Without it, one process's memory. */
      redis: z
        .union([z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL'), redisClient])
        .optional(),
      keyPrefix: z.string().min(1).default('tern:greylist:'),
      /** A new triplet is deferred until this many seconds passed since its first attempt. */
      delaySeconds: positiveInt.default(300),
      /** A triplet that never came back is forgotten after this long. */
      retryWindowSeconds: positiveInt.default(2 * 86_400),
      /** A triplet that passed is let through without delay for this long after its last message. */
      lifetimeSeconds: positiveInt.default(35 * 86_400),
      ipv4Prefix: z.number().int().min(8).max(32).default(24),
      ipv6Prefix: z.number().int().min(16).max(128).default(64),
      allowNetworks: z.array(network).default([]),
      /** Senders from these domains (and their subdomains) are never greylisted. */
      allowSenderDomains: z.array(hostname).default([]),
      /** Clients on a DNSWL zone are not greylisted. */
      skipIfDnswl: z.boolean().default(true),
      /** In-process store only: the most triplets kept. */
      maxEntries: positiveInt.default(100_000),
    })
    .optional(),
  actions: thresholds,
  headers: z
    .strictObject({
      /** X-Spam-Status/X-Spam-Score on every checked message, or only on tagged ones. */
      status: z.enum(['all', 'tagged']).default('all'),
      /** X-Spam-Report with every symbol on tagged messages. */
      report: z.boolean().default(true),
      /** Put in front of the Subject of tagged messages, e.g. '[SPAM] '. */
      subjectPrefix: z.string().min(1).max(64).optional(),
    })
    .prefault({}),
  replies: z
    .strictObject({
      reject: replyText.default('Message rejected as spam'),
      tempfail: replyText.default('Message deferred, please try again later'),
      /** For a rejection the From domain's DMARC policy asked for. */
      dmarcReject: replyText.default('Message rejected by the DMARC policy of its From domain'),
    })
    .prefault({}),
  /** Called with every decision (for an ops timeline); errors it throws are logged and ignored. */
  onDecision: z
    .custom<(decision: SpamDecision) => void>((v) => typeof v === 'function', 'expected a function')
    .optional(),
});

/** What spamFilter() accepts. */
export type SpamOptions = z.input<typeof spamOptionsSchema>;
/** The options with every default filled in. */
export type ResolvedSpamOptions = z.output<typeof spamOptionsSchema>;
export type DnsblZoneOptions = ResolvedSpamOptions['dnsbl']['zones'][number];
export type DnswlZoneOptions = ResolvedSpamOptions['dnswl']['zones'][number];
export type RspamdOptions = NonNullable<ResolvedSpamOptions['rspamd']>;
export type SpamdOptions = NonNullable<ResolvedSpamOptions['spamd']>;
export type GreylistOptions = NonNullable<ResolvedSpamOptions['greylist']>;
export type Thresholds = ResolvedSpamOptions['actions'];
export type ScoreOverrides = Partial<Record<SymbolName, number>>;

/** Validates and fills in defaults; throws PluginOptionError naming the field. */
export function resolveOptions(input: unknown): ResolvedSpamOptions {
  return parseOptions(PLUGIN_NAME, spamOptionsSchema, input ?? {});
}
