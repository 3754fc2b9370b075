// The OpenAPI 3.1 document of HTTP injection, made from the same zod schemas that check requests
// (compose.ts) and describe answers (here), so the document cannot drift from the code. A test
// validates the running server's real answers against it.
import { MAX_TAGS } from '@tern/plugin-api';
import { MAX_IDEMPOTENCY_KEY } from '@tern/queue';
import { z } from 'zod';
import { composedMessage, rawMessage } from './compose.js';

/** Every `code` an error answer may carry. */
export const INJECTION_ERROR_CODES = [
  'invalid_request',
  'unauthorized',
  'sender_not_allowed',
  'not_found',
  'method_not_allowed',
  'idempotency_in_progress',
  'idempotency_mismatch',
  'too_large',
  'unsupported_media_type',
  'recipient_suppressed',
  'rejected',
  'temporarily_refused',
  'busy',
  'unavailable',
  'internal',
] as const;

export const queuedResponse = z.strictObject({
  /** The queue id, as `tern queue show` and the admin API know the message. */
  queueId: z.string(),
  recipients: z.array(z.string()),
  tags: z.array(z.string()),
});

export const duplicateResponse = z.strictObject({
  queueId: z.string(),
  /** The Idempotency-Key was used before: this is that request's message, nothing new was queued. */
  duplicate: z.literal(true),
});

export const errorResponse = z.strictObject({
  code: z.enum(INJECTION_ERROR_CODES),
  /** What went wrong and what to do, for a person. */
  error: z.string(),
  /** The request field or parameter concerned. */
  field: z.string().optional(),
  /** recipient_suppressed: each suppressed recipient, the list it is on, and since when. */
  suppressed: z
    .array(
      z.strictObject({
        recipient: z.string(),
        scope: z.string(),
        since: z.iso.datetime(),
        source: z.string(),
      }),
    )
    .optional(),
  /** rejected, temporarily_refused: the SMTP reply of the plugin that refused. */
  reply: z.strictObject({ code: z.number().int(), enhanced: z.string(), text: z.string() }).optional(),
});

const schema = (type: z.ZodType, io: 'input' | 'output' = 'output'): Record<string, unknown> => {
  const { $schema: _, ...rest } = z.toJSONSchema(type, { target: 'draft-2020-12', io }) as Record<
    string,
    unknown
  >;
  return rest;
};

const json = (type: z.ZodType) => ({ 'application/json': { schema: schema(type) } });
const error = (description: string) => ({ description, content: json(errorResponse) });

/** The document; `maxMessageBytes` is stated where the limits are described. */
export function openApiDocument(options: { maxMessageBytes: number }): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Tern HTTP injection',
      version: '1',
      description: `Hand messages to Tern over HTTP. Authenticate with an API key (tern apikey add): Authorization: Bearer tern_<id>_<secret>. A 201 means the message is durable in the queue. Messages are at most ${options.maxMessageBytes} bytes once built; tags at most ${MAX_TAGS} per message.`,
    },
    components: {
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'tern_<id>_<secret>' } },
    },
    security: [{ apiKey: [] }],
    paths: {
      '/v1/messages': {
        post: {
          operationId: 'injectMessage',
          summary: 'Queue a message for delivery',
          parameters: [
            {
              name: 'Idempotency-Key',
              in: 'header',
              required: false,
              description:
                'The same key (per API key, within the configured window) returns the first request’s queue id and queues nothing new.',
              schema: { type: 'string', minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY, pattern: '^\\S+$' },
            },
            {
              name: 'mailFrom',
              in: 'query',
              required: false,
              description: 'message/rfc822 only: the envelope sender (MAIL FROM).',
              schema: { type: 'string' },
            },
            {
              name: 'to',
              in: 'query',
              required: false,
              description: 'message/rfc822 only: an envelope recipient; repeat for more.',
              schema: { type: 'array', items: { type: 'string' } },
              style: 'form',
              explode: true,
            },
            {
              name: 'tag',
              in: 'query',
              required: false,
              description: 'message/rfc822 only: a tag; repeat for more.',
              schema: { type: 'array', items: { type: 'string' } },
              style: 'form',
              explode: true,
            },
          ],
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: { oneOf: [schema(composedMessage, 'input'), schema(rawMessage, 'input')] },
              },
              'message/rfc822': {
                schema: { type: 'string', contentMediaType: 'message/rfc822' },
              },
            },
          },
          responses: {
            '201': { description: 'Queued: durable in the queue.', content: json(queuedResponse) },
            '200': {
              description: 'Already queued under this Idempotency-Key.',
              content: json(duplicateResponse),
            },
            '400': error('The request is not a valid message request (`field` says where).'),
            '401': error('No API key, or an unknown one.'),
            '403': error('The API key may not send from this sender domain.'),
            '409': error('A request with this Idempotency-Key is still being handled.'),
            '413': error('The body or the message built is too large.'),
            '415': error('Neither application/json nor message/rfc822.'),
            '422': error(
              'Refused: a suppressed recipient (with since when), a plugin’s permanent refusal, or an Idempotency-Key used for a different request.',
            ),
            '429': error('Refused for now by a plugin (a rate limit): retry later.'),
            '503': error('The queue cannot take the message now: retry later.'),
            default: error(
              'Anything else: no such endpoint (404), wrong method (405), an internal error (500).',
            ),
          },
        },
      },
      '/v1/openapi.json': {
        get: {
          operationId: 'openApi',
          summary: 'This document',
          security: [],
          responses: { '200': { description: 'The OpenAPI document.' } },
        },
      },
    },
  };
}
