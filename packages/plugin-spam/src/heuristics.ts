// Header and content heuristics: small, cheap, each one symbol with a documented weight.
import type { Readable } from 'node:stream';
import type { Headers } from '@tern/plugin-api';
import { addressesInText, decodeWords, organizationalDomain, parseAddressList } from './address.js';
import type { SymbolName } from './symbols.js';

/** The Generic Test for Unsolicited Bulk Email: a message carrying it is spam by definition. */
export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

const DAY_MS = 86_400_000;

export interface HeuristicHit {
  readonly name: SymbolName;
  readonly detail?: string;
}

/** Checks the header block; `now` is injectable for tests of DATE_IN_FUTURE. */
export function checkHeaders(headers: Headers, now: number = Date.now()): HeuristicHit[] {
  const hits: HeuristicHit[] = [];

  const date = headers.get('date');
  if (date === undefined) hits.push({ name: 'MISSING_DATE' });
  else {
    const time = Date.parse(date.replace(/\([^)]*\)/g, ' ').trim());
    if (Number.isNaN(time)) hits.push({ name: 'INVALID_DATE', detail: date.slice(0, 80) });
    else if (time - now > DAY_MS) hits.push({ name: 'DATE_IN_FUTURE', detail: date.slice(0, 80) });
  }

  if (!headers.has('message-id')) hits.push({ name: 'MISSING_MESSAGE_ID' });

  const fromCount = headers.count('from');
  const fromValue = headers.get('from');
  let fromDomain: string | undefined;
  if (fromCount === 0 || fromValue === undefined) hits.push({ name: 'MISSING_FROM' });
  else {
    if (fromCount > 1) hits.push({ name: 'MULTIPLE_FROM', detail: String(fromCount) });
    const mailboxes = parseAddressList(fromValue);
    const first = mailboxes[0];
    if (!first || mailboxes.some((m) => !m.valid)) {
      hits.push({ name: 'FROM_MALFORMED', detail: fromValue.slice(0, 120) });
    } else {
      fromDomain = first.domain;
      const shown = addressesInText(first.name).find(
        (domain) => organizationalDomain(domain) !== organizationalDomain(first.domain),
      );
      if (shown !== undefined) {
        hits.push({ name: 'FROM_NAME_SPOOFS_ADDRESS', detail: `${shown} shown, ${first.domain} sent` });
      }
    }
  }

  const replyTo = headers.get('reply-to');
  if (replyTo !== undefined && fromDomain) {
    const target = parseAddressList(replyTo).find((m) => m.valid);
    if (target && organizationalDomain(target.domain) !== organizationalDomain(fromDomain)) {
      hits.push({ name: 'REPLYTO_DOMAIN_MISMATCH', detail: `${fromDomain} -> ${target.domain}` });
    }
  }

  const subject = headers.get('subject');
  if (subject === undefined) hits.push({ name: 'MISSING_SUBJECT' });
  else {
    const text = decodeWords(subject);
    const letters = text.replace(/[^\p{L}]/gu, '');
    if (letters.length >= 10 && letters === letters.toUpperCase() && letters !== letters.toLowerCase()) {
      hits.push({ name: 'SUBJECT_ALL_CAPS' });
    }
  }
  return hits;
}

/** A HELO name that is neither a dotted host name nor an address literal (`localhost`, `PC-42`). */
export function checkHelo(helo: string | undefined): HeuristicHit[] {
  if (helo === undefined) return [];
  if (/^\[[^\]]+\]$/.test(helo)) return [];
  return helo.includes('.') && !helo.endsWith('.')
    ? []
    : [{ name: 'HELO_NOT_FQDN', detail: helo.slice(0, 80) }];
}

/** Looks for GTUBE in the raw body, across chunk boundaries. Encoded (base64) bodies are not decoded. */
export async function containsGtube(body: Readable): Promise<boolean> {
  let tail = '';
  for await (const chunk of body) {
    const text = tail + (chunk as Buffer).toString('latin1');
    if (text.includes(GTUBE)) return true;
    tail = text.slice(-(GTUBE.length - 1));
  }
  return false;
}
