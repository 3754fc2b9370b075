// Trace fields core adds to a message: the Received header (RFC 5321 §4.4, with-protocol types
// from RFC 3848), and the Message-ID and Date a submission server supplies (RFC 6409 §8).
import { rfc5322Date, type TlsInfo } from '@tern/plugin-api';

export interface ReceivedFields {
  /** The HELO/EHLO argument (undefined when the client never gave one, which MAIL does not allow). */
  readonly helo: string | undefined;
  /** The client's forward-confirmed host name, when known. */
  readonly clientHostname: string | undefined;
  readonly remoteAddress: string;
  /** This server's host name. */
  readonly hostname: string;
  readonly esmtp: boolean;
  readonly tls: TlsInfo | undefined;
  readonly user: string | undefined;
  readonly id: string;
  /** Named only when the message has exactly one recipient: more would disclose Bcc recipients. */
  readonly recipient: string | undefined;
  readonly date: Date;
}

/** RFC 3848: ESMTP plus S for TLS and A for AUTH; a HELO client gets plain SMTP. */
export function withProtocol(esmtp: boolean, tls: boolean, authenticated: boolean): string {
  if (!esmtp) return 'SMTP';
  return `ESMTP${tls ? 'S' : ''}${authenticated ? 'A' : ''}`;
}

/** The value of the Received field, folded so each line stays short. */
export function receivedValue(f: ReceivedFields): string {
  const ip = addressLiteral(f.remoteAddress);
  // RFC 5321 TCP-info: the address literal alone, or a confirmed host name and the literal.
  const tcpInfo = f.clientHostname ? `${traceToken(f.clientHostname)} ${ip}` : ip;
  const from = `from ${traceToken(f.helo ?? 'unknown')} (${tcpInfo})`;
  const lines = [from];
  if (f.tls) lines.push(`(using ${traceToken(f.tls.protocol)} with cipher ${traceToken(f.tls.cipher)})`);
  if (f.user !== undefined) lines.push(`(authenticated as ${commentText(f.user)})`);
  lines.push(
    `by ${f.hostname} (Tern) with ${withProtocol(f.esmtp, f.tls !== undefined, f.user !== undefined)} id ${f.id}`,
  );
  const date = rfc5322Date(f.date);
  if (f.recipient !== undefined) lines.push(`for <${traceToken(f.recipient)}>; ${date}`);
  else lines[lines.length - 1] = `${lines.at(-1)}; ${date}`;
  return lines.join('\r\n\t');
}

/** `[192.0.2.1]` or `[IPv6:2001:db8::1]`. */
export function addressLiteral(address: string): string {
  return address.includes(':') ? `[IPv6:${address}]` : `[${address}]`;
}

// Client-supplied words (HELO, addresses) go into the header as single tokens: anything that could
// end a comment, start a new clause or break the line is replaced.
function traceToken(value: string): string {
  return value.replace(/[^\x21-\x7e]|[()\\;]/g, '?');
}

function commentText(value: string): string {
  return value.replace(/[^\x20-\x7e]/g, '?').replace(/[()\\]/g, '\\$&');
}
