// `npx tern` as npm sets it up. npm links a package's bin when it installs it, before anything is
// built: on a fresh clone `npm ci` links nothing when the bin is a build output. Here npm itself
// installs the package (a file: dependency, linked as a workspace is) and `npm exec` runs it.
import { cpSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { run } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';

const app = resolve(import.meta.dirname, '..');
const quickstart = resolve(app, '../../examples/quickstart/tern.config.js');
// Inside the repository: the copy below finds its dependencies in the repository's node_modules.
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-bin-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let projects = 0;

/** A new project that depends on `target` (file:), installed by npm as a user would. */
async function install(target: string): Promise<string> {
  const project = join(dir, `project-${++projects}`);
  mkdirSync(project);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({ name: 'site', private: true, dependencies: { '@tern/mta': `file:${target}` } }),
  );
  const npm = await run(
    'npm',
    [
      'install',
      '--prefix',
      project,
      '--offline',
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
      '--no-package-lock',
    ],
    { timeoutMs: 120_000 },
  );
  expect(npm.status, npm.output).toBe(0);
  return project;
}

/** `npx tern ...` in `project`. */
const npx = (project: string, args: string[]) =>
  run('npm', ['exec', '--prefix', project, '--offline', '--', 'tern', ...args], { timeoutMs: 120_000 });

describe('the tern bin', () => {
  test(
    'a clone that is not built yet: npm links the bin, and it runs tern from its sources',
    { timeout: 300_000 },
    async () => {
      // apps/mta as a fresh clone has it: what git holds, no dist/.
      const clone = join(dir, 'mta');
      for (const part of ['package.json', 'bin', 'src']) {
        if (existsSync(join(app, part))) cpSync(join(app, part), join(clone, part), { recursive: true });
      }
      const project = await install(clone);
      const bin = join(project, 'node_modules/.bin/tern');
      expect(existsSync(bin), 'npm linked no tern bin').toBe(true);
      expect(realpathSync(bin)).toBe(join(clone, 'bin/tern.js'));

      const version = await npx(project, ['--version']);
      expect(version.stderr).toBe('');
      expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
      expect(version.status).toBe(0);
      // A whole command, config file (which imports @tern/mta) included, runs from the sources.
      const check = await npx(project, ['check-config', quickstart]);
      expect(check.stdout).toContain('tern.config.js: valid (1 listener(s), 0 plugin(s))');
      expect(check.status).toBe(0);
    },
  );

  test('a built package: the same bin runs the build', { timeout: 300_000 }, async () => {
    expect(existsSync(join(app, 'dist/cli.js'))).toBe(true);
    const project = await install(app);
    const help = await npx(project, ['dns', '--help']);
    expect(help.stdout).toContain('Usage: tern dns [options] <domain>');
    expect(help.status).toBe(0);
  });
});
