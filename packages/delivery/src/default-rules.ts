// Back-off rules shipped for the large mailbox providers, from the replies their postmaster pages
// document. Each matches text that provider puts in its replies, so they can apply to every
// destination (a custom domain hosted by Google or Microsoft answers the same way).
//   Gmail:     https://support.google.com/a/answer/3726730 (SMTP error reference), https://support.google.com/mail/answer/81126
//   Microsoft: https://learn.microsoft.com/exchange/troubleshoot/email-delivery/ndr/ (4.7.500-699, 5.7.606, S3150)
//   Yahoo:     https://senders.yahooinc.com/smtp-error-codes/ (TSS04, TSS09, GL01, BL21)
import type { BackoffRule } from './backoff.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

export const DEFAULT_BACKOFF_RULES: readonly BackoffRule[] = [
  {
    // "421-4.7.28 ... unusual rate of unsolicited mail originating from your IP address ... rate limited"
    name: 'gmail-rate-limited',
    match: { enhanced: '4.7.28' },
    action: { kind: 'rate', messageRate: { limit: 1, per: 1000 } },
    durationMs: HOUR,
  },
  {
    // "421-4.7.0 Try again later, closing connection." (too many connections or messages at once)
    name: 'gmail-try-again-later',
    match: { codes: [421], enhanced: '4.7.0', text: 'try again later, closing connection' },
    action: { kind: 'connections', maxConnections: 2 },
    durationMs: 15 * MINUTE,
  },
  {
    // "421 4.7.500 Server busy. Please try again later from [IP]. (AS…)" up to 4.7.699; 4.7.650 rate limited for reputation
    name: 'microsoft-server-busy',
    match: {
      codes: [421, 451],
      text: '^(server busy|the mail server \\[[^\\]]*\\] has been temporarily rate limited)',
    },
    action: { kind: 'rate', messageRate: { limit: 1, per: 1000 } },
    durationMs: HOUR,
  },
  {
    // "550 5.7.606 Access denied, banned sending IP" and the S3150 block list reply
    name: 'microsoft-blocked',
    match: { codes: [550, 554], text: '5\\.7\\.606|banned sending ip|\\(S3150\\)' },
    action: { kind: 'suspend' },
    durationMs: 4 * HOUR,
  },
  {
    // "421 4.7.0 [TSS04] Messages from IP temporarily deferred due to unexpected volume or user complaints" (also GL01)
    name: 'yahoo-deferred',
    match: { codes: [421], text: '\\[(TSS04|GL01)\\]' },
    action: { kind: 'rate', messageRate: { limit: 1, per: 2000 } },
    durationMs: HOUR,
  },
  {
    // "421 4.7.0 [TSS09] All messages from IP will be permanently deferred"; "553 5.7.1 [BL21] ... blocked"
    name: 'yahoo-blocked',
    match: { text: '\\[(TSS09|BL21|BL22|BL23)\\]' },
    action: { kind: 'suspend' },
    durationMs: 4 * HOUR,
  },
  {
    // Any server: "421 4.7.0 Too many connections" (or concurrent sessions) from us.
    name: 'too-many-connections',
    match: { codes: [421, 450, 451], text: 'too many (concurrent )?(connections|sessions)' },
    action: { kind: 'connections', maxConnections: 2 },
    durationMs: 10 * MINUTE,
  },
  {
    // Any server: "554 5.7.1 ... blocked" / "listed" for our address: stop sending there for a while.
    name: 'blocked',
    match: { codes: [550, 554], enhanced: '5.7.1', text: '\\b(blocked|block ?list(ed)?|blacklisted)\\b' },
    action: { kind: 'suspend' },
    durationMs: HOUR,
  },
];
