// A small receiving server on node:net that offers PIPELINING and CHUNKING (RFC 3030) and takes
// messages only by BDAT: the testkit's sink (smtp-server) and Postfix's smtp-sink have no BDAT.
// It parses what arrives as a real server would (commands line by line, BDAT chunks by their
// declared size, pipelined input in any split) and keeps every message it accepted.
import { createServer, type Socket } from 'node:net';

export interface ChunkedMessage {
  readonly mailFrom: string;
  readonly rcptTo: readonly string[];
  /** The message bytes exactly as the chunks carried them. */
  readonly body: Buffer;
  /** The size of each BDAT chunk, in order. */
  readonly chunks: readonly number[];
}

export interface ChunkingSinkOptions {
  /** Recipients refused at RCPT with 550. */
  readonly refuseRecipients?: readonly string[];
  /** MAIL FROM answered with this reply instead of 250. */
  readonly mailReply?: string;
  /** BDAT LAST answered with this reply instead of 250 (and the message not kept). */
  readonly lastReply?: string;
  /** SIZE offered in EHLO (default 10485760). */
  readonly size?: number;
}

export interface ChunkingSink {
  readonly port: number;
  readonly messages: ChunkedMessage[];
  /** Every command line received, on every connection. */
  readonly commands: string[];
  /** Connections accepted so far. */
  connections: number;
  stop(): Promise<void>;
}

/** Bounds what a client can make this sink hold: a command line, and a message. */
const MAX_LINE = 4096;
const MAX_MESSAGE = 64 * 1024 * 1024;

export async function startChunkingSink(options: ChunkingSinkOptions = {}): Promise<ChunkingSink> {
  const refused = new Set(options.refuseRecipients ?? []);
  const sockets = new Set<Socket>();
  const sink: ChunkingSink = {
    port: 0,
    messages: [],
    commands: [],
    connections: 0,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = createServer((socket) => {
    sink.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let input: Buffer = Buffer.alloc(0);
    let mailFrom: string | undefined;
    let rcptTo: string[] = [];
    let body: Buffer[] = [];
    let bodyBytes = 0;
    let chunks: number[] = [];
    /** Bytes of the current BDAT chunk still to come, and whether it is the last. */
    let chunkLeft = 0;
    let chunkLast = false;
    /** The transaction failed (no MAIL, no recipient, or a refusal): chunks are read and dropped. */
    let failed = false;
    const reset = (): void => {
      mailFrom = undefined;
      rcptTo = [];
      body = [];
      bodyBytes = 0;
      chunks = [];
      failed = false;
    };
    const say = (reply: string): void => {
      socket.write(`${reply}\r\n`);
    };
    const chunkDone = (): void => {
      if (failed || mailFrom === undefined || rcptTo.length === 0) {
        failed = true;
        say('503 5.5.1 no valid transaction');
        if (chunkLast) reset();
        return;
      }
      if (!chunkLast) {
        say(`250 2.0.0 ${chunks.at(-1)} octets received`);
        return;
      }
      if (options.lastReply !== undefined) say(options.lastReply);
      else {
        sink.messages.push({ mailFrom, rcptTo, body: Buffer.concat(body, bodyBytes), chunks });
        say(`250 2.0.0 Ok: ${bodyBytes} octets queued`);
      }
      reset();
    };
    const command = (line: string): void => {
      sink.commands.push(line);
      const verb = line.split(' ')[0]?.toUpperCase() ?? '';
      if (verb === 'EHLO') {
        say(
          `250-chunking.sink\r\n250-PIPELINING\r\n250-SIZE ${options.size ?? 10485760}\r\n250-8BITMIME\r\n250 CHUNKING`,
        );
      } else if (verb === 'RSET') {
        reset();
        say('250 2.0.0 Ok');
      } else if (verb === 'MAIL') {
        if (options.mailReply !== undefined) {
          say(options.mailReply);
          return;
        }
        mailFrom = /^MAIL FROM:<([^>]*)>/i.exec(line)?.[1] ?? '';
        say('250 2.1.0 Ok');
      } else if (verb === 'RCPT') {
        const address = /^RCPT TO:<([^>]*)>/i.exec(line)?.[1] ?? '';
        if (mailFrom === undefined) say('503 5.5.1 MAIL first');
        else if (refused.has(address)) say('550 5.1.1 no such user');
        else {
          rcptTo.push(address);
          say('250 2.1.5 Ok');
        }
      } else if (verb === 'BDAT') {
        const match = /^BDAT (\d+)( LAST)?$/i.exec(line);
        if (!match) {
          say('501 5.5.4 BDAT size [LAST]');
          return;
        }
        chunkLeft = Number(match[1]);
        chunkLast = match[2] !== undefined;
        chunks.push(chunkLeft);
        if (chunkLeft === 0) chunkDone();
      } else if (verb === 'DATA') {
        say('503 5.5.1 this sink takes BDAT only');
      } else if (verb === 'QUIT') {
        say('221 2.0.0 Bye');
        socket.end();
      } else say('502 5.5.2 not implemented');
    };
    socket.on('data', (data: Buffer) => {
      input = input.length === 0 ? data : Buffer.concat([input, data]);
      while (input.length > 0) {
        if (chunkLeft > 0) {
          const part = input.subarray(0, chunkLeft);
          if (!failed && bodyBytes + part.length <= MAX_MESSAGE) {
            body.push(Buffer.from(part));
            bodyBytes += part.length;
          } else failed = true;
          chunkLeft -= part.length;
          input = input.subarray(part.length);
          if (chunkLeft === 0) chunkDone();
          continue;
        }
        const lf = input.indexOf(0x0a);
        if (lf === -1) {
          if (input.length > MAX_LINE) socket.destroy();
          return;
        }
        const line = input.subarray(0, lf).toString('utf8').replace(/\r$/, '');
        input = input.subarray(lf + 1);
        command(line);
      }
    });
    say('220 chunking.sink ESMTP');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return Object.assign(sink, { port: address.port });
}
