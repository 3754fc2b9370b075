// Follows a README the way a newcomer does: the commands of its fenced `sh` blocks, one by one and in
// order, in a copy of the repository that looks like a fresh clone after `npm ci`. A README whose
// commands drift from what works fails its test.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** One command of a README: a line of a fenced `sh` block (continued lines joined). */
export interface ReadmeCommand {
  readonly text: string;
  /** Its first line in the README, from 1. */
  readonly line: number;
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/;
const SHELL_BLOCKS = new Set(['sh', 'bash', 'shell']);

/**
 * The commands of the fenced `sh` (or `bash`, `shell`) blocks of `markdown`, in order; with
 * `section`, only those under the heading with that text (down to the next heading of its level or
 * above). Comment lines and blank lines are left out.
 */
export function readmeCommands(markdown: string, options: { section?: string } = {}): ReadmeCommand[] {
  const lines = markdown.split('\n');
  const commands: ReadmeCommand[] = [];
  let inSection = options.section === undefined;
  let sectionLevel = 0;
  let found = options.section === undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const heading = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading && options.section !== undefined) {
      const level = heading[1]?.length ?? 0;
      if (heading[2] === options.section) {
        inSection = true;
        found = true;
        sectionLevel = level;
      } else if (inSection && level <= sectionLevel) {
        inSection = false;
      }
      continue;
    }
    const fence = FENCE.exec(line);
    if (!fence) continue;
    const [, indent = '', marks = '', info = ''] = fence;
    const body: { text: string; line: number }[] = [];
    for (i++; i < lines.length; i++) {
      const inner = lines[i] ?? '';
      if (inner.trim().startsWith(marks) && inner.trim().replace(/[`~]/g, '') === '') break;
      body.push({
        text: inner.startsWith(indent) ? inner.slice(indent.length) : inner.trimStart(),
        line: i + 1,
      });
    }
    if (inSection && SHELL_BLOCKS.has(info)) commands.push(...blockCommands(body));
  }
  if (!found) throw new Error(`readmeCommands: no heading "${options.section}"`);
  return commands;
}

function blockCommands(body: readonly { text: string; line: number }[]): ReadmeCommand[] {
  const commands: ReadmeCommand[] = [];
  let pending: { text: string; line: number } | undefined;
  for (const { text, line } of body) {
    const joined = pending ? `${pending.text}\n${text}` : text;
    const start = pending?.line ?? line;
    if (/\\$/.test(text)) {
      pending = { text: joined, line: start };
      continue;
    }
    pending = undefined;
    if (joined.trim() === '' || joined.trim().startsWith('#')) continue;
    // A here-document spans lines a command-by-command reader cannot tell apart: keep READMEs simple.
    if (/<<-?\s*['"]?\w/.test(joined))
      throw new Error(`README line ${start}: here-documents are not supported`);
    commands.push({ text: joined, line: start });
  }
  if (pending) commands.push(pending);
  return commands;
}

/** A copy of the repository as a fresh clone after `npm ci`; `remove` deletes it. */
export interface ReadmeClone {
  readonly root: string;
  /**
   * Files made in the copy since it was made that the repository's .gitignore does not ignore:
   * what `git status` would offer to commit after following a README (a private key, say).
   */
  unignoredNewFiles(): string[];
  remove(): void;
}

/**
 * Copies the files of the repository at `repo` that a clone would have (tracked ones and new ones git
 * does not ignore: no build output, no data, no keys) to a temporary folder, and gives it the
 * `node_modules` that `npm ci` makes: the workspace links (`@tern/*`, `.bin`) point into the copy,
 * every other package to `repo`'s installed one. Nothing is built: `npx tern` runs from the sources,
 * as it does right after `npm ci`.
 */
export function cloneForReadme(repo: string): ReadmeClone {
  const root = mkdtempSync(join(tmpdir(), 'tern-readme-'));
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repo,
    maxBuffer: 64 * 1024 * 1024,
  })
    .toString('utf8')
    .split('\0')
    .filter((file) => file !== '' && existsSync(join(repo, file)) && lstatSync(join(repo, file)).isFile());
  for (const file of files) {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    copyFileSync(join(repo, file), join(root, file));
  }
  linkInstalledPackages(join(repo, 'node_modules'), join(root, 'node_modules'));
  const copied = new Set(files);
  return {
    root,
    unignoredNewFiles: () => {
      const made = filesUnder(root, '').filter((file) => !copied.has(file));
      if (made.length === 0) return [];
      const ignored = spawnSync('git', ['check-ignore', '--stdin', '-z'], {
        cwd: repo,
        input: made.join('\0'),
      });
      // Exit 1: none of them is ignored.
      if (ignored.status !== 0 && ignored.status !== 1)
        throw new Error(`git check-ignore: ${ignored.stderr}`);
      const skip = new Set(ignored.stdout.toString('utf8').split('\0'));
      return made.filter((file) => !skip.has(file));
    },
    remove: () => rmSync(root, { recursive: true, force: true }),
  };
}

/** Every file below `root`/`dir` (paths relative to `root`), node_modules left out. */
function filesUnder(root: string, dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = dir === '' ? entry.name : `${dir}/${entry.name}`;
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : filesUnder(root, path);
    return [path];
  });
}

function linkInstalledPackages(from: string, to: string): void {
  mkdirSync(to);
  for (const name of readdirSync(from)) {
    const source = join(from, name);
    if (name === '.cache') continue;
    if (name === '.package-lock.json') copyFileSync(source, join(to, name));
    else if (name === '.bin' || name === '@tern') {
      // npm's links here are relative (../@tern/mta/bin/tern.js, ../../packages/core): the same links
      // in the copy lead to the copy's workspaces.
      mkdirSync(join(to, name));
      for (const entry of readdirSync(source))
        symlinkSync(readlinkSync(join(source, entry)), join(to, name, entry));
    } else symlinkSync(source, join(to, name));
  }
}

/** How to run the commands a rule matches; the first rule whose `match` fits a command applies. */
export interface ReadmeRule {
  /** Tested against the command as the README writes it. */
  readonly match: RegExp;
  /**
   * A server the README leaves running (`npx tern start`): started in the background, and ready
   * once its output matches this. Stopped by `stop()`.
   */
  readonly background?: RegExp;
  /** How long a background server may take to be ready (default 120 s; `npm start` builds first). */
  readonly readyMs?: number;
  /** What the reader types when the command asks (a password), written to its standard input. */
  readonly input?: string;
  /** The exit status the README says the command ends with (default 0). */
  readonly status?: number;
  /**
   * A look at something that arrives shortly after (a delivered message): run again until it exits
   * 0 with some output, as a reader looks again, for at most `retryMs` (default 30 s).
   */
  readonly retry?: boolean;
  readonly retryMs?: number;
  /** Done before the test runs (`npm ci`): not run; the text says why. */
  readonly done?: string;
}

export interface FollowReadmeOptions {
  /** The clone's root: where the reader starts. */
  readonly clone: string;
  /** The README, relative to the clone. */
  readonly readme: string;
  /** Only the commands under this heading. */
  readonly section?: string;
  /** Changes the README tells the reader to make (a port that is taken): [as written, as used]. */
  readonly substitute?: readonly (readonly [string, string])[];
  /** Environment the README tells the reader to set. */
  readonly env?: Record<string, string>;
  readonly rules?: readonly ReadmeRule[];
  /** The longest a command that is not in the background may take (default 180 s). */
  readonly commandTimeoutMs?: number;
}

/** A command as it ran. */
export interface ReadmeStep {
  /** As the README writes it. */
  readonly command: string;
  /** As it ran, after the substitutions. */
  readonly ran: string;
  readonly line: number;
  readonly status: number | null;
  readonly output: string;
}

/** A server a README started, still running. */
export interface ReadmeServer {
  readonly command: string;
  output(): string;
}

export interface FollowedReadme {
  readonly steps: readonly ReadmeStep[];
  readonly servers: readonly ReadmeServer[];
  /** The step whose command matches; throws when none does. */
  step(match: RegExp): ReadmeStep;
  /** The server whose command matches; throws when none does. */
  server(match: RegExp): ReadmeServer;
  /** The folder the reader is in after the last command. */
  readonly cwd: string;
  /** Stops the servers (SIGTERM to each one's process group, SIGKILL after 15 s). */
  stop(): Promise<void>;
}

interface RunningServer extends ReadmeServer {
  readonly child: ChildProcess;
  exited(): boolean;
}

/**
 * Runs the README's commands in order, as a reader in one shell would: `cd` and `export` carry over
 * to the next command; servers are left running in the background. Throws at the first command that
 * does not end as the README says, with its line, its output and the servers' output; the servers
 * are stopped then.
 */
export async function followReadme(options: FollowReadmeOptions): Promise<FollowedReadme> {
  const readmePath = join(options.clone, options.readme);
  const commands = readmeCommands(
    readFileSync(readmePath, 'utf8'),
    options.section === undefined ? {} : { section: options.section },
  );
  if (commands.length === 0) throw new Error(`${options.readme}: no sh commands to follow`);
  const rules = options.rules ?? [];
  for (const rule of rules) {
    if (!commands.some((c) => rule.match.test(c.text))) {
      throw new Error(
        `${options.readme}: no command matches the rule ${rule.match} (did the README change?)`,
      );
    }
  }
  const state = mkdtempSync(join(tmpdir(), 'tern-readme-shell-'));
  let cwd = options.clone;
  let env = { ...readerEnvironment(), ...options.env };
  const steps: ReadmeStep[] = [];
  const servers: RunningServer[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((server) => stopServer(server)));
    rmSync(state, { recursive: true, force: true });
  };
  try {
    for (const command of commands) {
      const rule: Omit<ReadmeRule, 'match'> = rules.find((r) => r.match.test(command.text)) ?? {};
      const ran = substitute(command.text, options.substitute ?? []);
      const where = `${options.readme}:${command.line}: ${ran}`;
      if (rule.done !== undefined) {
        steps.push({ command: command.text, ran, line: command.line, status: 0, output: rule.done });
        continue;
      }
      for (const server of servers) {
        if (server.exited()) throw new Error(`${server.command} stopped early:\n${server.output()}`);
      }
      if (rule.background) {
        servers.push(await startServer(ran, cwd, env, rule.background, rule.readyMs ?? 120_000, where));
        continue;
      }
      const deadline = Date.now() + (rule.retryMs ?? 30_000);
      let result: ShellResult;
      for (;;) {
        result = await runInShell(ran, cwd, env, state, rule.input, options.commandTimeoutMs ?? 180_000);
        const looked = result.status === 0 && result.stdout.trim() !== '';
        if (!rule.retry || looked || Date.now() > deadline) break;
        await sleep(250);
      }
      steps.push({
        command: command.text,
        ran,
        line: command.line,
        status: result.status,
        output: result.output,
      });
      const expected = rule.status ?? 0;
      if (result.status !== expected) {
        throw new Error(
          `${where}\nexited ${result.status}, the README expects ${expected}:\n${result.output}${serverOutputs(servers)}`,
        );
      }
      if (rule.retry && result.stdout.trim() === '') {
        throw new Error(
          `${where}\nstill printed nothing after ${rule.retryMs ?? 30_000} ms${serverOutputs(servers)}`,
        );
      }
      cwd = result.cwd;
      env = result.env;
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const find = <T extends { command: string }>(list: readonly T[], match: RegExp, what: string): T => {
    const found = list.find((item) => match.test(item.command));
    if (!found) throw new Error(`${options.readme}: no ${what} matches ${match}`);
    return found;
  };
  return {
    steps,
    servers,
    cwd,
    step: (match) => find(steps, match, 'command'),
    server: (match) => find(servers, match, 'server'),
    stop,
  };
}

/** A README followed in a copy of the repository. */
export interface ReadmeTrial extends FollowedReadme {
  /** The copy's root. */
  readonly root: string;
  /** Stops the servers the README started and deletes the copy. */
  end(): Promise<void>;
}

/**
 * Follows a README of the repository at `repo` in a fresh copy of it (`cloneForReadme`), and checks
 * that doing so left nothing git would commit (a private key, a users file). `end()` cleans up; on
 * a failure the copy is already gone.
 */
export async function followReadmeInClone(
  repo: string,
  options: Omit<FollowReadmeOptions, 'clone'>,
): Promise<ReadmeTrial> {
  const clone = cloneForReadme(repo);
  let followed: FollowedReadme | undefined;
  const end = async (): Promise<void> => {
    await followed?.stop();
    clone.remove();
  };
  try {
    followed = await followReadme({ ...options, clone: clone.root });
    const left = clone.unignoredNewFiles();
    if (left.length > 0) {
      throw new Error(`${options.readme}: following it made files git does not ignore: ${left.join(', ')}`);
    }
  } catch (error) {
    await end();
    throw error;
  }
  return { ...followed, root: clone.root, end };
}

function substitute(text: string, pairs: readonly (readonly [string, string])[]): string {
  return pairs.reduce((acc, [written, used]) => acc.split(written).join(used), text);
}

/**
 * The environment of a reader's shell: this process's, without what the test runner and npm add
 * (their variables, the repository's node_modules/.bin on PATH) and without any TERN_* setting.
 */
function readerEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined || /^(VITEST|npm_|TERN_|NODE_|INIT_CWD$|TEST$)/.test(name)) continue;
    env[name] = value;
  }
  env.PATH = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => !dir.includes(`node_modules${sep}.bin`))
    .join(delimiter);
  return env;
}

