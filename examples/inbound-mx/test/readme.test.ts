// This example's README, followed word by word in a fresh copy of the repository: the stand-in LMTP
// mailbox and tern in the background, a message from an Internet client (XCLIENT) checked and
// delivered with its results, GTUBE refused, and tern dns printing the records.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { followReadmeInClone, freePort, type ReadmeTrial } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';

const repo = resolve(import.meta.dirname, '../../..');
let trial: ReadmeTrial | undefined;

afterAll(() => trial?.end());

describe('examples/inbound-mx/README.md, word by word', () => {
  test(
    'the LMTP stand-in, tern, a checked message delivered, GTUBE refused, tern dns',
    { timeout: 240_000 },
    async () => {
      const [mx, lmtp] = [String(await freePort()), String(await freePort())];
      trial = await followReadmeInClone(repo, {
        readme: 'examples/inbound-mx/README.md',
        // "If a port is taken, use others: TERN_PORT=... moves the MX (then --server for swaks), and
        // another --listen port for the mailbox needs the same port in TERN_LMTP."
        env: { TERN_PORT: mx },
        substitute: [
          ['127.0.0.1:2528', `127.0.0.1:${mx}`],
          ['127.0.0.1:2424', `127.0.0.1:${lmtp}`],
        ],
        rules: [
          { match: /tools\/mailbox\.js --lmtp/, background: /mailbox: listening/ },
          { match: /tern start/, background: /listening: mx/ },
          { match: /^ls /, retry: true },
          // "swaks reports it and exits with status 26"
          { match: /GTUBE/, status: 26 },
          // "It exits 1 while any is missing or wrong, as here"
          { match: /tern dns example\.org/, status: 1 },
        ],
      });
      const inbox = join(trial.root, 'examples/inbound-mx/mailbox/alice@example.org');
      const messages = readdirSync(inbox).map((file) => readFileSync(join(inbox, file), 'utf8'));
      expect(messages).toHaveLength(1);
      const [message] = messages;
      expect(message).toMatch(/^Received: from mail\.sender\.example \(\[192\.0\.2\.10\]\)/m);
      expect(message).toMatch(/^Authentication-Results: mx\.example\.org;/m);
      expect(trial.step(/^grep -h -A3/).output).toMatch(/spf=(none|temperror)/);
      expect(trial.step(/^grep -h '\^X-Spam/).output).toMatch(/^X-Spam-Status: No/);
      expect(trial.step(/GTUBE/).output).toMatch(/<\*\* +550 5\.7\.1/);
      const records = trial.step(/tern dns/).output;
      expect(records).toContain('example.org. IN MX 10 mx.example.org.');
      expect(records).toMatch(/^; DMARC /m);
    },
  );
});
