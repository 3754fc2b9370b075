// RFC 6376 §3.4 canonicalization. Headers are small and done as strings; the body is done as a
// byte-level state machine fed chunk by chunk, so a body of any size hashes in constant memory.
import type { HeaderField } from '@tern/plugin-api';

export type CanonicalizationMode = 'simple' | 'relaxed';

/** One header field, canonicalized, with its final CRLF. Latin-1 because Headers writes raw fields as Latin-1. */
export function canonicalizeHeader(field: HeaderField, mode: CanonicalizationMode): string {
  if (mode === 'simple') return `${field.raw}\r\n`;
  return `${relaxedHeader(field.raw)}\r\n`;
}

/** Relaxed form of a raw `Name: value` field (no trailing CRLF). Used for the signature field too. */
export function relaxedHeader(raw: string): string {
  const colon = raw.indexOf(':');
  const name = raw
    .slice(0, colon)
    .replace(/[ \t]+$/, '')
    .toLowerCase();
  const value = raw
    .slice(colon + 1)
    .replace(/\r\n/g, '')
    .replace(/[ \t]+/g, ' ')
    .replace(/^ /, '')
    .replace(/ $/, '');
  return `${name}:${value}`;
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const TAB = 0x09;
// Output is staged in one fixed block, shared by every canonicalizer and handed to the sink when
// full and at the end of each update(): no allocation per message (a 64 KiB block per message made
// a quarter of the main thread's signing time garbage collection) and none that grows with the body.
// Sharing is safe because update() and finish() run to completion and leave the block empty.
const BLOCK = 16 * 1024;
const staging = Buffer.allocUnsafe(BLOCK);

/**
 * Canonicalizes a body as it streams. Line ends are CRLF only: a bare CR or LF is an ordinary byte,
 * so what is hashed is exactly what is sent (intake normalises bare line ends before this runs).
 * Empty lines are held back as a count, not as bytes, until content follows; at the end they are
 * dropped (both modes), which is how trailing empty lines are ignored without buffering them.
 */
export class BodyCanonicalizer {
  readonly #relaxed: boolean;
  readonly #sink: (bytes: Buffer) => void;
  readonly #out = staging;
  #used = 0;
  /** CRLFs seen but not yet written: they are trailing empty lines unless content follows. */
  #pendingLineEnds = 0;
  /** A CR seen at the end of the last chunk (or last byte), not yet known to start a CRLF. */
  #pendingCr = false;
  /** Relaxed: a run of WSP seen inside the line, written as one SP only if content follows on the line. */
  #pendingSpace = false;
  #wroteContent = false;
  #finished = false;

  constructor(mode: CanonicalizationMode, sink: (bytes: Buffer) => void) {
    this.#relaxed = mode === 'relaxed';
    this.#sink = sink;
  }

  update(chunk: Uint8Array): void {
    if (this.#finished) throw new Error('BodyCanonicalizer: update after finish');
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number;
      if (this.#pendingCr) {
        this.#pendingCr = false;
        if (byte === LF) {
          this.#endLine();
          continue;
        }
        this.#content(CR);
      }
      if (byte === CR) {
        this.#pendingCr = true;
      } else if (this.#relaxed && (byte === SP || byte === TAB)) {
        this.#pendingSpace = true;
      } else {
        this.#content(byte);
      }
    }
    // Hand over what is staged: the block is shared, and the next update may be another message's.
    this.#flush();
  }

  /** Ends the body: writes the single final CRLF (or, for an empty simple body, the lone CRLF). */
  finish(): void {
    if (this.#finished) return;
    if (this.#pendingCr) {
      this.#pendingCr = false;
      this.#content(CR);
    }
    // An unfinished last line (relaxed: only spaces) contributes nothing, as trailing WSP is removed.
    this.#pendingSpace = false;
    // RFC 6376 §3.4.3: an empty simple body is one CRLF; §3.4.4: an empty relaxed body is empty.
    // Otherwise both end in exactly one CRLF, added when the last line had none.
    if (this.#wroteContent || !this.#relaxed) this.#write(CR, LF);
    this.#flush();
    this.#finished = true;
  }

  #endLine(): void {
    // Relaxed: WSP at the end of a line is deleted.
    this.#pendingSpace = false;
    this.#pendingLineEnds++;
  }

  #content(byte: number): void {
    while (this.#pendingLineEnds > 0) {
      this.#write(CR, LF);
      this.#pendingLineEnds--;
    }
    if (this.#pendingSpace) {
      this.#pendingSpace = false;
      this.#writeByte(SP);
    }
    this.#writeByte(byte);
    this.#wroteContent = true;
  }

  #write(a: number, b: number): void {
    this.#writeByte(a);
    this.#writeByte(b);
  }

  #writeByte(byte: number): void {
    if (this.#used === BLOCK) this.#flush();
    this.#out[this.#used++] = byte;
  }

  #flush(): void {
    if (this.#used === 0) return;
    // The sink (a hash update) consumes the bytes synchronously, so the block can be reused.
    this.#sink(this.#out.subarray(0, this.#used));
    this.#used = 0;
  }
}
