// This example's README, followed word by word in a fresh copy of the repository: the certificate
// from openssl, a user from tern user add (password typed on standard input), a Redis, the stand-in
// smarthost and tern in the background, and a message from swaks (STARTTLS, AUTH) in the mailbox.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { followReadmeInClone, freePort, type ReadmeTrial } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';

const repo = resolve(import.meta.dirname, '../../..');
// "type one (this walkthrough uses correct-horse-battery) and press Enter"
const PASSWORD = 'correct-horse-battery\n';
let trial: ReadmeTrial | undefined;

afterAll(() => trial?.end());

describe('examples/submission/README.md, word by word', () => {
  test(
    'openssl, tern user add, Redis, the smarthost stand-in, tern, an authenticated message delivered',
    { timeout: 240_000 },
    async () => {
      const submission = String(await freePort());
      const redis = String(await freePort());
      const mailbox = String(await freePort());
      trial = await followReadmeInClone(repo, {
        readme: 'examples/submission/README.md',
        // "If a port is taken, use others": TERN_PORT and --server for tern, one Redis port in both
        // places, one mailbox port in both places. (Never the Redis on 6379.)
        env: { TERN_PORT: submission },
        substitute: [
          ['127.0.0.1:2587', `127.0.0.1:${submission}`],
          ['6380', redis],
          ['127.0.0.1:2626', `127.0.0.1:${mailbox}`],
        ],
        rules: [
          { match: /tern user add/, input: PASSWORD },
          { match: /^redis-server /, background: /Ready to accept connections/ },
          { match: /tools\/mailbox\.js/, background: /mailbox: listening/ },
          { match: /tern start/, background: /listening: submission/ },
          { match: /^swaks .*--auth-user alice/, input: PASSWORD },
          { match: /^ls /, retry: true },
        ],
      });
      const dir = join(trial.root, 'examples/submission');
      expect(statSync(join(dir, 'certs/key.pem')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, 'users.txt'), 'utf8')).toMatch(/^alice:scrypt\$/m);
      const sent = trial.step(/^swaks/).output;
      expect(sent).toMatch(/<~ {2}235 2\.7\.0/);
      expect(sent).toMatch(/<~ {2}250 2\.0\.0 queued as/);
      const inbox = join(dir, 'mailbox/bob@example.net');
      const [file] = readdirSync(inbox);
      const message = readFileSync(join(inbox, file ?? ''), 'utf8');
      expect(message).toMatch(/with ESMTPSA/);
      expect(message).toMatch(/^From: alice@example\.com/m);
    },
  );
});
