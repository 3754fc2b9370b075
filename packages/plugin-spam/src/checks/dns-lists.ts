// The DNS list check (RFC 5782): every block and allow list zone asked about the client once per
// session, starting at connect; a `reject` listing refuses the client at connect or RCPT, every
// listing is published for the score and for greylisting.
import {
  definePlugin,
  defineResult,
  normalizeIp,
  type Plugin,
  parseOptions,
  reject,
  type SessionContext,
  type Verdict,
} from '@tern/plugin-api';
import { z } from 'zod';
import { createResolver } from '../dns.js';
import { checkDnsLists, type DnsListHit, type DnsListResult, unlisted } from '../dnslist.js';
import { CheckScope, dnsOptions, hostname, scopeFields, symbolPart, weight } from '../schema.js';

export const DNS_LISTS_CHECK = 'spam-dnslists';

/** Every listing of the client (session scope: looked up once per client address). */
export const dnsListResult = defineResult<DnsListResult>('spam.dnslists', { scope: 'session' });

const listCode = z.string().regex(/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/, 'expected a 127.x.y.z return code');

const codeMeaning = z.strictObject({
  /** Appended to the symbol name: RBL_<zone name>_<code name>. */
  name: symbolPart.optional(),
  weight: weight.optional(),
  action: z.enum(['score', 'reject']).optional(),
});

const dnsblZone = z.strictObject({
  zone: hostname,
  /** Symbol name part; default: the zone upper-cased with dots as underscores. */
  name: symbolPart.optional(),
  weight: weight.default(5),
  /** `reject` refuses the client (at connect or RCPT, see dnsbl.rejectAt); `score` only adds weight. */
  action: z.enum(['score', 'reject']).default('score'),
  /** What each return code means; codes not listed take the zone's weight and action. */
  codes: z.record(listCode, codeMeaning).optional(),
  /** Query IPv6 clients too (in reversed-nibble form). */
  ipv6: z.boolean().default(true),
});

const dnswlZone = z.strictObject({
  zone: hostname,
  name: symbolPart.optional(),
  weight: weight.default(-5),
  codes: z.record(listCode, codeMeaning.omit({ action: true })).optional(),
  ipv6: z.boolean().default(true),
});

/** The lists themselves: spamFilter() takes these two fields as they are. */
export const dnsListFields = {
  dnsbl: z
    .strictObject({
      zones: z.array(dnsblZone).default([]),
      /** Where a `reject` listing answers: RCPT (after Postfix's smtpd_delay_reject) or connect. */
      rejectAt: z.enum(['connect', 'rcpt']).default('rcpt'),
    })
    .prefault({}),
  dnswl: z.strictObject({ zones: z.array(dnswlZone).default([]) }).prefault({}),
};

export const dnsListOptionsSchema = z.strictObject({ ...scopeFields, dns: dnsOptions, ...dnsListFields });

export type DnsListCheckOptions = z.input<typeof dnsListOptionsSchema>;
export type DnsblZoneOptions = z.output<typeof dnsblZone>;
export type DnswlZoneOptions = z.output<typeof dnswlZone>;

interface Lookup {
  readonly ip: string;
  readonly result: Promise<DnsListResult>;
}

/** Per connection: the lookup for the client address as it stands (XCLIENT or PROXY may change it). */
export interface DnsListSessionState {
  lookup: Lookup | undefined;
}

/** Asks the configured DNS block and allow lists about the client. Options are validated here. */
export function dnsListCheck(options: DnsListCheckOptions = {}): Plugin<DnsListSessionState> {
  const opts = parseOptions(DNS_LISTS_CHECK, dnsListOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  const dns = createResolver(opts.dns);
  const configured = opts.dnsbl.zones.length > 0 || opts.dnswl.zones.length > 0;
  const hasRejectingZone = opts.dnsbl.zones.some(
    (z) => z.action === 'reject' || Object.values(z.codes ?? {}).some((c) => c.action === 'reject'),
  );

  /** Starts the lookups once per client address and publishes them (still pending) for later hooks. */
  const lookup = (ctx: SessionContext<DnsListSessionState>): Promise<DnsListResult> => {
    const ip = normalizeIp(ctx.session.remoteAddress);
    const state = ctx.sessionState;
    if (state.lookup?.ip !== ip) {
      const result = configured
        ? checkDnsLists(ip, opts.dnsbl.zones, opts.dnswl.zones, dns.resolver, ctx.log).catch(
            (error: unknown) => {
              ctx.log.error({ err: error }, 'DNS list check failed; not counted');
              return unlisted(ip);
            },
          )
        : Promise.resolve(unlisted(ip));
      state.lookup = { ip, result };
      ctx.results.set(dnsListResult, result);
    }
    return state.lookup.result;
  };

  const refuse = (ctx: SessionContext<unknown>, hit: DnsListHit, code: 550 | 554): Verdict => {
    ctx.log.info({ ip: ctx.session.remoteAddress, zone: hit.zone, codes: hit.codes }, 'DNSBL reject');
    return reject(
      code,
      '5.7.1',
      `Client host [${normalizeIp(ctx.session.remoteAddress)}] blocked using ${hit.zone}`,
    );
  };

  return definePlugin<DnsListSessionState>({
    name: DNS_LISTS_CHECK,
    publishes: [dnsListResult],
    state: { session: () => ({ lookup: undefined }) },

    async connect(ctx): Promise<Verdict | void> {
      if (!scope.checksClient(ctx.session)) return;
      const lists = lookup(ctx);
      if (opts.dnsbl.rejectAt !== 'connect' || !hasRejectingZone) return;
      const { rejectedBy } = await lists;
      // RFC 5321 §3.1: a server refusing service at connection time answers 554.
      if (rejectedBy) return refuse(ctx, rejectedBy, 554);
    },

    mailFrom(ctx): void {
      if (!scope.isExempt(ctx.session)) void lookup(ctx);
    },

    async rcptTo(ctx): Promise<Verdict | void> {
      if (scope.isExempt(ctx.session)) return;
      const { rejectedBy } = await lookup(ctx);
      if (rejectedBy) return refuse(ctx, rejectedBy, 550);
    },

    // 'pre': published before the checks of this stage that read it, when no earlier hook ran.
    message: {
      order: 'pre',
      handler(ctx): void {
        if (!scope.isExempt(ctx.session)) void lookup(ctx);
      },
    },
  });
}
