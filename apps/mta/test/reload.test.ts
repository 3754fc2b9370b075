// SIGHUP reload on a real tern process: an open connection keeps going and finishes its message,
// new connections get the new plugins and limits, and a broken config changes nothing. The plugin
// instances follow one registry: each starts and stops once, global and per-listener lists alike,
// the delivery worker runs the new ones after a reload, and the old ones stop only when the last
// session and delivery attempt that use them have ended.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { type RawSmtp, smtpDialog, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { startTern, stopAllTern, type TernProcess } from './tern-process.js';

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

/** The lines plugins appended to the trace file, in order. */
function traceOf(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/**
 * Starts tern on a JS config written by `write(dir, port)`: plugin files beside it, and a counter
 * module the config imports (cached across reloads, so `generation()` numbers each load).
 */
async function startWithConfig(
  write: (dir: string, port: number, trace: string) => string,
): Promise<{ tern: TernProcess; port: number; trace: string; rewrite(): void }> {
  const first = await startTern({ localDomains: ['tern.test'] });
  const { dir, port } = first;
  await first.stop();
  const trace = join(dir, 'trace.log');
  writeFileSync(join(dir, 'counter.mjs'), 'let n = 0;\nexport const generation = () => ++n;\n');
  const file = join(dir, 'tern.config.js');
  writeFileSync(file, write(dir, port, trace));
  const tern = await startTern({}, { dir, configFile: file });
  // The same text again: the reload loads it anew, so its plugins are new instances.
  return { tern, port, trace, rewrite: () => writeFileSync(file, write(dir, port, trace)) };
}

/** SIGHUP, then waits until tern has said `config reloaded` once more. */
async function reload(tern: TernProcess): Promise<void> {
  const count = (): number => tern.output().split('config reloaded').length - 1;
  const before = count();
  tern.child.kill('SIGHUP');
  await waitFor(() => count() > before, 10_000);
}

async function mailFrom(port: number): Promise<{ client: RawSmtp; reply: string }> {
  const client = await smtpDialog(port);
  await client.read();
  await client.command('EHLO client.test');
  return { client, reply: await client.command('MAIL FROM:<a@example.org>') };
}

async function sendMail(port: number, to: string): Promise<void> {
  const { client, reply } = await mailFrom(port);
  expect(reply).toMatch(/^250 /);
  expect(await client.command(`RCPT TO:<${to}>`)).toMatch(/^250 /);
  expect(await client.command('DATA')).toMatch(/^354 /);
  client.send('Subject: reload\r\n\r\nhello\r\n.\r\n');
  expect(await client.read()).toMatch(/^250 2\.0\.0 queued as /);
  await client.command('QUIT');
  client.close();
}

const tracing = (trace: string): string => `import { appendFileSync } from 'node:fs';
import { definePlugin } from '@tern/plugin-api';
import { generation } from './counter.mjs';
const n = generation();
const trace = (line) => appendFileSync(${JSON.stringify(trace)}, line + '\\n');
`;

describe('reload and the plugin registry', () => {
  test(
    'listener and shared plugins start once; the replaced ones stop after the last session using them',
    { timeout: 60_000 },
    async () => {
      const { tern, port, trace, rewrite } = await startWithConfig((dir, port, traceFile) => {
        writeFileSync(
          join(dir, 'shared.mjs'),
          `import { appendFileSync } from 'node:fs';
import { definePlugin } from '@tern/plugin-api';
const trace = (line) => appendFileSync(${JSON.stringify(traceFile)}, line + '\\n');
export const shared = definePlugin({ name: 'shared', init() { trace('init shared'); }, shutdown() { trace('shutdown shared'); } });
`,
        );
        return `${tracing(traceFile)}import { shared } from './shared.mjs';
const traced = (name) => definePlugin({
  name,
  init() { trace(\`init \${name}#\${n}\`); },
  shutdown() { trace(\`shutdown \${name}#\${n}\`); },
  mailFrom() { trace(\`mailFrom \${name}#\${n}\`); },
});
export default {
  hostname: 'tern.test',
  localDomains: ['tern.test'],
  trustedNetworks: [],
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: ${port}, plugins: [traced('own'), shared] }],
  queue: { backend: 'embedded', path: 'queue.db' },
  plugins: [traced('global'), shared],
};
`;
      });
      expect(traceOf(trace).sort()).toEqual(['init global#1', 'init own#1', 'init shared']);

      // A session opened before the reload holds the first listener host.
      const before = await mailFrom(port);
      expect(before.reply).toMatch(/^250 /);
      rewrite();
      await reload(tern);
      expect(traceOf(trace)).toContain('init own#2');

      // It still runs its own plugins after the reload; a new session runs the new ones.
      await before.client.command('RSET');
      expect(await before.client.command('MAIL FROM:<b@example.org>')).toMatch(/^250 /);
      const after = await mailFrom(port);
      expect(after.reply).toMatch(/^250 /);
      after.client.close();
      expect(traceOf(trace).filter((l) => l.startsWith('mailFrom'))).toEqual([
        'mailFrom own#1',
        'mailFrom own#1',
        'mailFrom own#2',
      ]);
      expect(traceOf(trace).filter((l) => l.startsWith('shutdown'))).toEqual([]);

      // When it ends, the first generation stops; the shared instance stays with the second.
      before.client.close();
      await waitFor(() => traceOf(trace).includes('shutdown own#1'), 10_000);
      expect(
        traceOf(trace)
          .filter((l) => l.startsWith('shutdown'))
          .sort(),
      ).toEqual(['shutdown global#1', 'shutdown own#1']);

      expect(await tern.stop()).toBe(0);
      const lines = traceOf(trace);
      expect(lines.filter((l) => l.endsWith('shared'))).toEqual(['init shared', 'shutdown shared']);
      expect(lines.filter((l) => l.startsWith('shutdown')).sort()).toEqual([
        'shutdown global#1',
        'shutdown global#2',
        'shutdown own#1',
        'shutdown own#2',
        'shutdown shared',
      ]);
    },
  );

  test(
    'delivery runs the new plugins after a reload; an attempt in flight keeps the old ones to its end',
    { timeout: 60_000 },
    async () => {
      const slow = await startStallingServer();
      try {
        const { tern, port, trace, rewrite } = await startWithConfig(
          (_dir, port, traceFile) => `${tracing(traceFile)}
export default {
  hostname: 'tern.test',
  localDomains: ['tern.test'],
  trustedNetworks: ['127.0.0.0/8'],
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: ${port} }],
  queue: { backend: 'embedded', path: 'queue.db' },
  delivery: {
    routes: {
      'tern.test': { type: 'maildir', path: 'maildir' },
      'slow.test': { type: 'smtp', host: '127.0.0.1', port: ${slow.port}, tls: 'none' },
    },
  },
  plugins: [definePlugin({
    name: 'observer',
    init() { trace(\`init observer#\${n}\`); },
    shutdown() { trace(\`shutdown observer#\${n}\`); },
    delivered(ctx) { trace(\`delivered \${ctx.results[0].recipient.address} by observer#\${n}\`); },
  })],
};
`,
        );
        // An attempt under way: the next hop has the message and has not answered yet.
        await sendMail(port, 'a@slow.test');
        await slow.received;
        rewrite();
        await reload(tern);

        await sendMail(port, 'b@tern.test');
        await waitFor(() => traceOf(trace).some((l) => l.startsWith('delivered b@tern.test')), 10_000);
        expect(traceOf(trace)).toEqual([
          'init observer#1',
          'init observer#2',
          'delivered b@tern.test by observer#2',
        ]);

        // The attempt ends with the plugins it started with; only then do they stop.
        slow.release();
        await waitFor(() => traceOf(trace).includes('shutdown observer#1'), 10_000);
        expect(traceOf(trace).slice(3)).toEqual([
          'delivered a@slow.test by observer#1',
          'shutdown observer#1',
        ]);
        expect(await tern.stop()).toBe(0);
      } finally {
        await slow.close();
      }
    },
  );

  test('stopping tern aborts a hook in flight: its signal says why', { timeout: 60_000 }, async () => {
    const { tern, port, trace } = await startWithConfig(
      (_dir, port, traceFile) => `${tracing(traceFile)}
export default {
  hostname: 'tern.test',
  localDomains: ['tern.test'],
  trustedNetworks: [],
  listeners: [{ name: 'mx', kind: 'mx', host: '127.0.0.1', port: ${port} }],
  queue: { backend: 'embedded', path: 'queue.db' },
  delivery: { routes: { 'tern.test': { type: 'maildir', path: 'maildir' } } },
  plugins: [definePlugin({
    name: 'lookup',
    timeout: 120000,
    route(ctx) {
      trace('route waiting');
      return new Promise((_, fail) => {
        const stop = () => {
          trace(\`route aborted: \${ctx.signal.reason.name}: \${ctx.signal.reason.message}\`);
          fail(ctx.signal.reason);
        };
        if (ctx.signal.aborted) stop();
        else ctx.signal.addEventListener('abort', stop);
      });
    },
  })],
};
`,
    );
    await sendMail(port, 'c@tern.test');
    await waitFor(() => traceOf(trace).includes('route waiting'), 10_000);
    expect(await tern.stop()).toBe(0);
    expect(traceOf(trace)).toEqual(['route waiting', 'route aborted: AbortError: tern is shutting down']);
  });
});

/**
 * A receiving SMTP server that takes a message and holds its reply to the end of DATA until
 * `release()`: a delivery attempt stays under way for as long as a test needs.
 */
async function startStallingServer(): Promise<{
  port: number;
  received: Promise<void>;
  release(): void;
  close(): Promise<void>;
}> {
  let received: () => void = () => {};
  const receivedOnce = new Promise<void>((resolve) => {
    received = resolve;
  });
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffer = '';
    let inData = false;
    socket.write('220 slow.test ESMTP\r\n');
    socket.on('data', (chunk) => {
      buffer += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end === -1) return;
          buffer = buffer.slice(end + 5);
          inData = false;
          received();
          void released.then(() => socket.write('250 2.0.0 taken\r\n'));
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol === -1) return;
        const verb = buffer.slice(0, eol).slice(0, 4).toUpperCase();
        buffer = buffer.slice(eol + 2);
        if (verb === 'DATA') {
          inData = true;
          socket.write('354 go ahead\r\n');
        } else if (verb === 'QUIT') {
          socket.end('221 bye\r\n');
        } else {
          socket.write(verb === 'EHLO' ? '250 slow.test\r\n' : '250 ok\r\n');
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    received: receivedOnce,
    release,
    close: async () => {
      release();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
