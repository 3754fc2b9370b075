// Authentication-Results (RFC 8601): written at the queue stage from the SPF, DKIM and DMARC
// checks' results, with the listener's host name as authserv-id; incoming copies that claim that
// authserv-id are forged and removed (RFC 8601 §5).
import { definePlugin, type Plugin, parseOptions } from '@tern/plugin-api';
import { z } from 'zod';
import { type AuthenticationReport, claimsAuthservId, formatAuthenticationResults } from '../auth.js';
import { CheckScope, scopeFields } from '../schema.js';
import { dkimResult } from './dkim.js';
import { dmarcResult } from './dmarc.js';
import { spfOutcomes, spfResult } from './spf.js';

export const AUTHENTICATION_RESULTS = 'spam-authentication-results';

export const authenticationResultsOptionsSchema = z.strictObject({
  ...scopeFields,
  /** Add the header; false only removes forged ones. */
  add: z.boolean().default(true),
});

export type AuthenticationResultsOptions = z.input<typeof authenticationResultsOptionsSchema>;

/** Reports the sender authentication checks in the message. Options are validated here. */
export function authenticationResults(options: AuthenticationResultsOptions = {}): Plugin {
  const opts = parseOptions(AUTHENTICATION_RESULTS, authenticationResultsOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  return definePlugin({
    name: AUTHENTICATION_RESULTS,

    headers(ctx): void {
      // Also for authenticated clients: nobody may bring our verdicts with them. Trusted clients
      // (our own relays, when exempt) may have added them legitimately.
      if (!scope.checksClient(ctx.session)) return;
      const hostname = ctx.session.listener.hostname;
      const forged = ctx.headers.remove('authentication-results', (v) => claimsAuthservId(v, hostname));
      if (forged > 0) {
        ctx.log.info({ authenticationResults: forged }, 'removed incoming fields that claim to be ours');
      }
    },

    async queue(ctx): Promise<void> {
      if (!opts.add || scope.isExempt(ctx.session)) return;
      const { results } = ctx;
      const [spf, dkim, dmarc] = await Promise.all([
        results.wait(spfResult),
        results.wait(dkimResult),
        results.wait(dmarcResult),
      ]);
      // A method that did not run is not reported.
      const report: AuthenticationReport = {
        ...(spf ? { spf: spfOutcomes(spf) } : {}),
        ...(dkim ? { dkim: dkim.signatures } : {}),
        ...(dmarc ? { dmarc } : {}),
      };
      if (!report.spf && !report.dkim && !report.dmarc) return;
      ctx.message.headers.prepend(
        'Authentication-Results',
        formatAuthenticationResults(ctx.session.listener.hostname, report),
      );
    },
  });
}
