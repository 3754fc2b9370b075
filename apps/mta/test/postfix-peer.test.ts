// Delivery to an independent receiving MTA: Postfix's smtp-sink, which dumps each message it
// takes (envelope included) to a file. swaks injects; tern queues (embedded) and delivers.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, swaks, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { queuedId, startTern, stopAllTern } from './tern-process.js';

const SMTP_SINK = ['/usr/sbin/smtp-sink', '/usr/bin/smtp-sink'].find((p) => existsSync(p));
const dumps = mkdtempSync(join(tmpdir(), 'tern-postfix-sink-'));
let sink: ChildProcess;
let sinkPort: number;

beforeAll(async () => {
  if (!SMTP_SINK) throw new Error("Postfix's smtp-sink not found: apt-get install postfix (.ci/run does)");
  chmodSync(dumps, 0o777); // smtp-sink drops to user nobody before it writes
  sinkPort = await freePort();
  sink = spawn(SMTP_SINK, ['-u', 'nobody', '-d', `${dumps}/%M.`, `127.0.0.1:${sinkPort}`, '100'], {
    stdio: 'ignore',
  });
  await waitFor(async () => (await swaks(sinkPort, ['--quit-after', 'CONNECT'])).status === 0, 10_000);
});
afterAll(async () => {
  await stopAllTern();
  sink?.kill('SIGKILL');
  rmSync(dumps, { recursive: true, force: true });
});

describe('delivery to a standard receiving MTA', () => {
  test('Postfix smtp-sink receives the message with envelope, trace and body intact', async () => {
    const tern = await startTern({
      localDomains: ['tern.test'],
      trustedNetworks: ['127.0.0.1/32'],
      queue: { backend: 'embedded', path: 'queue.db' },
      delivery: {
        routes: { 'postfix.test': { type: 'smtp', host: '127.0.0.1', port: sinkPort, tls: 'none' } },
      },
    });
    const sent = await swaks(tern.port, [
      '--from',
      'app@sender.test',
      '--to',
      'someone@postfix.test',
      '--h-Subject',
      'to postfix',
      '--body',
      'first line\n.a line that starts with a dot\n..two dots\nlast line',
    ]);
    expect(queuedId(sent.output)).toBeDefined();
    // smtp-sink creates the dump file before it has written it: wait for the end of the message.
    let dump = '';
    await waitFor(() => {
      const [file] = readdirSync(dumps);
      dump = file ? readFileSync(join(dumps, file), 'latin1') : '';
      return dump.includes('last line');
    }, 15_000);
    expect(dump).toMatch(/^X-Mail-Args: <app@sender\.test>/m);
    expect(dump).toMatch(/^X-Rcpt-Args: <someone@postfix\.test>/m);
    expect(dump).toMatch(/^X-Helo-Args: tern\.test$/m);
    expect(dump).toMatch(/^Received: from \S+ \(\[127\.0\.0\.1\]\)\r?\n\s+by tern\.test \(Tern\)/m);
    expect(dump).toContain('Subject: to postfix');
    // Dot-stuffed on the wire by tern, unstuffed by Postfix: the lines arrive as written.
    expect(dump).toMatch(/^first line\r?\n\.a line that starts with a dot\r?\n\.\.two dots\r?\nlast line/m);
  });
});
