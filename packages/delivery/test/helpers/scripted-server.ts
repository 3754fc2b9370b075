// A receiving server written on node:net whose every move the test scripts: a well-behaved
// SMTP/LMTP dialogue, or a hostile one (floods, trickles, slow reading). DATA is never stored: it is
// counted and hashed as it arrives, so a test can send a message of any size and still check every
// byte, the dot-stuffing and the terminator.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { onTestFinished } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions } from '../../src/index.js';

/** What one DATA phase carried: everything after the 354, final `.` line included. */
export interface DataStats {
  /** Bytes received, terminator included. */
  bytes: number;
  /** SHA-256 (hex) of the same bytes. */
  sha256: string;
  /** The first 64 KiB, to read the header block. */
  head: string;
  /** True once `<CRLF>.<CRLF>` arrived. */
  ended: boolean;
}

const HEAD_BYTES = 64 * 1024;
const TERMINATOR = Buffer.from('\r\n.\r\n');

/** Counts and hashes DATA until the final dot; hands back what came after it. */
class DataReader {
  readonly stats: DataStats = { bytes: 0, sha256: '', head: '', ended: false };
  readonly #hash = createHash('sha256');
  readonly #head: Buffer[] = [];
  #headBytes = 0;
  // The terminator's CRLF may be the line end before it; data starts as if after one.
  #tail = Buffer.from('\r\n');

