// npm run release:dry: what a release would publish, without publishing anything. First the
// release plan of the pending changesets (new versions, and why), then each public package's
// tarball as `npm pack` makes it now, and what a tarball lacks to install outside this repo.
// Releasing for real: `npx changeset version` (bumps versions, writes CHANGELOG.md), review and
// commit, `npm run build`, then `npx changeset publish`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testkit = await import(join(root, 'packages/testkit/dist/index.js'));

console.log('Release plan (changeset status):');
try {
  execFileSync('npx', ['changeset', 'status', '--verbose'], { cwd: root, stdio: 'inherit' });
} catch {
  console.log('(no release plan: add a changeset with `npx changeset`)');
}

const scratch = mkdtempSync(join(tmpdir(), 'tern-release-dry-'));
let failed = false;
try {
  console.log('\nTarballs (npm pack --dry-run), at the versions in package.json now:');
  for (const pkg of testkit.packPublicPackages(root, scratch, { dryRun: true })) {
    const problems = testkit.tarballProblems(pkg);
    failed ||= problems.length > 0;
    const size = `${(pkg.size / 1024).toFixed(0)} kB`;
    console.log(
      `  ${pkg.name}@${pkg.version}  ${relative(root, pkg.dir)}  ${pkg.files.length} files  ${size}`,
    );
    for (const problem of problems) console.log(`    MISSING ${problem}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
if (failed) {
  console.log(
    '\nSome tarballs are incomplete: run `npm run build`, and check "files" in their package.json.',
  );
  process.exit(1);
}
