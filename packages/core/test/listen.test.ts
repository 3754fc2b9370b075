// Where a listener binds: by default the dual-stack wildcard, so IPv4 and IPv6 clients both reach
// it; on a machine without IPv6 the IPv4 wildcard instead, said in the log.
import { memoryLogger } from '@tern/plugin-api/testing';
import { smtpDialog } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { bindWithFallback } from '../src/listener.js';
import { LISTENER_DEFAULTS } from '../src/options.js';
import { closeAll, ehlo, LOCAL_DOMAIN, sendMail, startListener } from './helpers.js';

afterAll(closeAll);

describe('a listener with no host', () => {
  test('binds :: and takes mail from 127.0.0.1 and ::1, each seen by its own address', async () => {
    // The harness binds 127.0.0.1 unless told otherwise: undefined leaves the host to the default.
    const h = await startListener({ host: undefined });
    expect(LISTENER_DEFAULTS.host).toBe('::');
    expect(h.listener.options.host).toBe('::');
    expect(h.listener.address?.host).toBe('::');
    for (const host of ['127.0.0.1', '::1']) {
      const client = await smtpDialog(h.port, { host });
      expect(await client.read()).toMatch(/^220 /);
      await ehlo(client);
      expect(await sendMail(client, { to: [`user@${LOCAL_DOMAIN}`] })).toMatch(/^250 /);
      client.close();
    }
    await h.queue.waitFor(2);
    // An IPv4 client on a dual-stack socket is ::ffff:127.0.0.1 to node: intake names it 127.0.0.1.
    expect(h.queue.messages.map((m) => m.message.source?.remoteAddress)).toEqual(['127.0.0.1', '::1']);
  });
});

describe('bindWithFallback', () => {
  const failing = (code: string, on: string) => async (host: string) => {
    if (host === on) throw Object.assign(new Error(`bind ${code}`), { code });
    return host;
  };

  test('falls back from :: to 0.0.0.0 when the machine has no IPv6, and says so', async () => {
    const logger = memoryLogger();
    expect(await bindWithFallback('::', failing('EAFNOSUPPORT', '::'), logger)).toBe('0.0.0.0');
    expect(logger.records).toEqual([
      expect.objectContaining({
        level: 'warn',
        message: 'no IPv6 on this machine (EAFNOSUPPORT): listening on IPv4 only (0.0.0.0)',
      }),
    ]);
  });

  test('does not fall back for a port in use, nor from an address that was asked for', async () => {
    const logger = memoryLogger();
    await expect(bindWithFallback('::', failing('EADDRINUSE', '::'), logger)).rejects.toThrow(/EADDRINUSE/);
    await expect(bindWithFallback('::1', failing('EADDRNOTAVAIL', '::1'), logger)).rejects.toThrow(
      /EADDRNOTAVAIL/,
    );
    expect(logger.records).toEqual([]);
  });
});
