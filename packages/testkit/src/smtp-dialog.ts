// A raw, line-level SMTP client for protocol tests that need to control every byte sent.
import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';

/** Options for {@link smtpDialog}. */
export interface SmtpDialogOptions {
  /** Defaults to 127.0.0.1. */
  host?: string;
  /** Implicit TLS (port 465 style); certificates are not verified. */
  tls?: boolean;
  /** The address to connect from, e.g. 127.0.0.2 for a client outside the trusted networks. */
  localAddress?: string;
}

/** A raw SMTP client connection. */
export interface RawSmtp {
  /**
   * The next complete reply (all lines of a multi-line reply, joined with \n, CRLF removed, codes kept).
   * Replies that arrived earlier (pipelining) are buffered and returned in order. Rejects when the
   * connection closes before a complete reply.
   */
  read(): Promise<string>;
  /** Writes exactly these bytes; no CRLF is added. */
  send(bytes: string | Buffer): void;
  /** Sends `line` + CRLF and resolves with the next reply. */
  command(line: string): Promise<string>;
  /** Upgrades the connection to TLS in place (certificates are not verified). */
  startTls(servername?: string): Promise<void>;
  /** Resolves when the connection has closed (by either side). */
  closed: Promise<void>;
  /** Destroys the connection. */
  close(): void;
  /** Everything sent ("C: ...") and every reply read ("S: ..."), in order. */
  transcript: string[];
}

interface Waiter {
  resolve(reply: string): void;
  reject(error: Error): void;
}

/** Opens a raw SMTP connection to `port` and resolves once connected (the banner is left to read()). */
export async function smtpDialog(port: number, opts: SmtpDialogOptions = {}): Promise<RawSmtp> {
  const host = opts.host ?? '127.0.0.1';
  let socket: Socket | TLSSocket = await open(port, host, opts.tls === true, opts.localAddress);

  const transcript: string[] = [];
  const replies: string[] = [];
  const waiters: Waiter[] = [];
  let pending = ''; // bytes after the last complete line
  let lines: string[] = []; // lines of a reply still in progress
  let closedError: Error | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });

  const deliver = (reply: string): void => {
    transcript.push(`S: ${reply}`);
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(reply);
    else replies.push(reply);
  };

  const onData = (chunk: Buffer): void => {
    pending += chunk.toString('latin1');
    for (;;) {
      const end = pending.indexOf('\n');
      if (end < 0) break;
      const line = pending.slice(0, end).replace(/\r$/, '');
      pending = pending.slice(end + 1);
      lines.push(line);
      // "250-..." continues a reply; "250 ..." or a bare "250" ends it. Anything else is not SMTP
      // and is handed over as a reply of its own so a test can see it.
      if (!/^\d{3}-/.test(line)) {
        deliver(lines.join('\n'));
        lines = [];
      }
    }
  };

  const onClose = (): void => {
    const partial = [...lines, pending].filter(Boolean).join('\n');
    closedError = new Error(
      `smtpDialog: connection to ${host}:${port} closed${partial ? ` after a partial reply: ${JSON.stringify(partial)}` : ''}`,
    );
    for (const waiter of waiters.splice(0)) waiter.reject(closedError);
    resolveClosed();
  };

  const attach = (target: Socket | TLSSocket): void => {
    target.on('data', onData);
    target.on('close', onClose);
    // Errors (resets) end in 'close'; without a listener they would crash the test process.
    target.on('error', () => {});
  };
  attach(socket);

  const read = (): Promise<string> => {
    const reply = replies.shift();
    if (reply !== undefined) return Promise.resolve(reply);
    if (closedError) return Promise.reject(closedError);
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  };

  const send = (bytes: string | Buffer): void => {
    const buffer = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    transcript.push(`C: ${buffer.toString('latin1').replace(/\r\n$/, '')}`);
    socket.write(buffer);
  };

  return {
    read,
    send,
    command(line: string): Promise<string> {
      send(`${line}\r\n`);
      return read();
    },
    startTls(servername?: string): Promise<void> {
      const plain = socket;
      plain.removeListener('data', onData);
      plain.removeListener('close', onClose);
      return new Promise((resolve, reject) => {
        const secure = connectTls({
          socket: plain,
          rejectUnauthorized: false,
          ...(servername === undefined ? {} : { servername }),
        });
        const fail = (error: Error): void => {
          secure.destroy();
          onClose();
          reject(new Error(`smtpDialog: TLS handshake with ${host}:${port} failed: ${error.message}`));
        };
        secure.once('error', fail);
        secure.once('secureConnect', () => {
          secure.removeListener('error', fail);
          socket = secure;
          attach(secure);
          transcript.push('C: <TLS handshake done>');
          resolve();
        });
      });
    },
    closed,
    close(): void {
      socket.destroy();
    },
    transcript,
  };
}

function open(
  port: number,
  host: string,
  implicitTls: boolean,
  localAddress: string | undefined,
): Promise<Socket | TLSSocket> {
  return new Promise((resolve, reject) => {
    const from = localAddress === undefined ? {} : { localAddress };
    const socket = implicitTls
      ? connectTls({ port, host, rejectUnauthorized: false, ...from })
      : connectTcp({ port, host, ...from });
    const fail = (error: Error): void =>
      reject(new Error(`smtpDialog: cannot connect to ${host}:${port}: ${error.message}`));
    socket.once('error', fail);
    socket.once(implicitTls ? 'secureConnect' : 'connect', () => {
      socket.removeListener('error', fail);
      resolve(socket);
    });
  });
}
