// Clients for the external scanners: rspamd's HTTP protocol (/checkv2) and SpamAssassin's
// SPAMC/SPAMD protocol. The message streams to the scanner (its size is known up front); a message
// over the scanner's maxBytes is not sent; a reply is capped in bytes and the whole exchange in
// time. Each returns a score or says why it has none; never throws.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { RspamdOptions } from './checks/rspamd.js';
import type { SpamdOptions } from './checks/spamd.js';
import type { MessageBytes } from './message-bytes.js';

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
  /** Not sent, by configuration: the message is larger than the scanner's maxBytes. Never a failure. */
  | {
      readonly status: 'skipped';
      readonly reason: 'too-big';
      readonly size: number;
      readonly maxBytes: number;
    }
  /** No answer, a broken or oversized answer, or a refused connection: the failure policy applies. */
  | { readonly status: 'failed'; readonly reason: string };

/** What a scanner is told about the message besides its bytes. */
export interface ScanEnvelope {
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

/** The limits every scanner client keeps. */
interface ScanLimits {
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly maxReplyBytes: number;
}

function tooBig(message: MessageBytes, limits: ScanLimits): ScanResult | undefined {
  return message.size > limits.maxBytes
    ? { status: 'skipped', reason: 'too-big', size: message.size, maxBytes: limits.maxBytes }
    : undefined;
}

const failed = (reason: string): ScanResult => ({ status: 'failed', reason });

/**
 * One exchange with a scanner under its deadline: `finish` settles it once, stops the timer and
 * closes whatever `close` closes (the socket or request), so a late byte changes nothing.
 */
function exchange(
  name: string,
  limits: ScanLimits,
  run: (finish: (result: ScanResult) => void) => { close(): void },
): Promise<ScanResult> {
  return new Promise<ScanResult>((resolve) => {
    let settled = false;
    let closer: { close(): void } | undefined;
    const finish = (result: ScanResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      closer?.close();
      resolve(result);
    };
    // One deadline for connecting, sending and the whole reply: a scanner that trickles its answer
    // a byte at a time is as unavailable as one that never answers.
    const timer = setTimeout(
      () => finish(failed(`${name}: no answer within ${limits.timeoutMs} ms`)),
      limits.timeoutMs,
    );
    closer = run(finish);
    if (settled) closer.close();
  });
}

/** Counts reply bytes against maxReplyBytes; says so (once) when they overflow. */
function replyBudget(name: string, limits: ScanLimits): (chunk: Buffer) => ScanResult | undefined {
  let size = 0;
  return (chunk) => {
    size += chunk.length;
    return size > limits.maxReplyBytes
      ? failed(`${name}: reply larger than maxReplyBytes ${limits.maxReplyBytes}`)
      : undefined;
  };
}

/** Streams the message into the scanner, ending (half-closing) when it is all written. */
function send(
  name: string,
  source: Readable,
  into: NodeJS.WritableStream,
  finish: (r: ScanResult) => void,
): void {
  source.on('error', (error) => finish(failed(`${name}: reading the message failed: ${error.message}`)));
  source.pipe(into);
}

/** Node sends header values as Latin-1; this makes UTF-8 text arrive as its UTF-8 bytes. */
function headerValue(text: string): string {
  return Buffer.from(text.replace(/[\r\n]+/g, ' '), 'utf8').toString('latin1');
}

/** POSTs the message to rspamd's /checkv2 with the SMTP envelope in request headers. */
export async function scanWithRspamd(
  options: RspamdOptions,
  message: MessageBytes,
  envelope: ScanEnvelope,
): Promise<ScanResult> {
  const skipped = tooBig(message, options);
  if (skipped) return skipped;
  const url = new URL(options.url);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/checkv2`;
  const headers: Record<string, string | string[]> = {
    'Content-Length': String(message.size),
    IP: envelope.ip,
    From: headerValue(envelope.mailFrom === '' ? '<>' : envelope.mailFrom),
    'MTA-Name': headerValue(envelope.mta),
    'Log-Tag': headerValue(envelope.logTag),
  };
  if (envelope.recipients.length > 0) headers.Rcpt = envelope.recipients.map(headerValue);
  if (envelope.helo !== undefined) headers.Helo = headerValue(envelope.helo);
  if (envelope.user !== undefined) headers.User = headerValue(envelope.user);
  if (options.password !== undefined) headers.Password = headerValue(options.password);
  if (options.settingsId !== undefined) headers['Settings-ID'] = headerValue(options.settingsId);

  return await exchange('rspamd', options, (finish) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const overflow = replyBudget('rspamd', options);
    const source = message.stream();
    const req = request(url, { method: 'POST', headers }, (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        finish(failed(`rspamd answered HTTP ${res.statusCode}`));
        return;
      }
      const declared = Number(res.headers['content-length']);
      if (declared > options.maxReplyBytes) {
        finish(failed(`rspamd: reply of ${declared} bytes over maxReplyBytes ${options.maxReplyBytes}`));
        return;
      }
      const body: Buffer[] = [];
      res.on('data', (chunk: Buffer) => {
        const over = overflow(chunk);
        if (over) finish(over);
        else body.push(chunk);
      });
      res.on('error', (error) => finish(failed(`rspamd: ${error.message}`)));
      res.on('end', () => finish(parseRspamdReply(Buffer.concat(body).toString('utf8'))));
    });
    req.on('error', (error) => finish(failed(`rspamd: ${error.message}`)));
    send('rspamd', source, req, finish);
    return {
      close: () => {
        source.destroy();
        req.destroy();
      },
    };
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
export async function scanWithSpamd(options: SpamdOptions, message: MessageBytes): Promise<ScanResult> {
  const skipped = tooBig(message, options);
  if (skipped) return skipped;
  const head = [`${options.command} SPAMC/1.5`, `Content-length: ${message.size}`];
  if (options.user !== undefined) head.push(`User: ${options.user.replace(/[\r\n]+/g, ' ')}`);

  return await exchange('spamd', options, (finish) => {
    const overflow = replyBudget('spamd', options);
    const received: Buffer[] = [];
    const source = message.stream();
    const socket: Socket =
      options.socketPath !== undefined
        ? connect({ path: options.socketPath })
        : connect({ host: options.host, port: options.port });
    socket.on('connect', () => {
      socket.write(`${head.join('\r\n')}\r\n\r\n`);
      // Then the message, and a half-close as spamc does: spamd reads Content-length bytes, the
      // FIN only confirms the end.
      send('spamd', source, socket, finish);
    });
    socket.on('data', (chunk: Buffer) => {
      const over = overflow(chunk);
      if (over) return finish(over);
      received.push(chunk);
      const reply = parseSpamdReply(Buffer.concat(received).toString('latin1'), false);
      if (reply) finish(reply);
    });
    socket.on('end', () => {
      finish(
        parseSpamdReply(Buffer.concat(received).toString('latin1'), true) ??
          failed('spamd: connection closed without a reply'),
      );
    });
    socket.on('error', (error) => finish(failed(`spamd: ${error.message}`)));
    return {
      close: () => {
        source.destroy();
        socket.destroy();
      },
    };
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
