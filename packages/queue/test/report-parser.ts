// A deliberately small MIME reader for tests: splits a multipart/report into its parts and the
// delivery-status part into field groups, independently of the code that wrote them.
import { Headers } from '@tern/plugin-api';

export interface ParsedPart {
  readonly headers: Headers;
  readonly body: string;
}

export interface ParsedReport {
  readonly headers: Headers;
  readonly parts: readonly ParsedPart[];
  /** The delivery-status part as groups of fields: the per-message group first, then one per recipient. */
  readonly status: readonly Record<string, string>[];
}

function split(raw: string): ParsedPart {
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) throw new Error(`no empty line after the headers in: ${raw.slice(0, 200)}`);
  return { headers: Headers.parse(raw.slice(0, end + 2)), body: raw.slice(end + 4) };
}

export function parseReport(message: Buffer | string): ParsedReport {
  const text = typeof message === 'string' ? message : message.toString('utf8');
  if (/(?<!\r)\n/.test(text)) throw new Error('the message has a bare LF');
  const top = split(text);
  const type = top.headers.get('content-type') ?? '';
  const boundary = /boundary="([^"]+)"/.exec(type)?.[1];
  if (!type.startsWith('multipart/report') || boundary === undefined)
    throw new Error(`not a multipart/report: ${type}`);
  // RFC 2046: a delimiter is CRLF "--" boundary; the CRLF before it belongs to the delimiter.
  const pieces = `\r\n${top.body}`.split(`\r\n--${boundary}`);
  if (pieces.at(-1) !== '--\r\n') throw new Error('the closing boundary is missing');
  const parts = pieces.slice(1, -1).map((piece) => {
    if (!piece.startsWith('\r\n')) throw new Error('a boundary line has trailing text');
    return split(piece.slice(2));
  });
  const statusPart = parts.find((p) => p.headers.get('content-type') === 'message/delivery-status');
  const status = (statusPart?.body ?? '')
    .trim()
    .split('\r\n\r\n')
    .map((group) =>
      Object.fromEntries(
        group.split('\r\n').map((line) => {
          const colon = line.indexOf(':');
          return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
        }),
      ),
    );
  return { headers: top.headers, parts, status };
}
