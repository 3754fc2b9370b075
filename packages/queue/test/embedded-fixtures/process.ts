// Runs child.ts in its own node process (TypeScript through jiti) and kills it with SIGKILL.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export interface Child {
  readonly pid: number;
  readonly lines: string[];
  /** Resolves with the first line (seen or to come) that matches; rejects when the child exits first. */
  line(match: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGKILL, then waits until the process is gone. */
  kill(): Promise<void>;
}

export function spawnChild(args: readonly string[]): Child {
  const proc: ChildProcess = spawn(
    process.execPath,
    ['--conditions=tern-source', '--import', 'jiti/register', join(here, 'child.ts'), ...args],
    { cwd: join(here, '..', '..'), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: string[] = [];
  let stderr = '';
  const waiters = new Set<() => void>();
  let exited = false;
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters) w();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exit = once(proc, 'exit').then(() => {
    exited = true;
    for (const w of waiters) w();
  });
  return {
    pid: proc.pid as number,
    lines,
    line(match, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`child printed no line matching ${match} in ${timeoutMs} ms; stderr: ${stderr}`));
        }, timeoutMs);
        const check = (): void => {
          const found = lines.find((l) => match.test(l));
          if (found !== undefined || exited) {
            clearTimeout(timer);
            waiters.delete(check);
            if (found !== undefined) resolve(found);
            else
              reject(
                new Error(`child exited (${proc.exitCode}) before printing ${match}; stderr: ${stderr}`),
              );
          }
        };
        waiters.add(check);
        check();
      });
    },
    async kill() {
      if (!exited) proc.kill('SIGKILL');
      await exit;
    },
  };
}
