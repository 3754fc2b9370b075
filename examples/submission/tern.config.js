// A submission server for your users: port 587, STARTTLS required before AUTH, AUTH required
// before MAIL, and per-user limits that hold across every tern process sharing one Redis.
// Users live in users.txt (`tern user add --file users.txt alice`). TERN_* variables let the
// example's test run it in isolation.
import { defineConfig } from '@tern/mta';
import { rateLimit } from '@tern/plugin-ratelimit';

const env = process.env;
const redis = env.TERN_REDIS_URL ?? 'redis://127.0.0.1:6379';
const certs = env.TERN_CERTS ?? 'certs';

export default defineConfig({
  hostname: 'smtp.example.com',
  listeners: [
    {
      name: 'submission',
      kind: 'submission',
      port: Number(env.TERN_PORT ?? 587),
      tls: { key: `${certs}/key.pem`, cert: `${certs}/cert.pem` },
    },
  ],
  trustedNetworks: [],
  users: { file: env.TERN_USERS ?? 'users.txt' },
  queue: { backend: 'redis', url: redis, prefix: env.TERN_PREFIX ?? 'tern' },
  delivery: {
    ...(env.TERN_SMARTHOST
      ? {
          routes: {
            '*': {
              type: 'smtp',
              host: env.TERN_SMARTHOST.split(':')[0],
              port: Number(env.TERN_SMARTHOST.split(':')[1] ?? 25),
              tls: 'none',
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
        // (small, so the example's test can show it; raise it for real users).
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
