// This example's README, followed word by word in a fresh copy of the repository: keys made, the
// records printed, the stand-in smarthost and tern in the background, a message from swaks, and the
// message in the smarthost's mailbox with both signatures.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { followReadmeInClone, freePort, type ReadmeTrial } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';

const repo = resolve(import.meta.dirname, '../../..');
let trial: ReadmeTrial | undefined;

afterAll(() => trial?.end());

describe('examples/relay-with-dkim/README.md, word by word', () => {
  test(
    'keygen, tern dns, the smarthost stand-in, a relayed message signed twice',
    { timeout: 240_000 },
    async () => {
      const [relay, mailbox] = [String(await freePort()), String(await freePort())];
      trial = await followReadmeInClone(repo, {
        readme: 'examples/relay-with-dkim/README.md',
        // "If a port is taken, use others: TERN_PORT=... moves the relay (then --server for swaks),
        // and another --listen port for the mailbox needs the same port in TERN_SMARTHOST."
        env: { TERN_PORT: relay },
        substitute: [
          ['127.0.0.1:2526', `127.0.0.1:${relay}`],
          ['127.0.0.1:2626', `127.0.0.1:${mailbox}`],
        ],
        rules: [
          // "the command exits 1 while any is missing or wrong: here it will"
          { match: /tern dns example\.com/, status: 1 },
          { match: /tools\/mailbox\.js/, background: /mailbox: listening/ },
          { match: /tern start/, background: /listening: apps/ },
          { match: /^ls /, retry: true },
        ],
      });
      const dir = join(trial.root, 'examples/relay-with-dkim');
      for (const key of ['rsa2026', 'ed2026']) {
        expect(statSync(join(dir, `keys/${key}.example.com.pem`)).mode & 0o777).toBe(0o600);
      }
      // tern dns prints the records of the keys keygen just made.
      const records = trial.step(/tern dns/).output;
      for (const selector of ['rsa2026', 'ed2026']) {
        const published = /^(\S+ IN TXT .+)$/m.exec(
          trial.step(new RegExp(`--selector ${selector}`)).output,
        )?.[1];
        expect(published).toBeDefined();
        expect(records).toContain(published);
      }
      expect(records).toMatch(/^; SPF /m);
      expect(records).toMatch(/^; DMARC /m);

      const inbox = join(dir, 'mailbox/someone@example.net');
      const [file] = readdirSync(inbox);
      const message = readFileSync(join(inbox, file ?? ''), 'utf8');
      expect(message).toMatch(
        /^DKIM-Signature: v=1; a=rsa-sha256;[\s\S]*?d=example\.com;[\s\S]*?s=rsa2026;/m,
      );
      expect(message).toMatch(/^DKIM-Signature: v=1; a=ed25519-sha256;[\s\S]*?s=ed2026;/m);
      expect(trial.step(/^grep -c/).output.trim()).toBe('2');
    },
  );
});
