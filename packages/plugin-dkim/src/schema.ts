// The dkim plugin's options as a zod (Standard Schema) schema, checked by parseOptions when dkim()
// is called: every mistake stops start-up naming the plugin, the option and the fix. The keys the
// options name are read and checked afterwards, by loadDkimSettings (options.ts).
import { domainToASCII } from 'node:url';
import { choiceSchema } from '@tern/plugin-api';
import { z } from 'zod';

/** An RFC 5322 field name: printable US-ASCII but the colon (ftext). */
export const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
// RFC 6376 §3.1: a selector is a sub-domain. Underscores are accepted because DNS carries them and some
// providers hand them out.
const SELECTOR = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/i;

/** A domain as d= carries it (lower case, IDNs as A-labels), or undefined when it is not one. */
export function domainName(text: string): string | undefined {
  const ascii = domainToASCII(text.trim().replace(/\.$/, ''));
  if (ascii === '' || !ascii.includes('.') || ascii.length > 253) return undefined;
  if (!/^[a-z0-9._-]+$/.test(ascii)) return undefined;
  return ascii;
}

const signingDomain = z
  .string({ error: 'expected a domain name such as example.com' })
  .refine((d) => domainName(d) !== undefined, 'expected a domain name such as example.com');

const keyShape = {
  selector: z
    .string({ error: 'expected a selector such as s2026: DNS labels of letters, digits and hyphens' })
    .regex(SELECTOR, 'expected a selector such as s2026: DNS labels of letters, digits and hyphens'),
  key: z
    .string({ error: 'expected PEM text (-----BEGIN PRIVATE KEY-----...)' })
    .refine((pem) => pem.trim() !== '', 'expected PEM text (-----BEGIN PRIVATE KEY-----...)')
    .optional(),
  keyFile: z.string({ error: 'expected a file path' }).min(1, 'expected a file path').optional(),
  algorithm: choiceSchema(['rsa-sha256', 'ed25519-sha256'], 'rsa-sha256 or ed25519-sha256').optional(),
  active: z.boolean({ error: 'expected true or false' }).optional(),
};

const oneKeySource = (entry: { key?: string | undefined; keyFile?: string | undefined }): boolean =>
  (entry.key === undefined) !== (entry.keyFile === undefined);
const ONE_KEY_SOURCE = 'give either key (PEM text) or keyFile (a path to a PEM file), exactly one';

const KEY_ENTRY = 'expected { selector, key | keyFile }, or a list of them';
const keyEntry = z.strictObject(keyShape, { error: KEY_ENTRY }).refine(oneKeySource, ONE_KEY_SOURCE);
const fallbackEntry = z
  .strictObject(
    {
      domain: signingDomain,
      ...keyShape,
    },
    { error: KEY_ENTRY },
  )
  .refine(oneKeySource, ONE_KEY_SOURCE);

/** One entry, or a list of at least one; issues keep the path as written (no [0] for a single entry). */
function oneOrMore<O>(entry: z.ZodType<O>): z.ZodType<O | O[]> {
  const list = z.array(entry).min(1, 'expected at least one key');
  return z
    .custom<unknown>(() => true)
    .transform((value, ctx) => {
      const result = (Array.isArray(value) ? list : entry).safeParse(value);
      if (result.success) return result.data;
      for (const issue of result.error.issues)
        ctx.issues.push({ code: 'custom', path: issue.path, message: issue.message, input: value });
      return z.NEVER;
    }) as unknown as z.ZodType<O | O[]>;
}

function headerList(): z.ZodArray<z.ZodType<string, string>> {
  return z.array(
    z
      .string()
      .regex(FIELD_NAME, 'expected a header field name such as Subject')
      // A signature over DKIM-Signature would tie our signatures to each other and to whatever came before.
      .refine(
        (name) => name.toLowerCase() !== 'dkim-signature',
        'DKIM-Signature cannot be signed: leave it out',
      ),
    { error: 'expected a list of header field names' },
  );
}

// The shape of DkimOptions (options.ts documents each option), plus the rules between them.
export const dkimOptionsSchema = z
  .strictObject(
    {
      domains: z
        .record(z.string(), oneOrMore(keyEntry), {
          error: 'expected { "example.com": { selector, keyFile } }',
        })
        .superRefine((domains, ctx) => {
          for (const domain of Object.keys(domains)) {
            if (domainName(domain) === undefined)
              ctx.addIssue({
                code: 'custom',
                path: [domain],
                message: `not a domain name: write the signing domain, such as example.com`,
              });
          }
        })
        .optional(),
      fallback: oneOrMore(fallbackEntry).optional(),
      canonicalization: choiceSchema(
        ['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple'],
        "one of 'relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple'",
      ).optional(),
      headers: headerList()
        .refine((list) => list.some((h) => h.toLowerCase() === 'from'), 'must include From (RFC 6376 §5.4)')
        .optional(),
      oversign: headerList().optional(),
      expiresIn: z
        .number({ error: 'expected a whole number of seconds above 0, such as 604800 (a week)' })
        .int('expected a whole number of seconds above 0, such as 604800 (a week)')
        .positive('expected a whole number of seconds above 0, such as 604800 (a week)')
        .optional(),
      matchParentDomain: z.boolean({ error: 'expected true or false' }).optional(),
      signUntrusted: z.boolean({ error: 'expected true or false' }).optional(),
      signingThreads: z
        .number({ error: 'expected a whole number of threads from 0 (libuv pool) to 16' })
        .int('expected a whole number of threads from 0 (libuv pool) to 16')
        .min(0, 'expected a whole number of threads from 0 (libuv pool) to 16')
        .max(16, 'expected a whole number of threads from 0 (libuv pool) to 16')
        .optional(),
      signingNice: z
        .number({ error: 'expected a whole number from 0 to 19' })
        .int('expected a whole number from 0 to 19')
        .min(0, 'expected a whole number from 0 to 19')
        .max(19, 'expected a whole number from 0 to 19')
        .optional(),
    },
    { error: 'expected an object: dkim({ domains: { "example.com": { selector, keyFile } } })' },
  )
  .refine((o) => o.domains !== undefined || o.fallback !== undefined, {
    path: ['domains'],
    message: 'nothing to sign with: configure domains or a fallback',
  });
