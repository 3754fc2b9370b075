// An HTTPS server playing `mta-sts.DOMAIN` for any number of domains (RFC 8461 §3.3): it answers
// GET /.well-known/mta-sts.txt by the Host header with what the test set, and records every request.
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { Socket } from 'node:net';

/** What the server answers for one domain's policy URL. */
export interface PolicyResponse {
  /** The policy text (or anything else a test wants to send). */
  body: string;
  /** HTTP status (default 200). */
  status?: number;
  /** Content-Type (default 'text/plain'). */
  contentType?: string;
  /** A Location header (for redirect tests). */
  location?: string;
  /** Wait this long before answering (a slow server). */
  delayMs?: number;
}

export interface PolicyRequest {
  /** The Host header, lower case, without port. */
  host: string;
  path: string;
  /** The SNI name the client sent. */
  servername: string | undefined;
}

export interface MtaStsServer {
  host: string;
  port: number;
  /** Every request, in order. */
  requests: PolicyRequest[];
  /** Sets what `https://mta-sts.<domain>/.well-known/mta-sts.txt` answers (a string is a 200 text/plain body). */
  set(domain: string, response: PolicyResponse | string): void;
  /** The domain's policy URL answers 404 again. */
  remove(domain: string): void;
  stop(): Promise<void>;
}

export interface MtaStsServerOptions {
  /** Certificate (chain) and key the server presents, e.g. from a test CA for mta-sts.<domain> names. */
  tls: { key: string; cert: string };
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  port?: number;
}

/** Starts the policy server; unknown hosts and paths get 404. */
export async function startMtaStsServer(options: MtaStsServerOptions): Promise<MtaStsServer> {
  const policies = new Map<string, PolicyResponse>();
  const requests: PolicyRequest[] = [];
  const sockets = new Set<Socket>();

  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const host = (request.headers.host ?? '').toLowerCase().replace(/:\d+$/, '');
    const path = request.url ?? '';
    const servername = (request.socket as Socket & { servername?: string }).servername || undefined;
    requests.push({ host, path, servername });
    const domain = host.startsWith('mta-sts.') ? host.slice('mta-sts.'.length) : undefined;
    const policy = domain === undefined ? undefined : policies.get(domain);
    if (path !== '/.well-known/mta-sts.txt' || policy === undefined) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const send = (): void => {
      response.writeHead(policy.status ?? 200, {
        'content-type': policy.contentType ?? 'text/plain',
        ...(policy.location !== undefined ? { location: policy.location } : {}),
      });
      response.end(policy.body);
    };
    if (policy.delayMs) setTimeout(send, policy.delayMs).unref();
    else send();
  };

  const server = createServer({ key: options.tls.key, cert: options.tls.cert }, handle);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => {});
  const host = options.host ?? '127.0.0.1';
  server.listen(options.port ?? 0, host);
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('startMtaStsServer: no TCP address');

  return {
    host,
    port: address.port,
    requests,
    set(domain: string, response: PolicyResponse | string): void {
      policies.set(domain.toLowerCase(), typeof response === 'string' ? { body: response } : response);
    },
    remove(domain: string): void {
      policies.delete(domain.toLowerCase());
    },
    stop(): Promise<void> {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}
