// The packages this monorepo publishes and their tarballs as `npm pack` makes them: what
// `npm run release:dry` shows and what the outside-project test installs.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface PublicPackage {
  readonly name: string;
  readonly version: string;
  /** The workspace folder. */
  readonly dir: string;
}

export interface PackedPackage extends PublicPackage {
  /** The .tgz file (absent for a dry run). */
  readonly tarball: string;
  /** Paths inside the tarball, relative to its package folder. */
  readonly files: readonly string[];
  readonly size: number;
}

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  workspaces?: string[];
  exports?: Record<string, string | Record<string, string>>;
  bin?: Record<string, string>;
}

function manifestOf(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;
}

/** Every workspace of the monorepo at `root` that is not private, in folder order. */
export function publicPackages(root: string): PublicPackage[] {
  const found: PublicPackage[] = [];
  for (const glob of manifestOf(root).workspaces ?? []) {
    const parent = join(root, glob.replace(/\/\*$/, ''));
    if (!existsSync(parent)) continue;
    for (const name of readdirSync(parent).sort()) {
      const dir = join(parent, name);
      if (!existsSync(join(dir, 'package.json'))) continue;
      const manifest = manifestOf(dir);
      if (!manifest.private) found.push({ name: manifest.name, version: manifest.version, dir });
    }
  }
  return found;
}

/**
 * Packs every public package into `destination` with one `npm pack` (built dist/ must exist:
 * `npm run build`). With `dryRun`, only lists what each tarball would hold.
 */
export function packPublicPackages(
  root: string,
  destination: string,
  options: { dryRun?: boolean } = {},
): PackedPackage[] {
  const packages = publicPackages(root);
  const args = [
    'pack',
    '--json',
    '--pack-destination',
    destination,
    ...(options.dryRun ? ['--dry-run'] : []),
  ];
  for (const p of packages) args.push('--workspace', p.name);
  const out = execFileSync('npm', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const packed = JSON.parse(out) as {
    name: string;
    filename: string;
    size: number;
    files: { path: string }[];
  }[];
  return packages.map((p) => {
    const entry = packed.find((e) => e.name === p.name);
    if (!entry) throw new Error(`npm pack made no tarball for ${p.name}`);
    return {
      ...p,
      tarball: join(destination, entry.filename),
      files: entry.files.map((f) => f.path),
      size: entry.size,
    };
  });
}

/**
 * What a tarball lacks to install and work outside this repository: README, LICENSE, the bin
 * files, and every file its `exports` map names (types and JS, and the sources the
 * `tern-source` condition points at). Empty when it is complete.
 */
export function tarballProblems(pkg: PackedPackage): string[] {
  const manifest = manifestOf(pkg.dir);
  const has = new Set(pkg.files);
  const found: string[] = [];
  const problem = (text: string): void => {
    found.push(`${pkg.name}: ${text}`);
  };
  const wanted = new Set(['README.md', 'LICENSE', 'package.json']);
  for (const file of Object.values(manifest.bin ?? {})) wanted.add(file);
  for (const [subpath, target] of Object.entries(manifest.exports ?? {})) {
    const files = typeof target === 'string' ? [target] : Object.values(target);
    for (const file of files) wanted.add(file);
    if (typeof target !== 'string' && !target.types) problem(`exports["${subpath}"] has no types`);
  }
  for (const file of wanted) {
    if (!has.has(file.replace(/^\.\//, ''))) problem(`${file} is not in the tarball`);
  }
  return found;
}
