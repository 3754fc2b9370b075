// Reading what arrives at the bounce domain: a delivery status notification (RFC 3464,
// multipart/report; report-type=delivery-status), a feedback-loop report (ARF, RFC 5965,
// multipart/report; report-type=feedback-report), or anything else (a bounce some MTA wrote in
// prose, matched by the VERP address it was sent to alone). postal-mime splits the MIME; the
// report fields are read here, every count and length bounded.
import PostalMime from 'postal-mime';

/** One recipient block of a DSN. */
export interface DsnRecipient {
  /** Final-Recipient's address (the `rfc822;` type stripped). */
  readonly finalRecipient?: string;
  readonly originalRecipient?: string;
  /** Lower-cased: failed, delayed, delivered, relayed, expanded. */
  readonly action?: string;
  /** The RFC 3463 code, when well formed. */
  readonly status?: string;
  /** Diagnostic-Code without its type (`smtp; `), unfolded. */
  readonly diagnostic?: string;
  readonly remoteMta?: string;
}

export type FeedbackReport =
  | {
      readonly kind: 'dsn';
      readonly reportingMta?: string;
      readonly recipients: readonly DsnRecipient[];
      /** The return path in the returned message's headers (our VERP address, usually). */
      readonly originalReturnPath?: string;
    }
  | {
      readonly kind: 'arf';
      /** Lower-cased: abuse, fraud, virus, other, not-spam, auth-failure. */
      readonly feedbackType: string;
      readonly userAgent?: string;
      readonly originalMailFrom?: string;
      readonly originalRcptTo: readonly string[];
      readonly originalReturnPath?: string;
    }
  | {
      readonly kind: 'plain';
      /** The start of the text, as a diagnostic. */
      readonly text?: string;
    };

/** Most recipient blocks read from one DSN; most fields read from one block. */
const MAX_BLOCKS = 100;
const MAX_FIELDS = 50;
/** Longest field value kept (a diagnostic may be folded over several lines). */
const MAX_VALUE = 1000;
const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}$/;

/** The fields of a report part: blocks separated by empty lines, each a list of name/value pairs. */
export function reportBlocks(text: string, maxBlocks = MAX_BLOCKS + 1): Map<string, string>[] {
  const blocks: Map<string, string>[] = [];
  let current: Map<string, string> | undefined;
  let last: string | undefined;
  let fields = 0;
  for (const raw of text.split(/\r?\n/)) {
    if (raw.trim() === '') {
      current = undefined;
      last = undefined;
      if (blocks.length >= maxBlocks) break;
      continue;
    }
    if (current === undefined) {
      if (blocks.length >= maxBlocks) break;
      current = new Map();
      blocks.push(current);
      fields = 0;
    }
    if (/^[ \t]/.test(raw) && last !== undefined) {
      // A folded line continues the field before it.
      const joined = `${current.get(last) ?? ''} ${raw.trim()}`;
      current.set(last, joined.slice(0, MAX_VALUE));
      continue;
    }
    const colon = raw.indexOf(':');
    if (colon <= 0 || fields >= MAX_FIELDS) {
      last = undefined;
      continue;
    }
    const name = raw.slice(0, colon).trim().toLowerCase();
    // The first of a repeated field counts (RFC 5965 allows several Original-Rcpt-To: kept apart below).
    if (!current.has(name))
      current.set(
        name,
        raw
          .slice(colon + 1)
          .trim()
          .slice(0, MAX_VALUE),
      );
    else if (name === 'original-rcpt-to')
      current.set(name, `${current.get(name)}\n${raw.slice(colon + 1).trim()}`);
    last = name;
    fields++;
  }
  return blocks;
}

/** `rfc822; someone@example.com` → `someone@example.com` (angle brackets dropped). */
function typedAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const semi = value.indexOf(';');
  return bareAddress(semi === -1 ? value : value.slice(semi + 1));
}

function bareAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  const angled = /<([^<>]*)>/.exec(trimmed);
  const address = (angled ? angled[1] : trimmed)?.trim() ?? '';
  return address === '' || address.length > 320 || /\s/.test(address) ? undefined : address;
}

