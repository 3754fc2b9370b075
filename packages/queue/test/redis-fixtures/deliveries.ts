// Test parts for the Redis backend: messages, and a deliver function that records every call and
// answers per recipient from a script, the way @tern/delivery would report real SMTP replies.
import type { SmtpReply } from '@tern/plugin-api';
import { memorySource } from '@tern/plugin-api/host';
import type { Deliver, DeliveryJob, IncomingMessage, RecipientOutcome } from '../../src/contract.js';

export const OK: SmtpReply = { code: 250, enhanced: '2.0.0', text: 'OK queued' };
export const BUSY: SmtpReply = { code: 451, enhanced: '4.7.1', text: 'Greylisted, try later' };
export const UNKNOWN: SmtpReply = { code: 550, enhanced: '5.1.1', text: 'No such user here' };

export function testMessage(
  mailFrom: string,
  recipients: readonly string[],
  subject = 'Hello',
  body = 'Just a test.\r\n',
): IncomingMessage {
  const headers = `From: <${mailFrom || 'mailer-daemon@src.test'}>\r\nTo: ${recipients.join(', ')}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@src.test>\r\n`;
  return {
    envelope: { mailFrom, recipients: recipients.map((address) => ({ address })) },
    // Several chunks, as intake hands them over.
    content: memorySource([Buffer.from(headers), Buffer.from('\r\n'), Buffer.from(body)]),
    receivedAt: Date.now(),
    messageId: `<${subject}@src.test>`,
  };
}

export interface DeliveryCall {
  readonly job: DeliveryJob;
  readonly message: Buffer;
  readonly at: number;
}

/** How one attempt answers a recipient; the attempt number counts from 0. */
export type Script = (address: string, attempt: number, job: DeliveryJob) => SmtpReply;

export function recordingDeliver(script: Script = () => OK): { deliver: Deliver; calls: DeliveryCall[] } {
  const calls: DeliveryCall[] = [];
  const deliver: Deliver = async (job, open) => {
    const chunks: Buffer[] = [];
    for await (const chunk of await open()) chunks.push(chunk as Buffer);
    calls.push({ job, message: Buffer.concat(chunks), at: Date.now() });
    const recipients: RecipientOutcome[] = job.recipients.map((r) => {
      const reply = script(r.address, job.attempts, job);
      const result = reply.code < 300 ? 'delivered' : reply.code < 500 ? 'deferred' : 'failed';
      return { address: r.address, result, reply };
    });
    return { recipients, remoteMta: `mx.${job.domain}[192.0.2.25]:25` };
  };
  return { deliver, calls };
}
