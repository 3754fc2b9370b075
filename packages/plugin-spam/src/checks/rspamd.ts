// The rspamd check: the message POSTed to rspamd's /checkv2, its score published for spamScore()
// (which weighs it and applies the failure policy).
import { defineResult, durationSchema, type Plugin, parseOptions } from '@tern/plugin-api';
import { z } from 'zod';
import { type ScanResult, scanWithRspamd } from '../scanners.js';
import { CheckScope, positiveInt, scopeFields } from '../schema.js';
import { scannerCheck } from './scanner.js';

export const RSPAMD_CHECK = 'spam-rspamd';

/** rspamd's verdict on this transaction's message (or why there is none). */
export const rspamdResult = defineResult<ScanResult>('spam.rspamd');

export const rspamdFields = {
  /** The normal worker, whose /checkv2 scans (default port 11333). */
  url: z
    .url({
      protocol: /^https?$/,
      error: 'expected an http:// or https:// URL such as http://127.0.0.1:11333',
    })
    .default('http://127.0.0.1:11333'),
  /** One deadline for connecting, sending the message and reading the whole reply. */
  timeoutMs: durationSchema({ positive: true }).default(15_000),
  password: z.string().optional(),
  settingsId: z.string().optional(),
  /** Larger messages are not sent (published as skipped, too-big). rspamd's own max_message is 50 MiB. */
  maxBytes: positiveInt.default(50 * 1024 * 1024),
  /** A longer reply is a failure (the failure policy applies): rspamd's JSON is a few KiB. */
  maxReplyBytes: positiveInt.default(1024 * 1024),
};

export const rspamdOptionsSchema = z.strictObject({ ...scopeFields, ...rspamdFields });

export type RspamdCheckOptions = z.input<typeof rspamdOptionsSchema>;
export type RspamdOptions = z.output<typeof rspamdOptionsSchema>;

/** Scans each message with rspamd. Options are validated here. */
export function rspamdCheck(options: RspamdCheckOptions = {}): Plugin {
  const opts = parseOptions(RSPAMD_CHECK, rspamdOptionsSchema, options ?? {});
  return scannerCheck(RSPAMD_CHECK, rspamdResult, new CheckScope(opts), (message, envelope) =>
    scanWithRspamd(opts, message, envelope),
  );
}
