// tern start --watch: a change to the config file, or to a TypeScript plugin it imports, reloads
// the running MTA (as SIGHUP does), seen from outside in what it answers over SMTP.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, swaks, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { startTern, stopAllTern } from './tern-process.js';

afterAll(stopAllTern);

const plugin = `import { definePlugin, reject } from '@tern/plugin-api';

const VERSION = 1;

export function refuseFrom(domain: string, tag: string) {
  return definePlugin({
    name: 'refuse-from',
    mailFrom(ctx) {
      if (ctx.address.endsWith(\`@\${domain}\`)) return reject(550, '5.7.1', \`refused (\${tag}, plugin v\${VERSION})\`);
    },
  });
}
`;

function config(port: number, dir: string, tag: string): string {
  return `import { defineConfig } from '@tern/mta';
import { refuseFrom } from './plugins/refuse-from.ts';

export default defineConfig({
  hostname: 'tern.test',
  log: { level: 'info' },
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: ${port} }],
  queue: { backend: 'embedded', path: ${JSON.stringify(join(dir, 'queue.db'))} },
  plugins: [refuseFrom('refused.test', '${tag}')],
});
`;
}

/** The reply to MAIL FROM:<x@refused.test>, as swaks, an independent client, saw it. */
async function refusal(port: number): Promise<string> {
  const result = await swaks(port, [
    '--from',
    'x@refused.test',
    '--to',
    'postmaster@tern.test',
    '--quit-after',
    'MAIL',
  ]);
  return /<\*\* (550 .*)/.exec(result.output)?.[1] ?? `no 550 in:\n${result.output}`;
}

function reloads(output: string): number {
  return output.split('config reloaded').length - 1;
}

describe('tern start --watch', () => {
  it('reloads when a plugin source or the config file changes', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(import.meta.dirname, '.tmp-tern-'));
    mkdirSync(join(dir, 'plugins'));
    const pluginFile = join(dir, 'plugins/refuse-from.ts');
    const configFile = join(dir, 'tern.config.ts');
    writeFileSync(pluginFile, plugin);
    writeFileSync(configFile, config(port, dir, 'first'));
    const tern = await startTern({ listeners: [{ port }] }, { dir, configFile, args: ['--watch'] });
    expect(tern.output()).toContain('watch: reloading when one of these files changes');
    expect(await refusal(port)).toBe('550 5.7.1 refused (first, plugin v1)');
    expect(reloads(tern.output())).toBe(0);

    // The plugin's source: tern compiles it anew, no build step.
    writeFileSync(pluginFile, readFileSync(pluginFile, 'utf8').replace('VERSION = 1', 'VERSION = 2'));
    await waitFor(() => reloads(tern.output()) === 1, 20_000);
    expect(await refusal(port)).toBe('550 5.7.1 refused (first, plugin v2)');

    // The config file itself.
    writeFileSync(configFile, config(port, dir, 'second'));
    await waitFor(() => reloads(tern.output()) === 2, 20_000);
    expect(await refusal(port)).toBe('550 5.7.1 refused (second, plugin v2)');

    // A broken plugin is refused and the running config stays; its fix is seen too.
    writeFileSync(pluginFile, 'export function refuseFrom( {');
    await waitFor(() => tern.output().includes('reload refused'), 20_000);
    expect(await refusal(port)).toBe('550 5.7.1 refused (second, plugin v2)');
    writeFileSync(pluginFile, plugin.replace('VERSION = 1', 'VERSION = 3'));
    await waitFor(() => reloads(tern.output()) === 3, 20_000);
    expect(await refusal(port)).toBe('550 5.7.1 refused (second, plugin v3)');
  });
});
