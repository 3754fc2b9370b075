// A plugin developer outside this repository, with only the packed tarballs: packs every public
// package once, installs them in a fresh project in a temporary folder (third-party dependencies
// from the npm registry, through npm's own cache, proxy and CA settings), writes a TypeScript
// plugin and its vitest test against the published test kit, runs that test, then runs the
// installed `tern start --watch` on a tern.config.ts that imports the plugin's .ts source (no
// build step), and sends mail through it with swaks to a real receiving SMTP server.
// A second project uses only @tern/queue with Redis: it installs and runs without better-sqlite3.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  freePort,
  packPublicPackages,
  run,
  type SmtpSink,
  startRedis,
  startSmtpSink,
  swaks,
  type TestRedis,
  tarballProblems,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../../..');
const INSTALL_TIMEOUT_MS = 10 * 60_000;

/**
 * This process's environment for npm in another project: npm's cache, registry, proxy and CA
 * settings stay; what `npm run` set for this repository (its prefix, package, lifecycle and
 * allowed scripts) goes.
 */
function projectEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    const lower = key.toLowerCase();
    if (/^npm_(package|lifecycle)_|^npm_command$/.test(lower)) continue;
    if (/^npm_config_(local_prefix|prefix|workspaces?|include_workspace_root|allow_scripts)$/.test(lower))
      continue;
    if (key === 'INIT_CWD' || key === 'TERN_FROM_SOURCES' || key === 'JITI_ALIAS') continue;
    env[key] = value;
  }
  return { ...env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
}

const plugin = `// Refuses mail from one sender domain; stamps what it accepts.
import { definePlugin, type Plugin, PluginOptionError, reject } from '@tern/plugin-api';

const VERSION = 1;

export interface StampOptions {
  /** Envelope senders of this domain are refused with 550 5.7.1. */
  readonly refuse: string;
}

export function stamp(options: StampOptions): Plugin {
  if (typeof options?.refuse !== 'string' || !options.refuse.includes('.')) {
    throw new PluginOptionError('stamp', 'refuse', 'expected a domain such as spammer.example');
  }
  const refused = options.refuse.toLowerCase();
  return definePlugin({
    name: 'stamp',
    mailFrom(ctx) {
      if (ctx.address.toLowerCase().endsWith(\`@\${refused}\`)) {
        return reject(550, '5.7.1', \`Mail from \${refused} is not accepted here\`);
      }
    },
    headers(ctx) {
      ctx.headers.prepend('X-Stamped-By', \`stamp v\${VERSION}\`);
    },
  });
}
`;

const pluginTest = `import { PluginOptionError } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { describe, expect, test } from 'vitest';
import { stamp } from '../src/stamp.ts';

describe('stamp', () => {
  test('refuses the domain with 550 5.7.1', async () => {
    const session = testPlugins(stamp({ refuse: 'spammer.example' }));
    expect(await session.mailFrom('anyone@Spammer.example')).toMatchObject({
      kind: 'reject',
      reply: { code: 550, enhanced: '5.7.1' },
    });
  });

  test('stamps accepted mail', async () => {
    const session = testPlugins(stamp({ refuse: 'spammer.example' }));
    expect((await session.mailFrom('alice@good.example')).kind).toBe('continue');
    expect((await session.rcptTo('bob@dest.example')).kind).toBe('continue');
    const result = await session.data('Subject: hello\\r\\n\\r\\nHi Bob\\r\\n');
    expect(result.verdict.kind).toBe('continue');
    expect(result.message.headers.get('X-Stamped-By')).toMatch(/^stamp v\\d+$/);
  });

  test('names a bad option', () => {
    expect(() => stamp({ refuse: 'nodots' })).toThrow(PluginOptionError);
  });
});
`;

function ternConfig(port: number, sinkPort: number): string {
  return `import { defineConfig } from '@tern/mta';
import { stamp } from './src/stamp.ts';

export default defineConfig({
  hostname: 'mx.acme.example',
  log: { level: 'info' },
  trustedNetworks: ['127.0.0.1/32'],
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: ${port} }],
  queue: { backend: 'embedded', path: '.tern-data/queue.db' },
  delivery: { routes: { 'dest.example': { type: 'smtp', host: '127.0.0.1', port: ${sinkPort}, tls: 'none' } } },
  plugins: [stamp({ refuse: 'spammer.example' })],
});
`;
}

