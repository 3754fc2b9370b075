// A first plugin: refuse mail for people who moved, and tell the sender where they went.
import { definePlugin, type Plugin, PluginOptionError, reject } from '@tern/plugin-api';

export interface MovedOptions {
  /** Old address → new address. */
  readonly moved: Readonly<Record<string, string>>;
}

const NAME = 'moved-mailboxes';

export function movedMailboxes(options: MovedOptions): Plugin {
  // Options are checked when the config loads: a mistake stops start-up, naming the field.
  if (typeof options?.moved !== 'object' || options.moved === null) {
    throw new PluginOptionError(NAME, 'moved', 'expected an object of old address → new address');
  }
  const moved = new Map<string, string>();
  for (const [from, to] of Object.entries(options.moved)) {
    if (!to.includes('@')) throw new PluginOptionError(NAME, `moved["${from}"]`, 'expected an address');
    moved.set(from.toLowerCase(), to);
  }
  return definePlugin({
    name: NAME,
    rcptTo(ctx) {
      const to = moved.get(ctx.recipient.address.toLowerCase());
      if (to === undefined) return; // no opinion: later plugins and Tern decide
      ctx.log.info({ rcpt: ctx.recipient.address, to }, 'mailbox moved');
      return reject(551, '5.1.6', `User has moved; please try <${to}>`);
    },
  });
}
