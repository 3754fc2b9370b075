#!/usr/bin/env node
// The smtp-server canary: core relies on private members of smtp-server and pins one version
// (3.21.6). This installs the newest 3.x (or SMTP_SERVER_VERSION) from the npm registry into a
// temporary folder and runs canary/smtp-server.canary.ts with core built on that copy: the
// private-member check, then real SMTP sessions over TCP. It fails loudly, naming what changed.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const coreDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const rootDir = resolve(coreDir, '../..');
const wanted = process.env.SMTP_SERVER_VERSION ?? '3';
const pinned = JSON.parse(readFileSync(join(coreDir, 'package.json'), 'utf8')).dependencies['smtp-server'];

const dir = mkdtempSync(join(tmpdir(), 'tern-smtp-server-canary-'));
let status = 1;
try {
  writeFileSync(join(dir, 'package.json'), '{ "private": true }\n');
  // canary/vitest.config.ts resolves core's imports of smtp-server as if from this file.
  writeFileSync(join(dir, 'index.js'), '');
  console.log(`smtp-server canary: installing smtp-server@${wanted} from the registry`);
  execFileSync(
    'npm',
    ['install', `smtp-server@${wanted}`, '--no-audit', '--no-fund', '--no-package-lock', '--ignore-scripts'],
    { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const { version } = JSON.parse(readFileSync(join(dir, 'node_modules/smtp-server/package.json'), 'utf8'));
  console.log(`smtp-server canary: core (pinned to ${pinned}) against smtp-server ${version}`);
  const vitest = spawnSync(
    process.execPath,
    [
      join(rootDir, 'node_modules/vitest/vitest.mjs'),
      'run',
      '--config',
      join(coreDir, 'canary/vitest.config.ts'),
    ],
    {
      cwd: rootDir,
      stdio: 'inherit',
      env: { ...process.env, TERN_SMTP_SERVER_DIR: dir, TERN_SMTP_SERVER_VERSION: version },
    },
  );
  status = vitest.status ?? 1;
  if (status === 0) {
    console.log(`smtp-server canary: smtp-server ${version} works with @tern/core`);
  } else {
    console.error(
      `\nsmtp-server canary FAILED: smtp-server ${version} breaks @tern/core (pinned to ${pinned}).\n` +
        'The private members that changed are named above ("the private members core relies on");\n' +
        'failing sessions name the step. Keep the pin until src/smtp-server-internals.ts and the\n' +
        'adapter are brought up to date.',
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(status);
