// Shared by every backend: queue ids, and how an accepted message becomes delivery jobs
// (one per recipient domain, the routing key).
import { randomFillSync } from 'node:crypto';
import { domainOf, type EnvelopeRecipient } from '@tern/plugin-api';
import type { DeliveryJob, IncomingMessage } from './contract.js';

/**
 * A new queue id: time-ordered (base-36 milliseconds) then 48 random bits, upper case, no
 * punctuation, so it sorts by arrival, is unique across nodes and fits in keys and job ids.
 */
export function newQueueId(now: number = Date.now()): string {
  if (nextRandom === randomPool.length) {
    randomFillSync(randomPool);
    nextRandom = 0;
  }
  const at = nextRandom;
  nextRandom += QUEUE_ID_RANDOM_BYTES;
  return `${now.toString(36).toUpperCase().padStart(9, '0')}${randomPool.toString('hex', at, nextRandom).toUpperCase()}`;
}

// The random part comes from a pool refilled every 400 ids: one randomBytes call per id cost
// about 6 µs (a locked call into OpenSSL's generator), 3 % of the main thread's time on the new
// connection per message bench. The bytes are the same CSPRNG's, drawn in bulk.
const QUEUE_ID_RANDOM_BYTES = 6;
const randomPool = Buffer.alloc(QUEUE_ID_RANDOM_BYTES * 400);
let nextRandom = randomPool.length;

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
