// A real `tern start` for the end-to-end tests: the built CLI with one of this example's configs,
// its output (banner on stderr, JSON log lines on stdout) kept for the test to wait on.
import { type ChildProcess, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { waitFor } from '@tern/testkit';

const root = resolve(import.meta.dirname, '../../..');

export interface TernProcess {
  readonly child: ChildProcess;
  /** Everything it printed so far. */
  output(): string;
  stop(): void;
}

/** Starts tern with `config` (a file of this example) and waits until it listens. */
export async function startTern(config: string, env: Record<string, string>): Promise<TernProcess> {
  let output = '';
  const child = spawn(
    process.execPath,
    [join(root, 'apps/mta/dist/cli.js'), 'start', '--config', resolve(import.meta.dirname, '..', config)],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (chunk: Buffer): void => {
    output += chunk;
  };
  child.stderr?.on('data', keep);
  child.stdout?.on('data', keep);
  await waitFor(() => output.includes('listening:') || child.exitCode !== null, 20_000);
  if (child.exitCode !== null) throw new Error(`tern exited ${child.exitCode}: ${output}`);
  return { child, output: () => output, stop: () => child.kill('SIGKILL') };
}
