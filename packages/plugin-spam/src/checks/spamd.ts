// The SpamAssassin check: the message sent to spamd (SPAMC/1.5), its score published for
// spamScore() (which weighs it and applies the failure policy).
import { defineResult, durationSchema, type Plugin, parseOptions, portSchema } from '@tern/plugin-api';
import { z } from 'zod';
import { type ScanResult, scanWithSpamd } from '../scanners.js';
import { CheckScope, positiveInt, scopeFields } from '../schema.js';
import { scannerCheck } from './scanner.js';

export const SPAMD_CHECK = 'spam-spamd';

/** SpamAssassin's verdict on this transaction's message (or why there is none). */
export const spamdResult = defineResult<ScanResult>('spam.spamd');

export const spamdFields = {
  host: z.string().min(1).default('127.0.0.1'),
  port: portSchema().default(783),
  /** A UNIX socket instead of host and port. */
  socketPath: z.string().min(1).optional(),
  /** One deadline for connecting, sending the message and reading the whole reply. */
  timeoutMs: durationSchema({ positive: true }).default(15_000),
  /** The SpamAssassin user whose preferences apply (spamc -u). */
  user: z.string().min(1).optional(),
  /** SYMBOLS also returns the rule names; CHECK only the score. */
  command: z.enum(['SYMBOLS', 'CHECK']).default('SYMBOLS'),
  /** Larger messages are not sent (published as skipped, too-big); spamc's default limit is 500 KiB. */
  maxBytes: positiveInt.default(512_000),
  /** A longer reply is a failure (the failure policy applies): a SYMBOLS reply is a line of rule names. */
  maxReplyBytes: positiveInt.default(64 * 1024),
};

export const spamdOptionsSchema = z.strictObject({ ...scopeFields, ...spamdFields });

export type SpamdCheckOptions = z.input<typeof spamdOptionsSchema>;
export type SpamdOptions = z.output<typeof spamdOptionsSchema>;

/** Scans each message with spamd. Options are validated here. */
export function spamdCheck(options: SpamdCheckOptions = {}): Plugin {
  const opts = parseOptions(SPAMD_CHECK, spamdOptionsSchema, options ?? {});
  return scannerCheck(SPAMD_CHECK, spamdResult, new CheckScope(opts), (message) =>
    scanWithSpamd(opts, message),
  );
}
