// The quickstart, as a new user runs it: a real `tern start` process on the embedded queue, a
// message from swaks (an independent SMTP client), kill -9 right after the 250, a restart, and
// the message in its Maildir folder.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort, waitFor } from '@tern/testkit';
import { afterEach, describe, expect, test } from 'vitest';

const root = resolve(import.meta.dirname, '../../..');
const cli = join(root, 'apps/mta/dist/cli.js');
const config = resolve(import.meta.dirname, '../tern.config.js');
const children: ChildProcess[] = [];
let dataDir = '';

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function startTern(
  port: number,
  extra: string[] = [],
): Promise<{ child: ChildProcess; stderr: () => string }> {
  let stderr = '';
  const child = spawn(process.execPath, [cli, 'start', '--config', config, ...extra], {
    env: { ...process.env, TERN_PORT: String(port), TERN_DATA: dataDir, TERN_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  await waitFor(() => stderr.includes('listening:') || child.exitCode !== null, 20_000);
  if (child.exitCode !== null) throw new Error(`tern exited ${child.exitCode}: ${stderr}`);
  return { child, stderr: () => stderr };
}

function swaks(port: number, to: string, body: string): { status: number | null; output: string } {
  const run = spawnSync(
    'swaks',
    [
      '--server',
      `127.0.0.1:${port}`,
      '--from',
      'someone@example.net',
      '--to',
      to,
      '--body',
      body,
      '--h-Subject',
      'quickstart',
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  if (run.error) throw new Error(`swaks could not run (apt-get install swaks): ${run.error.message}`);
  return { status: run.status, output: run.stdout + run.stderr };
}

function maildir(user: string): string[] {
  const dir = join(dataDir, 'maildir', user, 'new');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')) : [];
}

describe('quickstart', () => {
  test('accepts, queues and delivers; a 250 survives kill -9', { timeout: 60_000 }, async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'tern-quickstart-'));
    const port = await freePort();

    // Intake only, so the message is still queued when the process dies.
    const first = await startTern(port, ['--no-worker']);
    expect(first.stderr()).toMatch(/queue: embedded at .*queue\.db/);
    const sent = swaks(port, 'alice@example.test', 'survives kill -9');
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    expect(maildir('alice')).toEqual([]);

    await startTern(port);
    await waitFor(() => maildir('alice').length === 1, 15_000);
    const [delivered] = maildir('alice');
    expect(delivered).toContain('Delivered-To: alice@example.test');
    expect(delivered).toContain('Subject: quickstart');
    expect(delivered).toContain('survives kill -9');
    expect(delivered).toMatch(/^Received: from .*\n?\s*by mx\.example\.test \(Tern\)/m);

    // Not an open relay: another domain is refused.
    const relay = swaks(port, 'victim@elsewhere.test', 'relay attempt');
    expect(relay.output).toMatch(/<\*\* +5\d\d 5\.7\.1/);
  });
});
