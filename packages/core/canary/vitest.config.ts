// Runs the canary with core's own imports of smtp-server redirected to the copy the canary script
// installed (TERN_SMTP_SERVER_DIR); everything else (the test kit too) keeps the pinned one.
import { join, resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

const underTest = process.env.TERN_SMTP_SERVER_DIR;
if (underTest === undefined) {
  throw new Error(
    'run the canary with `npm run canary --workspace @tern/core` (scripts/smtp-server-canary.mjs)',
  );
}
const coreDir = resolve(import.meta.dirname, '..');
const conditions = ['tern-source', 'node', 'default'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  plugins: [
    {
      name: 'smtp-server-under-test',
      enforce: 'pre',
      resolveId(source, importer) {
        if (!/^smtp-server(\/|$)/.test(source) || !importer?.startsWith(`${coreDir}/`)) return null;
        // Resolved as if imported from a file in the canary folder (vite needs it to exist): that
        // folder's node_modules and the exports map of the copy there apply.
        return this.resolve(source, join(underTest, 'index.js'), { skipSelf: true });
      },
    },
  ],
  test: {
    root: coreDir,
    include: ['canary/**/*.canary.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
