// What happened to a message, as applications hear it: one record per event and recipient, for
// webhooks, and for anything else that follows mail after intake (logs, custom plugins).
import type { BounceCategory } from './reply.js';

export const PLATFORM_EVENT_TYPES = [
  'queued',
  'delivered',
  'deferred',
  'bounced',
  'held',
  'suppressed',
  'complained',
] as const;
export type PlatformEventType = (typeof PLATFORM_EVENT_TYPES)[number];

/** Where the event was learnt: an SMTP reply, a later DSN or ARF report, an operator, intake. */
export type PlatformEventSource = 'smtp' | 'dsn' | 'arf' | 'operator' | 'intake' | 'injection';

export interface PlatformEvent {
  readonly type: PlatformEventType;
  /** Milliseconds since the epoch. */
  readonly at: number;
  readonly queueId?: string;
  readonly recipient?: string;
  readonly mailFrom?: string;
  /** The domain of `mailFrom` (lower case), for filters. */
  readonly senderDomain?: string;
  readonly tags?: readonly string[];
  /** The id of the API key that injected the message. */
  readonly apiKey?: string;
  readonly code?: number;
  readonly enhanced?: string;
  readonly text?: string;
  readonly category?: BounceCategory;
  readonly source?: PlatformEventSource;
}
