// Private server processes for tests (redis-server, nsd, unbound): found on PATH or where Debian puts
// them, started in the foreground, ready once they answer, and never left behind by a dying run.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** The first executable of `name` on PATH or in Debian's bin/sbin folders (`override` wins when set). */
export function findBinary(name: string, override?: string): string | undefined {
  const candidates = override
    ? [override]
    : [
        ...(process.env.PATH ?? '')
          .split(delimiter)
          .filter(Boolean)
          .map((dir) => join(dir, name)),
        ...['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/sbin'].map((dir) => join(dir, name)),
      ];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

export interface DaemonOptions {
  /** For error messages: 'redis-server', 'nsd', ... */
  readonly name: string;
  readonly binary: string;
  readonly args: readonly string[];
  readonly cwd: string;
  /** Resolves true once the server answers (polled every 20 ms). */
  readonly ready: () => Promise<boolean>;
  readonly startTimeoutMs?: number;
}

/** A started server process. */
export interface Daemon {
  readonly child: ChildProcess;
  /** The last few KB the process printed. */
  output(): string;
  /** Signals the process (and every process it forked) and waits for it to exit; SIGKILL after 5 s. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Spawns `binary` in its own process group (servers such as nsd fork helpers, and a stop must end them
 * too) and resolves once `ready()` is true. Throws with the process's own words when it exits first.
 */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  installExitHook();
  const child = spawn(options.binary, [...options.args], {
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer): void => {
    // Only the tail matters for an error message.
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  child.once('error', (error) => {
    spawnError = error;
  });
  child.once('exit', (code, signal) => {
    exited = { code, signal };
    running.delete(child);
  });
  const daemon: Daemon = {
    child,
    output: () => output,
    stop: (signal = 'SIGTERM') => terminate(child, signal),
  };

  const timeoutMs = options.startTimeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`${options.name} failed to start: ${spawnError.message}`);
    if (exited) {
      throw new Error(
        `${options.name} exited during start-up (code ${exited.code}, signal ${exited.signal}): ${output.trim()}`,
      );
    }
    if (await options.ready()) return daemon;
    await sleep(20);
  }
  await terminate(child, 'SIGKILL');
  throw new Error(`${options.name} did not become ready within ${timeoutMs} ms: ${output.trim()}`);
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    // The child leads its own process group (detached): a negative pid reaches its forks too.
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

function terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const escalate = setTimeout(() => signalGroup(child, 'SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(escalate);
      resolve();
    });
    signalGroup(child, signal);
  });
}

// A test run that dies before its afterAll must not leave servers behind.
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) signalGroup(child, 'SIGKILL');
  });
}
