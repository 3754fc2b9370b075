// A recording TCP relay between the deliverer and a real SMTP sink: it shows the exact bytes on the
// wire (dot-stuffing, line endings, pipelined commands), counts connections in use, and can act as a
// broken middlebox that garbles the TLS handshake after STARTTLS.
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';

export interface TapChunk {
  readonly conn: number;
  /** c2s: client to server; s2c: server to client. */
  readonly dir: 'c2s' | 's2c';
  readonly data: Buffer;
}

export interface WireTapOptions {
  readonly upstreamPort: number;
  readonly upstreamHost?: string;
  /** Where to listen: host and port (port 0 = any), or a UNIX socket path. */
  readonly host?: string;
  readonly port?: number;
  readonly path?: string;
  /** After STARTTLS is accepted, answer the client's handshake with garbage and hang up. */
  readonly breakStartTls?: boolean;
  /** Hold the server's greeting this long (a slow server, so deliveries overlap). */
  readonly greetingDelayMs?: number;
  /** Listen with TLS from the first byte (a port-465 front for a plain sink). */
  readonly tls?: { readonly key: string; readonly cert: string };
  /** Edits what the server says before the client sees it (e.g. to offer fewer extensions). */
  readonly rewriteServer?: (text: string) => string;
}

export interface WireTap {
  readonly host: string;
  readonly port: number;
  readonly chunks: TapChunk[];
  /** Connections accepted so far. */
  readonly connections: number;
  /** Most connections in use at once (a connection ends with the server's 221 or either side closing). */
  readonly maxInUse: number;
  /** Everything one connection's client sent (latin1), or every connection's when `conn` is left out. */
  clientText(conn?: number): string;
  /** Drops every open connection at once (a server restart, or an idle timeout on its side). */
  dropAll(): Promise<void>;
  stop(): Promise<void>;
}

export async function startWireTap(options: WireTapOptions): Promise<WireTap> {
  const chunks: TapChunk[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  let inUse = 0;
  let maxInUse = 0;

  const handle = (client: Socket): void => {
    const conn = ++connections;
    inUse++;
    maxInUse = Math.max(maxInUse, inUse);
    let counted = true;
    const done = (): void => {
      if (!counted) return;
      counted = false;
      inUse--;
    };
    const upstream = netConnect({ host: options.upstreamHost ?? '127.0.0.1', port: options.upstreamPort });
    sockets.add(client);
    sockets.add(upstream);
    let startTlsSent = false;
    let tlsAccepted = false;
    let greeted = false;

    client.on('data', (data: Buffer) => {
      chunks.push({ conn, dir: 'c2s', data });
      if (options.breakStartTls && tlsAccepted) {
        // The client's ClientHello: answer it with something that is not TLS.
        client.end('this is not TLS\r\n');
        upstream.destroy();
        done();
        return;
      }
      if (/^STARTTLS\r\n/im.test(data.toString('latin1'))) startTlsSent = true;
      upstream.write(data);
    });
    upstream.on('data', (received: Buffer) => {
      const data = options.rewriteServer
        ? Buffer.from(options.rewriteServer(received.toString('latin1')), 'latin1')
        : received;
      chunks.push({ conn, dir: 's2c', data });
      const text = data.toString('latin1');
      if (startTlsSent && /^220 /m.test(text)) tlsAccepted = true;
      if (/^221 /m.test(text)) done();
      const forward = (): void => {
        if (!client.destroyed) client.write(data);
      };
      if (!greeted && options.greetingDelayMs) {
        greeted = true;
        setTimeout(forward, options.greetingDelayMs);
      } else {
        greeted = true;
        forward();
      }
    });
    const close = (): void => {
      done();
      client.destroy();
      upstream.destroy();
    };
    client.on('close', close);
    upstream.on('close', () => {
      done();
      // Let data written to the client drain before closing it.
      client.end();
    });
    client.on('error', close);
    upstream.on('error', close);
  };
  const server: Server = options.tls
    ? createTlsServer({ key: options.tls.key, cert: options.tls.cert }, handle)
    : createServer(handle);
  // A client that gives up on our certificate makes the TLS server emit this; it is part of the test.
  server.on('tlsClientError', () => {});

  if (options.path !== undefined) {
    rmSync(options.path, { force: true });
    server.listen(options.path);
  } else {
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1');
  }
  await once(server, 'listening');
  const address = server.address();
  const port = address !== null && typeof address === 'object' ? address.port : 0;

  return {
    host: options.host ?? '127.0.0.1',
    port,
    chunks,
    get connections(): number {
      return connections;
    },
    get maxInUse(): number {
      return maxInUse;
    },
    clientText(conn?: number): string {
      return Buffer.concat(
        chunks.filter((c) => c.dir === 'c2s' && (conn === undefined || c.conn === conn)).map((c) => c.data),
      ).toString('latin1');
    },
    async dropAll(): Promise<void> {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      await new Promise((resolve) => setTimeout(resolve, 20));
    },
    async stop(): Promise<void> {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (options.path !== undefined) rmSync(options.path, { force: true });
    },
  };
}
