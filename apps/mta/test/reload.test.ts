// SIGHUP reload on a real tern process: an open connection keeps going and finishes its message,
// new connections get the new plugins and limits, and a broken config changes nothing.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { smtpDialog, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { startTern, stopAllTern } from './tern-process.js';

afterAll(stopAllTern);

function configText(port: number, closed: boolean, size: number): string {
  return `import { definePlugin, reject } from '@tern/plugin-api';
export default {
  hostname: 'tern.test',
  localDomains: ['tern.test'],
  trustedNetworks: [],
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: ${port}, limits: { maxMessageSize: ${size} } }],
  queue: { backend: 'embedded', path: 'queue.db' },
  admin: { listen: '127.0.0.1:0', token: 'reload-test-token-0123456789' },
  delivery: { routes: { 'tern.test': { type: 'maildir', path: 'maildir' } } },
  plugins: [definePlugin({ name: 'gate', mailFrom: () => (${closed} ? reject(550, '5.7.1', 'Closed after reload') : undefined) })],
};
`;
}

describe('SIGHUP reload', () => {
  test(
    'applies plugins and limits to new connections without dropping open ones',
    { timeout: 60_000 },
    async () => {
      // Start once with a JSON config to learn the folder and port, then switch to a JS config there.
      const first = await startTern({ localDomains: ['tern.test'] });
      const { dir, port } = first;
      await first.stop();
      const file = join(dir, 'tern.config.js');
      writeFileSync(file, configText(port, false, 1_000_000));
      const tern = await startTern({}, { dir, configFile: file });

      const open = await smtpDialog(port);
      expect(await open.read()).toMatch(/^220 /);
      expect(await open.command('EHLO client.test')).toContain('SIZE 1000000');

      writeFileSync(file, configText(port, true, 2_000_000));
      tern.child.kill('SIGHUP');
      await waitFor(() => tern.output().includes('config reloaded'), 10_000);

      // The connection opened before the reload is not dropped and keeps its plugins.
      expect(await open.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
      expect(await open.command('RCPT TO:<alice@tern.test>')).toMatch(/^250 /);
      expect(await open.command('DATA')).toMatch(/^354 /);
      open.send('Subject: before reload\r\n\r\nhello\r\n.\r\n');
      expect(await open.read()).toMatch(/^250 2\.0\.0 queued as /);
      open.close();

      const fresh = await smtpDialog(port);
      await fresh.read();
      expect(await fresh.command('EHLO client.test')).toContain('SIZE 2000000');
      expect(await fresh.command('MAIL FROM:<a@example.org>')).toBe('550 5.7.1 Closed after reload');
      fresh.close();

      // A broken config is refused and the running one stays.
      writeFileSync(file, 'export default { listeners: [] };\n');
      tern.child.kill('SIGHUP');
      await waitFor(() => tern.output().includes('reload refused'), 10_000);
      const after = await smtpDialog(port);
      await after.read();
      await after.command('EHLO client.test');
      expect(await after.command('MAIL FROM:<a@example.org>')).toBe('550 5.7.1 Closed after reload');
      after.close();
      expect(tern.child.exitCode).toBeNull();
    },
  );
});
