// The spamFilter() preset's options: one object in the shape the filter has always taken, built
// from the schemas each check keeps beside it, checked by parseOptions when spamFilter() is
// called so a mistake stops start-up with the field named.
import { parseOptions } from '@tern/plugin-api';
import { z } from 'zod';
import { dkimFields } from './checks/dkim.js';
import { dnsListFields } from './checks/dns-lists.js';
import { greylistFields } from './checks/greylist.js';
import { rspamdFields } from './checks/rspamd.js';
import { dmarcPolicyFields, scannerPolicyFields, scoreFields } from './checks/score.js';
import { spamdFields } from './checks/spamd.js';
import { spfFields } from './checks/spf.js';
import { dnsOptions, scopeFields } from './schema.js';

export const PLUGIN_NAME = 'spam';

const enabled = z.boolean().default(true);

export const spamOptionsSchema = z.strictObject({
  ...scopeFields,
  /** The resolver every check asks. */
  dns: dnsOptions,
  ...dnsListFields,
  spf: z.strictObject({ enabled, ...spfFields }).prefault({}),
  dkim: z.strictObject({ enabled, ...dkimFields }).prefault({}),
  dmarc: z.strictObject({ enabled, ...dmarcPolicyFields }).prefault({}),
  /** Add an Authentication-Results header (RFC 8601) with the SPF, DKIM and DMARC results. */
  authenticationResults: z.boolean().default(true),
  heuristics: z.strictObject({ enabled }).prefault({}),
  ...scoreFields,
  rspamd: z.strictObject({ ...rspamdFields, ...scannerPolicyFields }).optional(),
  spamd: z.strictObject({ ...spamdFields, ...scannerPolicyFields }).optional(),
  greylist: z.strictObject({ enabled, ...greylistFields }).optional(),
});

/** What spamFilter() accepts. */
export type SpamOptions = z.input<typeof spamOptionsSchema>;
/** The options with every default filled in. */
export type ResolvedSpamOptions = z.output<typeof spamOptionsSchema>;

/** Validates and fills in defaults; throws PluginOptionError naming the field. */
export function resolveOptions(input: unknown): ResolvedSpamOptions {
  return parseOptions(PLUGIN_NAME, spamOptionsSchema, input ?? {});
}
