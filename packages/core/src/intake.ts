// Reads the DATA stream once: size limit, bare CR / bare LF / NUL policy, header block split.
// The body is kept as the chunks it arrived in (never concatenated); only the header block,
// bounded by maxHeaderBytes, is joined to be parsed.
import type { Readable } from 'node:stream';
import { Headers, type SmtpReply } from '@tern/plugin-api';
import type { BareLineEndingPolicy } from './options.js';
import { CoreReplies } from './replies.js';

const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;
const CRLF = Buffer.from('\r\n');
const EMPTY_LINE = Buffer.from('\r\n\r\n');

/**
 * Finds bare CR, bare LF and NUL across chunk boundaries. In `reject` mode it only reports; in
 * `normalize` mode it returns repaired copies of the chunks that need it (bare CR and bare LF
 * become CRLF, NUL is dropped) and the untouched chunks themselves otherwise.
 */
export class LineEndingGuard {
  readonly policy: BareLineEndingPolicy;
  /** A bare CR, bare LF or NUL was seen. */
  found = false;
  /** The last byte seen was a CR whose LF has not arrived yet. */
  #crPending = false;

  constructor(policy: BareLineEndingPolicy) {
    this.policy = policy;
  }

  push(chunk: Buffer): Buffer[] {
    if (chunk.length === 0) return [];
    if (isClean(chunk, this.#crPending)) {
      this.#crPending = chunk[chunk.length - 1] === CR;
      return [chunk];
    }
    this.found = true;
    return this.policy === 'normalize' ? [this.#repair(chunk)] : [];
  }

  /** Call at the end of the message: a CR as the very last byte is bare. */
  end(): Buffer[] {
    if (!this.#crPending) return [];
    this.#crPending = false;
    this.found = true;
    return this.policy === 'normalize' ? [Buffer.from([LF])] : [];
  }

  #repair(chunk: Buffer): Buffer {
    const out = Buffer.allocUnsafe(chunk.length * 2 + 1);
    let o = 0;
    let crPending = this.#crPending;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (byte === NUL) continue;
      if (byte === LF) {
        if (!crPending) out[o++] = CR;
        out[o++] = LF;
        crPending = false;
        continue;
      }
      if (crPending) out[o++] = LF; // the CR before this byte was bare
      out[o++] = byte;
      crPending = byte === CR;
    }
    this.#crPending = crPending;
    return Buffer.from(out.subarray(0, o));
  }
}

/** True when every CR is followed by LF and every LF preceded by CR (given the carry-over CR) and there is no NUL. */
function isClean(chunk: Buffer, crPending: boolean): boolean {
  if (crPending && chunk[0] !== LF) return false;
  if (chunk.indexOf(NUL) !== -1) return false;
  for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
    if (i === 0 ? !crPending : chunk[i - 1] !== CR) return false;
  }
  for (let i = chunk.indexOf(CR); i !== -1; i = chunk.indexOf(CR, i + 1)) {
    if (i + 1 < chunk.length && chunk[i + 1] !== LF) return false;
  }
  return true;
}

/** Collects bytes up to the empty line that ends the header block; hands back the rest as body. */
export class HeaderSplitter {
  readonly #max: number;
  readonly #parts: Buffer[] = [];
  #size = 0;
  // The bytes just before the next chunk; at the start a virtual CRLF, so a message that opens
  // with an empty line has an empty header block.
  #tail: Buffer = CRLF;
  #found = false;
  tooBig = false;

  constructor(maxHeaderBytes: number) {
    this.#max = maxHeaderBytes;
  }

  get done(): boolean {
    return this.#found;
  }

  /** Returns the body part of the chunk once the header block is complete (possibly empty), else undefined. */
  push(chunk: Buffer): Buffer | undefined {
    if (this.#found) return chunk;
    if (this.tooBig) return undefined;
    const room = this.#max - this.#size;
    const probe = Buffer.concat([this.#tail, chunk.subarray(0, Math.max(0, Math.min(chunk.length, room)))]);
    const at = probe.indexOf(EMPTY_LINE);
    if (at === -1) {
      if (chunk.length > room) {
        this.tooBig = true;
        return undefined;
      }
      this.#parts.push(chunk);
      this.#size += chunk.length;
      this.#tail = probe.subarray(Math.max(0, probe.length - 3));
      return undefined;
    }
    const bodyStart = at + EMPTY_LINE.length - this.#tail.length;
    this.#parts.push(chunk.subarray(0, bodyStart));
    this.#size += bodyStart;
    this.#found = true;
    return chunk.subarray(bodyStart);
  }

  /** The parsed header block (without the empty line). */
  headers(): Headers {
    const block = Buffer.concat(this.#parts, this.#size);
    const end = this.#found ? block.length - CRLF.length : block.length;
    return Headers.parse(block.subarray(0, Math.max(0, end)));
  }
}

export interface MessageReadOptions {
  readonly bareLineEndings: BareLineEndingPolicy;
  readonly maxMessageSize: number;
  readonly maxHeaderBytes: number;
}

export type MessageReadResult =
  | {
      readonly ok: true;
      readonly headers: Headers;
      readonly body: Buffer[];
      /** Bytes received (after dot-unstuffing, before normalization). */
      readonly size: number;
      /** Bare CR/LF or NUL were repaired (normalize policy). */
      readonly normalized: boolean;
    }
  | { readonly ok: false; readonly reply: SmtpReply; readonly size: number };

/**
 * Consumes the whole DATA stream (also after deciding to refuse, so the SMTP dialogue goes on)
 * and resolves with the message or the reply that refuses it. Rejects when the stream fails
 * (the client went away mid-message).
 */
export function readMessage(stream: Readable, options: MessageReadOptions): Promise<MessageReadResult> {
  const guard = new LineEndingGuard(options.bareLineEndings);
  const splitter = new HeaderSplitter(options.maxHeaderBytes);
  let body: Buffer[] = [];
  let size = 0;
  let refusal: SmtpReply | undefined;

  const refuse = (reply: SmtpReply): void => {
    refusal = reply;
    body = []; // let what was kept go while the rest drains
  };
  const keep = (chunks: Buffer[]): void => {
    for (const chunk of chunks) {
      const rest = splitter.push(chunk);
      if (splitter.tooBig) {
        refuse(CoreReplies.headerTooBig);
        return;
      }
      if (rest !== undefined && rest.length > 0) body.push(rest);
    }
  };
  const take = (chunk: Buffer): void => {
    size += chunk.length;
    if (refusal) return;
    if (size > options.maxMessageSize) refuse(CoreReplies.messageTooBig);
    else {
      const kept = guard.push(chunk);
      if (guard.found && guard.policy === 'reject') refuse(CoreReplies.bareLineEnding);
      else keep(kept);
    }
  };

  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      fn();
    };
    // Flowing mode hands over the chunks as they were written; read() could join several.
    stream.on('data', take);
    stream.once('error', (error) => settle(() => reject(error)));
    stream.once('close', () => {
      if (!stream.readableEnded)
        settle(() => reject(new Error('DATA stream closed before the end of the message')));
    });
    stream.once('end', () =>
      settle(() => {
        if (!refusal) {
          const tail = guard.end();
          if (guard.found && guard.policy === 'reject') refuse(CoreReplies.bareLineEnding);
          else keep(tail);
        }
        if (refusal) return resolve({ ok: false, reply: refusal, size });
        resolve({ ok: true, headers: splitter.headers(), body, size, normalized: guard.found });
      }),
    );
  });
}
