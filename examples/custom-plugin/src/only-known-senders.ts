// A plugin written only against the public plugin API: unauthenticated clients may only use
// listed envelope senders. It shows option validation, a verdict and typed transaction state.
import { definePlugin, type Plugin, PluginOptionError, reject } from '@tern/plugin-api';

export interface OnlyKnownSendersOptions {
  /** Envelope senders an unauthenticated client may use (case-insensitive). */
  readonly senders: readonly string[];
}

export function onlyKnownSenders(options: OnlyKnownSendersOptions): Plugin<undefined, { refused: number }> {
  if (!Array.isArray(options?.senders)) {
    throw new PluginOptionError('only-known-senders', 'senders', 'expected a list of addresses');
  }
  options.senders.forEach((sender, i) => {
    if (typeof sender !== 'string' || !sender.includes('@')) {
      throw new PluginOptionError(
        'only-known-senders',
        `senders[${i}]`,
        'expected an address like app@example.com',
      );
    }
  });
  const known = new Set(options.senders.map((s) => s.toLowerCase()));
  return definePlugin({
    name: 'only-known-senders',
    state: { transaction: () => ({ refused: 0 }) },
    mailFrom(ctx) {
      if (ctx.session.user) return; // authenticated users may send as anyone
      if (!known.has(ctx.address.toLowerCase())) {
        ctx.transactionState.refused += 1;
        ctx.log.info({ sender: ctx.address }, 'unknown sender');
        return reject(550, '5.7.1', 'Sender not allowed here');
      }
    },
  });
}
