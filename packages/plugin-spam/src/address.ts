// Enough of RFC 5322 address lists and RFC 2047 encoded words to judge From and Reply-To:
// mailboxes with their display names, comments removed, groups flattened.
import { getDomain } from 'tldts';

export interface Mailbox {
  /** Decoded display name, '' when there is none. */
  readonly name: string;
  /** The addr-spec as written (without angle brackets). */
  readonly address: string;
  /** Lower-cased domain, '' when the address has none. */
  readonly domain: string;
  /** The address has a local part and a domain we could use. */
  readonly valid: boolean;
}

const ATOM = "[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~]+";
const LOCAL = new RegExp(`^(?:${ATOM}(?:\\.${ATOM})*|"(?:[^"\\\\]|\\\\.)*")$`);
const DOMAIN = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}\.?$/;
const UTF8_DOMAIN = /^(?:[^\s.@<>()[\]\\,;:"]+\.)+[^\s.@<>()[\]\\,;:"]{2,}\.?$/u;

/** Splits an address list at top-level commas, dropping comments; groups (`name: a, b;`) are flattened. */
export function parseAddressList(value: string): Mailbox[] {
  const items: string[] = [];
  let current = '';
  let depth = 0;
  let quoted = false;
  let angle = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i] ?? '';
    if (quoted) {
      current += c;
      if (c === '\\') current += value[++i] ?? '';
      else if (c === '"') quoted = false;
      continue;
    }
    if (depth > 0) {
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')') depth--;
      if (depth === 0) current += ' ';
      continue;
    }
    if (c === '(') {
      depth = 1;
      continue;
    }
    if (c === '"') quoted = true;
    if (c === '<') angle = true;
    if (c === '>') angle = false;
    if (!angle && (c === ',' || c === ';')) {
      items.push(current);
      current = '';
      continue;
    }
    // A group's display name ends at an unquoted colon outside angle brackets.
    if (!angle && c === ':') {
      current = '';
      continue;
    }
    current += c;
  }
  items.push(current);
  return items
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map(parseMailbox);
}

function parseMailbox(text: string): Mailbox {
  const open = text.lastIndexOf('<');
  const close = text.lastIndexOf('>');
  let name = '';
  let address: string;
  if (open !== -1 && close > open) {
    name = unquote(text.slice(0, open).trim());
    address = text.slice(open + 1, close).trim();
  } else {
    address = text.trim();
  }
  const at = address.lastIndexOf('@');
  const local = at > 0 ? address.slice(0, at) : '';
  const domain = at > 0 ? address.slice(at + 1) : '';
  const valid =
    at > 0 &&
    !/\s/.test(address.replace(/"(?:[^"\\]|\\.)*"/g, '')) &&
    (LOCAL.test(local) || /^[^\s@<>]+$/u.test(local)) &&
    (DOMAIN.test(domain) || UTF8_DOMAIN.test(domain) || /^\[[^\]]+\]$/.test(domain));
  return { name: decodeWords(name), address, domain: domain.toLowerCase().replace(/\.$/, ''), valid };
}

function unquote(text: string): string {
  if (text.startsWith('"') && text.endsWith('"') && text.length >= 2) {
    return text.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  return text;
}

const ENCODED_WORD = /=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=/g;

/** Decodes RFC 2047 encoded words; anything undecodable is left as written. */
export function decodeWords(text: string): string {
  // White space between two adjacent encoded words is not part of the text (RFC 2047 §6.2).
  const joined = text.replace(/(\?=)\s+(?==\?)/g, '$1');
  return joined.replace(ENCODED_WORD, (word, charset: string, encoding: string, data: string) => {
    try {
      const bytes =
        encoding.toUpperCase() === 'B'
          ? Buffer.from(data, 'base64')
          : Buffer.from(
              data
                .replace(/_/g, ' ')
                .replace(/=([0-9A-Fa-f]{2})/g, (_m, hex: string) =>
                  String.fromCharCode(Number.parseInt(hex, 16)),
                ),
              'latin1',
            );
      return new TextDecoder(charset.replace(/\*.*$/, ''), { fatal: false }).decode(bytes);
    } catch {
      return word;
    }
  });
}

/** The registrable ("organizational") domain, or the domain itself when the Public Suffix List has none. */
export function organizationalDomain(domain: string): string {
  const lower = domain.toLowerCase().replace(/\.$/, '');
  return getDomain(lower, { allowPrivateDomains: true }) ?? lower;
}

/** Finds addresses written inside a display name (`"paypal.com <service@paypal.com>" <x@evil>`). */
export function addressesInText(text: string): string[] {
  return [...text.matchAll(/[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)/g)].map((m) => m[1] ?? '');
}
