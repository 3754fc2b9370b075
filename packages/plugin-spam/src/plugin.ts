// spamFilter(): the checks wired to the SMTP stages. DNS lists start at connect, SPF at MAIL FROM,
// greylisting answers at RCPT, content checks and scanners run at end of data, and the queue
// transform writes the results into the message.
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import {
  definePlugin,
  domainOf,
  type HeaderField,
  Headers,
  type Logger,
  type MessageView,
  NetworkList,
  type Plugin,
  reject,
  type SessionInfo,
  tempfail,
  type Verdict,
} from '@tern/plugin-api';
import {
  type AuthenticationReport,
  checkDkimDmarc,
  checkSpfHelo,
  checkSpfMailFrom,
  claimsAuthservId,
  dkimSymbol,
  dmarcSymbol,
  formatAuthenticationResults,
  type SpfOutcome,
  spfSymbol,
} from './auth.js';
import {
  applyDecisionHeaders,
  decideAction,
  type ForcedAction,
  quarantineReason,
  type SpamDecision,
  symbolSummary,
} from './decision.js';
import { createResolver } from './dns.js';
import { checkDnsLists, type DnsListHit, type DnsListResult, EMPTY_DNS_LIST_RESULT } from './dnslist.js';
import { type GreylistStore, MemoryGreylistStore, RedisGreylistStore, tripletKey } from './greylist.js';
import { checkHeaders, checkHelo, containsGtube } from './heuristics.js';
import { normalizeIp } from './ip.js';
import { PLUGIN_NAME, resolveOptions, type SpamOptions } from './options.js';
import { type ScanRequest, type ScanResult, scanWithRspamd, scanWithSpamd } from './scanners.js';
import { roundScore, type SpamSymbol, Weights } from './symbols.js';

/** Per connection: the DNS list lookups, started at connect and awaited where they are needed. */
export interface SpamSessionState {
  lists: Promise<DnsListResult> | undefined;
}

/**
 * Per transaction. `decision` is what the ops timeline reads once the message stage ran; it stays
 * undefined for a transaction that was not checked (authenticated, trusted, another listener).
 */
export interface SpamTransactionState {
  spf: Promise<SpfOutcome[]> | undefined;
  /** The header block as it arrived, before forged fields were removed (DKIM verifies this). */
  receivedHeaders: HeaderField[] | undefined;
  auth: AuthenticationReport | undefined;
  decision: SpamDecision | undefined;
}

export type SpamPlugin = Plugin<SpamSessionState, SpamTransactionState>;

/** Headers only we may write; copies arriving from outside are forged and removed. */
const OWN_HEADERS = ['x-spam-status', 'x-spam-score', 'x-spam-flag', 'x-spam-report', 'x-tern-quarantine'];

/**
 * The spam filter. Options are validated here: a bad one throws PluginOptionError naming the field.
 * See README.md for every check, symbol, weight and default.
 */