interface ShellResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly output: string;
  readonly cwd: string;
  readonly env: Record<string, string>;
}

/** Runs one command in bash from `cwd`; returns where the shell ended up and its exported variables. */
function runInShell(
  command: string,
  cwd: string,
  env: Record<string, string>,
  state: string,
  input: string | undefined,
  timeoutMs: number,
): Promise<ShellResult> {
  // Before the spawn: a quick command writes its state before spawn() has even returned.
  rmSync(join(state, 'cwd'), { force: true });
  const script = `${command}\n__status=$?\npwd > "$__README_STATE/cwd"\nenv -0 > "$__README_STATE/env"\nexit $__status\n`;
  const child = spawn('bash', ['-c', script], {
    cwd,
    env: { ...env, __README_STATE: state },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk;
    output += chunk;
  });
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk;
  });
  child.stdin.on('error', () => {});
  child.stdin.end(input ?? '');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), timeoutMs);
  return new Promise((resolve, reject) => {
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (status) => {
      clearTimeout(timer);
      const ended = existsSync(join(state, 'cwd'));
      resolve({
        status,
        stdout,
        output: status === null ? `${output}\n(killed after ${timeoutMs} ms)` : output,
        cwd: ended ? readFileSync(join(state, 'cwd'), 'utf8').trim() : cwd,
        env: ended ? parseEnv(readFileSync(join(state, 'env'), 'utf8')) : env,
      });
    });
  });
}

