// The rules of the deliverer's plain options (what a config file can say), as zod (Standard Schema)
// schemas: createDeliverer checks its options with them, and the app composes them into the config
// schema, so each rule is written once. Defaults stay beside the code that applies them.

import { isIP } from 'node:net';
import {
  choiceSchema,
  dnsServerSchema,
  domainSchema,
  durationSchema,
  type NextHop,
  numberSchema,
  portSchema,
  wholeNumberSchema,
} from '@tern/plugin-api';
import { z } from 'zod';

const count = wholeNumberSchema(1);
const timeout = durationSchema({ positive: true });

const port = portSchema();
export const tlsModeSchema = choiceSchema(
  ['opportunistic', 'require', 'none', 'implicit'],
  "one of 'opportunistic', 'require', 'none' or 'implicit'",
);

const lmtpShape = {
  host: z.string().optional(),
  port: port.optional(),
  path: z.string().optional(),
  tls: tlsModeSchema.optional(),
};

/** Where a message goes next: MX lookup, a fixed SMTP host, an LMTP server or a Maildir. */
export const nextHopSchema: z.ZodType<NextHop> = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('mx'), domain: domainSchema(), tls: tlsModeSchema.optional() }),
  z.strictObject({
    type: z.literal('smtp'),
    host: z.string().min(1),
    port: port.optional(),
    tls: tlsModeSchema.optional(),
    auth: z.strictObject({ user: z.string(), pass: z.string() }).optional(),
  }),
  z.strictObject({ type: z.literal('lmtp'), ...lmtpShape }),
  z.strictObject({ type: z.literal('maildir'), path: z.string().min(1) }),
]) as unknown as z.ZodType<NextHop>;

/** A limit on one destination (see DestinationLimit). */
export const destinationLimitSchema = z.strictObject({
  maxConnections: count.optional(),
  /** Messages per window, e.g. { limit: 10, per: '1s' }; the limiter counts whole milliseconds. */
  messageRate: z
    .strictObject({ limit: count, per: durationSchema({ positive: true, whole: true }) })
    .optional(),
});

const replyCode = numberSchema(
  (n) => Number.isInteger(n) && n >= 200 && n <= 599,
  'an SMTP reply code (200-599)',
);

/** Source addresses with their EHLO names, in weighted pools; messages pick a pool by domain. */
export const egressSchema = z
  .strictObject({
    sources: z.record(
      z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'a source name: letters, digits, . _ -'),
      z.strictObject({
        /** The local address to connect from (it must be configured on this machine). */
        address: z
          .string()
          .refine((a) => isIP(a) !== 0, {
            error: (issue) => `expected an IPv4 or IPv6 address, got ${JSON.stringify(issue.input)}`,
          })
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
              .regex(/^\d{4}-\d{2}-\d{2}$/, 'expected the first day as YYYY-MM-DD (UTC)')
              .refine(
                (d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)),
                'expected the first day as YYYY-MM-DD (UTC), a real date',
              ),
            caps: z.array(count).min(1, 'daily caps for day 1, 2, ... like [50, 100, 500]'),
            destinations: z.record(z.string(), z.array(count).min(1)).optional(),
          })
          .optional(),
      }),
    ),
    pools: z.record(
      z.string().min(1),
      z.strictObject({ sources: z.record(z.string(), wholeNumberSchema(1)) }),
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
            path: ['pools', name, 'sources'],
            message: `no source named "${source}" in delivery.egress.sources: add it there or remove it here`,
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
export const backoffRuleSchema = z.strictObject({
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
        }, 'not a regular expression: give one, matched case-insensitively against the reply text')
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
      messageRate: z.strictObject(
        { limit: count, per: durationSchema({ positive: true, whole: true }) },
        { error: 'expected { limit, per }, e.g. { limit: 10, per: "1s" }' },
      ),
    }),
    z.strictObject({ kind: z.literal('connections'), maxConnections: count }),
    z.strictObject({ kind: z.literal('pool'), pool: z.string().min(1, 'the egress pool to move to') }),
  ]),
  /** How long the action lasts after the last matching reply (the quiet period). */
  durationMs: timeout,
});

