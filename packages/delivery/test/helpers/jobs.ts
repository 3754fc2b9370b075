// Delivery jobs and stored messages as the queue would hand them over.
import { Readable } from 'node:stream';
import type { Envelope } from '@tern/plugin-api';
import type { DeliveryJob } from '@tern/queue';

let counter = 0;

/** A job for `recipients` (all pending) in their domain, with a plain envelope unless overridden. */
export function makeJob(recipients: string[], envelope: Partial<Envelope> = {}): DeliveryJob {
  counter++;
  const domain = recipients[0]?.split('@')[1] ?? 'example.test';
  return {
    id: `job-${counter}`,
    queueId: `Q${counter}`,
    domain,
    envelope: {
      mailFrom: 'sender@origin.test',
      recipients: recipients.map((address) => ({ address })),
      ...envelope,
    },
    recipients: recipients.map((address) => ({ address, status: 'pending' })),
    attempts: 0,
    createdAt: Date.now(),
    isBounce: false,
  };
}

/** The `message()` callback of the contract: a fresh stream of the stored bytes on every call. */
export function storedMessage(text: string | Buffer, chunkSize = 0): () => Promise<Readable> {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  return async () => {
    if (chunkSize <= 0) return Readable.from([bytes]);
    const parts: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += chunkSize) parts.push(bytes.subarray(i, i + chunkSize));
    return Readable.from(parts);
  };
}

export const SIMPLE_MESSAGE =
  'From: sender@origin.test\r\nTo: someone@example.test\r\nSubject: test\r\nMessage-ID: <t@origin.test>\r\n\r\nHello.\r\n';
