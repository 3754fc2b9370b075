// One vitest run over every workspace: each package, app and example is a project.
// Tests import workspace packages from their TypeScript sources (the `tern-source`
// export condition), so `vitest` needs no build; `tsc` checks the built types.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

// No 'import' here: vitest passes these to workers as --conditions, and 'import' would make
// require() of dual packages (nodemailer inside mailauth) load their ESM build.
const conditions = ['tern-source', 'node', 'default'];
const workspaces = ['packages', 'apps', 'examples'].flatMap((group) =>
  existsSync(group)
    ? readdirSync(group)
        .map((name) => join(group, name))
        .filter((dir) => existsSync(join(dir, 'package.json')))
    : [],
);

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    projects: workspaces.map((dir) => ({
      extends: true,
      test: { name: dir.split('/')[1] ?? dir, root: dir, include: ['src/**/*.test.ts', 'test/**/*.test.ts'] },
    })),
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
