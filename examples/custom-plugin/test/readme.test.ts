// This example's README, followed word by word in a fresh copy of the repository: tern with the
// custom plugin in the background, a listed sender delivered into Maildir, another refused by the
// plugin, and the plugins' unit tests run as the README says.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { followReadmeInClone, freePort, type ReadmeTrial } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';

const repo = resolve(import.meta.dirname, '../../..');
let trial: ReadmeTrial | undefined;

afterAll(() => trial?.end());

describe('examples/custom-plugin/README.md, word by word', () => {
  test(
    'tern with only-known-senders, a listed sender delivered, another refused, the unit tests',
    { timeout: 240_000 },
    async () => {
      const port = String(await freePort());
      trial = await followReadmeInClone(repo, {
        readme: 'examples/custom-plugin/README.md',
        // "If port 2527 is taken, start tern with TERN_PORT=... and use that port in the swaks commands."
        env: { TERN_PORT: port },
        substitute: [['127.0.0.1:2527', `127.0.0.1:${port}`]],
        rules: [
          { match: /tern start/, background: /plugins: only-known-senders/ },
          { match: /^ls /, retry: true },
          // "swaks reports it and exits with status 23"
          { match: /--from stranger@/, status: 23 },
        ],
      });
      const inbox = join(trial.root, 'examples/custom-plugin/.tern-data/maildir/alice/new');
      const [file] = readdirSync(inbox);
      expect(readFileSync(join(inbox, file ?? ''), 'utf8')).toMatch(/^From: app@example\.com/m);
      expect(trial.step(/--from stranger@/).output).toMatch(
        / -> MAIL FROM:<stranger@elsewhere\.example>\n<\*\* +550 5\.7\.1 Sender not allowed here/,
      );
      const unit = stripVTControlCharacters(trial.step(/vitest run/).output);
      expect(unit).toMatch(/only-known-senders\.test\.ts/);
      expect(unit).toMatch(/strict-dmarc\.test\.ts/);
      expect(unit).toMatch(/Test Files +2 passed/);
    },
  );
});
