// What the two external scanner checks share: the envelope they send along and the plugin that
// publishes one scan per message.
import {
  definePlugin,
  type MessageContext,
  normalizeIp,
  type Plugin,
  type ResultKey,
} from '@tern/plugin-api';
import { type MessageBytes, messageBytes } from '../message-bytes.js';
import type { ScanEnvelope, ScanResult } from '../scanners.js';
import type { CheckScope } from '../schema.js';

/** The SMTP envelope as a scanner is told it. */
export function scanEnvelope(ctx: MessageContext<unknown, unknown>): ScanEnvelope {
  return {
    ip: normalizeIp(ctx.session.remoteAddress),
    helo: ctx.session.helo,
    mailFrom: ctx.transaction.mailFrom,
    recipients: ctx.transaction.recipients.map((r) => r.address),
    user: ctx.session.user,
    mta: ctx.session.listener.hostname,
    logTag: ctx.transaction.id,
  };
}

/**
 * A scanner check: at the message stage it starts the scan of the message as it stands (forged
 * fields removed) and publishes it pending, so scanners and the other checks run at once; the
 * score waits for it.
 */
export function scannerCheck(
  name: string,
  key: ResultKey<ScanResult>,
  scope: CheckScope,
  scan: (message: MessageBytes, envelope: ScanEnvelope) => Promise<ScanResult>,
): Plugin {
  return definePlugin({
    name,
    publishes: [key],
    message(ctx): void {
      if (scope.isExempt(ctx.session)) return;
      ctx.results.set(key, scan(messageBytes(ctx.message), scanEnvelope(ctx)));
    },
  });
}
