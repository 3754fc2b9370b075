// The SPF check (RFC 7208): the MAIL FROM identity and, unless turned off, the HELO identity,
// started at MAIL FROM so the DNS work overlaps RCPT and DATA, published for DMARC, the score and
// Authentication-Results.
import { definePlugin, defineResult, type Plugin, parseOptions, type SessionContext } from '@tern/plugin-api';
import { z } from 'zod';
import { checkSpfHelo, checkSpfMailFrom, type SpfOutcome } from '../auth.js';
import { createResolver } from '../dns.js';
import { CheckScope, dnsOptions, positiveInt, scopeFields } from '../schema.js';

export const SPF_CHECK = 'spam-spf';

export interface SpfResult {
  readonly mailFrom: SpfOutcome;
  /** Undefined when the HELO identity is not checked (`helo: false`). */
  readonly helo: SpfOutcome | undefined;
}

/** The SPF outcomes of this transaction's MAIL FROM and HELO identities. */
export const spfResult = defineResult<SpfResult>('spam.spf');

export const spfFields = {
  /** Also check the HELO identity (RFC 7208 §2.3). */
  helo: z.boolean().default(true),
  /** Whole-evaluation limit (RFC 7208 §4.6.4); past it the result is temperror. */
  timeoutMs: positiveInt.default(10_000),
};

export const spfOptionsSchema = z.strictObject({ ...scopeFields, dns: dnsOptions, ...spfFields });

export type SpfCheckOptions = z.input<typeof spfOptionsSchema>;

/** The SPF outcomes in the order they are reported: MAIL FROM, then HELO. */
export function spfOutcomes(result: SpfResult | undefined): SpfOutcome[] {
  if (!result) return [];
  return result.helo ? [result.mailFrom, result.helo] : [result.mailFrom];
}

/** Checks SPF for each transaction. Options are validated here. */
export function spfCheck(options: SpfCheckOptions = {}): Plugin {
  const opts = parseOptions(SPF_CHECK, spfOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  const dns = createResolver(opts.dns);

  const start = (ctx: Pick<SessionContext<unknown>, 'session' | 'results'>, sender: string): void => {
    if (scope.isExempt(ctx.session) || ctx.results.has(spfResult)) return;
    const check = {
      ip: ctx.session.remoteAddress,
      sender,
      helo: ctx.session.helo,
      mta: ctx.session.listener.hostname,
      resolver: dns.mailauth,
      timeoutMs: opts.timeoutMs,
    };
    ctx.results.set(
      spfResult,
      Promise.all([checkSpfMailFrom(check), opts.helo ? checkSpfHelo(check) : undefined]).then(
        ([mailFrom, helo]) => ({ mailFrom, helo }),
      ),
    );
  };

  return definePlugin({
    name: SPF_CHECK,
    publishes: [spfResult],
    mailFrom(ctx): void {
      start(ctx, ctx.address);
    },
    // When another plugin accepted MAIL FROM first, this check's mailFrom never ran: start here,
    // before ('pre') the checks of this stage that read the result.
    message: {
      order: 'pre',
      handler(ctx): void {
        start(ctx, ctx.transaction.mailFrom);
      },
    },
  });
}
