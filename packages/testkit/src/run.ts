// Runs a command (tern, swaks, a verifier) without blocking the test's event loop: the test's own
// DNS server and SMTP sinks keep answering while the command talks to them. spawnSync would
// freeze them and turn every lookup into a timeout.
import { spawn } from 'node:child_process';

export interface RunResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout and stderr interleaved as they arrived. */
  readonly output: string;
}

export interface RunOptions {
  /** Written to standard input, then closed. */
  readonly input?: string | Buffer;
  /** Added to `baseEnv`. */
  readonly env?: Record<string, string>;
  /** The environment `env` is added to (default: this process's). */
  readonly baseEnv?: NodeJS.ProcessEnv;
  /** The working folder (default: this process's). */
  readonly cwd?: string;
  readonly timeoutMs?: number;
}

/** Runs `command` to its end; rejects when it cannot start (for example, not installed). */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const child = spawn(command, args, {
    env: { ...(options.baseEnv ?? process.env), ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
  });
  let stdout = '';
  let stderr = '';
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk;
    output += chunk;
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk;
    output += chunk;
  });
  child.stdin.on('error', () => {}); // a command that exits without reading its input
  child.stdin.end(options.input ?? '');
  return new Promise((resolve, reject) => {
    child.once('error', (error) =>
      reject(new Error(`${command} could not run: ${error.message} (is it installed? .ci/run installs it)`)),
    );
    child.once('close', (status) => resolve({ status, stdout, stderr, output }));
  });
}

/** swaks, the independent SMTP client used for acceptance, with `--server 127.0.0.1:port`. */
export function swaks(port: number, args: readonly string[]): Promise<RunResult> {
  return run('swaks', ['--server', `127.0.0.1:${port}`, ...args]);
}
