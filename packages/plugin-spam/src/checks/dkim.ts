// The DKIM verification check (RFC 6376): every signature verified over the header block as it
// arrived (before forged fields were removed), published for DMARC, the score and
// Authentication-Results.
import {
  definePlugin,
  defineResult,
  type HeaderField,
  type HookSpec,
  type MessageView,
  type Plugin,
  parseOptions,
} from '@tern/plugin-api';
import { z } from 'zod';
import { type DkimVerification, verifyDkim } from '../auth.js';
import { createResolver, type MailauthResolver } from '../dns.js';
import { messageBytes } from '../message-bytes.js';
import { CheckScope, dnsOptions, positiveInt, scopeFields } from '../schema.js';

export const DKIM_CHECK = 'spam-dkim';

/** Every DKIM signature of this transaction's message, verified. */
export const dkimResult = defineResult<DkimVerification>('spam.dkim');

export const dkimFields = {
  /** RSA keys shorter than this verify as policy (RFC 8301 asks for 1024 at least). */
  minBitLength: positiveInt.default(1024),
};

export const dkimOptionsSchema = z.strictObject({ ...scopeFields, dns: dnsOptions, ...dkimFields });

export type DkimCheckOptions = z.input<typeof dkimOptionsSchema>;

/** Per transaction: the header block as it arrived, which signatures were made over. */
export interface ReceivedHeadersState {
  received: HeaderField[] | undefined;
}

/** The headers hook that keeps the header block as it arrived: first ('pre'), before any plugin changes it. */
export function receivedHeadersHook<S>(scope: CheckScope): HookSpec<'headers', S, ReceivedHeadersState> {
  return {
    order: 'pre',
    handler(ctx): void {
      if (scope.checksClient(ctx.session)) ctx.transactionState.received = ctx.headers.fields();
    },
  };
}

/** Verifies the message's DKIM signatures over the header block it arrived with. */
export function verifyReceived(
  message: MessageView,
  received: readonly HeaderField[] | undefined,
  sender: string,
  resolver: MailauthResolver,
  minBitLength: number,
): Promise<DkimVerification> {
  return verifyDkim({ message: messageBytes(message, received).stream(), sender, resolver, minBitLength });
}

/** Verifies DKIM signatures for each transaction. Options are validated here. */
export function dkimCheck(options: DkimCheckOptions = {}): Plugin<undefined, ReceivedHeadersState> {
  const opts = parseOptions(DKIM_CHECK, dkimOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  const dns = createResolver(opts.dns);
  return definePlugin<undefined, ReceivedHeadersState>({
    name: DKIM_CHECK,
    publishes: [dkimResult],
    state: { transaction: () => ({ received: undefined }) },
    headers: receivedHeadersHook(scope),
    // 'pre': published before DMARC (order normal) looks for it in the same stage.
    message: {
      order: 'pre',
      handler(ctx): void {
        if (scope.isExempt(ctx.session)) return;
        ctx.results.set(
          dkimResult,
          verifyReceived(
            ctx.message,
            ctx.transactionState.received,
            ctx.transaction.mailFrom,
            dns.mailauth,
            opts.minBitLength,
          ),
        );
      },
    },
  });
}
