// A submission server for your users: STARTTLS required before AUTH, AUTH required before MAIL, and
// per-user limits that hold across every tern process sharing one Redis. Users live in users.txt
// (`tern user add --file users.txt alice`), the certificate in certs/ (README.md). TERN_REDIS_URL
// names the Redis, TERN_SMARTHOST=host:port a smarthost; TERN_PORT, TERN_CERTS, TERN_USERS,
// TERN_PREFIX and TERN_USER_LIMIT let the example's tests run it in isolation.
import { defineConfig } from '@tern/mta';
import { rateLimit } from '@tern/plugin-ratelimit';

const env = process.env;
const redis = env.TERN_REDIS_URL ?? 'redis://127.0.0.1:6379';
const certs = env.TERN_CERTS ?? 'certs';
const [smarthost, smarthostPort] = (env.TERN_SMARTHOST ?? '').split(':');

export default defineConfig({
  hostname: 'smtp.example.com',
  listeners: [
    {
      name: 'submission',
      kind: 'submission',
      // Production: leave `host` out (every address, so mail clients reach it) and make the port
      // 587, which needs root or CAP_NET_BIND_SERVICE (README.md, "In production").
      host: '127.0.0.1',
      port: Number(env.TERN_PORT ?? 2587),
      // Relative paths start at this file's folder.
      tls: { key: `${certs}/key.pem`, cert: `${certs}/cert.pem` },
    },
  ],
  trustedNetworks: [],
  users: { file: env.TERN_USERS ?? 'users.txt' },
  queue: { backend: 'redis', url: redis, prefix: env.TERN_PREFIX ?? 'tern' },
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
  },
  plugins: [
    rateLimit({
      redis,
      failMode: 'open',
      prefix: `${env.TERN_PREFIX ?? 'tern'}:rl:`,
      rules: [
        // A compromised account cannot burn the domain's reputation: 3 messages an hour each
        // (small, so you can see it refuse the fourth; raise it for real users).
        {
          key: 'user',
          count: 'messages',
          limit: Number(env.TERN_USER_LIMIT ?? 3),
          per: '1h',
          listeners: ['submission'],
        },
        { key: 'ip', count: 'authFailures', limit: 5, per: '15m' },
        { key: 'ip', count: 'connections', limit: 20 },
      ],
    }),
  ],
});