  /** Takes a chunk; returns the bytes after the terminator once it has come, else undefined. */
  push(chunk: Buffer): Buffer | undefined {
    const window = Buffer.concat([this.#tail, chunk]);
    const at = window.indexOf(TERMINATOR);
    const end = at === -1 ? chunk.length : at + TERMINATOR.length - this.#tail.length;
    const part = chunk.subarray(0, end);
    this.stats.bytes += part.length;
    this.#hash.update(part);
    if (this.#headBytes < HEAD_BYTES) {
      const keep = part.subarray(0, HEAD_BYTES - this.#headBytes);
      this.#head.push(keep);
      this.#headBytes += keep.length;
    }
    if (at === -1) {
      this.#tail = window.subarray(Math.max(0, window.length - 4));
      return undefined;
    }
    this.stats.ended = true;
    this.stats.sha256 = this.#hash.digest('hex');
    this.stats.head = Buffer.concat(this.#head).toString('latin1');
    return chunk.subarray(end);
  }

  /** The stats so far, for a phase that never ended. */
  unfinished(): DataStats {
    return { ...this.stats, head: Buffer.concat(this.#head).toString('latin1') };
  }
}

/** One accepted connection, seen from the server. */
export class ServerConnection {
  readonly socket: Socket;
  /** Bytes this side wrote (what the kernel took). */
  written = 0;
  /** Every DATA phase, ended or not. */
  readonly data: DataStats[] = [];
  /** Every command line received. */
  readonly commands: string[] = [];
  readonly closed: Promise<void>;
  #buffer = Buffer.alloc(0);
  readonly #lines: string[] = [];
  #lineWaiter: ((line: string | undefined) => void) | undefined;
  #dataReader: DataReader | undefined;
  #dataDone: ((stats: DataStats) => void) | undefined;
  #slowReadTimer: NodeJS.Timeout | undefined;
  #isClosed = false;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.#isClosed = true;
        clearInterval(this.#slowReadTimer);
        this.#lineWaiter?.(undefined);
        if (this.#dataReader) this.data.push(this.#dataReader.unfinished());
        resolve();
      });
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  write(text: string | Buffer): void {
    if (this.socket.destroyed) return;
    this.written += Buffer.byteLength(text);
    this.socket.write(text);
  }

  /** The next command line (without CRLF), or undefined once the client has gone. */
  line(): Promise<string | undefined> {
    const ready = this.#lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#isClosed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.#lineWaiter = resolve;
    });
  }

  /** Reads a DATA phase to its final dot, keeping only counts and a hash. */
  readData(): Promise<DataStats> {
    const reader = new DataReader();
    this.#dataReader = reader;
    const done = new Promise<DataStats>((resolve) => {
      this.#dataDone = resolve;
    });
    const early = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    if (early.length > 0) this.#receive(early);
    return done;
  }

  /**
   * Writes what `next` makes for as long as the client takes it, waiting for the socket to drain,
   * until `budget` bytes are written or the client goes; `onMegabyte` is awaited after each MiB.
   * Resolves with the bytes written.
   */
  async flood(next: () => string, budget: number, onMegabyte?: () => Promise<void> | void): Promise<number> {
    let sent = 0;
    let megabytes = 0;
    while (sent < budget && !this.socket.destroyed) {
      const text = next();
      sent += Buffer.byteLength(text);
      this.written += Buffer.byteLength(text);
      if (Math.floor(sent / 2 ** 20) > megabytes) {
        megabytes = Math.floor(sent / 2 ** 20);
        await onMegabyte?.();
      }
      if (!this.socket.write(text)) {
        await Promise.race([once(this.socket, 'drain'), this.closed]);
      }
    }
    return sent;
  }

  /** Reads slowly: at most one chunk of what the client sent every `everyMs`. Returns a function to stop. */
  readSlowly(everyMs: number): () => void {
    this.socket.pause();
    this.#slowReadTimer = setInterval(() => this.socket.resume(), everyMs);
    return () => {
      clearInterval(this.#slowReadTimer);
      this.#slowReadTimer = undefined;
      this.socket.resume();
    };
  }

  #receive(chunk: Buffer): void {
    if (this.#slowReadTimer) this.socket.pause();
    if (this.#dataReader) {
      const rest = this.#dataReader.push(chunk);
      if (rest === undefined) return;
      this.data.push(this.#dataReader.stats);
      this.#dataDone?.(this.#dataReader.stats);
      this.#dataReader = undefined;
      if (rest.length === 0) return;
      chunk = rest;
    }
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (let lf = this.#buffer.indexOf(0x0a); lf !== -1; lf = this.#buffer.indexOf(0x0a)) {
      const line = this.#buffer.subarray(0, lf).toString('latin1').replace(/\r$/, '');
      this.#buffer = this.#buffer.subarray(lf + 1);
      this.commands.push(line);
      const waiter = this.#lineWaiter;
      this.#lineWaiter = undefined;
      if (waiter) waiter(line);
      else this.#lines.push(line);
      // After DATA the client waits for 354: nothing it sends next is a command until the dot.
      if (/^DATA$/i.test(line)) break;
    }
  }
}

export interface ScriptedServer {
  readonly port: number;
  /** Connections accepted so far, in order. */
  readonly connections: ServerConnection[];
  stop(): Promise<void>;
}

/** Listens on 127.0.0.1 and runs `script` for each connection. */
export async function startScriptedServer(
  script: (conn: ServerConnection) => Promise<void>,
): Promise<ScriptedServer> {
  const connections: ServerConnection[] = [];
  const server: Server = createServer((socket) => {
    const conn = new ServerConnection(socket);
    connections.push(conn);
    script(conn).catch(() => socket.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = address !== null && typeof address === 'object' ? address.port : 0;
  return {
    port,
    connections,
    async stop(): Promise<void> {
      for (const conn of connections) conn.socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A scripted server that stops when the test ends. */
export async function serveScripted(
  script: (conn: ServerConnection) => Promise<void>,
): Promise<ScriptedServer> {
  const server = await startScriptedServer(script);
  onTestFinished(() => server.stop());
  return server;
}

/**
 * A deliverer that sends every domain to `server` in plain SMTP (a static '*' route, no DNS), closed
 * when the test ends. Timeouts are generous unless the test sets its own.
 */
export function delivererFor(server: ScriptedServer, extra: Partial<DelivererOptions> = {}): Deliverer {
  const d = createDeliverer({
    hostname: 'out.tern.test',
    routes: { '*': { type: 'smtp', host: '127.0.0.1', port: server.port, tls: 'none' } },
    ...extra,
    timeouts: {
      connectMs: 2000,
      greetingMs: 20_000,
      commandMs: 20_000,
      dataEndMs: 20_000,
      ...extra.timeouts,
    },
  });
  onTestFinished(() => d.close());
  return d;
}

export interface DialogueOptions {
  /** Extensions after the first EHLO/LHLO line (default PIPELINING, 8BITMIME, SIZE). */
  readonly extensions?: readonly string[];
  /** LMTP: one reply per accepted recipient after the data, each from `lmtpReply`. */
  readonly lmtp?: boolean;
  /** Before each LMTP reply (recipient index from 0); e.g. a delay. */
  readonly beforeLmtpReply?: (index: number) => Promise<void>;
  /** Called when the 354 went out, before the data is read (e.g. to read slowly). */
  readonly onData?: (conn: ServerConnection) => void;
}

/** A well-behaved SMTP (or LMTP) server dialogue that takes every message and stores none. */
export async function speakSmtp(conn: ServerConnection, options: DialogueOptions = {}): Promise<void> {
  const extensions = options.extensions ?? ['PIPELINING', '8BITMIME', 'SIZE 0'];
  conn.write('220 scripted.test ESMTP\r\n');
  let recipients = 0;
  for (let line = await conn.line(); line !== undefined; line = await conn.line()) {
    const verb = line.split(' ')[0]?.toUpperCase() ?? '';
    if (verb === 'EHLO' || verb === 'LHLO') {
      const all = ['scripted.test', ...extensions];
      conn.write(all.map((text, i) => `250${i === all.length - 1 ? ' ' : '-'}${text}\r\n`).join(''));
    } else if (verb === 'RCPT') {
      recipients++;
      conn.write('250 2.1.5 OK\r\n');
    } else if (verb === 'DATA') {
      conn.write('354 go ahead\r\n');
      options.onData?.(conn);
      await conn.readData();
      if (options.lmtp) {
        for (let i = 0; i < recipients; i++) {
          await options.beforeLmtpReply?.(i);
          conn.write(`250 2.0.0 recipient ${i + 1} delivered\r\n`);
        }
      } else {
        conn.write('250 2.0.0 taken and thrown away\r\n');
      }
      recipients = 0;
    } else if (verb === 'QUIT') {
      conn.write('221 2.0.0 bye\r\n');
      conn.socket.end();
      return;
    } else {
      if (verb === 'RSET') recipients = 0;
      conn.write('250 2.0.0 OK\r\n');
    }
  }
}
