import { describe, expect, test } from 'vitest';
import { run } from '../src/index.js';

describe('run', () => {
  test('passes input and environment, collects output and status', async () => {
    const result = await run(
      process.execPath,
      ['-e', 'process.stdin.pipe(process.stdout); console.error(process.env.RUN_X); process.exitCode = 3'],
      {
        input: 'hello',
        env: { RUN_X: 'x-value' },
      },
    );
    expect(result).toMatchObject({ status: 3, stdout: 'hello', stderr: 'x-value\n' });
  });
  test('rejects clearly when the command is missing', async () => {
    await expect(run('no-such-command-here', [])).rejects.toThrow(/no-such-command-here could not run/);
  });
});