/** `dns`: the resolvers, their timeouts and the MX rules (the app may widen `dnssec`). */
export const deliveryDnsShape = {
  servers: z.array(dnsServerSchema()).min(1).optional(),
  timeoutMs: timeout.optional(),
  tries: count.optional(),
  addressOrder: choiceSchema(
    ['ipv4-first', 'ipv6-first', 'ipv4-only', 'ipv6-only'],
    "one of 'ipv4-first', 'ipv6-first', 'ipv4-only' or 'ipv6-only'",
  ).optional(),
  maxMxHosts: count.optional(),
  /** Host names whose addresses are kept for their TTL (0: none). */
  cacheSize: wholeNumberSchema(0).optional(),
  /** The servers are DNSSEC-validating resolvers on this machine, their AD bit trusted (DANE). */
  dnssec: z.boolean().optional(),
};

/**
 * The deliverer's options that a config file holds (DelivererOptions has the rest: the limiter,
 * Redis, plugins, TLS material), spread into a strict object by the app's config schema.
 */
export const deliveryShape = {
  /** Static routes by recipient domain; '*' routes everything else (a smarthost). */
  routes: z.record(z.string(), nextHopSchema).optional(),
  local: z
    .strictObject({ domains: z.array(domainSchema()).min(1), lmtp: z.strictObject(lmtpShape) })
    .optional(),
  dns: z.strictObject(deliveryDnsShape).optional(),
  replyLimits: z.strictObject({ maxLines: count.optional(), maxBytes: count.optional() }).optional(),
  maxHeaderBytes: count.optional(),
  port: port.optional(),
  maxAddresses: count.optional(),
  limits: z
    .strictObject({
      default: destinationLimitSchema.optional(),
      domains: z.record(z.string(), destinationLimitSchema).optional(),
      hosts: z.record(z.string(), destinationLimitSchema).optional(),
      /** By provider (delivery.providers): one budget for every domain the provider hosts. */
      providers: z.record(z.string(), destinationLimitSchema).optional(),
      /** How long a job may wait in the worker for room under a limit (default 0: it waits in the queue). */
      waitMs: durationSchema().optional(),
      /** Limits on each (egress source, destination) pair: `default`, or by destination. */
      perSource: z
        .strictObject({
          default: destinationLimitSchema.optional(),
          destinations: z.record(z.string(), destinationLimitSchema).optional(),
        })
        .optional(),
      leaseTtlMs: timeout.optional(),
    })
    .optional(),
  egress: egressSchema.optional(),
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
      rules: z.array(backoffRuleSchema).optional(),
      /** The shipped rules for Gmail, Microsoft, Yahoo and common replies (default true). */
      defaultRules: z.boolean().optional(),
      circuitBreaker: z
        .strictObject({
          /** Consecutive attempts that reach no server before the destination is suspended (default 5). */
          failures: count.optional(),
          /** How long it stays suspended (default 300 000 ms). */
          suspendMs: timeout.optional(),
        })
        .optional(),
    })
    .optional(),
  timeouts: z
    .strictObject({
      connectMs: timeout.optional(),
      greetingMs: timeout.optional(),
      commandMs: timeout.optional(),
      dataInitMs: timeout.optional(),
      dataBlockMs: timeout.optional(),
      dataEndMs: timeout.optional(),
      dataMinRate: count.optional(),
    })
    .optional(),
};

/** The plain TLS settings (a CA file is the caller's to read: DelivererOptions takes its PEM). */
export const deliveryTlsShape = {
  mode: tlsModeSchema.optional(),
  allowInsecureAuth: z.boolean().optional(),
};

/** What createDeliverer checks: the plain options, other fields passed through untouched. */
export const deliveryOptionsSchema = z.looseObject({
  ...deliveryShape,
  tls: z.looseObject(deliveryTlsShape).optional(),
});
