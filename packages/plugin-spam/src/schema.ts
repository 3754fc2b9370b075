// What every check's options share: zod building blocks, the DNS resolver settings and where a
// check runs (listeners, exemptions), with the one rule that turns the latter into yes or no.
import { dnsServerSchema, durationSchema, networkSchema, type SessionInfo } from '@tern/plugin-api';
import { z } from 'zod';

const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/i;
export const hostname = z.string().regex(HOSTNAME, 'expected a DNS name such as zen.spamhaus.org');
export const symbolPart = z.string().regex(/^[A-Z0-9_]{1,40}$/, 'expected upper-case letters, digits and _');
export const weight = z.number().finite();
export const positiveInt = z.number().int().positive();
export const network = networkSchema();
export const replyText = z
  .string()
  .min(1)
  .max(400)
  .refine((s) => !/[\r\n]/.test(s), 'must be one line');

/** The resolver a check asks (DNS lists, SPF, DKIM keys, DMARC records). */
export const dnsOptions = z
  .strictObject({
    /** Resolvers to ask; default: the system's. */
    servers: z.array(dnsServerSchema()).min(1).optional(),
    timeoutMs: durationSchema({ positive: true }).default(2000),
    tries: positiveInt.max(10).default(2),
  })
  .prefault({});

export type DnsOptions = z.output<typeof dnsOptions>;

/** Where a check runs; every check takes these, and spamFilter() gives all of its checks the same. */
export const scopeFields = {
  /** Listener names the check runs on; default: every listener of kind 'mx'. */
  listeners: z.array(z.string().min(1)).min(1).optional(),
  /** Skip authenticated sessions (submission through an MX listener). */
  exemptAuthenticated: z.boolean().default(true),
  /** Skip clients from the core's trusted networks (our own relays). */
  exemptTrusted: z.boolean().default(true),
};

export interface ScopeOptions {
  readonly listeners?: readonly string[] | undefined;
  readonly exemptAuthenticated: boolean;
  readonly exemptTrusted: boolean;
}

/** Whether a check looks at a session: on its listeners, and not for exempt clients. */
export class CheckScope {
  readonly #options: ScopeOptions;

  constructor(options: ScopeOptions) {
    this.#options = options;
  }

  /** The client is judged here: the right listener, and not a trusted client we exempt. */
  checksClient(session: SessionInfo): boolean {
    const o = this.#options;
    const onListener = o.listeners
      ? o.listeners.includes(session.listener.name)
      : session.listener.kind === 'mx';
    return onListener && !(o.exemptTrusted && session.trusted);
  }

  /** Nothing is checked for this session (as it stands now: AUTH can make it exempt later). */
  isExempt(session: SessionInfo): boolean {
    return !this.checksClient(session) || (this.#options.exemptAuthenticated && session.user !== undefined);
  }
}
