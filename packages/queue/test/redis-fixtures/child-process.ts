// Spawns a TypeScript test script in its own node process (through jiti) and reads its lines.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { waitFor } from '@tern/testkit';

const here = dirname(fileURLToPath(import.meta.url));

export interface ChildScript {
  readonly lines: string[];
  /** Waits for a line matching `pattern`; fails with the child's stderr when it exits first. */
  line(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGKILL: no cleanup, no goodbye, as a crash. */
  kill(): Promise<void>;
}

export function spawnScript(script: string, args: readonly string[]): ChildScript {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--conditions=tern-source', '--import', 'jiti/register', join(here, script), ...args],
    { cwd: join(here, '..', '..'), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: string[] = [];
  let stderr = '';
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => lines.push(l));
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit');
  return {
    lines,
    async line(pattern, timeoutMs = 15_000) {
      await waitFor(() => {
        if (child.exitCode !== null) throw new Error(`child exited (${child.exitCode}): ${stderr}`);
        return lines.some((l) => pattern.test(l));
      }, timeoutMs).catch((error: Error) => {
        throw new Error(`${error.message}\nchild stderr: ${stderr}`);
      });
      return lines.find((l) => pattern.test(l)) as string;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}
