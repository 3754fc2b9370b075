// Makes DKIM-Signature fields (RFC 6376 §5, RFC 8463) with node:crypto: the body is hashed while
// it streams, the header hash is signed with RSASSA-PKCS1-v1_5/SHA-256 or Ed25519 over SHA-256.
import { createHash } from 'node:crypto';
import type { HeaderField, Headers, MessageView } from '@tern/plugin-api';
import {
  BodyCanonicalizer,
  type CanonicalizationMode,
  canonicalizeHeader,
  relaxedHeader,
} from './canonicalize.js';
import type { SigningKey } from './options.js';
import { type SignFunction, signOnLibuvPool } from './signer.js';

export interface SignatureSettings {
  readonly headerCanon: CanonicalizationMode;
  readonly bodyCanon: CanonicalizationMode;
  /** Lower-case names to sign when present. */
  readonly headers: readonly string[];
  /** Lower-case names to sign once more than they occur. */
  readonly oversign: ReadonlySet<string>;
  readonly expiresIn?: number | undefined;
  /** Where the private-key operation runs: libuv's thread pool unless given (the plugin's worker threads). */
  readonly signer?: SignFunction | undefined;
}

/** A signature that was added. */
export interface AddedSignature {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: SigningKey['algorithm'];
  /** The DKIM-Signature field value as prepended. */
  readonly value: string;
}

/** Hashes a body stream canonicalized as `mode`, chunk by chunk, never holding more than one chunk. */
export async function bodyHash(
  body: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>,
  mode: CanonicalizationMode,
): Promise<string> {
  const hash = createHash('sha256');
  const canon = new BodyCanonicalizer(mode, (bytes) => hash.update(bytes));
  for await (const chunk of body)
    canon.update(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk);
  canon.finish();
  return hash.digest('base64');
}

/** bodyHash of a body held in memory, in one synchronous pass: no stream, no promise per chunk. */
export function bodyHashOfChunks(chunks: readonly Uint8Array[], mode: CanonicalizationMode): string {
  const hash = createHash('sha256');
  const canon = new BodyCanonicalizer(mode, (bytes) => hash.update(bytes));
  for (const chunk of chunks) canon.update(chunk);
  canon.finish();
  return hash.digest('base64');
}

/**
 * Above this a body held in memory is still streamed: one synchronous pass over it would hold the
 * event loop (about 1 ms per 256 KiB) where the stream lets other sessions run between chunks.
 */
const SYNC_HASH_MAX = 256 * 1024;

interface HeldBody {
  bodySource(): { chunks(): readonly Buffer[] | undefined };
}

/**
 * The body's chunks when every byte is in memory and it is small: intake's messages (plugin-api's
 * MessageContent) say so through bodySource(). Undefined for a body spooled to disk, a large one, or
 * another MessageView: stream it.
 */
function heldBody(message: MessageView): readonly Buffer[] | undefined {
  if (message.bodySize > SYNC_HASH_MAX) return undefined;
  const source = (message as Partial<HeldBody>).bodySource;
  return typeof source === 'function' ? source.call(message).chunks() : undefined;
}

/**
 * The h= list: each configured name once per field present, plus once more for oversigned names
 * (an absent oversigned field is listed once, which signs its absence).
 */
export function signedHeaderNames(headers: Headers, settings: SignatureSettings): string[] {
  const names: string[] = [];
  for (const name of settings.headers) {
    const times = headers.count(name) + (settings.oversign.has(name) ? 1 : 0);
    for (let i = 0; i < times; i++) names.push(name);
  }
  return names;
}

/**
 * Picks fields for h= as a verifier will (RFC 6376 §5.4.2): each listed name takes the lowest
 * instance not yet used; a name with none left contributes nothing.
 */
export function selectHeaderFields(headers: Headers, names: readonly string[]): HeaderField[] {
  const byName = new Map<string, HeaderField[]>();
  for (const field of headers.fields()) {
    const list = byName.get(field.key);
    if (list) list.push(field);
    else byName.set(field.key, [field]);
  }
  const selected: HeaderField[] = [];
  for (const name of names) {
    const field = byName.get(name)?.pop();
    if (field) selected.push(field);
  }
  return selected;
}

/** True when a DKIM-Signature with this d= and s= is already on the message. */
export function hasSignatureFrom(headers: Headers, domain: string, selector: string): boolean {
  return headers.getAll('DKIM-Signature').some((value) => {
    const tags = parseTags(value);
    return tags.get('d')?.toLowerCase() === domain && tags.get('s')?.toLowerCase() === selector;
  });
}

