// VERP-style signed return paths: outbound mail's envelope sender names the message and the
// recipient, so a bounce or a feedback report that arrives days later at the bounce domain is
// matched without trusting anything in its body, and a forged one is told apart.
//
//   b+<queue id>.<recipient tag>.<signature>@<bounce domain>
//   b+mf0k2x9aa0c4e1f2a3b4c5.k3m9qa.x7d2pq4mhv@bounce.example.com
//
// The queue id is lower-cased (it is [0-9A-Z]; many MTAs fold case). The recipient tag is a keyed
// hash of the recipient (6 base32 characters), not the address: the local part stays at 41
// characters whatever the recipient (RFC 5321 §4.5.3.1.1: at most 64), and the recipient's address
// is not shown to anyone reading the bounce. The recipient is found again by hashing the message's
// own recipients. The signature (10 base32 characters, 50 bits of HMAC-SHA256 over both) makes the
// address unforgeable: guessing one over SMTP is out of reach. Mailgun and Postal do the same in
// spirit (`bounce+<hash>-<recipient>@`, `<token>@psrp.`); this keeps both parts keyed.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** What a VERP address carries once its signature checked out. */
export interface ReturnPathToken {
  /** The message's queue id (upper case, as the queue knows it). */
  readonly queueId: string;
  /** The keyed hash of the recipient; match it with {@link recipientTag}. */
  readonly tag: string;
}

export interface ReturnPathOptions {
  /** The bounce domain: a local domain whose mail is read as bounces and feedback reports. */
  readonly domain: string;
  /** The signing key (at least 16 characters). */
  readonly secret: string;
}

const PREFIX = 'b+';
const TAG_LENGTH = 6;
const SIGNATURE_LENGTH = 10;
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
const QUEUE_ID = /^[0-9a-z]{1,40}$/;
const CODE = /^[a-z2-7]+$/;

function base32(bytes: Buffer, length: number): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < length) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= length) break;
  }
  return out;
}

function mac(secret: string, input: string, length: number): string {
  return base32(createHmac('sha256', secret).update(input).digest(), length);
}

/** The keyed hash of a recipient (compared case-insensitively, as mailbox names usually are). */
export function recipientTag(secret: string, recipient: string): string {
  return mac(secret, `rcpt\0${recipient.toLowerCase()}`, TAG_LENGTH);
}

function signature(secret: string, queueId: string, tag: string): string {
  return mac(secret, `verp\0${queueId.toLowerCase()}\0${tag}`, SIGNATURE_LENGTH);
}

/** The signed return path for one recipient of one message. */
export function returnPathFor(options: ReturnPathOptions, queueId: string, recipient: string): string {
  const id = queueId.toLowerCase();
  const tag = recipientTag(options.secret, recipient);
  return `${PREFIX}${id}.${tag}.${signature(options.secret, id, tag)}@${options.domain.toLowerCase()}`;
}

/** Whether an address is at the bounce domain (signed or not). */
export function isBounceAddress(options: Pick<ReturnPathOptions, 'domain'>, address: string): boolean {
  const at = address.lastIndexOf('@');
  return at > 0 && address.slice(at + 1).toLowerCase() === options.domain.toLowerCase();
}

/**
 * Reads a VERP address and checks its signature: the token when it is one of ours and intact,
 * undefined for anything else (another domain, unsigned, a signature that does not match).
 */
export function verifyReturnPath(options: ReturnPathOptions, address: string): ReturnPathToken | undefined {
  if (!isBounceAddress(options, address) || address.length > 320) return undefined;
  const local = address.slice(0, address.lastIndexOf('@')).toLowerCase();
  if (!local.startsWith(PREFIX)) return undefined;
  const [id, tag, sig, ...rest] = local.slice(PREFIX.length).split('.');
  if (id === undefined || tag === undefined || sig === undefined || rest.length > 0) return undefined;
  if (!QUEUE_ID.test(id) || tag.length !== TAG_LENGTH || !CODE.test(tag) || !CODE.test(sig)) return undefined;
  const expected = Buffer.from(signature(options.secret, id, tag));
  const given = Buffer.from(sig);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  return { queueId: id.toUpperCase(), tag };
}
