// Mail this MTA writes itself (bounce, delay and success DSNs; TLS-RPT reports) through the queue
// hooks of the global plugin list before it is queued, as if submitted from a trusted local
// client: so the DKIM plugin signs it (RFC 8460 §5.3 asks for signed reports, and DMARC passes
// for bounces only when they are signed). Postfix does the same with internal_mail_filter_classes.
// Only header changes are taken: a notice keeps its envelope and is never held.
import type { Logger, SessionInfo, TransactionInfo } from '@tern/plugin-api';
import { MessageContent, type PluginHost, readAll, StateScope } from '@tern/plugin-api/host';
import type { IncomingMessage } from '@tern/queue';

/** Larger notices are queued as built (a DSN returns at most 50 kB of the original). */
export const MAX_NOTICE_BYTES = 16 * 1024 * 1024;

let sequence = 0;

/** The `prepareNotice` of the worker and the TLS report sender: runs the queue hooks of `plugins()`. */
export function noticeHooks(
  plugins: () => PluginHost,
  hostname: string,
  log: Logger,
): (notice: IncomingMessage) => Promise<IncomingMessage> {
  return async (notice) => {
    try {
      return await throughHooks(notice, plugins(), hostname, log);
    } catch (error) {
      log.warn({ err: error }, 'notice hooks failed; queueing the notice as built');
      return notice;
    }
  };
}

async function throughHooks(
  notice: IncomingMessage,
  host: PluginHost,
  hostname: string,
  log: Logger,
): Promise<IncomingMessage> {
  if (!host.has('queue') || notice.content.size > MAX_NOTICE_BYTES) return notice;
  const message = MessageContent.parse(await readAll(notice.content, MAX_NOTICE_BYTES));
  const id = `notice-${(++sequence).toString(36)}`;
  const now = Date.now();
  const session: SessionInfo = {
    id,
    listener: { name: 'internal', kind: 'submission', hostname, port: 0 },
    remoteAddress: '127.0.0.1',
    remotePort: 0,
    localAddress: '127.0.0.1',
    localPort: 0,
    trusted: true,
    startedAt: now,
    helo: hostname,
    tls: undefined,
    user: undefined,
  };
  const { envelope } = notice;
  const transaction: TransactionInfo = {
    id,
    mailFrom: envelope.mailFrom,
    mailParams: {},
    recipients: envelope.recipients.map((r) => ({ ...r })),
  };
  const release = host.retain();
  const scope = new StateScope(id);
  try {
    await host.runTransform(
      'queue',
      {
        session,
        transaction,
        message,
        // A copy: hooks may read and change it, but a notice goes where it was addressed.
        envelope: { ...envelope, recipients: envelope.recipients.map((r) => ({ ...r })) },
        hold: (reason: string) =>
          log.warn({ reason }, 'a queue hook asked to hold a notice; notices are not held'),
      },
      scope,
    );
  } finally {
    scope.end();
    release();
  }
  return { ...notice, content: message.source() };
}
