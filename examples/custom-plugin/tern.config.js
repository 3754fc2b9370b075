// An MTA that uses the custom plugin: an MX for example.test where unauthenticated clients may
// only use the listed envelope senders, on 127.0.0.1:2527 (port 25 in production needs root or
// CAP_NET_BIND_SERVICE). TERN_PORT and TERN_DATA let the example's tests run it.

import { onlyKnownSenders } from '@tern/example-custom-plugin';
import { defineConfig } from '@tern/mta';

const data = process.env.TERN_DATA ?? '.tern-data';

export default defineConfig({
  hostname: 'mx.example.test',
  localDomains: ['example.test'],
  trustedNetworks: [],
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: Number(process.env.TERN_PORT ?? 2527) }],
  queue: { backend: 'embedded', path: `${data}/queue.db` },
  delivery: { routes: { 'example.test': { type: 'maildir', path: `${data}/maildir` } } },
  plugins: [onlyKnownSenders({ senders: ['app@example.com', 'billing@example.com'] })],
});
