// The DMARC check (RFC 7489): SPF (MAIL FROM) or DKIM passing aligned with the From domain, and
// the policy that domain asks for, published for the score, Authentication-Results and any
// plugin with its own policy. It reads the SPF and DKIM checks' results; without a DKIM check it
// verifies the signatures itself (and publishes only the DMARC outcome).
import { definePlugin, defineResult, type Plugin, parseOptions } from '@tern/plugin-api';
import { z } from 'zod';
import { type DmarcOutcome, evaluateDmarc } from '../auth.js';
import { createResolver } from '../dns.js';
import { CheckScope, dnsOptions, scopeFields } from '../schema.js';
import {
  dkimFields,
  dkimResult,
  type ReceivedHeadersState,
  receivedHeadersHook,
  verifyReceived,
} from './dkim.js';
import { spfResult } from './spf.js';

export const DMARC_CHECK = 'spam-dmarc';

/** This transaction's DMARC outcome: result, From domain and the policy that applies. */
export const dmarcResult = defineResult<DmarcOutcome>('spam.dmarc');

export const dmarcOptionsSchema = z.strictObject({
  ...scopeFields,
  dns: dnsOptions,
  /** For the signatures it verifies itself, when no DKIM check runs. */
  ...dkimFields,
});

export type DmarcCheckOptions = z.input<typeof dmarcOptionsSchema>;

/** Evaluates DMARC for each transaction. Place it after the SPF and DKIM checks. Options are validated here. */
export function dmarcCheck(options: DmarcCheckOptions = {}): Plugin<undefined, ReceivedHeadersState> {
  const opts = parseOptions(DMARC_CHECK, dmarcOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  const dns = createResolver(opts.dns);
  return definePlugin<undefined, ReceivedHeadersState>({
    name: DMARC_CHECK,
    publishes: [dmarcResult],
    state: { transaction: () => ({ received: undefined }) },
    headers: receivedHeadersHook(scope),
    message(ctx): void {
      if (scope.isExempt(ctx.session)) return;
      const { results, transaction, message } = ctx;
      // Looked up now, synchronously: the DKIM check published (a pending result) earlier in this
      // stage, or it is not there at all.
      const dkimPublished = results.has(dkimResult);
      const received = ctx.transactionState.received;
      const evaluate = async (): Promise<DmarcOutcome> => {
        const dkim = dkimPublished
          ? await results.wait(dkimResult)
          : await verifyReceived(message, received, transaction.mailFrom, dns.mailauth, opts.minBitLength);
        if (!dkim) throw new Error('DKIM verification failed, so DMARC cannot be evaluated');
        const spf = await results.wait(spfResult);
        return await evaluateDmarc({ dkim, spf: spf?.mailFrom, resolver: dns.mailauth });
      };
      results.set(dmarcResult, evaluate());
    },
  });
}