export function spamFilter(options: SpamOptions = {}): SpamPlugin {
  const opts = resolveOptions(options);
  const weights = new Weights(opts.scores);
  const dns = createResolver(opts.dns);
  const hasLists = opts.dnsbl.zones.length > 0 || opts.dnswl.zones.length > 0;
  const hasRejectingZone = opts.dnsbl.zones.some(
    (z) => z.action === 'reject' || Object.values(z.codes ?? {}).some((c) => c.action === 'reject'),
  );
  const greylist = opts.greylist?.enabled ? opts.greylist : undefined;
  const store: GreylistStore | undefined = greylist
    ? greylist.redis !== undefined
      ? new RedisGreylistStore(greylist.redis)
      : new MemoryGreylistStore(greylist.maxEntries)
    : undefined;
  const greyNetworks = NetworkList.parse(greylist?.allowNetworks ?? []);
  const greySenderDomains = (greylist?.allowSenderDomains ?? []).map((d) => d.toLowerCase());

  const onListener = (session: SessionInfo): boolean =>
    opts.listeners ? opts.listeners.includes(session.listener.name) : session.listener.kind === 'mx';
  const checksClient = (session: SessionInfo): boolean =>
    onListener(session) && !(opts.exemptTrusted && session.trusted);
  const isExempt = (session: SessionInfo): boolean =>
    !checksClient(session) || (opts.exemptAuthenticated && session.user !== undefined);

  const listsOf = (session: SessionInfo, state: SpamSessionState, log: Logger): Promise<DnsListResult> => {
    if (!hasLists) return Promise.resolve(EMPTY_DNS_LIST_RESULT);
    state.lists ??= checkDnsLists(
      session.remoteAddress,
      opts.dnsbl.zones,
      opts.dnswl.zones,
      dns.resolver,
      log,
    ).catch((error: unknown) => {
      log.error({ err: error }, 'DNS list check failed; not counted');
      return EMPTY_DNS_LIST_RESULT;
    });
    return state.lists;
  };

  const spfOf = (session: SessionInfo, sender: string): Promise<SpfOutcome[]> => {
    const check = {
      ip: session.remoteAddress,
      sender,
      helo: session.helo,
      mta: session.listener.hostname,
      resolver: dns.mailauth,
      timeoutMs: opts.spf.timeoutMs,
    };
    return Promise.all([checkSpfMailFrom(check), ...(opts.spf.helo ? [checkSpfHelo(check)] : [])]);
  };

  const blockedText = (session: SessionInfo, hit: DnsListHit): string =>
    `Client host [${normalizeIp(session.remoteAddress)}] blocked using ${hit.zone}`;

  return definePlugin<SpamSessionState, SpamTransactionState>({
    name: PLUGIN_NAME,
    // DNS, scanners and DKIM keys have their own timeouts below this; the runner's is the backstop.
    timeout: 60_000,
    state: {
      session: () => ({ lists: undefined }),
      transaction: () => ({
        spf: undefined,
        receivedHeaders: undefined,
        auth: undefined,
        decision: undefined,
      }),
    },

    init(ctx) {
      if (store && !store.shared) {
        ctx.log.warn('greylisting keeps its triplets in this process: give greylist.redis to share them');
      }
    },

    async shutdown() {
      await store?.close();
    },

    async connect(ctx): Promise<Verdict | void> {
      if (!checksClient(ctx.session) || !hasLists) return;
      const lists = listsOf(ctx.session, ctx.sessionState, ctx.log);
      if (opts.dnsbl.rejectAt !== 'connect' || !hasRejectingZone) return;
      const { rejectedBy } = await lists;
      if (!rejectedBy) return;
      ctx.log.info(
        { ip: ctx.session.remoteAddress, zone: rejectedBy.zone, codes: rejectedBy.codes },
        'DNSBL reject',
      );
      // RFC 5321 §3.1: a server refusing service at connection time answers 554.
      return reject(554, '5.7.1', blockedText(ctx.session, rejectedBy));
    },

    mailFrom(ctx): void {
      if (isExempt(ctx.session)) return;
      void listsOf(ctx.session, ctx.sessionState, ctx.log);
      // Started now so the DNS work overlaps RCPT and DATA; awaited at end of data. Later stages
      // start it themselves when this hook did not run (another plugin accepted MAIL FROM first).
      if (opts.spf.enabled) ctx.transactionState.spf = spfOf(ctx.session, ctx.address);
    },

    async rcptTo(ctx): Promise<Verdict | void> {
      if (isExempt(ctx.session)) return;
      const lists = await listsOf(ctx.session, ctx.sessionState, ctx.log);
      if (lists.rejectedBy) {
        ctx.log.info(
          { ip: ctx.session.remoteAddress, zone: lists.rejectedBy.zone, codes: lists.rejectedBy.codes },
          'DNSBL reject',
        );
        return reject(550, '5.7.1', blockedText(ctx.session, lists.rejectedBy));
      }
      if (!greylist || !store) return;
      const sender = ctx.transaction.mailFrom;
      const senderDomain = domainOf(sender);
      if (greyNetworks.contains(ctx.session.remoteAddress)) return;
      if (
        senderDomain &&
        greySenderDomains.some((d) => senderDomain === d || senderDomain.endsWith(`.${d}`))
      ) {
        return;
      }
      if (greylist.skipIfDnswl && lists.allowListed) return;
      const key = tripletKey(
        greylist.keyPrefix,
        ctx.session.remoteAddress,
        sender,
        ctx.recipient.address,
        greylist.ipv4Prefix,
        greylist.ipv6Prefix,
      );
      let verdict: Awaited<ReturnType<GreylistStore['check']>>;
      try {
        verdict = await store.check(key, {
          delayMs: greylist.delaySeconds * 1000,
          retryWindowMs: greylist.retryWindowSeconds * 1000,
          lifetimeMs: greylist.lifetimeSeconds * 1000,
        });
      } catch (error) {
        // Greylisting is a delay, not a defence worth refusing mail over: fail open.
        ctx.log.warn({ err: error, key }, 'greylisting store failed; recipient not greylisted');
        return;
      }
      if (verdict.outcome === 'new' || verdict.outcome === 'early') {
        ctx.log.info({ key, outcome: verdict.outcome, retryIn: verdict.retryInSeconds }, 'greylisted');
        const wait = verdict.retryInSeconds;
        return tempfail(
          451,
          '4.7.1',
          `Greylisted, please try again in ${wait} second${wait === 1 ? '' : 's'}`,
        );
      }
      if (verdict.outcome === 'passed') ctx.log.info({ key }, 'greylisting passed');
    },

    headers: {
      // First, so the block is captured as it arrived, before any plugin changes it.
      order: 'pre',
      handler(ctx): void {
        if (!checksClient(ctx.session)) return;
        ctx.transactionState.receivedHeaders = ctx.headers.fields();
        const hostname = ctx.session.listener.hostname;
        const forged = ctx.headers.remove('authentication-results', (v) => claimsAuthservId(v, hostname));
        let own = 0;
        for (const name of OWN_HEADERS) own += ctx.headers.remove(name);
        if (forged + own > 0) {
          ctx.log.info(
            { authenticationResults: forged, spamHeaders: own },
            'removed incoming fields that claim to be ours',
          );
        }
      },
    },

    async message(ctx): Promise<Verdict | void> {
      const state = ctx.transactionState;
      if (isExempt(ctx.session)) return;
      const started = performance.now();
      const { session, transaction } = ctx;
      const symbols: SpamSymbol[] = [];
      const forced: ForcedAction[] = [];

      const lists = await listsOf(session, ctx.sessionState, ctx.log);
      for (const hit of lists.hits) symbols.push(hit.symbol);

      if (opts.spf.enabled) state.spf ??= spfOf(session, transaction.mailFrom);
      const spfOutcomes = (await state.spf) ?? [];
      for (const outcome of spfOutcomes) {
        symbols.push(weights.symbol(spfSymbol(outcome), outcome.domain || undefined));
      }

      const scanning = opts.rspamd !== undefined || opts.spamd !== undefined;
      const scan = scanning ? await scanRequest(ctx.message.stream(), session, transaction) : undefined;
      const checkAuth = opts.dkim.enabled || opts.dmarc.enabled;
      const [gtube, auth, rspamd, spamd] = await Promise.all([
        opts.heuristics.enabled ? containsGtube(ctx.message.body()) : Promise.resolve(false),
        checkAuth
          ? checkDkimDmarc({
              message: receivedMessage(state.receivedHeaders, ctx.message),
              sender: transaction.mailFrom,
              resolver: dns.mailauth,
              minBitLength: opts.dkim.minBitLength,
              spf: spfOutcomes.find((o) => o.identity === 'mailfrom'),
              dmarc: opts.dmarc.enabled,
            }).catch((error: unknown): undefined => {
              ctx.log.error({ err: error }, 'DKIM/DMARC check failed; not counted');
              return undefined;
            })
          : Promise.resolve(undefined),
        opts.rspamd && scan ? scanWithRspamd(opts.rspamd, scan) : Promise.resolve(undefined),
        opts.spamd && scan ? scanWithSpamd(opts.spamd, scan) : Promise.resolve(undefined),
      ]);

      if (opts.heuristics.enabled) {
        if (gtube) symbols.push(weights.symbol('GTUBE'));
        for (const hit of [...checkHeaders(ctx.message.headers), ...checkHelo(session.helo)]) {
          symbols.push(weights.symbol(hit.name, hit.detail));
        }
      }

      if (auth) {
        if (opts.dkim.enabled) {
          const signed = auth.signatures.map((s) => `${s.domain}:${s.result}`).join(',');
          symbols.push(weights.symbol(dkimSymbol(auth.dkim), signed || undefined));
        }
        const dmarc = auth.dmarc;
        if (dmarc) {
          symbols.push(weights.symbol(dmarcSymbol(dmarc), dmarc.fromDomain || undefined));
          if (dmarc.result === 'fail' && dmarc.policy === 'reject' && opts.dmarc.onReject !== 'score') {
            forced.push({
              source: 'dmarc',
              action: opts.dmarc.onReject,
              reason: `dmarc policy reject for ${dmarc.fromDomain}`,
            });
          }
          if (
            dmarc.result === 'fail' &&
            dmarc.policy === 'quarantine' &&
            opts.dmarc.onQuarantine !== 'score'
          ) {
            forced.push({
              source: 'dmarc',
              action: 'quarantine',
              reason: `dmarc policy quarantine for ${dmarc.fromDomain}`,
            });
          }
        }
      }

      const scanners: { rspamd?: ScanResult; spamd?: ScanResult } = {};
      const scanned = [
        ['rspamd', 'RSPAMD', rspamd, opts.rspamd] as const,
        ['spamd', 'SPAMD', spamd, opts.spamd] as const,
      ];
      for (const [name, symbol, result, scanner] of scanned) {
        if (!result || !scanner) continue;
        scanners[name] = result;
        if (result.status === 'scanned') {
          const detail = `${result.score}${result.required !== undefined ? `/${result.required}` : ''}${result.action ? ` ${result.action}` : ''}`;
          symbols.push({ name: symbol, score: result.score * scanner.weight, detail });
        } else if (result.status === 'failed') {
          ctx.log.warn({ scanner: name, reason: result.reason, failure: scanner.failure }, 'scanner failed');
          if (scanner.failure === 'closed')
            forced.push({
              source: 'scanner',
              action: 'tempfail',
              reason: `${name} failed: ${result.reason}`,
            });
          else symbols.push(weights.symbol('SCANNER_UNAVAILABLE', `${name}: ${result.reason}`));
        } else {
          ctx.log.debug({ scanner: name, reason: result.reason }, 'scanner skipped');
        }
      }

      const score = roundScore(symbols.reduce((sum, s) => sum + s.score, 0));
      const { action, reason, forcedBy } = decideAction(score, opts.actions, forced);
      const decision: SpamDecision = {
        score,
        action,
        reason,
        symbols,
        thresholds: opts.actions,
        auth: { spf: spfOutcomes, dkim: auth?.dkim, dmarc: auth?.dmarc },
        scanners,
        sessionId: session.id,
        transactionId: transaction.id,
        clientIp: normalizeIp(session.remoteAddress),
        mailFrom: transaction.mailFrom,
        recipients: transaction.recipients.map((r) => r.address),
        durationMs: Math.round(performance.now() - started),
      };
      state.decision = decision;
      state.auth = {
        ...(opts.spf.enabled ? { spf: spfOutcomes } : {}),
        ...(auth && opts.dkim.enabled ? { dkim: auth.signatures } : {}),
        ...(auth?.dmarc ? { dmarc: auth.dmarc } : {}),
      } satisfies AuthenticationReport;
      record(ctx.log, decision, opts.onDecision);

      if (action === 'reject') {
        return reject(
          550,
          '5.7.1',
          forcedBy?.source === 'dmarc' ? opts.replies.dmarcReject : opts.replies.reject,
        );
      }
      if (action === 'tempfail') return tempfail(451, '4.7.1', opts.replies.tempfail);
    },

    queue(ctx): void {
      const state = ctx.transactionState;
      const decision = state.decision;
      if (!decision) return;
      const headers = ctx.message.headers;
      if (
        opts.authenticationResults &&
        state.auth &&
        (state.auth.spf || state.auth.dkim || state.auth.dmarc)
      ) {
        headers.prepend(
          'Authentication-Results',
          formatAuthenticationResults(ctx.session.listener.hostname, state.auth),
        );
      }
      applyDecisionHeaders(headers, decision, opts.headers);
      if (decision.action === 'quarantine') {
        const reason = quarantineReason(decision);
        headers.set('X-Tern-Quarantine', reason);
        // Held in the queue, undelivered, until an operator releases it.
        ctx.hold(reason);
      }
    },
  });
}