describe('a plugin project outside this repository', () => {
  let dir: string;
  let project: string;
  let sink: SmtpSink | undefined;
  let tern: ChildProcess | undefined;
  let installOutput = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tern-outside-'));
    project = join(dir, 'acme-mail');
    mkdirSync(join(project, 'src'), { recursive: true });
    mkdirSync(join(project, 'test'));
    const packed = packPublicPackages(root, dir);
    expect(packed.flatMap(tarballProblems)).toEqual([]);
    // As if from the registry: the project asks for @tern/mta and @tern/plugin-api, and every
    // @tern/* package, direct or not, comes from its tarball.
    const tarballs = Object.fromEntries(packed.map((p) => [p.name, `file:../${basename(p.tarball)}`]));
    const vitestVersion = JSON.parse(
      readFileSync(join(root, 'node_modules/vitest/package.json'), 'utf8'),
    ).version;
    const manifest = {
      name: 'acme-mail',
      private: true,
      type: 'module',
      scripts: { test: 'vitest run' },
      dependencies: {
        '@tern/mta': tarballs['@tern/mta'],
        '@tern/plugin-api': tarballs['@tern/plugin-api'],
      },
      devDependencies: { vitest: vitestVersion, ...typeChecker() },
      overrides: tarballs,
      // npm 11 asks which install scripts may run: better-sqlite3 builds its native addon.
      allowScripts: { 'better-sqlite3': true },
    };
    writeFileSync(join(project, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    writeFileSync(join(project, 'tsconfig.json'), TSCONFIG);
    writeFileSync(join(project, 'src/stamp.ts'), plugin);
    writeFileSync(join(project, 'test/stamp.test.ts'), pluginTest);
    // --prefer-offline: what npm's cache holds is used without asking the registry again.
    installOutput = await npmInstall(project);
  }, INSTALL_TIMEOUT_MS + 120_000);

  afterAll(async () => {
    if (tern?.pid !== undefined && tern.exitCode === null && tern.signalCode === null) {
      const exited = new Promise((done) => tern?.once('exit', done));
      process.kill(-tern.pid, 'SIGKILL');
      await exited;
    }
    await sink?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs with both queue drivers (optional dependencies of @tern/mta), on a supported Node without an engine warning', () => {
    expect(existsSync(join(project, 'node_modules/@tern/mta/dist/cli.js'))).toBe(true);
    expect(existsSync(join(project, 'node_modules/bullmq'))).toBe(true);
    expect(existsSync(join(project, 'node_modules/better-sqlite3'))).toBe(true);
    expectNoEngineWarning(installOutput);
  });

  it('type-checks the plugin, its test and tern.config.ts against the published declarations', async () => {
    writeFileSync(join(project, 'tern.config.ts'), ternConfig(2525, 2526));
    const result = await run('npx', ['tsc', '-p', '.'], {
      cwd: project,
      baseEnv: projectEnv(),
      timeoutMs: 180_000,
    });
    expect(result.status, result.output).toBe(0);
  }, 180_000);

  it("runs the plugin's own vitest test against the published test kit", async () => {
    const result = await run('npx', ['vitest', 'run'], {
      cwd: project,
      baseEnv: projectEnv(),
      timeoutMs: 180_000,
    });
    expect(result.status, result.output).toBe(0);
    expect(result.output).toMatch(/Tests\s+.*3 passed/);
  }, 180_000);

  it('runs `npx tern start --watch` on tern.config.ts importing the .ts plugin, and delivers through it', async () => {
    sink = await startSmtpSink();
    const port = await freePort();
    writeFileSync(join(project, 'tern.config.ts'), ternConfig(port, sink.port));
    let output = '';
    // Its own process group: npx runs tern as its child, and the test ends both.
    const child = spawn('npx', ['tern', 'start', '--config', 'tern.config.ts', '--watch'], {
      cwd: project,
      env: projectEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    tern = child;
    child.stdout?.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr?.on('data', (chunk) => {
      output += chunk;
    });
    await waitFor(() => output.includes('tern started') || child.exitCode !== null, 60_000).catch(() => {});
    expect(output).toContain('tern started');
    expect(output).toContain('plugins: stamp');

    const refused = await swaks(port, ['--from', 'someone@spammer.example', '--to', 'bob@dest.example']);
    expect(refused.output).toMatch(/<\*\* 550 5\.7\.1 Mail from spammer\.example is not accepted here/);

    const sent = await swaks(port, ['--from', 'alice@good.example', '--to', 'bob@dest.example']);
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as /);
    const [first] = await sink.waitFor(1, 30_000);
    expect(first?.rcptTo).toEqual(['bob@dest.example']);
    expect(first?.headers).toMatch(/^X-Stamped-By: stamp v1\r$/m);

    // Edit the plugin's source: --watch reloads it, compiled anew, no build step.
    const source = join(project, 'src/stamp.ts');
    writeFileSync(source, readFileSync(source, 'utf8').replace('VERSION = 1', 'VERSION = 2'));
    await waitFor(() => output.includes('config reloaded'), 30_000);
    await swaks(port, ['--from', 'alice@good.example', '--to', 'bob@dest.example']);
    const [, second] = await sink.waitFor(2, 30_000);
    expect(second?.headers).toMatch(/^X-Stamped-By: stamp v2\r$/m);

    // SIGTERM to npx and tern (as a terminal's Ctrl-C reaches both): tern stops cleanly.
    process.kill(-(child.pid as number), 'SIGTERM');
    await waitFor(() => output.includes('"msg":"stopped"'), 30_000);
  }, 180_000);
});

describe('a Redis-queue user of @tern/queue alone', () => {
  let dir: string;
  let redis: TestRedis | undefined;

  afterAll(async () => {
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(
    'installs without better-sqlite3, queues through Redis, and is told what the embedded queue needs',
    async () => {
      dir = mkdtempSync(join(tmpdir(), 'tern-queue-only-'));
      const project = join(dir, 'redis-user');
      mkdirSync(project);
      const packed = packPublicPackages(root, dir).filter((p) =>
        ['@tern/queue', '@tern/plugin-api', '@tern/redis'].includes(p.name),
      );
      const tarballs = Object.fromEntries(packed.map((p) => [p.name, `file:../${basename(p.tarball)}`]));
      const peers = JSON.parse(
        readFileSync(join(root, 'packages/queue/package.json'), 'utf8'),
      ).peerDependencies;
      const manifest = {
        name: 'redis-user',
        private: true,
        type: 'module',
        dependencies: { ...tarballs, bullmq: peers.bullmq, ioredis: peers.ioredis },
        devDependencies: typeChecker(),
      };
      writeFileSync(join(project, 'tsconfig.json'), TSCONFIG);
      // Its types too: nothing in @tern/queue's declarations may need better-sqlite3's.
      writeFileSync(
        join(project, 'check.ts'),
        `import { openRedisQueue, QueueDriverMissingError, type QueueBackend } from '@tern/queue';
export const open: (url: string) => Promise<QueueBackend> = (url) => openRedisQueue({ url });
export const missing: string = new QueueDriverMissingError('better-sqlite3', undefined).code;
`,
      );
      writeFileSync(join(project, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      writeFileSync(
        join(project, 'queue.mjs'),
        `import { openEmbeddedQueue, openRedisQueue } from '@tern/queue';
const queue = await openRedisQueue({ url: process.env.REDIS_URL, prefix: 'redis-user' });
console.log('redis queue:', queue.kind, queue.health().writable);
await queue.close();
try {
  openEmbeddedQueue({ path: 'queue.db' });
} catch (error) {
  console.log('embedded queue:', error.code, error.message);
}
`,
      );
      expectNoEngineWarning(await npmInstall(project));
      expect(existsSync(join(project, 'node_modules/bullmq'))).toBe(true);
      expect(existsSync(join(project, 'node_modules/better-sqlite3'))).toBe(false);

      const types = await run('npx', ['tsc', '-p', '.'], {
        cwd: project,
        baseEnv: projectEnv(),
        timeoutMs: 180_000,
      });
      expect(types.status, types.output).toBe(0);

      redis = await startRedis();
      const result = await run('node', ['queue.mjs'], { cwd: project, env: { REDIS_URL: redis.url } });
      expect(result.status, result.output).toBe(0);
      expect(result.output).toContain('redis queue: redis true');
      expect(result.output).toContain(
        "embedded queue: TERN_ERR_QUEUE_DRIVER_MISSING the embedded queue (queue: { backend: 'embedded' }) needs the package better-sqlite3, which is not installed: run `npm install better-sqlite3@^12.6.2` in your project",
      );
    },
    INSTALL_TIMEOUT_MS,
  );
});

/** A TypeScript user's strict settings; skipLibCheck off, so every published declaration is checked. */
const TSCONFIG = `${JSON.stringify(
  {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      noEmit: true,
      allowImportingTsExtensions: true,
      skipLibCheck: false,
      types: ['node'],
    },
  },
  null,
  2,
)}\n`;

/** typescript and @types/node at the versions this repository uses (so npm's cache has them). */
function typeChecker(): Record<string, string> {
  const versionOf = (name: string): string =>
    JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
  return { typescript: versionOf('typescript'), '@types/node': versionOf('@types/node') };
}

/** `npm install` in `project` as its developer would run it; resolves with npm's output. */
async function npmInstall(project: string): Promise<string> {
  // --prefer-offline: what npm's cache holds is used without asking the registry again.
  const install = await run('npm', ['install', '--prefer-offline'], {
    cwd: project,
    baseEnv: projectEnv(),
    timeoutMs: INSTALL_TIMEOUT_MS,
  });
  if (install.status !== 0) throw new Error(`npm install failed in ${project}:\n${install.output}`);
  return install.output;
}

/** On a Node the packages support (22.19 or later), npm finds no engine mismatch anywhere. */
function expectNoEngineWarning(npmOutput: string): void {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  // Node 20 (end of life) still runs this suite; @tern/mta and mailauth 7 ask for 22.19 or later.
  if (major > 22 || (major === 22 && minor >= 19)) expect(npmOutput).not.toContain('EBADENGINE');
}
