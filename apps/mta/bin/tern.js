#!/usr/bin/env node
// The `tern` command as npm links it. npm links bins at install time, before anything is built, so
// the link must point at a file that is committed: this one. It runs the built CLI when there is
// one (a published package, or a clone after `npm run build`), and otherwise the TypeScript
// sources of this clone through jiti, so `npx tern` works right after `npm ci`.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const app = dirname(dirname(fileURLToPath(import.meta.url)));
const built = join(app, 'dist/cli.js');

if (existsSync(built) && process.env.TERN_FROM_SOURCES !== '1') {
  await import(pathToFileURL(built).href);
} else {
  process.env.TERN_FROM_SOURCES = '1';
  // Workspace packages resolve to dist/ by default, which a fresh clone does not have yet: point
  // every @tern/* import (of tern and of config files) at its `tern-source` entry instead. jiti
  // reads JITI_ALIAS in every instance it makes, including the config loader's.
  process.env.JITI_ALIAS = JSON.stringify(sourceAliases(workspaceRoot(app)));
  const { createJiti } = await import('jiti');
  const jiti = createJiti(import.meta.url);
  await jiti.import(join(app, 'src/cli.ts'));
}

/** The monorepo root: the nearest folder above `from` whose package.json lists workspaces. */
function workspaceRoot(from) {
  for (let dir = dirname(from); dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file) && JSON.parse(readFileSync(file, 'utf8')).workspaces) return dir;
  }
  throw new Error(`tern: ${built} is missing and no workspace root holds the sources: run \`npm run build\``);
}

/** `@tern/x[/sub]` → the file its package's exports map names under the `tern-source` condition. */
function sourceAliases(root) {
  const aliases = {};
  const globs = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).workspaces;
  for (const glob of globs) {
    const parent = join(root, glob.replace(/\/\*$/, ''));
    if (!existsSync(parent)) continue;
    for (const name of readdirSync(parent)) {
      const file = join(parent, name, 'package.json');
      if (!existsSync(file)) continue;
      const pkg = JSON.parse(readFileSync(file, 'utf8'));
      for (const [subpath, target] of Object.entries(pkg.exports ?? {})) {
        const source = typeof target === 'object' && target !== null ? target['tern-source'] : undefined;
        if (typeof source === 'string') aliases[join(pkg.name, subpath)] = join(parent, name, source);
      }
    }
  }
  return aliases;
}
