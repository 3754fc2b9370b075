// What an application POSTs to inject a message, and the RFC 5322 message made of it: a JSON
// message (envelope, headers, text and HTML parts, attachments) built into MIME by nodemailer's
// MailComposer, or a raw message with its envelope. One zod schema is both the check of a
// request (its errors name the field) and, as JSON Schema, the OpenAPI document's.
import { MAX_TAGS, TAG_PATTERN } from '@tern/plugin-api';
import MailComposer from 'nodemailer/lib/mail-composer';
import { z } from 'zod';

/** Limits of one request; each has a config key (`http.*`) and this default. */
export interface ComposeLimits {
  /** Bytes of the message built (default 10 MiB). */
  readonly maxMessageBytes: number;
  /** Envelope recipients (default 100). */
  readonly maxRecipients: number;
}

export const DEFAULT_COMPOSE_LIMITS: ComposeLimits = {
  maxMessageBytes: 10 * 1024 * 1024,
  maxRecipients: 100,
};

/** Tags name a message for webhooks, metrics and suppression scopes: a short word each. */
export const TAG = TAG_PATTERN;
export { MAX_TAGS };

// An address as an envelope carries it: no display name, no angle brackets, one @.
const address = z
  .string()
  .max(320)
  .regex(/^[^\s@<>",;]+@[^\s@<>",;]+$/, 'an email address like someone@example.com (no display name)');
// A header value is one line; folding is MailComposer's job.
const headerValue = z
  .string()
  .max(2000)
  .regex(/^[^\r\n]*$/, 'one line, without CR or LF');
const mailbox = z.union([address, z.strictObject({ name: headerValue, address })]);
const tags = z
  .array(z.string().regex(TAG, 'a tag of letters, digits, _ . - (at most 64)'))
  .max(MAX_TAGS)
  .refine((list) => new Set(list).size === list.length, 'each tag once');
export const envelopeSchema = z.strictObject({
  /** MAIL FROM; empty for the null sender is not allowed here (a sender domain scopes the key). */
  mailFrom: address,
  recipients: z.array(address).min(1, 'at least one recipient'),
});

export const composedMessage = z.strictObject({
  from: mailbox,
  to: z.array(mailbox).default([]),
  cc: z.array(mailbox).default([]),
  bcc: z.array(mailbox).default([]),
  replyTo: mailbox.optional(),
  subject: headerValue.default(''),
  text: z.string().optional(),
  html: z.string().optional(),
  /** More header fields; From, To, Cc, Bcc, Subject, Message-ID and the MIME fields come from the fields above. */
  headers: z.record(z.string(), headerValue).default({}),
  attachments: z
    .array(
      z.strictObject({
        filename: headerValue.min(1),
        contentType: z
          .string()
          .regex(/^[\w.+-]+\/[\w.+-]+$/, 'a media type like application/pdf')
          .optional(),
        /** The bytes, base64-encoded. */
        content: z.base64('the bytes, base64-encoded'),
        /** For inline images an HTML part refers to as cid:… */
        contentId: z
          .string()
          .max(200)
          .regex(/^[^\s<>]+$/)
          .optional(),
      }),
    )
    .max(50)
    .default([]),
  /** Overrides the envelope made of from, to, cc and bcc. */
  envelope: envelopeSchema.optional(),
  tags: tags.default([]),
});

export const rawMessage = z.strictObject({
  /** The whole message, RFC 5322, as text (CRLF or LF line ends). */
  raw: z.string().min(1),
  envelope: envelopeSchema,
  tags: tags.default([]),
});

export const injectionRequest = z.union([rawMessage, composedMessage]);
export type InjectionRequest = z.input<typeof injectionRequest>;

const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;

/** Header fields the JSON fields own: given in `headers` they would be sent twice. */
const OWNED = new Set([
  'from',
  'to',
  'cc',
  'bcc',
  'reply-to',
  'subject',
  'message-id',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
]);

/** A request refused: `field` names where, `problem` what to fix. */
export class InjectionInputError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(field === '' ? problem : `${field}: ${problem}`);
    this.name = 'InjectionInputError';
  }
}

/** A message ready for intake: its envelope, bytes (CRLF line ends) and tags. */
export interface ComposedMessage {
  readonly envelope: { readonly mailFrom: string; readonly recipients: readonly string[] };
  readonly message: Buffer;
  readonly tags: readonly string[];
}

/** Every line break as CRLF (bare CR and bare LF included). */
function crlf(text: string): string {
  return text.replace(/\r\n|\r|\n/g, '\r\n');
}

function addressOf(m: z.infer<typeof mailbox>): string {
  return typeof m === 'string' ? m : m.address;
}