function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of text.split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const name = entry.slice(0, eq);
    // bash's own bookkeeping, and ours.
    if (name === '_' || name === 'SHLVL' || name === 'OLDPWD' || name === 'PWD' || name === '__README_STATE')
      continue;
    env[name] = entry.slice(eq + 1);
  }
  return env;
}

async function startServer(
  command: string,
  cwd: string,
  env: Record<string, string>,
  ready: RegExp,
  readyMs: number,
  where: string,
): Promise<RunningServer> {
  // Its own process group, so stopping it stops what it started (npm → turbo → node, npx → node).
  const child = spawn('bash', ['-c', command], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output += chunk;
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const server: RunningServer = { command, child, output: () => output, exited: () => exited };
  const deadline = Date.now() + readyMs;
  while (!ready.test(output)) {
    if (exited || Date.now() > deadline) {
      await stopServer(server);
      throw new Error(
        `${where}\n${exited ? `exited ${child.exitCode}` : `not ready after ${readyMs} ms`} (waiting for ${ready}):\n${output}`,
      );
    }
    await sleep(50);
  }
  return server;
}

async function stopServer(server: RunningServer): Promise<void> {
  if (server.exited()) {
    killGroup(server.child, 'SIGKILL'); // whatever it started and left behind
    return;
  }
  const exit = new Promise<void>((resolve) => server.child.once('exit', () => resolve()));
  killGroup(server.child, 'SIGTERM');
  const timer = setTimeout(() => killGroup(server.child, 'SIGKILL'), 15_000);
  await exit;
  clearTimeout(timer);
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

function serverOutputs(servers: readonly RunningServer[]): string {
  return servers.map((s) => `\n--- output of ${s.command}:\n${s.output()}`).join('');
}
