// The quickstart MTA: an MX for example.test on 127.0.0.1:2525 that files mail into Maildir
// folders under .tern-data/maildir/<user>/new, queued in the embedded store (nothing to install).
// TERN_PORT and TERN_DATA move the port and the data folder (the example's tests use them).
import { defineConfig } from '@tern/mta';

const data = process.env.TERN_DATA ?? '.tern-data';

export default defineConfig({
  hostname: 'mx.example.test',
  localDomains: ['example.test'],
  // Nobody relays through the quickstart, not even localhost: it only receives for example.test.
  trustedNetworks: [],
  listeners: [
    {
      name: 'mx',
      kind: 'mx',
      // Production: leave `host` out (every address) and make the port 25, which needs root or
      // CAP_NET_BIND_SERVICE (README.md, "In production").
      host: '127.0.0.1',
      port: Number(process.env.TERN_PORT ?? 2525),
    },
  ],
  // Relative paths start at this file's folder, wherever tern is started from.
  queue: { backend: 'embedded', path: `${data}/queue.db` },
  delivery: { routes: { 'example.test': { type: 'maildir', path: `${data}/maildir` } } },
});
