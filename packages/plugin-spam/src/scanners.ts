// Clients for the external scanners: rspamd's HTTP protocol (/checkv2) and SpamAssassin's
// SPAMC/SPAMD protocol. Each returns a score or says why it has none; never throws.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import type { RspamdOptions, SpamdOptions } from './options.js';

export type ScanResult =
  | {
      readonly status: 'scanned';
      readonly score: number;
      /** The scanner's own spam threshold, when it reports one. */
      readonly required?: number;
      /** The scanner's own action (rspamd), for the record. */
      readonly action?: string;
      readonly symbols: readonly string[];
    }
  /** Not sent, by configuration (too large). Never a failure. */
  | { readonly status: 'skipped'; readonly reason: string }
  | { readonly status: 'failed'; readonly reason: string };

/** What a scanner is told about the message besides its bytes. */
export interface ScanRequest {
  /** The whole message, as chunks (not concatenated). */
  readonly chunks: readonly Buffer[];
  readonly size: number;
  readonly ip: string;
  readonly helo: string | undefined;
  /** The return path; '' for the null sender. */
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly user: string | undefined;
  /** Our host name (rspamd MTA-Name). */
  readonly mta: string;
  /** An id to find this scan in the scanner's log. */
  readonly logTag: string;
}

/** Node sends header values as Latin-1; this makes UTF-8 text arrive as its UTF-8 bytes. */
function headerValue(text: string): string {
  return Buffer.from(text.replace(/[\r\n]+/g, ' '), 'utf8').toString('latin1');
}

