// An MTA that uses the custom plugin: an MX for example.test where unauthenticated clients may
// only use the listed envelope senders. TERN_PORT and TERN_DATA let the example's test run it.

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
