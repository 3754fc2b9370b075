// The custom plugin inside a real tern process, judged by swaks (an independent SMTP client):
// a listed sender gets 250, any other gets the plugin's 550 5.7.1.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, swaks } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTern, type TernProcess } from './tern-process.js';

const dir = mkdtempSync(join(import.meta.dirname, '.tmp-'));
let tern: TernProcess | undefined;
let port: number;

beforeAll(async () => {
  port = await freePort();
  tern = await startTern('tern.config.js', { TERN_PORT: String(port), TERN_DATA: dir });
  expect(tern.output()).toContain('plugins: only-known-senders');
});
afterAll(() => {
  tern?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('only-known-senders in a running MTA', () => {
  test('a listed sender is queued', async () => {
    const sent = await swaks(port, ['--from', 'app@example.com', '--to', 'alice@example.test']);
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
  });
  test('any other sender gets the plugin verdict as 550 5.7.1 at MAIL FROM', async () => {
    const sent = await swaks(port, ['--from', 'stranger@elsewhere.test', '--to', 'alice@example.test']);
    expect(sent.output).toMatch(
      / -> MAIL FROM:<stranger@elsewhere\.test>\n<\*\* +550 5\.7\.1 Sender not allowed here/,
    );
    expect(sent.output).not.toMatch(/queued as/);
  });
});
