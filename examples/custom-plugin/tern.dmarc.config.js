// An MX for example.org whose spam filter only tags mail that fails DMARC for a p=reject domain
// (dmarc.onReject: 'score'), while the custom strict-dmarc plugin refuses it with 550 5.7.1,
// except from the forwarder network listed. It listens on 127.0.0.1:2529 and asks this machine's
// resolver; TERN_PORT, TERN_DATA and TERN_DNS let the example's test run it against its own DNS
// server. A trusted proxy (or swaks --xclient-addr) on this machine may name the real client.
import { strictDmarc } from '@tern/example-custom-plugin';
import { defineConfig } from '@tern/mta';
import { spamFilter } from '@tern/plugin-spam';

const env = process.env;
const data = env.TERN_DATA ?? '.tern-data';

export default defineConfig({
  hostname: 'mx.example.org',
  localDomains: ['example.org'],
  trustedNetworks: ['127.0.0.1/32'],
  listeners: [
    { name: 'mx', kind: 'mx', host: '127.0.0.1', port: Number(env.TERN_PORT ?? 2529), xclient: true },
  ],
  queue: { backend: 'embedded', path: `${data}/queue.db` },
  delivery: { routes: { 'example.org': { type: 'maildir', path: `${data}/maildir` } } },
  plugins: [
    spamFilter({
      ...(env.TERN_DNS ? { dns: { servers: [env.TERN_DNS] } } : {}),
      // Score a p=reject failure (tagged from 5), do not refuse it: strict-dmarc decides that.
      dmarc: { onReject: 'score' },
    }),
    strictDmarc({ forwarders: ['198.51.100.0/24'] }),
  ],
});
