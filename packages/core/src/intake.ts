// Reads the DATA stream once: size limit, bare CR / bare LF / NUL policy, the 998-octet line
// limit, header block split. The body goes to the intake spool (memory, then a file) as it
// arrives, never concatenated; only the header block, bounded by maxHeaderBytes, is joined.
import { isAscii } from 'node:buffer';
import type { Readable } from 'node:stream';
import { Headers, type SmtpReply } from '@tern/plugin-api';
import type { ByteSource } from '@tern/plugin-api/host';
import type { BareLineEndingPolicy, LongLinePolicy } from './options.js';
import { CoreReplies } from './replies.js';
import { type IntakeSpool, SpoolError } from './spool.js';

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

  /** The header block's bytes (without the empty line). */
  block(): Buffer {
    const block = Buffer.concat(this.#parts, this.#size);
    const end = this.#found ? block.length - CRLF.length : block.length;
    return block.subarray(0, Math.max(0, end));
  }

  /** The parsed header block (without the empty line). */
  headers(): Headers {
    return Headers.parse(this.block());
  }
}

/** RFC 5322 §2.1.1: a line is at most 998 octets, CRLF excluded. */
export const MAX_LINE_OCTETS = 998;

/**
 * Finds body lines longer than 998 octets (the chunks are CRLF-clean: the LineEndingGuard ran
 * first). `reject` only reports; `wrap` breaks such lines with CRLF every 998 octets, so what is
 * queued (and DKIM-signed) is what goes onward.
 */
export class LongLineGuard {
  readonly policy: LongLinePolicy;
  /** A line over the limit was seen. */
  found = false;
  /** Octets of the current line so far, a CR that ends it included. */
  #column = 0;

  constructor(policy: LongLinePolicy) {
    this.policy = policy;
  }

  push(chunk: Buffer): Buffer {
    const column = this.#scan(chunk);
    if (column === -1) {
      this.found = true;
      if (this.policy === 'wrap') return this.#wrap(chunk);
      return chunk;
    }
    this.#column = column;
    return chunk;
  }

  /** The column after `chunk`, or -1 when a line in it is too long. Fast: native indexOf per line. */
  #scan(chunk: Buffer): number {
    let column = this.#column;
    let from = 0;
    for (let lf = chunk.indexOf(LF); lf !== -1; lf = chunk.indexOf(LF, from)) {
      // The octets before the LF, less the CR that ends the line (it may be the last byte of the previous chunk).
      const length = column + (lf - from) - (lf > 0 ? (chunk[lf - 1] === CR ? 1 : 0) : column > 0 ? 1 : 0);
      if (length > MAX_LINE_OCTETS) return -1;
      column = 0;
      from = lf + 1;
    }
    column += chunk.length - from;
    // 999 octets is one too many unless the 999th is the CR that ends the line.
    if (column > MAX_LINE_OCTETS + 1) return -1;
    if (column === MAX_LINE_OCTETS + 1 && chunk[chunk.length - 1] !== CR) return -1;
    return column;
  }

  #wrap(chunk: Buffer): Buffer {
    const out = Buffer.allocUnsafe(chunk.length + Math.ceil(chunk.length / MAX_LINE_OCTETS) * 2 + 2);
    let o = 0;
    let column = this.#column;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (byte === LF) column = 0;
      else {
        // The CR that ends a line of exactly 998 octets stays on it; anything else starts a new line.
        if (column >= MAX_LINE_OCTETS && byte !== CR) {
          out[o++] = CR;
          out[o++] = LF;
          column = 0;
        }
        column++;
      }
      out[o++] = byte;
    }
    this.#column = column;
    return Buffer.from(out.subarray(0, o));
  }
}

/** True when a line of the header block is longer than 998 octets. */
export function hasLongLine(block: Buffer): boolean {
  let from = 0;
  for (let lf = block.indexOf(LF); lf !== -1; lf = block.indexOf(LF, from)) {
    const end = lf > from && block[lf - 1] === CR ? lf - 1 : lf;
    if (end - from > MAX_LINE_OCTETS) return true;
    from = lf + 1;
  }
  return block.length - from > MAX_LINE_OCTETS;
}

export interface MessageReadOptions {
  readonly bareLineEndings: BareLineEndingPolicy;
  readonly longLines: LongLinePolicy;
  readonly maxMessageSize: number;
  readonly maxHeaderBytes: number;
  /** Where the body waits (memory, then a file) until the queue has it. */
  readonly spool: IntakeSpool;
}

