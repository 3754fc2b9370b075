// The relay policy, built in and not overridable by plugins. For one RCPT TO, in this order:
//
//   1. smtp-server parses the path. It refuses (501 5.1.3) anything that is not exactly one `@`
//      between a non-empty local part and a domain: `user@remote@local`, `"user@remote"@local`,
//      a bang path without a domain (`remote!user`). It strips a source route (`@a,@b:user@d`),
//      as RFC 5321 §4.1.2 allows, so step 2 looks at the raw argument.
//   2. A client that may not relay (neither authenticated nor from a trusted network) is refused
//      554 5.7.1 for every routing trick, whatever the domain: a source route, a local part with
//      `%` (percent hack), `!` (bang path), `@` or a quoted string holding one of them.
//   3. The bare `postmaster` (RFC 5321 §4.1.1.3) is local and is rewritten to postmaster@ the
//      first local domain.
//   4. The domain is local when it is listed in localDomains, compared in lower-case IDNA form.
//      Address literals (`user@[192.0.2.1]`) are local only when listed exactly, never because
//      they are this server's own address.
//   5. A recipient in a domain that is not local is accepted only from a client that may relay;
//      otherwise 554 5.7.1 Relay access denied.
//   6. Only then do the rcptTo hooks run (with isLocalDomain and mayRelay), and they can only
//      refuse more: a plugin can never turn a relay denial into an acceptance.
import { normalizeDomain, type SmtpReply, splitAddress } from '@tern/plugin-api';
import { CoreReplies } from './replies.js';

export interface RecipientQuery {
  /** The address smtp-server parsed (source route removed, domain in U-labels). */
  readonly address: string;
  /** The raw RCPT TO command line as the client sent it. */
  readonly commandLine: string;
  readonly mayRelay: boolean;
  readonly localDomains: ReadonlySet<string>;
}

export type RecipientDecision =
  | { readonly ok: true; readonly address: string; readonly isLocalDomain: boolean }
  | { readonly ok: false; readonly reply: SmtpReply; readonly reason: 'routing-trick' | 'relay' };

/** Steps 2 to 5 above. */
export function checkRecipient(query: RecipientQuery): RecipientDecision {
  const denied = (reason: 'routing-trick' | 'relay'): RecipientDecision => ({
    ok: false,
    reply: CoreReplies.relayDenied,
    reason,
  });
  if (!query.mayRelay && hasRoutingTrick(query.address, query.commandLine)) return denied('routing-trick');

  if (query.address.toLowerCase() === 'postmaster') {
    const [first] = query.localDomains;
    if (first === undefined) return denied('relay');
    return { ok: true, address: `postmaster@${first}`, isLocalDomain: true };
  }
  const { domain } = splitAddress(query.address);
  const normal = normalizeDomain(domain);
  const isLocalDomain = normal !== undefined && query.localDomains.has(normal);
  if (!isLocalDomain && !query.mayRelay) return denied('relay');
  return { ok: true, address: query.address, isLocalDomain };
}

/** A source route in the raw argument, or `%`, `!`, `@` or `"` in the local part. */
export function hasRoutingTrick(address: string, commandLine: string): boolean {
  const argument = commandLine.slice(commandLine.indexOf(':') + 1).trimStart();
  if (/^<\s*@/.test(argument)) return true;
  const { local } = splitAddress(address);
  return /[%!@"]/.test(local);
}