/** Tag=value list (RFC 6376 §3.2), whitespace inside values removed. Later repeats are ignored. */
export function parseTags(value: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    const name = part.slice(0, eq).trim();
    if (name !== '' && !tags.has(name)) tags.set(name, part.slice(eq + 1).replace(/[ \t\r\n]+/g, ''));
  }
  return tags;
}

/**
 * Signs a message with each key, prepending one DKIM-Signature per key, and returns what it added.
 * The body is read once, as a stream, whatever the number of keys.
 */
export async function signMessage(
  message: MessageView,
  keys: readonly SigningKey[],
  settings: SignatureSettings,
  now: Date = new Date(),
): Promise<AddedSignature[]> {
  if (keys.length === 0) return [];
  const held = heldBody(message);
  const bh =
    held === undefined
      ? await bodyHash(message.body(), settings.bodyCanon)
      : bodyHashOfChunks(held, settings.bodyCanon);
  // Every signature covers the same fields, chosen before any of ours is added.
  const names = signedHeaderNames(message.headers, settings);
  const fields = selectHeaderFields(message.headers, names);
  const signedBlock = fields.map((f) => canonicalizeHeader(f, settings.headerCanon)).join('');
  const t = Math.floor(now.getTime() / 1000);
  const signer = settings.signer ?? signOnLibuvPool;
  const added: AddedSignature[] = [];
  for (const key of keys) {
    const tags: [string, string][] = [
      ['v', '1'],
      ['a', key.algorithm],
      ['c', `${settings.headerCanon}/${settings.bodyCanon}`],
      ['d', key.domain],
      ['s', key.selector],
      ['t', String(t)],
    ];
    if (settings.expiresIn !== undefined) tags.push(['x', String(t + settings.expiresIn)]);
    tags.push(['h', names.join(':')], ['bh', bh]);
    const unsigned = `${foldTags(tags)};\r\n\tb=`;
    // The field as hashed is the field as sent with b= empty (RFC 6376 §3.7), so fold before hashing.
    const raw = `DKIM-Signature: ${unsigned}`;
    const canonical = settings.headerCanon === 'simple' ? raw : relaxedHeader(raw);
    const data = Buffer.from(signedBlock + canonical, 'latin1');
    const signature =
      key.algorithm === 'ed25519-sha256'
        ? // RFC 8463 §3: PureEdDSA over the SHA-256 of the data, not over the data itself.
          await signer(null, createHash('sha256').update(data).digest(), key.privateKey)
        : await signer('sha256', data, key.privateKey);
    const value = unsigned + foldBase64(signature.toString('base64'));
    message.headers.prepend('DKIM-Signature', value);
    added.push({ domain: key.domain, selector: key.selector, algorithm: key.algorithm, value });
  }
  return added;
}

const LINE = 76;

/** Tags joined by `; `, folded onto continuation lines so no line runs far past 78 characters. */
function foldTags(tags: readonly [string, string][]): string {
  let out = '';
  let line = 'DKIM-Signature: '.length;
  for (const [i, [name, value]] of tags.entries()) {
    const piece = `${name}=${name === 'h' ? foldList(value) : value}`;
    const sep = i === 0 ? '' : ';';
    const firstLine = piece.split('\r\n')[0] as string;
    if (i > 0 && line + 2 + firstLine.length > LINE) {
      out += `${sep}\r\n\t${piece}`;
      line = 1 + lastLineLength(piece);
    } else {
      out += i === 0 ? piece : `${sep} ${piece}`;
      line = piece.includes('\r\n') ? lastLineLength(piece) : line + (i === 0 ? 0 : 2) + piece.length;
    }
  }
  return out;
}

/** A colon list folded after colons (FWS is allowed around them in h=). */
function foldList(value: string): string {
  const parts = value.split(':');
  let out = '';
  let line = 0;
  for (const [i, part] of parts.entries()) {
    if (i > 0 && line + part.length + 1 > LINE - 8) {
      out += ':\r\n\t';
      line = 1;
    } else if (i > 0) {
      out += ':';
      line += 1;
    }
    out += part;
    line += part.length;
  }
  return out;
}

/** Base64 broken into lines; FWS inside b= is ignored by verifiers. */
function foldBase64(b64: string): string {
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += LINE - 4) lines.push(b64.slice(i, i + LINE - 4));
  return lines.join('\r\n\t');
}

function lastLineLength(text: string): number {
  return (text.split('\r\n').at(-1) as string).length;
}