export type MessageReadResult =
  | {
      readonly ok: true;
      readonly headers: Headers;
      /** The body, in memory or in a spool file: valid until `release()`. */
      readonly body: ByteSource;
      /** Bytes received (after dot-unstuffing, before normalization). */
      readonly size: number;
      /** Bare CR/LF or NUL were repaired (normalize policy). */
      readonly normalized: boolean;
      /** Lines over 998 octets were wrapped (wrap policy). */
      readonly wrapped: boolean;
      /** A byte with the high bit set was seen (header block or body). */
      readonly eightBit: boolean;
      /** Frees the body's memory and spool file; call once the queue has it (or it was refused). */
      release(): Promise<void>;
    }
  | { readonly ok: false; readonly reply: SmtpReply; readonly size: number };

/**
 * Consumes the whole DATA stream (also after deciding to refuse, so the SMTP dialogue goes on)
 * and resolves with the message or the reply that refuses it. The body goes to the spool as it
 * arrives; while a spool file write is pending the stream is not read (smtp-server then stops
 * reading the socket), so memory stays bounded whatever the client sends. Rejects when the
 * stream fails (the client went away mid-message).
 */
export async function readMessage(stream: Readable, options: MessageReadOptions): Promise<MessageReadResult> {
  const guard = new LineEndingGuard(options.bareLineEndings);
  const lines = new LongLineGuard(options.longLines);
  const splitter = new HeaderSplitter(options.maxHeaderBytes);
  const writer = options.spool.open();
  let size = 0;
  let eightBit = false;
  let refusal: SmtpReply | undefined;

  const refuse = (reply: SmtpReply): void => {
    refusal = reply;
    void writer.dispose(); // let what was kept go while the rest drains
  };
  const keepBody = (chunk: Buffer): Promise<void> | undefined => {
    const body = lines.push(chunk);
    if (lines.found && lines.policy === 'reject') {
      refuse(CoreReplies.lineTooLongInMessage);
      return undefined;
    }
    if (!eightBit && !isAscii(body)) eightBit = true;
    return writer.write(body);
  };
  const keep = async (chunks: Buffer[]): Promise<void> => {
    for (const chunk of chunks) {
      const rest = splitter.push(chunk);
      if (splitter.tooBig) return refuse(CoreReplies.headerTooBig);
      const header = chunk.length - (rest?.length ?? 0);
      if (header > 0 && !writer.hold(header)) return refuse(CoreReplies.insufficientStorage);
      if (rest !== undefined && rest.length > 0) {
        const pending = keepBody(rest);
        if (pending) await pending;
        if (refusal) return;
      }
    }
  };
  const take = (chunk: Buffer): Promise<void> | undefined => {
    size += chunk.length;
    if (refusal) return undefined;
    if (size > options.maxMessageSize) {
      refuse(CoreReplies.messageTooBig);
      return undefined;
    }
    const kept = guard.push(chunk);
    if (guard.found && guard.policy === 'reject') {
      refuse(CoreReplies.bareLineEnding);
      return undefined;
    }
    return keep(kept);
  };

  try {
    for await (const chunk of stream) {
      const pending = take(chunk as Buffer);
      if (pending) await pending.catch(onSpoolError);
    }
    if (!refusal) {
      const tail = guard.end();
      if (guard.found && guard.policy === 'reject') refuse(CoreReplies.bareLineEnding);
      else await keep(tail).catch(onSpoolError);
    }
    if (refusal) return { ok: false, reply: refusal, size };
    const block = splitter.block();
    if (hasLongLine(block)) {
      await writer.dispose();
      return { ok: false, reply: CoreReplies.lineTooLongInMessage, size };
    }
    const body = await writer.finish().catch((error: unknown) => {
      onSpoolError(error);
      return undefined;
    });
    if (body === undefined) return { ok: false, reply: refusal ?? CoreReplies.insufficientStorage, size };
    return {
      ok: true,
      headers: Headers.parse(block),
      body,
      size,
      normalized: guard.found,
      wrapped: lines.found,
      eightBit: eightBit || !isAscii(block),
      release: () => writer.dispose(),
    };
  } catch (error) {
    await writer.dispose();
    throw error;
  }

  function onSpoolError(error: unknown): void {
    if (!(error instanceof SpoolError)) throw error;
    refuse(CoreReplies.insufficientStorage);
  }
}
