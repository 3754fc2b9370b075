// A TCP proxy in front of the test Redis that counts round trips: each time the client speaks
// again after the server answered is one more turn. It measures, it does not change the bytes.
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface CountingProxy {
  readonly port: number;
  /** Client turns since the last reset (a pipelined batch counts once). */
  turns(): number;
  reset(): void;
  close(): Promise<void>;
}

export async function startCountingProxy(targetPort: number): Promise<CountingProxy> {
  let turns = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: targetPort });
    sockets.add(client).add(upstream);
    let clientSpeaking = false;
    client.on('data', (data) => {
      if (!clientSpeaking) turns++;
      clientSpeaking = true;
      upstream.write(data);
    });
    upstream.on('data', (data) => {
      clientSpeaking = false;
      client.write(data);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no port');
  return {
    port: address.port,
    turns: () => turns,
    reset: () => {
      turns = 0;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
