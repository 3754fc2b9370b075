// A client that ioredis would give up on (status `end`) when its connection is closed while it is
// still asking a Sentinel where the primary is: what a failover's +switch-master does to a client
// that is reconnecting. The queue then answered "Connection is closed." for good.
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { startRedisSentinel, type TestRedisSentinel, waitFor } from '@tern/testkit';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRedis } from '../src/index.js';

/**
 * A TCP proxy in front of a Sentinel that holds the first connection's traffic to the Sentinel
 * until `release()`: the client is then stuck asking where the primary is.
 */
async function holdingProxy(target: { host: string; port: number }): Promise<{
  port: number;
  connections: () => number;
  release: () => void;
  close: () => Promise<void>;
}> {
  let count = 0;
  let held: (() => void) | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    count += 1;
    const upstream = tcpConnect(target.port, target.host);
    sockets.add(client).add(upstream);
    const pending: Buffer[] = [];
    let holding = count === 1;
    client.on('data', (chunk: Buffer) => (holding ? pending.push(chunk) : upstream.write(chunk)));
    if (holding)
      held = () => {
        holding = false;
        for (const chunk of pending.splice(0)) upstream.write(chunk);
      };
    upstream.pipe(client);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    connections: () => count,
    release: () => held?.(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('openRedis on Sentinel', () => {
  let set: TestRedisSentinel;
  beforeAll(async () => {
    set = await startRedisSentinel();
  }, 60_000);
  afterAll(async () => set?.stop());

  it('connects again when its connection is closed while it is still asking the Sentinel', async () => {
    const proxy = await holdingProxy(set.sentinels[0] as { host: string; port: number });
    const client = openRedis(
      { sentinels: [{ host: '127.0.0.1', port: proxy.port }], name: set.name },
      { enableOfflineQueue: false, maxRetriesPerRequest: 0 },
    ) as Redis;
    const statuses: string[] = [];
    client.on('end', () => statuses.push('end'));
    client.on('error', () => {});
    try {
      // The client is asking the Sentinel (its request is held by the proxy)...
      await waitFor(() => proxy.connections() === 1 && client.status === 'connecting', 10_000);
      // ...when its connection is closed for a reconnect, as the failover detector does.
      client.disconnect(true);
      proxy.release();
      // ioredis ends the client here ("Connection is closed."); it must come back by itself.
      await waitFor(() => statuses.includes('end'), 10_000);
      await waitFor(() => client.status === 'ready', 10_000);
      expect(await client.ping()).toBe('PONG');
      expect(await client.set('reconnect-test', '1')).toBe('OK');
    } finally {
      client.disconnect();
      await proxy.close();
    }
    // Closed by its owner: it stays closed.
    await waitFor(() => client.status === 'end', 5_000);
    await expect(client.ping()).rejects.toThrow(/Connection is closed/);
  }, 60_000);
});
