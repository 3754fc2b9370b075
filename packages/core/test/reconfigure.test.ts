// Live reconfiguration (tern's SIGHUP): new connections get the new plugins and limits, open
// sessions finish with what they started with, and what needs a restart is reported, not applied.
import { reject } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { memoryLogger } from '@tern/plugin-api/testing';
import { afterEach, describe, expect, test } from 'vitest';
import { closeAll, ehlo, HOSTNAME, LOCAL_DOMAIN, startListener } from './helpers.js';

afterEach(closeAll);

const refuseAll = { name: 'refuse-all', mailFrom: () => reject(550, '5.7.1', 'Closed for the night') };

describe('Listener.reconfigure', () => {
  test('new sessions get the new plugins and limits; an open session keeps its own', async () => {
    const h = await startListener({ limits: { maxMessageSize: 1_000_000 } });
    const before = await h.connect();
    expect(await ehlo(before)).toContain('SIZE 1000000');

    const result = h.listener.reconfigure(
      {
        name: 'test',
        kind: 'mx',
        host: '127.0.0.1',
        port: 0,
        hostname: HOSTNAME,
        localDomains: [LOCAL_DOMAIN],
        reverseLookup: false,
        limits: { maxMessageSize: 2_000_000 },
      },
      new PluginHost([refuseAll], { logger: memoryLogger() }),
    );
    expect(result.needsRestart).toEqual([]);

    // The session opened before the reload still runs the old (empty) plugin list.
    expect(await before.command('MAIL FROM:<a@example.org>')).toMatch(/^250/);
    const after = await h.connect();
    expect(await ehlo(after)).toContain('SIZE 2000000');
    expect(await after.command('MAIL FROM:<a@example.org>')).toBe('550 5.7.1 Closed for the night');
  });

  test('host, port and certificates are reported as needing a restart and left as they were', async () => {
    const h = await startListener();
    const result = h.listener.reconfigure({
      name: 'test',
      kind: 'mx',
      host: '127.0.0.2',
      port: 2525,
      hostname: HOSTNAME,
      localDomains: [LOCAL_DOMAIN],
      reverseLookup: false,
    });
    expect(result.needsRestart).toEqual(['host', 'port']);
    expect(h.listener.options.port).toBe(0);
    const client = await h.connect();
    expect(await ehlo(client)).toMatch(/^250/);
  });
});
