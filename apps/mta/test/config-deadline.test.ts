// Loading a config has a deadline: a top-level await that never settles is an error with the fix,
// for check-config and start, and a SIGHUP reload that times out is refused and logged while
// later reloads still work.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { freePort, run, smtpDialog, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { startTern, stopAllTern } from './tern-process.js';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-deadline-'));
afterAll(async () => {
  await stopAllTern();
  rmSync(dir, { recursive: true, force: true });
});

/** A config whose top-level await never settles (and holds nothing open, so node would just exit). */
const stuck = join(dir, 'stuck.config.js');
writeFileSync(
  stuck,
  "await new Promise(() => {});\nexport default { listeners: [{ kind: 'mx' }], localDomains: ['a.test'] };\n",
);

describe('a config that never finishes loading', () => {
  test.each([
    ['check-config --config-timeout 1s', ['check-config', stuck, '--config-timeout', '1s'], {}],
    [
      'start with TERN_CONFIG_TIMEOUT=1500ms',
      ['start', '--config', stuck],
      { TERN_CONFIG_TIMEOUT: '1500ms' },
    ],
  ])('%s: given up with the cause and the fix', async (_, args, env) => {
    const result = await run(process.execPath, [cli, ...args], { env, timeoutMs: 20_000 });
    expect(result.stderr).toMatch(
      /stuck\.config\.js: cannot load\n {2}- loading took longer than 1[05]00 ms and was given up: a top-level await in the config \(or in a module it imports\) never settled/,
    );
    expect(result.stderr).toContain('--config-timeout or TERN_CONFIG_TIMEOUT');
    expect(result.status).toBe(78);
  });
});

describe('SIGHUP with a config that never finishes loading', () => {
  test('is refused and logged, and the next SIGHUP still reloads', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const file = join(dir, 'tern.config.js');
    const text = (gate: boolean): string =>
      `import { definePlugin, reject } from '@tern/plugin-api';
export default {
  hostname: 'tern.test',
  localDomains: ['tern.test'],
  listeners: [{ kind: 'mx', host: '127.0.0.1', port: ${port} }],
  queue: { backend: 'embedded', path: 'queue.db' },
  plugins: [definePlugin({ name: 'gate', mailFrom: () => (${gate} ? reject(550, '5.7.1', 'Closed') : undefined) })],
};
`;
    writeFileSync(file, text(false));
    const tern = await startTern(
      { listeners: [{ port }] },
      { dir, configFile: file, args: ['--config-timeout', '1s'] },
    );

    writeFileSync(file, `await new Promise(() => {});\n${text(true)}`);
    tern.child.kill('SIGHUP');
    await waitFor(() => tern.output().includes('reload refused'), 10_000);
    expect(tern.output()).toMatch(
      /reload refused, still running the previous config: .*loading took longer than 1000 ms/,
    );

    writeFileSync(file, text(true));
    tern.child.kill('SIGHUP');
    await waitFor(() => tern.output().includes('config reloaded'), 10_000);
    const client = await smtpDialog(port);
    await client.read();
    await client.command('EHLO client.test');
    expect(await client.command('MAIL FROM:<a@example.org>')).toBe('550 5.7.1 Closed');
    client.close();
    expect(tern.child.exitCode).toBeNull();
  });
});
