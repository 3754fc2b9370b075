// The submission example as two real tern processes on one private Redis: STARTTLS before AUTH,
// AUTH before MAIL, and one per-user limit enforced across both processes. swaks is the client.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  freePort,
  makeCertificate,
  type SmtpSink,
  startRedis,
  startSmtpSink,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = resolve(import.meta.dirname, '../../..');
const cli = join(root, 'apps/mta/dist/cli.js');
const config = resolve(import.meta.dirname, '../tern.config.js');
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-'));
const children: ChildProcess[] = [];
let redis: TestRedis;
let sink: SmtpSink;
let env: Record<string, string>;

function run(
  command: string,
  args: string[],
  input = '',
  extraEnv = {},
): Promise<{ status: number | null; out: string }> {
  const child = spawn(command, args, {
    env: { ...process.env, ...extraEnv },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c) => {
    out += c;
  });
  child.stderr.on('data', (c) => {
    out += c;
  });
  child.stdin.end(input);
  return new Promise((done, fail) => {
    child.once('error', fail);
    child.once('close', (status) => done({ status, out }));
  });
}

async function startTern(port: number): Promise<void> {
  let output = '';
  const child = spawn(process.execPath, [cli, 'start', '--config', config], {
    env: { ...process.env, ...env, TERN_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  child.stderr?.on('data', (c) => {
    output += c;
  });
  child.stdout?.on('data', (c) => {
    output += c;
  });
  await waitFor(() => output.includes('listening:') || child.exitCode !== null, 20_000);
  if (child.exitCode !== null) throw new Error(output);
}

const swaks = (port: number, args: string[]) =>
  run('swaks', ['--server', `127.0.0.1:${port}`, '--to', 'bob@example.net', ...args]);
const asUser = (user: string, password: string) => [
  '--tls',
  '--auth',
  'PLAIN',
  '--auth-user',
  user,
  '--auth-password',
  password,
];

beforeAll(async () => {
  redis = await startRedis({ appendonly: true });
  sink = await startSmtpSink({ hostname: 'smarthost.example.net' });
  const certs = join(dir, 'certs');
  mkdirSync(certs);
  const pair = makeCertificate(['smtp.example.com', 'localhost']);
  writeFileSync(join(certs, 'key.pem'), pair.key);
  writeFileSync(join(certs, 'cert.pem'), pair.cert);
  const users = join(dir, 'users.txt');
  for (const [user, password] of [
    ['alice', 'alice-password-1'],
    ['bob', 'bob-password-22'],
    ['carol', 'carol-password-333'],
  ]) {
    const added = await run(process.execPath, [cli, 'user', 'add', '--file', users, user], `${password}\n`);
    expect(added.status, added.out).toBe(0);
  }
  env = {
    TERN_REDIS_URL: redis.url,
    TERN_CERTS: certs,
    TERN_USERS: users,
    TERN_PREFIX: 'submission-test',
    TERN_SMARTHOST: `127.0.0.1:${sink.port}`,
    TERN_LOG_LEVEL: 'warn',
  };
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all([redis?.stop(), sink?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('submission example', () => {
  test('STARTTLS before AUTH, AUTH before MAIL, wrong passwords refused', { timeout: 60_000 }, async () => {
    const port = await freePort();
    await startTern(port);
    const plain = await swaks(port, [
      '--auth',
      'PLAIN',
      '--auth-user',
      'alice',
      '--auth-password',
      'alice-password-1',
    ]);
    expect(plain.out).not.toMatch(/<[-~] {2}235/);
    expect(plain.out).toMatch(/did not advertise authentication/);
    const noAuth = await swaks(port, ['--tls', '--from', 'alice@example.com']);
    expect(noAuth.out).toMatch(/<~\* +530 5\.7\.0/);
    const wrong = await swaks(port, asUser('alice', 'not-her-password'));
    expect(wrong.out).toMatch(/<~\* +535 5\.7\.8/);
    const ok = await swaks(port, [
      ...asUser('alice', 'alice-password-1'),
      '--from',
      'alice@example.com',
      '--h-Subject',
      'first',
    ]);
    expect(ok.out).toMatch(/<~ {2}235 2\.7\.0/);
    expect(ok.out).toMatch(/<~ {2}250 2\.0\.0 queued as/);
    await waitFor(() => sink.messages.some((m) => m.headers.includes('Subject: first')), 15_000);
    const delivered = sink.messages.find((m) => m.headers.includes('Subject: first'))!;
    expect(delivered.headers).toMatch(/with ESMTPSA/);
    expect(delivered.headers).toMatch(/^Message-I[Dd]: /m);
  });

  test('one per-user limit across two processes; other users still send', { timeout: 60_000 }, async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    await startTern(portA);
    await startTern(portB);
    const carol = [...asUser('carol', 'carol-password-333'), '--from', 'carol@example.com'];
    // Three an hour: two on one process and one on the other fit; the fourth is refused on both.
    for (const port of [portA, portB, portA]) {
      const accepted = await swaks(port, carol);
      expect(accepted.out).toMatch(/<~ {2}250 2\.0\.0 queued as/);
    }
    const fourth = await swaks(portB, carol);
    expect(fourth.out, fourth.out).toMatch(/<~\* +451 4\.7\.1 .*rate limit.*carol.*try again in/i);
    const fifth = await swaks(portA, carol);
    expect(fifth.out).toMatch(/<~\* +451 4\.7\.1/);
    const bob = await swaks(portB, [...asUser('bob', 'bob-password-22'), '--from', 'bob@example.com']);
    expect(bob.out).toMatch(/<~ {2}250 2\.0\.0 queued as/);
  });
});
