// The README follower: which commands it reads from a README, how it runs them (a reader's shell:
// cd and export carry over, servers in the background, exit statuses as the README says), and the
// copy of a repository it runs them in.
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { cloneForReadme, type FollowedReadme, followReadme, readmeCommands } from '../src/readme.js';
import { waitFor } from '../src/wait.js';

const folders: string[] = [];
let followed: FollowedReadme | undefined;

afterEach(async () => {
  await followed?.stop();
  followed = undefined;
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

/** A folder holding README.md with `markdown` (and `sub/`). */
function readmeFolder(markdown: string): string {
  const folder = mkdtempSync(join(tmpdir(), 'readme-test-'));
  folders.push(folder);
  mkdirSync(join(folder, 'sub'));
  writeFileSync(join(folder, 'README.md'), markdown);
  return folder;
}

const sh = (...lines: string[]): string => ['```sh', ...lines, '```', ''].join('\n');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('readmeCommands', () => {
  test('sh blocks only, continued lines joined, comments and blank lines left out, with their lines', () => {
    const markdown = [
      '# Title',
      '',
      '```sh',
      'cd somewhere',
      '# a comment',
      '',
      'tern start \\',
      '  --config x.js   # trailing comment stays',
      '```',
      '',
      '```js',
      'notACommand();',
      '```',
      '',
      '```',
      'plain block',
      '```',
      '',
      '```bash',
      'echo bash too',
      '```',
    ].join('\n');
    expect(readmeCommands(markdown)).toEqual([
      { text: 'cd somewhere', line: 4 },
      { text: 'tern start \\\n  --config x.js   # trailing comment stays', line: 7 },
      { text: 'echo bash too', line: 20 },
    ]);
  });

  test('a fence indented in a list item loses its indent', () => {
    const markdown = ['1. Step one:', '', '   ```sh', '   cd sub', '   ls', '   ```', ''].join('\n');
    expect(readmeCommands(markdown).map((c) => c.text)).toEqual(['cd sub', 'ls']);
  });

  test('a section: from its heading to the next heading of its level, subsections included', () => {
    const markdown = [
      '## Before',
      sh('echo before'),
      '## Quickstart',
      sh('echo one'),
      '### Detail',
      sh('echo two'),
      '## After',
      sh('echo after'),
    ].join('\n');
    expect(readmeCommands(markdown, { section: 'Quickstart' }).map((c) => c.text)).toEqual([
      'echo one',
      'echo two',
    ]);
    expect(() => readmeCommands(markdown, { section: 'Missing' })).toThrow(/no heading "Missing"/);
  });

  test('a here-document is refused', () => {
    expect(() => readmeCommands(sh('cat > f <<EOF', 'x', 'EOF'))).toThrow(/line 2: here-documents/);
  });
});

describe('followReadme', () => {
  test('cd and export carry over from one command to the next, however quick', async () => {
    const folder = readmeFolder(
      sh('cd sub', 'cd ..', 'cd sub', 'export GREETING=hello', 'echo "$GREETING from $(basename "$PWD")"'),
    );
    followed = await followReadme({ clone: folder, readme: 'README.md' });
    expect(followed.steps.at(-1)?.output).toBe('hello from sub\n');
    expect(followed.cwd).toBe(join(folder, 'sub'));
  });

  test('a command that fails stops it, naming the README line and the output', async () => {
    const folder = readmeFolder(sh('true', 'echo oops >&2; exit 3', 'touch never-made'));
    await expect(followReadme({ clone: folder, readme: 'README.md' })).rejects.toThrow(
      /README\.md:3: echo oops >&2; exit 3\nexited 3, the README expects 0:\noops/,
    );
    expect(existsSync(join(folder, 'never-made'))).toBe(false);
  });

  test('an exit status the README announces is expected, and only that one', async () => {
    const folder = readmeFolder(sh('exit 24'));
    followed = await followReadme({
      clone: folder,
      readme: 'README.md',
      rules: [{ match: /exit/, status: 24 }],
    });
    expect(followed.step(/exit/).status).toBe(24);
    await expect(
      followReadme({ clone: folder, readme: 'README.md', rules: [{ match: /exit/, status: 1 }] }),
    ).rejects.toThrow(/exited 24, the README expects 1/);
  });

  test('a rule that matches no command is an error: the README changed under the test', async () => {
    const folder = readmeFolder(sh('true'));
    await expect(
      followReadme({ clone: folder, readme: 'README.md', rules: [{ match: /tern start/, background: /x/ }] }),
    ).rejects.toThrow(/no command matches the rule \/tern start\//);
  });

  test('substitutions apply to the command run, typed input reaches it, done commands do not run', async () => {
    const folder = readmeFolder(sh('npm ci', 'echo port 2525', 'read -r secret; echo "got $secret"'));
    followed = await followReadme({
      clone: folder,
      readme: 'README.md',
      substitute: [['2525', '2600']],
      rules: [
        { match: /^npm ci$/, done: 'installed already' },
        { match: /^read/, input: 'typed\n' },
      ],
    });
    expect(followed.step(/^echo port/)).toMatchObject({ command: 'echo port 2525', ran: 'echo port 2600' });
    expect(followed.step(/^echo port/).output).toBe('port 2600\n');
    expect(followed.step(/^read/).output).toBe('got typed\n');
    expect(followed.step(/^npm ci/).output).toBe('installed already');
  });

  test('a server runs in the background until ready; a look is retried until it shows something; stop ends the whole group', async () => {
    const folder = readmeFolder(
      sh(
        // The server starts a child of its own and makes a file a while after it is ready.
        'sleep 300 & echo $! > child.pid; echo ready; sleep 0.5; echo made > late.txt; wait',
        'cat late.txt',
      ),
    );
    followed = await followReadme({
      clone: folder,
      readme: 'README.md',
      rules: [
        { match: /^sleep 300/, background: /^ready$/m },
        { match: /^cat late/, retry: true },
      ],
    });
    expect(followed.step(/^cat late/).output).toBe('made\n');
    expect(followed.server(/^sleep 300/).output()).toContain('ready');
    const child = Number(readFileSync(join(folder, 'child.pid'), 'utf8'));
    expect(alive(child)).toBe(true);
    await followed.stop();
    await waitFor(() => !alive(child), 5000);
  });

  test('a look that never shows anything fails after retryMs', async () => {
    const folder = readmeFolder(sh('cat missing.txt'));
    await expect(
      followReadme({
        clone: folder,
        readme: 'README.md',
        rules: [{ match: /cat/, retry: true, retryMs: 500 }],
      }),
    ).rejects.toThrow(/cat missing\.txt\nexited 1/);
  });

  test('a server that exits before it is ready fails with its output', async () => {
    const folder = readmeFolder(sh('echo cannot listen; exit 1'));
    await expect(
      followReadme({
        clone: folder,
        readme: 'README.md',
        rules: [{ match: /listen/, background: /listening/ }],
      }),
    ).rejects.toThrow(/exited 1 \(waiting for \/listening\/\):\ncannot listen/);
  });
});

describe('cloneForReadme', () => {
  test('a copy as a fresh clone after npm ci: files git would clone, workspace links into the copy', () => {
    const repo = mkdtempSync(join(tmpdir(), 'readme-repo-'));
    folders.push(repo);
    const write = (file: string, text = file): void => {
      mkdirSync(join(repo, file, '..'), { recursive: true });
      writeFileSync(join(repo, file), text);
    };
    write('.gitignore', 'secret/\ndist/\nnode_modules/\n');
    write('README.md');
    write('pkgs/x/package.json', '{}');
    write('pkgs/x/bin.js');
    write('pkgs/x/dist/built.js');
    write('secret/key.pem');
    write('node_modules/dep/index.js', 'dep');
    mkdirSync(join(repo, 'node_modules/@tern'));
    symlinkSync('../../pkgs/x', join(repo, 'node_modules/@tern/x'));
    mkdirSync(join(repo, 'node_modules/.bin'));
    symlinkSync('../@tern/x/bin.js', join(repo, 'node_modules/.bin/x'));
    execFileSync('git', ['init', '-q'], { cwd: repo });
    execFileSync('git', ['add', 'README.md', '.gitignore'], { cwd: repo });
    write('untracked.txt'); // new, not ignored: a clone of the working tree has it

    const clone = cloneForReadme(repo);
    folders.push(clone.root);
    expect(existsSync(join(clone.root, 'README.md'))).toBe(true);
    expect(existsSync(join(clone.root, 'untracked.txt'))).toBe(true);
    expect(existsSync(join(clone.root, 'pkgs/x/bin.js'))).toBe(true);
    expect(existsSync(join(clone.root, 'pkgs/x/dist'))).toBe(false);
    expect(existsSync(join(clone.root, 'secret'))).toBe(false);
    expect(realpathSync(join(clone.root, 'node_modules/@tern/x'))).toBe(
      realpathSync(join(clone.root, 'pkgs/x')),
    );
    expect(realpathSync(join(clone.root, 'node_modules/.bin/x'))).toBe(
      realpathSync(join(clone.root, 'pkgs/x/bin.js')),
    );
    expect(readlinkSync(join(clone.root, 'node_modules/dep'))).toBe(join(repo, 'node_modules/dep'));

    expect(clone.unignoredNewFiles()).toEqual([]);
    mkdirSync(join(clone.root, 'secret'));
    writeFileSync(join(clone.root, 'secret/new-key.pem'), 'ignored');
    writeFileSync(join(clone.root, 'pkgs/x/keys.pem'), 'not ignored');
    expect(clone.unignoredNewFiles()).toEqual(['pkgs/x/keys.pem']);
    clone.remove();
    expect(existsSync(clone.root)).toBe(false);
  });
});
