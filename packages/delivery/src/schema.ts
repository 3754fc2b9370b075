// The rules of the deliverer's plain options (what a config file can say), as zod (Standard Schema)
// schemas: createDeliverer checks its options with them, and the app composes them into the config
// schema, so each rule is written once. Defaults stay beside the code that applies them.
import {
  choiceSchema,
  dnsServerSchema,
  domainSchema,
  durationSchema,
  type NextHop,
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
  dns: z
    .strictObject({
      servers: z.array(dnsServerSchema()).min(1).optional(),
      timeoutMs: timeout.optional(),
      tries: count.optional(),
      addressOrder: choiceSchema(
        ['ipv4-first', 'ipv6-first', 'ipv4-only', 'ipv6-only'],
        "one of 'ipv4-first', 'ipv6-first', 'ipv4-only' or 'ipv6-only'",
      ).optional(),
      maxMxHosts: count.optional(),
      /** The servers are DNSSEC-validating resolvers on this machine, their AD bit trusted (DANE). */
      dnssec: z.boolean().optional(),
    })
    .optional(),
  replyLimits: z.strictObject({ maxLines: count.optional(), maxBytes: count.optional() }).optional(),
  maxHeaderBytes: count.optional(),
  port: port.optional(),
  maxAddresses: count.optional(),
  limits: z
    .strictObject({
      default: destinationLimitSchema.optional(),
      domains: z.record(z.string(), destinationLimitSchema).optional(),
      hosts: z.record(z.string(), destinationLimitSchema).optional(),
      waitMs: timeout.optional(),
      leaseTtlMs: timeout.optional(),
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
