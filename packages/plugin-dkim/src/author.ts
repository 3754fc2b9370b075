// The RFC 5322 From domain, which picks the signing key: DMARC aligns d= with it, not with the
// envelope sender.
import type { Headers } from '@tern/plugin-api';
import { domainName } from './schema.js';

/**
 * The domain of the first mailbox of the topmost From field, lower case and in A-labels, or
 * undefined when there is no From or it holds no address.
 */
export function authorDomain(headers: Headers): string | undefined {
  const from = headers.get('From');
  if (from === undefined) return undefined;
  const first = firstMailbox(stripQuotedAndComments(from));
  if (first === undefined) return undefined;
  const at = first.lastIndexOf('@');
  if (at === -1) return undefined;
  return domainName(first.slice(at + 1).replace(/[\]>\s]+$/, ''));
}

/** Blanks out quoted strings and (nested) comments, whose text may hold `@`, `<` or `,`. */
function stripQuotedAndComments(value: string): string {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (c === '\\' && (quoted || depth > 0)) {
      i++;
      continue;
    }
    if (quoted) {
      if (c === '"') quoted = false;
      continue;
    }
    if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (depth === 0 && c === '"') quoted = true;
    else if (depth === 0) out += c;
    else continue;
    if (c === '(' || c === ')') out += ' ';
  }
  return out;
}

function firstMailbox(value: string): string | undefined {
  // A group (`Friends: a@x, b@y;`) starts with a display name and a colon.
  const text = value.replace(/^[^<@,]*:/, '');
  for (const part of text.split(',')) {
    const angle = /<([^>]*)>/.exec(part);
    const address = (angle ? angle[1] : part)?.trim().replace(/;$/, '');
    if (address?.includes('@')) return address;
  }
  return undefined;
}
