// An independent SMTP client (swaks) against real listeners. swaks must be installed (apt-get
// install swaks; CI installs it): without it these tests fail, they are never skipped.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { addUser, FileUserStore } from '../src/index.js';
import { closeAll, LOCAL_DOMAIN, startListener, testTls } from './helpers.js';

interface SwaksResult {
  readonly code: number;
  readonly transcript: string;
}

function swaks(args: string[]): Promise<SwaksResult> {
  return new Promise((resolve, reject) => {
    execFile('swaks', args, { timeout: 20_000 }, (error, stdout, stderr) => {
      const code = (error as NodeJS.ErrnoException | null)?.code;
      if (code === 'ENOENT') {
        reject(new Error('swaks is not installed: apt-get install -y swaks (the CI script installs it)'));
        return;
      }
      const exit = error ? Number((error as { code?: unknown }).code ?? 1) : 0;
      resolve({ code: Number.isNaN(exit) ? 1 : exit, transcript: `${stdout}${stderr}` });
    });
  });
}

let dir: string;
let users: FileUserStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tern-core-swaks-'));
  await addUser(join(dir, 'users'), 'alice', 'correct horse', { N: 1024, r: 8, p: 1 });
  users = await FileUserStore.open(join(dir, 'users'));
});

afterAll(async () => {
  await closeAll();
  await rm(dir, { recursive: true, force: true });
});

describe('swaks', () => {
  test('delivers to a local domain on an mx listener', async () => {
    const h = await startListener();
    const result = await swaks([
      '--server',
      '127.0.0.1',
      '--port',
      String(h.port),
      '--helo',
      'swaks.example',
      '--from',
      'sender@example.org',
      '--to',
      `user@${LOCAL_DOMAIN}`,
      '--header',
      'Subject: hello from swaks',
      '--body',
      'Sent by swaks.',
    ]);
    expect(result.code, result.transcript).toBe(0);
    expect(result.transcript).toMatch(/<- {2}250 2\.0\.0 queued as mem000001/);
    const raw = h.queue.raw(0).toString();
    expect(raw).toMatch(/^Received: from swaks\.example /);
    expect(raw).toContain('Subject: hello from swaks\r\n');
    expect(raw).toContain('Sent by swaks.');
  });

  test('is refused as an open-relay client (exit status non-zero, 554 5.7.1)', async () => {
    const h = await startListener();
    const result = await swaks([
      '--server',
      '127.0.0.1',
      '--port',
      String(h.port),
      '--from',
      'sender@example.org',
      '--to',
      'victim@remote.example',
    ]);
    expect(result.code).not.toBe(0);
    expect(result.transcript).toContain('554 5.7.1 Relay access denied');
    expect(h.queue.attempts).toBe(0);
  });

  test('submits with STARTTLS and AUTH PLAIN, then relays', async () => {
    const h = await startListener({ kind: 'submission', tls: testTls() }, { users });
    const result = await swaks([
      '--server',
      '127.0.0.1',
      '--port',
      String(h.port),
      '--tls',
      '--auth',
      'PLAIN',
      '--auth-user',
      'alice',
      '--auth-password',
      'correct horse',
      '--from',
      'alice@example.org',
      '--to',
      'friend@remote.example',
    ]);
    expect(result.code, result.transcript).toBe(0);
    expect(result.transcript).toContain('235 2.7.0 Authentication successful');
    expect(h.queue.messages[0]?.message.envelope.recipients).toEqual([{ address: 'friend@remote.example' }]);
    expect(h.queue.raw(0).toString()).toMatch(/with ESMTPSA id /);
  });

  test('is refused AUTH LOGIN with a wrong password', async () => {
    const h = await startListener({ kind: 'submission', tls: testTls(), authFailureDelayMs: 0 }, { users });
    const result = await swaks([
      '--server',
      '127.0.0.1',
      '--port',
      String(h.port),
      '--tls',
      '--auth',
      'LOGIN',
      '--auth-user',
      'alice',
      '--auth-password',
      'wrong',
      '--from',
      'alice@example.org',
      '--to',
      'friend@remote.example',
    ]);
    expect(result.code).not.toBe(0);
    expect(result.transcript).toContain('535 5.7.8 Authentication credentials invalid');
    expect(h.queue.attempts).toBe(0);
  });
});
