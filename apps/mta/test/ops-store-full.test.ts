// A full disk under the embedded store, on a real tern process: new mail gets 451, and tern says
// so loudly — one log line, tern_queue_store_writable 0, /readyz 503 with the reason, the store in
// /api/health — then takes mail again by itself once space returns. Needs root (it mounts a tmpfs).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type SmtpSink, startSmtpSink, swaks, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OpsTern, startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

const root = process.getuid?.() === 0;
let sink: SmtpSink;
let tern: OpsTern;
let mount: string;

beforeAll(async () => {
  if (!root) return;
  sink = await startSmtpSink();
  mount = join('/tmp', `tern-store-full-${process.pid}`);
  mkdirSync(mount, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mount]);
  tern = await startOpsTern({
    localDomains: [],
    trustedNetworks: ['127.0.0.0/8'],
    queue: { backend: 'embedded', path: join(mount, 'queue.db') },
    delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
  });
}, 60_000);

afterAll(async () => {
  if (!root) return;
  await stopAllOpsTern();
  await sink?.stop();
  execFileSync('umount', ['-l', mount]);
  rmSync(mount, { recursive: true, force: true });
});

const send = (subject: string) =>
  swaks(tern.port, ['--from', 'app@src.test', '--to', 'user@dest.test', '--header', `Subject: ${subject}`]);

const probe = async (
  path: string,
): Promise<{ status: number; body: { ready?: boolean; problems?: string[] } }> => {
  const response = await fetch(`${tern.url}${path}`);
  return {
    status: response.status,
    body: (await response.json()) as { ready?: boolean; problems?: string[] },
  };
};

const writableMetric = async (): Promise<string | undefined> =>
  /^tern_queue_store_writable (\d)$/m.exec((await tern.api('GET', '/metrics')).body as string)?.[1];

describe.skipIf(!root)('a full disk under the embedded store', () => {
  it('refuses with 451 and says so (log, metric, /readyz, API), then takes mail again by itself', async () => {
    expect((await send('before')).stdout).toMatch(/<- +250 2\.0\.0 queued as/);
    expect((await probe('/readyz')).status).toBe(200);
    expect((await probe('/healthz')).status).toBe(200);
    expect(await writableMetric()).toBe('1');

    // Fill the file system to the last block.
    const filler = join(mount, 'filler');
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' });
    } catch {
      // dd stops with "No space left on device": that is the point.
    }
    const refused = await send('while full');
    expect(refused.stdout).toMatch(/<\*\* +451 4\.3\.0 /);
    await waitFor(() => /cannot write: .*new mail is refused with 451/.test(tern.output()), 10_000);
    const notReady = await probe('/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.body.problems?.join('\n')).toMatch(
      /embedded queue store cannot write since .*(full|SQLITE)/i,
    );
    expect(await writableMetric()).toBe('0');
    expect((await tern.api('GET', '/api/health')).body.store).toMatchObject({ writable: false });

    // Space comes back: the store notices by itself, and mail is taken and delivered again.
    writeFileSync(filler, '');
    rmSync(filler);
    await waitFor(async () => (await probe('/readyz')).status === 200, 30_000);
    // The log line comes from the process's own output stream: wait for it rather than race it.
    await waitFor(() => /can write again after \d+ s/.test(tern.output()), 10_000);
    expect(await writableMetric()).toBe('1');
    expect((await send('after')).stdout).toMatch(/<- +250 2\.0\.0 queued as/);
    await waitFor(() => sink.messages.some((m) => m.raw.toString().includes('Subject: after')), 20_000);
    expect(sink.messages.some((m) => m.raw.toString().includes('Subject: before'))).toBe(true);
  }, 120_000);
});
