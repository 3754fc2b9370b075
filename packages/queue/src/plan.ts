// Shared by every backend: queue ids, and how an accepted message becomes delivery jobs
// (one per recipient domain, the routing key).
import { randomBytes } from 'node:crypto';
import { domainOf, type EnvelopeRecipient } from '@tern/plugin-api';
import type { DeliveryJob, IncomingMessage } from './contract.js';

/**
 * A new queue id: time-ordered (base-36 milliseconds) then 48 random bits, upper case, no
 * punctuation, so it sorts by arrival, is unique across nodes and fits in keys and job ids.
 */
export function newQueueId(now: number = Date.now()): string {
  return `${now.toString(36).toUpperCase().padStart(9, '0')}${randomBytes(6).toString('hex').toUpperCase()}`;
}

/** The job id of a message's job for one domain. */
export function jobIdOf(queueId: string, domain: string): string {
  return `${queueId}@${domain}`;
}

/** One job per recipient domain, in the order domains first appear; each carries only its own recipients. */
export function planJobs(queueId: string, message: IncomingMessage): DeliveryJob[] {
  const byDomain = new Map<string, EnvelopeRecipient[]>();
  for (const recipient of message.envelope.recipients) {
    const domain = domainOf(recipient.address);
    const list = byDomain.get(domain);
    if (list) list.push(recipient);
    else byDomain.set(domain, [recipient]);
  }
  return [...byDomain].map(([domain, recipients]) => ({
    id: jobIdOf(queueId, domain),
    queueId,
    domain,
    envelope: { ...message.envelope, recipients },
    recipients: recipients.map((r) => ({ ...r, status: 'pending' as const })),
    attempts: 0,
    createdAt: message.receivedAt,
    isBounce: message.isBounce === true,
    size: message.content.size,
    ...(message.eightBit === undefined ? {} : { eightBit: message.eightBit }),
  }));
}
