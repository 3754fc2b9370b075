// An application relay: apps on this machine hand mail to 127.0.0.1:2526 without AUTH (trusted
// network), Tern signs it with DKIM for example.com (RSA and Ed25519 at once) and delivers it to
// the recipients' MX hosts, or to a smarthost when TERN_SMARTHOST=host:port is set.
// Make the keys first (see README.md). TERN_* variables let the example's test run it in isolation.
import { defineConfig } from '@tern/mta';
import { dkim } from '@tern/plugin-dkim';

const env = process.env;
const data = env.TERN_DATA ?? '.tern-data';
const keys = env.TERN_DKIM_KEYS ?? 'keys';
const [smarthost, smarthostPort] = (env.TERN_SMARTHOST ?? '').split(':');

export default defineConfig({
  hostname: 'relay.example.com',
  listeners: [{ name: 'apps', kind: 'mx', host: '127.0.0.1', port: Number(env.TERN_PORT ?? 2526) }],
  // Only local applications may relay; nothing else is accepted (no local domains).
  trustedNetworks: ['127.0.0.1/32', '::1/128'],
  queue: { backend: 'embedded', path: `${data}/queue.db` },
  delivery: {
    ...(smarthost
      ? { routes: { '*': { type: 'smtp', host: smarthost, port: Number(smarthostPort ?? 25) } } }
      : {}),
    // A private resolver (ip:port), e.g. for tests; default: the system's.
    ...(env.TERN_DNS ? { dns: { servers: [env.TERN_DNS] } } : {}),
    ...(env.TERN_MX_PORT ? { port: Number(env.TERN_MX_PORT) } : {}),
  },
  plugins: [
    dkim({
      domains: {
        'example.com': [
          { selector: 'rsa2026', keyFile: `${keys}/rsa2026.example.com.pem` },
          { selector: 'ed2026', keyFile: `${keys}/ed2026.example.com.pem` },
        ],
      },
    }),
  ],
});
