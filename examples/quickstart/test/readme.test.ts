// The top README's quickstart and this example's README, followed word by word in a fresh copy of
// the repository: their sh blocks run in order, tern in the background, and the message must be in
// the Maildir folder the READMEs name.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { followReadmeInClone, freePort, type ReadmeTrial } from '@tern/testkit';
import { afterEach, describe, expect, test } from 'vitest';

const repo = resolve(import.meta.dirname, '../../..');
let trial: ReadmeTrial | undefined;

afterEach(async () => {
  await trial?.end();
  trial = undefined;
});

/** The messages delivered to alice, in the copy's Maildir. */
function alicesMail(root: string): string[] {
  const dir = join(root, 'examples/quickstart/.tern-data/maildir/alice/new');
  return readdirSync(dir).map((file) => readFileSync(join(dir, file), 'utf8'));
}

// Both READMEs say: if port 2525 is taken, set TERN_PORT and use that port in the swaks commands.
async function anotherPort(): Promise<{ env: Record<string, string>; substitute: [string, string][] }> {
  const port = String(await freePort());
  return { env: { TERN_PORT: port }, substitute: [['127.0.0.1:2525', `127.0.0.1:${port}`]] };
}

describe('the READMEs, word by word', () => {
  test(
    'the top README quickstart: npm ci, npm start, swaks, the message in Maildir',
    { timeout: 300_000 },
    async () => {
      trial = await followReadmeInClone(repo, {
        readme: 'README.md',
        section: 'Quickstart',
        ...(await anotherPort()),
        rules: [
          { match: /^npm ci$/, done: 'the suite runs after npm ci; the copy has its node_modules' },
          // npm start builds every package first.
          { match: /^npm start$/, background: /listening: mx/, readyMs: 240_000 },
          { match: /^ls /, retry: true },
        ],
      });
      expect(trial.step(/^swaks/).output).toMatch(/<- {2}250 2\.0\.0 queued as/);
      const [message] = alicesMail(trial.root);
      expect(message).toContain('Delivered-To: alice@example.test');
      expect(message).toMatch(/^From: you@example\.net/m);
    },
  );

  test(
    'examples/quickstart/README.md: tern start, swaks, the message in Maildir, a relay refused',
    { timeout: 180_000 },
    async () => {
      trial = await followReadmeInClone(repo, {
        readme: 'examples/quickstart/README.md',
        ...(await anotherPort()),
        rules: [
          { match: /tern start/, background: /listening: mx/ },
          { match: /^ls /, retry: true },
          // "swaks reports 554 5.7.1 Relay access denied and exits with status 24"
          { match: /--to bob@elsewhere\.example/, status: 24 },
        ],
      });
      const [message] = alicesMail(trial.root);
      // "The message starts with the Return-Path:, Delivered-To: and Received: lines tern added."
      expect(message).toMatch(
        /^Return-Path: <you@example\.net>\r?\nDelivered-To: alice@example\.test\r?\nReceived: from .*\r?\n\s*by mx\.example\.test \(Tern\)/,
      );
      expect(trial.step(/^cat /).output).toBe(message);
      expect(trial.step(/bob@elsewhere/).output).toMatch(/<\*\* +554 5\.7\.1 Relay access denied/);
    },
  );
});
