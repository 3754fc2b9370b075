// The rules of a listener's options, as one zod (Standard Schema) schema: resolveListenerOptions
// checks options with it, and the app composes it into the config schema, so a rule is written
// once. Defaults are not here: they live in LISTENER_DEFAULTS (options.ts), applied when resolving.
import { isIP } from 'node:net';
import {
  choiceSchema,
  domainSchema,
  durationSchema,
  networkSchema,
  numberSchema,
  portSchema,
  wholeNumberSchema,
} from '@tern/plugin-api';
import { z } from 'zod';

const LISTENER_KINDS = ['mx', 'submission', 'smtps'] as const;
const HOSTNAME =
  /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

const count = wholeNumberSchema(1);
const timeout = durationSchema({ positive: true });

export const listenerKindSchema = choiceSchema(
  LISTENER_KINDS,
  "one of 'mx' (port 25), 'submission' (587) or 'smtps' (465)",
);
/** Our name in banners, EHLO replies and Received headers. */
export const hostnameSchema = z
  .string()
  .regex(HOSTNAME, {
    error: (issue) => `must be a fully qualified host name, got ${JSON.stringify(issue.input)}`,
  })
  .transform((name) => name.toLowerCase());
/** What `net.Server#listen` binds: an address, or a name that resolves to one. */
export const listenHostSchema = z
  .string()
  .refine(
    (host) => isIP(host) !== 0 || (!/^[\d.]+$/.test(host) && /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host)),
    {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not an IP address or host name: use an address of this machine, 0.0.0.0 (every IPv4 address) or :: (every address)`,
    },
  );

/** A listener's limits (see ListenerLimits for what each does, LISTENER_DEFAULTS for the defaults). */
export const listenerLimitsSchema = z.strictObject({
  maxMessageSize: count.optional(),
  maxRecipients: count.optional(),
  maxLineLength: count.optional(),
  maxConnections: count.optional(),
  maxConnectionsPerIp: count.optional(),
  maxErrors: count.optional(),
  maxAuthFailures: count.optional(),
  maxReceivedHeaders: count.optional(),
  maxHeaderBytes: count.optional(),
  stressThreshold: numberSchema(
    (n) => Number.isFinite(n) && n > 0 && n <= 1,
    'a share of maxConnections above 0 and at most 1',
  ).optional(),
  timeouts: z
    .strictObject({
      socket: timeout.optional(),
      data: timeout.optional(),
      enqueue: timeout.optional(),
      dns: timeout.optional(),
      command: timeout.optional(),
      session: timeout.optional(),
      stress: z
        .strictObject({
          socket: timeout.optional(),
          command: timeout.optional(),
          session: timeout.optional(),
        })
        .optional(),
    })
    .optional(),
});

/**
 * Every listener option that is not a file or an object (`name`, `tls` and `plugins` are the
 * caller's): spread into a strict object by the app's config schema, parsed by core as it is.
 */
export const listenerShape = {
  kind: listenerKindSchema,
  host: listenHostSchema.optional(),
  port: portSchema().optional(),
  hostname: hostnameSchema.optional(),
  localDomains: z.array(domainSchema()).optional(),
  trustedNetworks: z.array(networkSchema()).optional(),
  requireTls: z.boolean().optional(),
  requireAuth: z.boolean().optional(),
  auth: z.boolean().optional(),
  allowInsecureAuth: z.boolean().optional(),
  reverseLookup: z.boolean().optional(),
  authFailureDelayMs: durationSchema().optional(),
  greetingDelayMs: durationSchema()
    .refine((ms) => ms <= 60_000, 'must be a number of milliseconds from 0 to 60000')
    .optional(),
  bareLineEndings: choiceSchema(['reject', 'normalize'], "'reject' or 'normalize'").optional(),
  longLines: choiceSchema(['reject', 'wrap'], "'reject' or 'wrap'").optional(),
  proxy: z.boolean().optional(),
  xclient: z.boolean().optional(),
  limits: listenerLimitsSchema.optional(),
};

export const listenerSchema = z.object(listenerShape);

/** Where message bodies wait between the socket and the queue (see SpoolOptions; SPOOL_DEFAULTS). */
export const intakeSchema = z.strictObject({
  /** A folder for bodies that outgrow memory; false: never spool, refuse with 451 4.3.1 past the budget. */
  spoolDir: z.union([z.string().min(1), z.literal(false)]).optional(),
  memoryPerMessage: count.optional(),
  memoryBudget: count.optional(),
});
