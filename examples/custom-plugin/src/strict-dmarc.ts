// A plugin with its own DMARC policy, written against @tern/plugin-api and the result the spam
// filter's DMARC check publishes (`dmarcResult`): mail failing DMARC for a domain that asks for
// rejection (p=reject) is refused with 550 5.7.1, except from the forwarders listed (mailing lists
// and forwarding hosts break the SPF, and sometimes the DKIM, of genuine mail). The spam filter
// itself, with `dmarc: { onReject: 'score' }`, only scores (and so tags) such mail.
import {
  definePlugin,
  NetworkList,
  NetworkListError,
  type Plugin,
  PluginOptionError,
  reject,
  type Verdict,
} from '@tern/plugin-api';
import { dmarcResult } from '@tern/plugin-spam';

export interface StrictDmarcOptions {
  /** Clients whose mail is let through when it fails DMARC: addresses or CIDR blocks. */
  readonly forwarders?: readonly string[];
}

export function strictDmarc(options: StrictDmarcOptions = {}): Plugin {
  let forwarders: NetworkList;
  try {
    forwarders = NetworkList.parse(options.forwarders ?? []);
  } catch (error) {
    if (!(error instanceof NetworkListError)) throw error;
    throw new PluginOptionError(
      'strict-dmarc',
      `forwarders[${error.index}]`,
      `${error.message}: expected an address or a CIDR block such as 198.51.100.0/24`,
    );
  }
  return definePlugin({
    name: 'strict-dmarc',
    message: {
      // After the plugins of normal order, the spam filter among them, whatever the config order:
      // by then the DMARC check has published its result (perhaps still pending: wait for it).
      order: 'post',
      async handler(ctx): Promise<Verdict | void> {
        const dmarc = await ctx.results.wait(dmarcResult);
        if (dmarc?.result !== 'fail' || dmarc.policy !== 'reject') return;
        if (forwarders.contains(ctx.session.remoteAddress)) {
          ctx.log.info({ domain: dmarc.fromDomain }, 'fails DMARC (p=reject) but comes from a forwarder');
          return;
        }
        ctx.log.info({ domain: dmarc.fromDomain }, 'refused: fails DMARC of a p=reject domain');
        return reject(550, '5.7.1', 'Message rejected: its From domain does not authorize it (DMARC)');
      },
    },
  });
}
