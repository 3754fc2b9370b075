// A TCP relay that stands for a slow network between a node and its Redis: every chunk, in each
// direction, is passed on `delayMs` later (in order). The delay can be raised while connections
// live, so a node starts at full speed and then finds itself far from Redis. What a side sent and
// the relay has not passed on yet is dropped when that side's connection closes: a node that dies
// takes its writes still in flight with it (as a host that loses power, or is cut off, does).
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface SlowLink {
  /** `redis://127.0.0.1:<port>`: the relay's address. */
  readonly url: string;
  delayMs: number;
  stop(): Promise<void>;
}

export async function startSlowLink(targetPort: number, delayMs = 0): Promise<SlowLink> {
  const sockets = new Set<Socket>();
  const link = { url: '', delayMs, stop: async () => {} };
  // Timers of one delay fire in the order they were set: a stream's chunks stay in order.
  const relay = (from: Socket, to: Socket): void => {
    let gone = false;
    from.on('data', (chunk) => {
      const pass = (): void => {
        if (!gone && !to.destroyed) to.write(chunk);
      };
      if (link.delayMs === 0) pass();
      else setTimeout(pass, link.delayMs);
    });
    from.on('close', () => {
      gone = true;
      to.destroy();
    });
    from.on('error', () => to.destroy());
  };
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('slow link: no port');
  link.url = `redis://127.0.0.1:${address.port}`;
  link.stop = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return link;
}