/** Checks a request and builds its message; throws InjectionInputError naming the field. */
export async function composeMessage(
  input: unknown,
  limits: ComposeLimits = DEFAULT_COMPOSE_LIMITS,
): Promise<ComposedMessage> {
  const parsed = injectionRequest.safeParse(input);
  if (!parsed.success) throw inputError(parsed.error, input);
  const request = parsed.data;
  let built: ComposedMessage;
  if ('raw' in request) {
    built = {
      envelope: request.envelope,
      // One line-end convention on the way in: what is queued is what is signed and sent.
      message: Buffer.from(crlf(request.raw), 'utf8'),
      tags: request.tags,
    };
    if (!/\r\n\r\n/.test(built.message.toString('latin1')) && !/^[\x21-\x39\x3b-\x7e]+:/.test(request.raw)) {
      throw new InjectionInputError('raw', 'an RFC 5322 message: header fields, an empty line, the body');
    }
  } else {
    for (const name of Object.keys(request.headers)) {
      if (!HEADER_NAME.test(name)) {
        throw new InjectionInputError(
          `headers.${name}`,
          'a header field name: printable characters, no spaces or colon',
        );
      }
      if (OWNED.has(name.toLowerCase())) {
        throw new InjectionInputError(
          `headers.${name}`,
          'set by its own field (from, to, subject, ...), not in headers',
        );
      }
    }
    if (request.text === undefined && request.html === undefined && request.attachments.length === 0) {
      throw new InjectionInputError('text', 'a message needs text, html or an attachment');
    }
    const recipients =
      request.envelope?.recipients ?? [...request.to, ...request.cc, ...request.bcc].map(addressOf);
    if (recipients.length === 0)
      throw new InjectionInputError('to', 'at least one recipient (to, cc, bcc or envelope)');
    const composer = new MailComposer({
      from: request.from,
      to: request.to,
      cc: request.cc,
      ...(request.replyTo === undefined ? {} : { replyTo: request.replyTo }),
      subject: request.subject,
      // Text parts keep their line breaks as CRLF: nodemailer's quoted-printable keeps a bare LF.
      ...(request.text === undefined ? {} : { text: crlf(request.text) }),
      ...(request.html === undefined ? {} : { html: crlf(request.html) }),
      headers: request.headers,
      attachments: request.attachments.map((a) => ({
        filename: a.filename,
        content: Buffer.from(a.content, 'base64'),
        ...(a.contentType === undefined ? {} : { contentType: a.contentType }),
        ...(a.contentId === undefined ? {} : { cid: a.contentId }),
      })),
      // Only what the request carries: never a file of this machine or a URL fetched for it.
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    const message = await new Promise<Buffer>((resolve, reject) =>
      composer.compile().build((error, bytes) => (error ? reject(error) : resolve(bytes))),
    );
    built = {
      envelope: { mailFrom: request.envelope?.mailFrom ?? addressOf(request.from), recipients },
      message,
      tags: request.tags,
    };
  }
  return checkLimits(built, limits);
}

/**
 * Checks a raw message posted as message/rfc822 (its bytes as sent, 8-bit included) with its
 * envelope and tags from the query string; throws InjectionInputError naming the parameter.
 */
export function composeRaw(
  bytes: Buffer,
  query: URLSearchParams,
  limits: ComposeLimits = DEFAULT_COMPOSE_LIMITS,
): ComposedMessage {
  for (const name of query.keys()) {
    if (!['mailFrom', 'to', 'tag'].includes(name)) {
      throw new InjectionInputError(
        name,
        'unknown parameter: use mailFrom, to (repeated) and tag (repeated)',
      );
    }
  }
  const given = {
    mailFrom: query.get('mailFrom') ?? undefined,
    to: query.getAll('to'),
    tag: query.getAll('tag'),
  };
  const envelope = envelopeSchema.safeParse({ mailFrom: given.mailFrom, recipients: given.to });
  if (!envelope.success) {
    const issue = envelope.error.issues[0];
    const field = issue?.path[0] === 'recipients' ? 'to' : 'mailFrom';
    throw new InjectionInputError(field, issue?.message ?? 'required');
  }
  const tagged = tags.safeParse(given.tag);
  if (!tagged.success) throw new InjectionInputError('tag', tagged.error.issues[0]?.message ?? 'not a tag');
  // latin1 keeps every byte as one character: line ends change, 8-bit bytes do not.
  const message = Buffer.from(crlf(bytes.toString('latin1')), 'latin1');
  if (!/^[\x21-\x39\x3b-\x7e]+:/.test(message.toString('latin1', 0, 1000))) {
    throw new InjectionInputError('body', 'an RFC 5322 message: header fields, an empty line, the body');
  }
  return checkLimits({ envelope: envelope.data, message, tags: tagged.data }, limits);
}

function checkLimits(built: ComposedMessage, limits: ComposeLimits): ComposedMessage {
  const unique = new Set(built.envelope.recipients.map((r) => r.toLowerCase()));
  if (unique.size > limits.maxRecipients) {
    throw new InjectionInputError('envelope.recipients', `at most ${limits.maxRecipients} recipients`);
  }
  if (built.message.length > limits.maxMessageBytes) {
    throw new MessageTooLargeError(built.message.length, limits.maxMessageBytes);
  }
  return built;
}

/** The message built is larger than the limit (HTTP 413). */
export class MessageTooLargeError extends InjectionInputError {
  constructor(size: number, limit: number) {
    super('', `the message is ${size} bytes; at most ${limit}`);
    this.name = 'MessageTooLargeError';
  }
}

/** The first problem zod found, as the field it concerns and what to write there. */
function inputError(error: z.ZodError, input: unknown): InjectionInputError {
  // A union: say which shape was meant (a raw message has `raw`), then that shape's first problem.
  const isRaw = typeof input === 'object' && input !== null && 'raw' in input;
  const branch = (isRaw ? rawMessage : composedMessage).safeParse(input);
  const issue = (branch.success ? error : branch.error).issues[0];
  const field = (issue?.path ?? [])
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`))
    .join('');
  if (issue?.code === 'unrecognized_keys') {
    return new InjectionInputError(
      field,
      `unknown field ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`,
    );
  }
  return new InjectionInputError(field, issue?.message ?? 'not a message request');
}