/** POSTs the message to rspamd's /checkv2 with the SMTP envelope in request headers. */
export async function scanWithRspamd(options: RspamdOptions, scan: ScanRequest): Promise<ScanResult> {
  if (options.maxBytes !== undefined && scan.size > options.maxBytes) {
    return { status: 'skipped', reason: `message of ${scan.size} bytes over maxBytes ${options.maxBytes}` };
  }
  const url = new URL(options.url);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/checkv2`;
  const headers: Record<string, string | string[]> = {
    'Content-Length': String(scan.size),
    IP: scan.ip,
    From: headerValue(scan.mailFrom === '' ? '<>' : scan.mailFrom),
    'MTA-Name': headerValue(scan.mta),
    'Log-Tag': headerValue(scan.logTag),
  };
  if (scan.recipients.length > 0) headers.Rcpt = scan.recipients.map(headerValue);
  if (scan.helo !== undefined) headers.Helo = headerValue(scan.helo);
  if (scan.user !== undefined) headers.User = headerValue(scan.user);
  if (options.password !== undefined) headers.Password = headerValue(options.password);
  if (options.settingsId !== undefined) headers['Settings-ID'] = headerValue(options.settingsId);

  return await new Promise<ScanResult>((resolve) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    let settled = false;
    const finish = (result: ScanResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const req = send(url, { method: 'POST', headers }, (res: IncomingMessage) => {
      const body: Buffer[] = [];
      res.on('data', (chunk: Buffer) => body.push(chunk));
      res.on('error', (error) => finish({ status: 'failed', reason: `rspamd: ${error.message}` }));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          finish({ status: 'failed', reason: `rspamd answered HTTP ${res.statusCode}` });
          return;
        }
        finish(parseRspamdReply(Buffer.concat(body).toString('utf8')));
      });
    });
    const timer = setTimeout(() => {
      finish({ status: 'failed', reason: `rspamd: no answer within ${options.timeoutMs} ms` });
      req.destroy();
    }, options.timeoutMs);
    req.on('error', (error) => finish({ status: 'failed', reason: `rspamd: ${error.message}` }));
    for (const chunk of scan.chunks) req.write(chunk);
    req.end();
  });
}

/** Reads a /checkv2 JSON reply: `{ score, required_score, action, symbols: { NAME: {...} } }`. */
export function parseRspamdReply(text: string): ScanResult {
  let reply: unknown;
  try {
    reply = JSON.parse(text);
  } catch {
    return { status: 'failed', reason: 'rspamd: reply is not JSON' };
  }
  const r = reply as { score?: unknown; required_score?: unknown; action?: unknown; symbols?: unknown };
  if (typeof r.score !== 'number' || !Number.isFinite(r.score)) {
    return { status: 'failed', reason: 'rspamd: reply has no score' };
  }
  const symbols =
    typeof r.symbols === 'object' && r.symbols !== null ? Object.keys(r.symbols as object).sort() : [];
  return {
    status: 'scanned',
    score: r.score,
    ...(typeof r.required_score === 'number' ? { required: r.required_score } : {}),
    ...(typeof r.action === 'string' ? { action: r.action } : {}),
    symbols,
  };
}

/** Sends the message to spamd (`CHECK` or `SYMBOLS`, protocol SPAMC/1.5) and reads the verdict. */
export async function scanWithSpamd(options: SpamdOptions, scan: ScanRequest): Promise<ScanResult> {
  if (scan.size > options.maxBytes) {
    return { status: 'skipped', reason: `message of ${scan.size} bytes over maxBytes ${options.maxBytes}` };
  }
  const head = [`${options.command} SPAMC/1.5`, `Content-length: ${scan.size}`];
  if (options.user !== undefined) head.push(`User: ${options.user.replace(/[\r\n]+/g, ' ')}`);

  return await new Promise<ScanResult>((resolve) => {
    let settled = false;
    const received: Buffer[] = [];
    const finish = (result: ScanResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const socket: Socket =
      options.socketPath !== undefined
        ? connect({ path: options.socketPath })
        : connect({ host: options.host, port: options.port });
    const timer = setTimeout(
      () => finish({ status: 'failed', reason: `spamd: no answer within ${options.timeoutMs} ms` }),
      options.timeoutMs,
    );
    socket.on('connect', () => {
      socket.write(`${head.join('\r\n')}\r\n\r\n`);
      for (const chunk of scan.chunks) socket.write(chunk);
      // Half-close as spamc does: spamd reads Content-length bytes, the FIN only confirms the end.
      socket.end();
    });
    socket.on('data', (chunk: Buffer) => {
      received.push(chunk);
      const reply = parseSpamdReply(Buffer.concat(received).toString('latin1'), false);
      if (reply) finish(reply);
    });
    socket.on('end', () => {
      finish(
        parseSpamdReply(Buffer.concat(received).toString('latin1'), true) ?? {
          status: 'failed',
          reason: 'spamd: connection closed without a reply',
        },
      );
    });
    socket.on('error', (error) => finish({ status: 'failed', reason: `spamd: ${error.message}` }));
  });
}

/**
 * Parses `SPAMD/1.1 0 EX_OK`, headers (`Spam: True ; 15.0 / 5.0`, `Content-length`) and, for
 * SYMBOLS, the comma-separated rule names. Returns undefined while the reply is incomplete
 * (unless `closed`, when whatever arrived is all there is).
 */
export function parseSpamdReply(text: string, closed: boolean): ScanResult | undefined {
  const headEnd = text.indexOf('\r\n\r\n');
  if (headEnd === -1) {
    if (!closed) return undefined;
    const status = /^SPAMD\/\d+\.\d+ (\d+) (.*)/.exec(text);
    if (status && status[1] !== '0') return { status: 'failed', reason: `spamd: ${status[1]} ${status[2]}` };
    return text === '' ? undefined : { status: 'failed', reason: 'spamd: truncated reply' };
  }
  const [statusLine = '', ...lines] = text.slice(0, headEnd).split('\r\n');
  const status = /^SPAMD\/\d+\.\d+ (\d+) (.*)$/.exec(statusLine);
  if (!status) return { status: 'failed', reason: 'spamd: not a SPAMD reply' };
  if (status[1] !== '0') return { status: 'failed', reason: `spamd: ${status[1]} ${status[2]}` };
  const fields = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const body = text.slice(headEnd + 4);
  const length = fields.has('content-length') ? Number(fields.get('content-length')) : 0;
  if (Buffer.byteLength(body, 'latin1') < length && !closed) return undefined;
  const spam = /^(True|False|Yes|No)\s*;\s*(-?[\d.]+)\s*\/\s*(-?[\d.]+)/i.exec(fields.get('spam') ?? '');
  if (!spam) return { status: 'failed', reason: 'spamd: reply has no Spam header' };
  const symbols = body
    .trim()
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return { status: 'scanned', score: Number(spam[2]), required: Number(spam[3]), symbols };
}
