// Runs `tern start` as a real child process from a config object, for end-to-end tests.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { freePort, waitFor } from '@tern/testkit';

const cli = resolve(import.meta.dirname, '../dist/cli.js');

export interface TernProcess {
  readonly port: number;
  readonly dir: string;
  readonly child: ChildProcess;
  output(): string;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM, and wait for the exit code. */
  stop(): Promise<number | null>;
}

const running = new Set<TernProcess>();
/** Every folder this file made, removed at the end even for processes a test killed itself. */
const folders = new Set<string>();

/** Writes `config` (listeners get a free port when they have none) and starts tern on it. */
export async function startTern(
  config: Record<string, unknown> & { listeners?: Record<string, unknown>[] },
  options: {
    args?: string[];
    dir?: string;
    /** Run this config file instead of writing `config`. */
    configFile?: string;
  } = {},
): Promise<TernProcess> {
  const dir = options.dir ?? mkdtempSync(join(import.meta.dirname, '.tmp-tern-'));
  folders.add(dir);
  const port = await freePort();
  const listeners = config.listeners ?? [{ kind: 'mx' }];
  const full = {
    hostname: 'tern.test',
    log: { level: 'info' },
    ...config,
    listeners: listeners.map((l, i) => ({ host: '127.0.0.1', port: i === 0 ? port : 0, ...l })),
  };
  const configFile = options.configFile ?? join(dir, 'tern.config.json');
  if (!options.configFile) writeFileSync(configFile, JSON.stringify(full, null, 2));
  const child = spawn(process.execPath, [cli, 'start', '--config', configFile, ...(options.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (c) => {
    output += c;
  });
  child.stderr?.on('data', (c) => {
    output += c;
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const proc: TernProcess = {
    port: ((full.listeners[0] as { port?: number }).port ?? port) as number,
    dir,
    child,
    output: () => output,
    async kill() {
      child.kill('SIGKILL');
      await exited;
      running.delete(proc);
    },
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      running.delete(proc);
      return code;
    },
  };
  running.add(proc);
  await waitFor(() => output.includes('tern started') || child.exitCode !== null, 20_000).catch(() => {});
  if (child.exitCode !== null || !output.includes('tern started')) {
    await proc.kill();
    throw new Error(`tern did not start:\n${output}`);
  }
  return proc;
}

/** Kills every tern this file started and removes their folders. */
export async function stopAllTern(): Promise<void> {
  for (const proc of [...running]) await proc.kill();
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
  folders.clear();
}

/** The queue id from swaks' transcript of a `250 2.0.0 queued as <id>`, or undefined. */
export function queuedId(output: string): string | undefined {
  return /<- {2}250 2\.0\.0 queued as (\S+)/.exec(output)?.[1];
}
