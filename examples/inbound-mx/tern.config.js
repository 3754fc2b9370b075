// An inbound MX for example.org: anyone may send mail for it (nobody may relay), spam is filtered
// (DNSBL, SPF, DKIM, DMARC, heuristics, by score), and accepted mail goes to a mailbox server over
// LMTP (Dovecot, Cyrus: 127.0.0.1:24 by default, TERN_LMTP=host:port for another). TERN_PORT,
// TERN_DATA, TERN_DNS and TERN_DNSBL let the example's tests run it in isolation.
import { defineConfig } from '@tern/mta';
import { spamFilter } from '@tern/plugin-spam';

const env = process.env;
const [lmtpHost, lmtpPort] = (env.TERN_LMTP ?? '127.0.0.1:24').split(':');

export default defineConfig({
  hostname: 'mx.example.org',
  localDomains: ['example.org'],
  listeners: [
    {
      name: 'mx',
      kind: 'mx',
      // Production: leave `host` out (every address: the Internet must reach an MX) and make the
      // port 25, which needs root or CAP_NET_BIND_SERVICE (README.md, "In production").
      host: '127.0.0.1',
      port: Number(env.TERN_PORT ?? 2528),
      // A proxy (or swaks --xclient-addr for trying the filter) on this machine may say who the
      // real client is; nobody else may.
      xclient: true,
    },
  ],
  trustedNetworks: ['127.0.0.1/32'],
  queue: { backend: 'embedded', path: `${env.TERN_DATA ?? '.tern-data'}/queue.db` },
  // The dashboard and admin API (quarantined mail is released there): TERN_ADMIN_TOKEN=$(openssl rand -hex 16)
  ...(env.TERN_ADMIN_TOKEN
    ? { admin: { listen: env.TERN_ADMIN_LISTEN ?? '127.0.0.1:8025', token: env.TERN_ADMIN_TOKEN } }
    : {}),
  delivery: {
    local: { domains: ['example.org'], lmtp: { host: lmtpHost, port: Number(lmtpPort ?? 24) } },
  },
  plugins: [
    spamFilter({
      // This machine's resolver (/etc/resolv.conf) unless TERN_DNS=ip:port names another. Public
      // DNSBLs refuse queries from big public resolvers (their answers are logged and ignored): in
      // production run a local caching resolver and name it here, e.g. dns: { servers: ['127.0.0.1'] }.
      ...(env.TERN_DNS ? { dns: { servers: [env.TERN_DNS] } } : {}),
      dnsbl: {
        zones: [
          {
            zone: env.TERN_DNSBL ?? 'zen.spamhaus.org',
            action: 'reject',
            // Spamhaus PBL: end-user address ranges that should not send directly. Not a reason to
            // refuse on its own, but it weighs heavily.
            codes: {
              '127.0.0.10': { name: 'PBL', weight: 9, action: 'score' },
              '127.0.0.11': { name: 'PBL', weight: 9, action: 'score' },
            },
          },
        ],
      },
      // Score actions: tag from 5, hold for review from 10, ask to retry later from 12 (like
      // rspamd's soft reject), refuse from 15.
      actions: { tag: 5, quarantine: 10, tempfail: 12, reject: 15 },
      headers: { subjectPrefix: '[SPAM] ' },
    }),
  ],
});
