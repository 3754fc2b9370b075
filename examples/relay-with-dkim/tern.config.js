// An application relay: apps on this machine hand mail to 127.0.0.1:2526 without AUTH (trusted
// network), Tern signs it with DKIM for example.com (RSA and Ed25519 at once) and delivers it to the
// recipients' MX hosts, or through a smarthost when TERN_SMARTHOST=host:port is set. Make the keys
// first (README.md). TERN_PORT, TERN_DATA, TERN_DKIM_KEYS, TERN_DNS and TERN_MX_PORT let the
// example's tests run it in isolation.
import { fileURLToPath } from 'node:url';
import { defineConfig } from '@tern/mta';
import { dkim } from '@tern/plugin-dkim';

const env = process.env;
const data = env.TERN_DATA ?? '.tern-data';
// The keys folder beside this file, wherever tern is started from.
const keys = env.TERN_DKIM_KEYS ?? fileURLToPath(new URL('keys', import.meta.url));
const [smarthost, smarthostPort] = (env.TERN_SMARTHOST ?? '').split(':');

export default defineConfig({
  hostname: 'relay.example.com',
  listeners: [
    // Loopback only, on an unprivileged port; point your applications here. Port 25 or 587 instead
    // needs root or CAP_NET_BIND_SERVICE (README.md, "In production").
    { name: 'apps', kind: 'mx', host: '127.0.0.1', port: Number(env.TERN_PORT ?? 2526) },
  ],
  // Only local applications may relay; nothing else is accepted (no local domains).
  trustedNetworks: ['127.0.0.1/32', '::1/128'],
  queue: { backend: 'embedded', path: `${data}/queue.db` },
  delivery: {
    ...(smarthost
      ? {
          routes: {
            '*': {
              type: 'smtp',
              host: smarthost,
              port: Number(smarthostPort || 587),
              // STARTTLS whenever the smarthost offers it. For a smarthost on the Internet make it
              // 'require' (STARTTLS and a certificate naming `host`) and add its login,
              // auth: { user, pass }, which tern sends only under TLS (README.md, "In production").
              tls: 'opportunistic',
            },
          },
        }
      : {}),
    // MX lookups use this machine's resolver (/etc/resolv.conf); TERN_DNS=ip:port names another.
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
