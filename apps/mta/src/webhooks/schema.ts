// The config's `webhooks` block: endpoints that subscribe to platform events, with filters, a
// signing secret, a timeout, and a retry schedule (exponential back-off with jitter, events kept
// `maxAge` and then dropped and counted, as KumoMTA and Postal do).
import { durationSchema, PLATFORM_EVENT_TYPES, type PlatformEventType } from '@tern/plugin-api';
import { WEBHOOK_ENDPOINT_NAME } from '@tern/queue';
import { z } from 'zod';

export const WEBHOOK_DEFAULTS = {
  timeoutMs: 10_000,
  batchSize: 100,
  maxPending: 100_000,
  initialIntervalMs: 10_000,
  maxIntervalMs: 30 * 60_000,
  maxAgeMs: 3 * 24 * 3_600_000,
  pollIntervalMs: 1000,
} as const;

const positiveMs = durationSchema({ positive: true });

const httpUrl = z.string().refine(
  (value) => {
    try {
      const url = new URL(value);
      return url.protocol === 'http:' || url.protocol === 'https:';
    } catch {
      return false;
    }
  },
  { message: 'an http:// or https:// URL, like https://app.example.com/tern-events' },
);

const tag = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'a tag of letters, digits, _ . - (at most 64)');

const endpoint = z.strictObject({
  /** How the endpoint is named in metrics, logs, the dashboard and `tern webhook test NAME`. */
  name: z.string().regex(WEBHOOK_ENDPOINT_NAME, 'lower-case letters, digits, _ and - (at most 63)'),
  url: httpUrl,
  /** The events posted here (default: every one). */
  events: z
    .array(z.enum(PLATFORM_EVENT_TYPES as unknown as [PlatformEventType, ...PlatformEventType[]]))
    .min(1)
    .optional(),
  /** Only events that match every filter given (any value of each). */
  filters: z
    .strictObject({
      senderDomains: z.array(z.string().min(1)).min(1).optional(),
      tags: z.array(tag).min(1).optional(),
      /** Ids of the API keys that injected the message. */
      apiKeys: z.array(z.string().min(1)).min(1).optional(),
    })
    .optional(),
  /** The HMAC-SHA256 key of X-Tern-Signature; or `secretFile`, a file holding it. */
  secret: z.string().min(16, 'at least 16 characters (receivers trust what it signs)').optional(),
  secretFile: z.string().min(1).optional(),
  /** One post's deadline, response included (default 10 s). */
  timeout: positiveMs.optional(),
  /** Events per post, at most (default 100). */
  batchSize: z.number().int().min(1).max(1000).optional(),
  /** Events kept waiting for this endpoint; past it new events are dropped and counted (default 100 000). */
  maxPending: z.number().int().min(1).max(10_000_000).optional(),
  retry: z
    .strictObject({
      /** The first wait after a failed post (default 10 s); each further failure doubles it. */
      initialInterval: positiveMs.optional(),
      /** The longest wait between posts (default 30 min). */
      maxInterval: positiveMs.optional(),
      /** How long an event is kept before it is dropped and counted as expired (default 3 days). */
      maxAge: positiveMs.optional(),
    })
    .optional(),
});

export const webhooksSchema = z
  .strictObject({
    endpoints: z.array(endpoint).default([]),
    /** How often each node looks for events due (default 1 s; events written here wake it at once). */
    pollInterval: positiveMs.optional(),
  })
  .optional();

export type WebhooksConfig = NonNullable<z.output<typeof webhooksSchema>>;
export type WebhookEndpointConfig = WebhooksConfig['endpoints'][number];
