// What the outbound TLS end-to-end tests share: sending through a running tern with swaks, and
// reading a message's delivery attempts (with the TLS policy that applied) from its admin API.
import { swaks } from '@tern/testkit';
import { expect } from 'vitest';
import { queuedId, type TernProcess } from './tern-process.js';

/** An attempt as the timeline records it, with the TLS part these tests check. */
export interface TlsAttempt {
  type: 'attempt';
  recipients: { address: string; result: string; code: number; text: string }[];
  tls?: { policy: string; applied: string; tls: boolean; validated: boolean; reason?: string };
}

/** The delivery attempts of a message so far, from the admin API at `adminUrl`. */
export async function attemptsOf(adminUrl: string, token: string, queueId: string): Promise<TlsAttempt[]> {
  const response = await fetch(`${adminUrl}/api/messages/${queueId}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const body = (await response.json()) as { timeline?: { type: string }[] };
  return (body.timeline ?? []).filter((e): e is TlsAttempt => e.type === 'attempt');
}

/** Sends one message to `to` through tern with swaks; resolves with its queue id. */
export async function sendThrough(tern: TernProcess, to: string): Promise<string> {
  const sent = await swaks(tern.port, ['--from', 'sender@tern.test', '--to', to, '--h-Subject', `to ${to}`]);
  const id = queuedId(sent.output);
  expect(id, sent.output).toBeDefined();
  return id as string;
}
