// A message as a check sends or verifies it: a header block, the empty line and the body the
// intake holds, streamed chunk by chunk (never joined into one buffer), with its size known first.
import { Readable } from 'node:stream';
import { type HeaderField, Headers, type MessageView } from '@tern/plugin-api';

const CRLF = Buffer.from('\r\n');

export interface MessageBytes {
  /** Bytes in total: header block + CRLF + body (a scanner's Content-Length). */
  readonly size: number;
  /** A fresh stream of those bytes on every call. */
  stream(): Readable;
}

/**
 * The message with its header block as it stands now, or with `headers` (the block as it
 * arrived, before forged fields were removed) in its place. The header block is taken once, here:
 * later changes by other plugins do not change what the size promised.
 */
export function messageBytes(message: MessageView, headers?: readonly HeaderField[]): MessageBytes {
  const head = (headers ? new Headers([...headers]) : message.headers).toBuffer();
  return {
    size: head.length + CRLF.length + message.bodySize,
    stream(): Readable {
      async function* chunks(): AsyncGenerator<Buffer> {
        yield head;
        yield CRLF;
        for await (const chunk of message.body()) yield chunk as Buffer;
      }
      return Readable.from(chunks(), { objectMode: false });
    },
  };
}