/** One structured line per checked message, and the decision handed to onDecision. */
function record(
  log: Logger,
  decision: SpamDecision,
  onDecision: ((d: SpamDecision) => void) | undefined,
): void {
  log.info(
    {
      score: decision.score,
      action: decision.action,
      reason: decision.reason,
      symbols: symbolSummary(decision.symbols),
      ip: decision.clientIp,
      mailFrom: decision.mailFrom,
      recipients: decision.recipients.length,
      sessionId: decision.sessionId,
      transactionId: decision.transactionId,
      durationMs: decision.durationMs,
    },
    'spam check',
  );
  if (!onDecision) return;
  try {
    onDecision(decision);
  } catch (error) {
    log.error({ err: error }, 'onDecision threw; ignored');
  }
}

/** The message as it arrived: the captured header block over the (unchanged) body. */
function receivedMessage(received: HeaderField[] | undefined, message: MessageView): Readable {
  if (!received) return message.stream();
  const head = new Headers(received).toBuffer();
  async function* chunks(): AsyncGenerator<Buffer> {
    yield head;
    yield Buffer.from('\r\n');
    for await (const chunk of message.body()) yield chunk as Buffer;
  }
  return Readable.from(chunks(), { objectMode: false });
}

async function scanRequest(
  stream: Readable,
  session: SessionInfo,
  transaction: { id: string; mailFrom: string; recipients: readonly { address: string }[] },
): Promise<ScanRequest> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    chunks.push(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return {
    chunks,
    size,
    ip: normalizeIp(session.remoteAddress),
    helo: session.helo,
    mailFrom: transaction.mailFrom,
    recipients: transaction.recipients.map((r) => r.address),
    user: session.user,
    mta: session.listener.hostname,
    logTag: transaction.id,
  };
}