/** A typed value without its type (`smtp; 550 …` → `550 …`, `dns; mx.example` → `mx.example`). */
function untyped(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const semi = value.indexOf(';');
  const text = (semi === -1 ? value : value.slice(semi + 1)).trim();
  return text === '' ? undefined : text;
}

/** The Return-Path of a returned message's (or its headers') text. */
function returnPathOf(headers: string | undefined): string | undefined {
  if (headers === undefined) return undefined;
  const end = headers.search(/\r?\n\r?\n/);
  const block = headers.slice(0, end === -1 ? Math.min(headers.length, 64 * 1024) : end);
  const match = /^return-path:[ \t]*(.*)$/im.exec(block);
  return bareAddress(match?.[1]);
}

function contentText(content: ArrayBuffer | Uint8Array | string): string {
  return typeof content === 'string' ? content : Buffer.from(content as ArrayBuffer).toString('utf8');
}

/** Reads a report; anything that is neither a DSN nor an ARF report is `plain`. Throws only for MIME it cannot read at all. */
export async function parseFeedback(raw: Buffer): Promise<FeedbackReport> {
  const email = await PostalMime.parse(raw, {
    forceRfc822Attachments: true,
    attachmentEncoding: 'utf8',
    maxNestingDepth: 20,
    maxHeadersSize: 256 * 1024,
  });
  const parts = email.attachments.map((a) => ({
    type: a.mimeType.toLowerCase(),
    text: contentText(a.content),
  }));
  const returned = parts.find(
    (p) => p.type === 'message/rfc822' || p.type === 'text/rfc822-headers' || p.type === 'message/global',
  );
  const originalReturnPath = returnPathOf(returned?.text);
  const status = parts.find(
    (p) => p.type === 'message/delivery-status' || p.type === 'message/global-delivery-status',
  );
  if (status) {
    const [perMessage, ...perRecipient] = reportBlocks(status.text);
    const recipients: DsnRecipient[] = perRecipient
      .filter((b) => b.has('final-recipient') || b.has('original-recipient') || b.has('action'))
      .slice(0, MAX_BLOCKS)
      .map((b) => {
        const statusCode = b.get('status')?.split(/\s/)[0];
        const entries = {
          finalRecipient: typedAddress(b.get('final-recipient')),
          originalRecipient: typedAddress(b.get('original-recipient')),
          action: b.get('action')?.toLowerCase().split(/[\s(]/)[0],
          status: statusCode !== undefined && ENHANCED.test(statusCode) ? statusCode : undefined,
          diagnostic: untyped(b.get('diagnostic-code')),
          remoteMta: untyped(b.get('remote-mta')),
        };
        return Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined)) as DsnRecipient;
      });
    const reportingMta = untyped(perMessage?.get('reporting-mta'));
    return {
      kind: 'dsn',
      recipients,
      ...(reportingMta ? { reportingMta } : {}),
      ...(originalReturnPath ? { originalReturnPath } : {}),
    };
  }
  const feedback = parts.find((p) => p.type === 'message/feedback-report');
  if (feedback) {
    const fields = reportBlocks(feedback.text, 1)[0] ?? new Map<string, string>();
    const userAgent = fields.get('user-agent');
    const originalMailFrom = bareAddress(fields.get('original-mail-from'));
    const originalRcptTo = (fields.get('original-rcpt-to') ?? '')
      .split('\n')
      .map((a) => bareAddress(a))
      .filter((a): a is string => a !== undefined)
      .slice(0, MAX_BLOCKS);
    return {
      kind: 'arf',
      feedbackType: (fields.get('feedback-type') ?? 'other').toLowerCase().split(/\s/)[0] || 'other',
      originalRcptTo,
      ...(userAgent ? { userAgent } : {}),
      ...(originalMailFrom ? { originalMailFrom } : {}),
      ...(originalReturnPath ? { originalReturnPath } : {}),
    };
  }
  const text = (email.text ?? '').replace(/\s+/g, ' ').trim().slice(0, 300);
  return { kind: 'plain', ...(text ? { text } : {}) };
}
