// Test helpers: messages, a DKIM signer written here with node:crypto (so verification is checked
// against an independent signer, not mailauth's own), and the test DNS records most suites share.
import { createHash, createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { Plugin } from '@tern/plugin-api';
import { reverseName } from '@tern/testkit';
import type { SpamDecision, SpamPlugin, SpamTransactionState } from '../src/index.js';

export interface MessageParts {
  from?: string | null;
  to?: string | null;
  subject?: string | null;
  date?: string | null;
  messageId?: string | null;
  extra?: readonly string[];
  body?: string;
}

/** A CRLF message; a part given as null is left out. */
export function makeMessage(parts: MessageParts = {}): string {
  const lines: string[] = [...(parts.extra ?? [])];
  const add = (name: string, value: string | null | undefined, fallback: string): void => {
    if (value === null) return;
    lines.push(`${name}: ${value ?? fallback}`);
  };
  add('From', parts.from, 'Alice <alice@example.test>');
  add('To', parts.to, 'bob@example.test');
  add('Subject', parts.subject, 'Lunch on Friday');
  add('Date', parts.date, new Date().toUTCString().replace('GMT', '+0000'));
  add('Message-ID', parts.messageId, `<${Math.random().toString(36).slice(2)}@example.test>`);
  const body = parts.body ?? 'Shall we meet at noon?\r\nAlice\r\n';
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

export interface DkimKey {
  readonly privateKey: KeyObject;
  /** The TXT record to publish at <selector>._domainkey.<domain>. */
  readonly record: string;
}

export function makeDkimKey(): DkimKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  return { privateKey, record: `v=DKIM1; k=rsa; p=${spki}` };
}

/** RFC 6376 §3.4.4 relaxed body canonicalization. */
function relaxedBody(body: string): string {
  const lines = body.split('\r\n').map((line) => line.replace(/[ \t]+/g, ' ').replace(/ $/, ''));
  while (lines.length > 0 && lines.at(-1) === '') lines.pop();
  return lines.length === 0 ? '' : `${lines.join('\r\n')}\r\n`;
}

/** RFC 6376 §3.4.2 relaxed header canonicalization of one field. */
function relaxedHeader(field: string): string {
  const colon = field.indexOf(':');
  const name = field.slice(0, colon).trim().toLowerCase();
  const value = field
    .slice(colon + 1)
    .replace(/\r\n(?=[ \t])/g, '')
    .replace(/[ \t]+/g, ' ')
    .trim();
  return `${name}:${value}`;
}

/** Signs `message` (relaxed/relaxed, rsa-sha256) and returns it with the DKIM-Signature on top. */
export function dkimSign(
  message: string,
  options: { domain: string; selector: string; key: DkimKey; headers?: string[] },
): string {
  const split = message.indexOf('\r\n\r\n');
  const head = message.slice(0, split + 2);
  const body = message.slice(split + 4);
  const fields = head
    .split(/\r\n(?![ \t])/)
    .filter((f) => f !== '')
    .map((f) => ({ key: f.slice(0, f.indexOf(':')).trim().toLowerCase(), raw: f }));
  const names = options.headers ?? ['from', 'to', 'subject', 'date', 'message-id'];
  const bh = createHash('sha256').update(relaxedBody(body)).digest('base64');
  const tags = `v=1; a=rsa-sha256; c=relaxed/relaxed; d=${options.domain}; s=${options.selector}; t=${Math.floor(Date.now() / 1000)}; h=${names.join(':')}; bh=${bh}; b=`;
  // Signed fields are taken bottom-up when a name repeats (RFC 6376 §5.4.2).
  const used = new Map<string, number>();
  const canonical: string[] = [];
  for (const name of names) {
    const matching = fields.filter((f) => f.key === name);
    const n = used.get(name) ?? 0;
    const field = matching[matching.length - 1 - n];
    used.set(name, n + 1);
    if (field) canonical.push(`${relaxedHeader(field.raw)}\r\n`);
  }
  const signer = createSign('RSA-SHA256');
  signer.update(canonical.join('') + relaxedHeader(`DKIM-Signature: ${tags}`));
  const b = signer.sign(options.key.privateKey, 'base64');
  return `DKIM-Signature: ${tags}${b}\r\n${message}`;
}

/** The DNS list query name of `ip` under `zone`, built with the testkit's reverseName as the oracle. */
export function listName(ip: string, zone: string): string {
  return `${reverseName(ip).replace(/\.(in-addr|ip6)\.arpa$/, '')}.${zone}`;
}

/** Wraps the plugin's state factory so a test can read the transaction states core would hold. */
export function captureStates(plugin: SpamPlugin): { plugin: Plugin; states: SpamTransactionState[] } {
  const states: SpamTransactionState[] = [];
  const make = plugin.state?.transaction;
  if (!make) throw new Error('plugin has no transaction state');
  return {
    plugin: {
      ...plugin,
      state: {
        ...plugin.state,
        transaction: () => {
          const state = make();
          states.push(state);
          return state;
        },
      },
    },
    states,
  };
}

/** The symbol names of a decision, sorted. */
export function symbolNames(decision: SpamDecision | undefined): string[] {
  return (decision?.symbols ?? []).map((s) => s.name).sort();
}
