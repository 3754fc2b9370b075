// Runs `tern start` as a real process for the operations tests: a JS config (so it can carry
// small plugins written inline), an admin API on a free loopback port with a token file, and
// helpers to call that API and the `tern` command the way an operator does.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort, waitFor } from '@tern/testkit';

const cli = resolve(import.meta.dirname, '../../dist/cli.js');

export interface OpsTern {
  readonly dir: string;
  readonly port: number;
  /** The admin API's base URL, as `tern start` printed it. */
  readonly url: string;
  readonly token: string;
  readonly configFile: string;
  /** The tern process's id (for /proc readings). */
  readonly pid: number;
  output(): string;
  /** Calls the admin API with the token; the body (parsed JSON, or text for /metrics) and status. */
  // biome-ignore lint/suspicious/noExplicitAny: API answers of many shapes, checked by the tests' matchers
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

export interface OpsTernOptions {
  /** JavaScript source of an array of plugins (plain objects), put in the config as `plugins`. */
  readonly plugins?: string;
  readonly args?: readonly string[];
  /** More options for the one mx listener (xclient, limits, ...). */
  readonly listener?: Record<string, unknown>;
}

const started = new Set<OpsTern>();

/** Writes `config` (plus an admin section) as tern.config.mjs and starts tern on it. */
export async function startOpsTern(
  config: Record<string, unknown>,
  options: OpsTernOptions = {},
): Promise<OpsTern> {
  const dir = mkdtempSync(join(tmpdir(), 'tern-ops-'));
  const port = await freePort();
  const token = randomBytes(16).toString('hex');
  writeFileSync(join(dir, 'admin.token'), `${token}\n`, { mode: 0o600 });
  const full = {
    hostname: 'tern.test',
    log: { level: 'info' },
    listeners: [{ kind: 'mx', host: '127.0.0.1', port, ...options.listener }],
    admin: { listen: '127.0.0.1:0', tokenFile: 'admin.token', sampleIntervalMs: 200 },
    ...config,
  };
  const configFile = join(dir, 'tern.config.mjs');
  writeFileSync(
    configFile,
    `export default { ...${JSON.stringify(full, null, 2)}, plugins: ${options.plugins ?? '[]'} };\n`,
  );
  const child: ChildProcess = spawn(
    process.execPath,
    [cli, 'start', '--config', configFile, ...(options.args ?? [])],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout?.on('data', (c) => {
    output += c;
  });
  child.stderr?.on('data', (c) => {
    output += c;
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  await waitFor(() => /dashboard: http/.test(output) || child.exitCode !== null, 20_000).catch(() => {});
  const url = /dashboard: (http:\/\/[^/\s]+)\//.exec(output)?.[1];
  if (child.exitCode !== null || url === undefined) {
    child.kill('SIGKILL');
    throw new Error(`tern did not start:\n${output}`);
  }
  const tern: OpsTern = {
    dir,
    port,
    url,
    token,
    configFile,
    pid: child.pid as number,
    output: () => output,
    async api(method, path, body) {
      const response = await fetch(`${url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await response.text();
      const type = response.headers.get('content-type') ?? '';
      return { status: response.status, body: type.includes('json') ? JSON.parse(text) : text };
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
        await exited;
      }
      started.delete(tern);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  started.add(tern);
  return tern;
}

export async function stopAllOpsTern(): Promise<void> {
  await Promise.all([...started].map((t) => t.stop()));
}

/** Runs the `tern` command to its end without blocking this event loop (sinks keep answering). */
export function tern(
  args: readonly string[],
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => {
    stdout += c;
  });
  child.stderr.on('data', (c) => {
    stderr += c;
  });
  return new Promise((done) => child.once('close', (status) => done({ status, stdout, stderr })));
}
