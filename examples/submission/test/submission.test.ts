// The submission example as two real tern processes on one private Redis: STARTTLS before AUTH,
// AUTH before MAIL, and one per-user limit enforced across both processes. swaks is the client.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  freePort,
  makeCertificate,
  run,
  type SmtpSink,
  startRedis,
  startSmtpSink,
  swaks,
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

const send = (port: number, args: string[]) => swaks(port, ['--to', 'bob@example.net', ...args]);
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
  ] as const) {
    const added = await run(process.execPath, [cli, 'user', 'add', '--file', users, user], {
      input: `${password}\n`,
    });
    expect(added.status, added.output).toBe(0);
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
    const plain = await send(port, [
      '--auth',
      'PLAIN',
      '--auth-user',
      'alice',
      '--auth-password',
      'alice-password-1',
    ]);
    expect(plain.output).not.toMatch(/<[-~] {2}235/);
    expect(plain.output).toMatch(/did not advertise authentication/);
    const noAuth = await send(port, ['--tls', '--from', 'alice@example.com']);
    expect(noAuth.output).toMatch(/<~\* +530 5\.7\.0/);
    const wrong = await send(port, asUser('alice', 'not-her-password'));
    expect(wrong.output).toMatch(/<~\* +535 5\.7\.8/);
    const ok = await send(port, [
      ...asUser('alice', 'alice-password-1'),
      '--from',
      'alice@example.com',
      '--h-Subject',
      'first',
    ]);
    expect(ok.output).toMatch(/<~ {2}235 2\.7\.0/);
    expect(ok.output).toMatch(/<~ {2}250 2\.0\.0 queued as/);
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
      const accepted = await send(port, carol);
      expect(accepted.output).toMatch(/<~ {2}250 2\.0\.0 queued as/);
    }
    const fourth = await send(portB, carol);
    expect(fourth.output, fourth.output).toMatch(/<~\* +451 4\.7\.1 .*rate limit.*carol.*try again in/i);
    const fifth = await send(portA, carol);
    expect(fifth.output).toMatch(/<~\* +451 4\.7\.1/);
    const bob = await send(portB, [...asUser('bob', 'bob-password-22'), '--from', 'bob@example.com']);
    expect(bob.output).toMatch(/<~ {2}250 2\.0\.0 queued as/);
  });
});
