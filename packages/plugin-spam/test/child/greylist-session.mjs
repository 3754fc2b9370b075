// A separate tern-like process for the greylisting test. It loads the plugin from its TypeScript
// source (jiti), says "ready", then for each JSON line on stdin ({ ip, from, to }) runs one SMTP
// session up to RCPT against the shared Redis and prints the verdict as a JSON line. Loading first
// keeps the slow part (compiling TypeScript) out of the timed greylisting sequence.
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createJiti } from 'jiti';

// jiti has its own resolver, which ignores --conditions: point it at the sources Node resolves
// under the tern-source condition, so this runs without a build, like the vitest suites.
const source = (entry) => fileURLToPath(import.meta.resolve(entry));
const jiti = createJiti(import.meta.url, {
  alias: {
    '@tern/plugin-api/testing': source('@tern/plugin-api/testing'),
    '@tern/plugin-api': source('@tern/plugin-api'),
  },
});
const { spamFilter } = await jiti.import('../../src/index.ts');
const { testPlugins } = await jiti.import('@tern/plugin-api/testing');

const [redis, delaySeconds] = process.argv.slice(2);
const plugin = spamFilter({
  spf: { enabled: false },
  dkim: { enabled: false },
  dmarc: { enabled: false },
  greylist: { redis, delaySeconds: Number(delaySeconds) },
});
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
print({ ready: true, pid: process.pid, api: jiti.esmResolve('@tern/plugin-api') });

for await (const line of createInterface({ input: process.stdin })) {
  const { ip, from, to } = JSON.parse(line);
  const session = testPlugins(plugin, { remoteAddress: ip });
  await session.connect();
  await session.helo('mail.example.test');
  await session.mailFrom(from);
  print({ verdict: await session.rcptTo(to) });
}
await testPlugins(plugin).host.runObserve('shutdown', {});
