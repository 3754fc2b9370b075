// The greylisting check (after postgrey): a new (client network, sender, recipient) triplet gets
// 451 at RCPT until it retries after the delay. Each recipient's outcome is published.
import {
  definePlugin,
  defineResult,
  domainOf,
  NetworkList,
  type Plugin,
  parseOptions,
  tempfail,
  type Verdict,
} from '@tern/plugin-api';
import { type RedisClient, redisConnectionSchema } from '@tern/redis';
import { z } from 'zod';
import {
  type GreylistOutcome,
  type GreylistStore,
  MemoryGreylistStore,
  RedisGreylistStore,
  tripletKey,
} from '../greylist.js';
import { CheckScope, hostname, network, positiveInt, scopeFields } from '../schema.js';
import { dnsListResult } from './dns-lists.js';

export const GREYLIST_CHECK = 'spam-greylist';

export interface GreylistRecipientOutcome {
  readonly recipient: string;
  /**
   * new, early: deferred with 451; passed, known: let through; exempt: not greylisted (an allowed
   * network or sender domain, a DNSWL listing); failed: the store failed, let through.
   */
  readonly outcome: GreylistOutcome | 'exempt' | 'failed';
  /** Seconds until a retry passes, for deferred recipients. */
  readonly retryInSeconds?: number;
}

/** Each recipient's greylisting outcome in this transaction, in RCPT order. */
export const greylistResult = defineResult<readonly GreylistRecipientOutcome[]>('spam.greylist');

const redisClient = z.custom<RedisClient>(
  (v) => typeof v === 'object' && v !== null && typeof (v as { evalsha?: unknown }).evalsha === 'function',
  'expected a redis:// URL, { sentinels, name }, { cluster } or an ioredis client',
);

export const greylistFields = {
  /**
   * Shared store: a redis:// URL, where Redis is (`{ sentinels, name }`, `{ cluster }`: the same
   * object as the queue's `queue.redis`), or an ioredis client. Without it, one process's memory.
   */
  redis: z
    .union([
      z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL'),
      redisClient,
      redisConnectionSchema,
    ])
    .optional(),
  keyPrefix: z.string().min(1).default('tern:greylist:'),
  /** A new triplet is deferred until this many seconds passed since its first attempt. */
  delaySeconds: positiveInt.default(300),
  /** A triplet that never came back is forgotten after this long. */
  retryWindowSeconds: positiveInt.default(2 * 86_400),
  /** A triplet that passed is let through without delay for this long after its last message. */
  lifetimeSeconds: positiveInt.default(35 * 86_400),
  ipv4Prefix: z.number().int().min(8).max(32).default(24),
  ipv6Prefix: z.number().int().min(16).max(128).default(64),
  allowNetworks: z.array(network).default([]),
  /** Senders from these domains (and their subdomains) are never greylisted. */
  allowSenderDomains: z.array(hostname).default([]),
  /** Clients on a DNSWL zone (the DNS list check's result) are not greylisted. */
  skipIfDnswl: z.boolean().default(true),
  /** In-process store only: the most triplets kept. */
  maxEntries: positiveInt.default(100_000),
};

export const greylistOptionsSchema = z.strictObject({ ...scopeFields, ...greylistFields });

export type GreylistCheckOptions = z.input<typeof greylistOptionsSchema>;

/** Greylists each recipient of unknown triplets. Options are validated here. */
export function greylistCheck(options: GreylistCheckOptions = {}): Plugin {
  const opts = parseOptions(GREYLIST_CHECK, greylistOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  const store: GreylistStore =
    opts.redis !== undefined ? new RedisGreylistStore(opts.redis) : new MemoryGreylistStore(opts.maxEntries);
  const allowNetworks = NetworkList.parse(opts.allowNetworks);
  const allowSenderDomains = opts.allowSenderDomains.map((d) => d.toLowerCase());
  const times = {
    delayMs: opts.delaySeconds * 1000,
    retryWindowMs: opts.retryWindowSeconds * 1000,
    lifetimeMs: opts.lifetimeSeconds * 1000,
  };

  return definePlugin({
    name: GREYLIST_CHECK,
    publishes: [greylistResult],

    init(ctx): void {
      if (!store.shared) {
        ctx.log.warn(
          'greylisting keeps its triplets in this process: give it redis (greylist.redis in spamFilter) to share them',
        );
      }
    },

    async shutdown(): Promise<void> {
      await store.close();
    },

    async rcptTo(ctx): Promise<Verdict | void> {
      if (scope.isExempt(ctx.session)) return;
      const publish = (outcome: GreylistRecipientOutcome): void => {
        ctx.results.set(greylistResult, [...(ctx.results.get(greylistResult) ?? []), outcome]);
      };
      const recipient = ctx.recipient.address;
      const sender = ctx.transaction.mailFrom;
      const senderDomain = domainOf(sender);
      const allowed =
        allowNetworks.contains(ctx.session.remoteAddress) ||
        (senderDomain !== '' &&
          allowSenderDomains.some((d) => senderDomain === d || senderDomain.endsWith(`.${d}`))) ||
        (opts.skipIfDnswl && (await ctx.results.wait(dnsListResult))?.allowListed === true);
      if (allowed) return publish({ recipient, outcome: 'exempt' });
      const key = tripletKey(
        opts.keyPrefix,
        ctx.session.remoteAddress,
        sender,
        recipient,
        opts.ipv4Prefix,
        opts.ipv6Prefix,
      );
      let verdict: Awaited<ReturnType<GreylistStore['check']>>;
      try {
        verdict = await store.check(key, times);
      } catch (error) {
        // Greylisting is a delay, not a defence worth refusing mail over: fail open.
        ctx.log.warn({ err: error, key }, 'greylisting store failed; recipient not greylisted');
        return publish({ recipient, outcome: 'failed' });
      }
      if (verdict.outcome === 'new' || verdict.outcome === 'early') {
        ctx.log.info({ key, outcome: verdict.outcome, retryIn: verdict.retryInSeconds }, 'greylisted');
        publish({ recipient, outcome: verdict.outcome, retryInSeconds: verdict.retryInSeconds });
        const wait = verdict.retryInSeconds;
        return tempfail(
          451,
          '4.7.1',
          `Greylisted, please try again in ${wait} second${wait === 1 ? '' : 's'}`,
        );
      }
      if (verdict.outcome === 'passed') ctx.log.info({ key }, 'greylisting passed');
      publish({ recipient, outcome: verdict.outcome });
    },
  });
}
