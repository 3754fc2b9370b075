// The tern config: its schema (with defaults), `defineConfig` for typed config files, loading
// TS or JS (ESM) config files, and errors that name the field and the fix.
import { existsSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { NextHop, Plugin } from '@tern/plugin-api';
import type { Duration } from '@tern/queue';
import { createJiti } from 'jiti';
import { z } from 'zod';

const port = z.number().int('a port is a whole number').min(0).max(65535, 'a port is 0 to 65535');
const domain = z
  .string()
  .min(1)
  .regex(
    /^[a-z0-9.-]+$|^\[[0-9a-f.:]+\]$/i,
    'a domain name like example.com (or an address literal like [192.0.2.1])',
  )
  .transform((d) => d.toLowerCase());
const cidr = z
  .string()
  .regex(
    /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]+)(\/\d{1,3})?$/i,
    'a network in CIDR form, like 10.0.0.0/8, 192.0.2.7 or ::1/128',
  );
const duration = z.number().int().positive('a duration in milliseconds, above 0');

const tlsFiles = z.strictObject({
  key: z.string().min(1, 'the path of a PEM private key'),
  cert: z.string().min(1, 'the path of a PEM certificate chain'),
  /** Extra certificates chosen by SNI server name. */
  sni: z.record(z.string(), z.strictObject({ key: z.string(), cert: z.string() })).optional(),
});

const limits = z
  .strictObject({
    maxMessageSize: z.number().int().positive().optional(),
    maxRecipients: z.number().int().positive().optional(),
    maxLineLength: z.number().int().positive().optional(),
    maxConnections: z.number().int().positive().optional(),
    maxConnectionsPerIp: z.number().int().positive().optional(),
    maxErrors: z.number().int().positive().optional(),
    maxAuthFailures: z.number().int().positive().optional(),
    maxReceivedHeaders: z.number().int().positive().optional(),
    maxHeaderBytes: z.number().int().positive().optional(),
    /** Share of maxConnections open at which the stress timeouts apply (default 0.8). */
    stressThreshold: z.number().gt(0, 'a share above 0').max(1, 'a share of at most 1').optional(),
    timeouts: z
      .strictObject({
        socket: duration.optional(),
        data: duration.optional(),
        enqueue: duration.optional(),
        dns: duration.optional(),
        /** One command line, PROXY header or TLS handshake, from its first byte (default 60 s). */
        command: duration.optional(),
        /** The longest connection (default 1 h). */
        session: duration.optional(),
        /** Shorter limits under stress (defaults: socket 10 s, command 10 s, session 5 min). */
        stress: z
          .strictObject({
            socket: duration.optional(),
            command: duration.optional(),
            session: duration.optional(),
          })
          .optional(),
      })
      .optional(),
  })
  .optional();

const pluginSchema = z.custom<Plugin>(
  (value) =>
    typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string',
  'a plugin: an object with a name, usually made by a plugin factory such as dkim({...})',
);

const listener = z.strictObject({
  name: z.string().min(1).optional(),
  kind: z.enum(['mx', 'submission', 'smtps'], 'one of mx (port 25), submission (587) or smtps (465)'),
  host: z.string().default('0.0.0.0'),
  port: port.optional(),
  hostname: z.string().min(1).optional(),
  tls: tlsFiles.optional(),
  localDomains: z.array(domain).optional(),
  trustedNetworks: z.array(cidr).optional(),
  requireTls: z.boolean().optional(),
  requireAuth: z.boolean().optional(),
  auth: z.boolean().optional(),
  allowInsecureAuth: z.boolean().optional(),
  reverseLookup: z.boolean().optional(),
  authFailureDelayMs: z.number().int().nonnegative().optional(),
  /** Wait before the banner to catch early talkers (default 100 ms on mx, 0 on submission/smtps and for trusted networks). */
  greetingDelayMs: z.number().int().min(0).max(60_000).optional(),
  bareLineEndings: z.enum(['reject', 'normalize']).optional(),
  /** Lines over 998 octets: refuse with 550 5.6.0 (default), or wrap body lines before any hook. */
  longLines: z.enum(['reject', 'wrap']).optional(),
  proxy: z.boolean().optional(),
  xclient: z.boolean().optional(),
  limits,
  /** Plugins for this listener only, replacing the global list. */
  plugins: z.array(pluginSchema).optional(),
});

const tlsMode = z.enum(['opportunistic', 'require', 'none', 'implicit']);
/** Exported for the admin API, whose reroute takes the same next hops as routes do. */
export const nextHop: z.ZodType<NextHop> = z.union([
  z.strictObject({ type: z.literal('mx'), domain, tls: tlsMode.optional() }),
  z.strictObject({
    type: z.literal('smtp'),
    host: z.string().min(1),
    port: port.optional(),
    tls: tlsMode.optional(),
    auth: z.strictObject({ user: z.string(), pass: z.string() }).optional(),
  }),
  z.strictObject({
    type: z.literal('lmtp'),
    host: z.string().optional(),
    port: port.optional(),
    path: z.string().optional(),
    tls: tlsMode.optional(),
  }),
  z.strictObject({ type: z.literal('maildir'), path: z.string().min(1) }),
]) as z.ZodType<NextHop>;

const span = z.union(
  [z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?(ms|s|m|h|d)$/)],
  "milliseconds, or a string like '30s', '5m', '4h', '5d'",
) as z.ZodType<Duration>;
const retry = z
  .strictObject({
    /** Waits after the 1st, 2nd, ... failed attempt; the last repeats (default 5m, 10m, 20m, 40m, 1h, 2h, 4h). */
    intervals: z.array(span).min(1).optional(),
    /** Give up (bounce) after this long (default 5d). */
    maxAge: span.optional(),
    /** Send a delay notice after this long (default: never). */
    delayNoticeAfter: span.optional(),
    /** Shortest wait between two attempts (default 1s). */
    minInterval: span.optional(),
  })
  .optional();

const queue = z
  .discriminatedUnion('backend', [
    z.strictObject({
      backend: z.literal('embedded'),
      /** The SQLite file (default .tern-data/queue.db beside the config). */
      path: z.string().min(1).optional(),
      retry,
    }),
    z.strictObject({
      backend: z.literal('redis'),
      url: z.string().regex(/^rediss?:\/\//, 'a Redis URL like redis://127.0.0.1:6379'),
      prefix: z.string().min(1).optional(),
      queueName: z.string().min(1).optional(),
      enqueueTimeoutMs: duration.optional(),
      stalledIntervalMs: duration.optional(),
      lockDurationMs: duration.optional(),
      retry,
    }),
  ])
  .optional();

const destinationLimit = z.strictObject({
  /** Deliveries in flight at once towards this destination. */
  maxConnections: z.number().int().positive().optional(),
  /** Messages per window, e.g. { limit: 10, per: 1000 } for 10 a second. */
  messageRate: z.strictObject({ limit: z.number().int().positive(), per: duration }).optional(),
});

const delivery = z
  .strictObject({
    /** Static routes by recipient domain; '*' routes everything else (a smarthost). */
    routes: z.record(z.string(), nextHop).optional(),
    /** Local domains delivered to a mailbox server over LMTP. */
    local: z
      .strictObject({
        domains: z.array(domain).min(1),
        lmtp: z.strictObject({
          host: z.string().optional(),
          port: port.optional(),
          path: z.string().optional(),
          tls: tlsMode.optional(),
        }),
      })
      .optional(),
    dns: z.strictObject({ servers: z.array(z.string()).min(1), timeoutMs: duration.optional() }).optional(),
    /** The SMTP port MX hosts are reached on (25; tests use others). */
    port: port.optional(),
    /** Jobs this process delivers at once (default 20). */
    concurrency: z.number().int().positive().optional(),
    tls: z
      .strictObject({
        mode: tlsMode.optional(),
        /** A PEM file of CAs trusted for `require` (default: Node's bundled roots). */
        ca: z.string().optional(),
        allowInsecureAuth: z.boolean().optional(),
      })
      .optional(),
    maxAddresses: z.number().int().positive().optional(),
    limits: z
      .strictObject({
        default: destinationLimit.optional(),
        domains: z.record(z.string(), destinationLimit).optional(),
        hosts: z.record(z.string(), destinationLimit).optional(),
        waitMs: duration.optional(),
        leaseTtlMs: duration.optional(),
      })
      .optional(),
    timeouts: z
      .strictObject({
        connectMs: duration.optional(),
        greetingMs: duration.optional(),
        commandMs: duration.optional(),
        dataInitMs: duration.optional(),
        dataBlockMs: duration.optional(),
        dataEndMs: duration.optional(),
      })
      .optional(),
  })
  .optional();

// The admin HTTP API (operator actions, /metrics, the dashboard); see src/ops/. Off unless set.
const admin = z
  .strictObject({
    /** host:port to listen on (default loopback 127.0.0.1:8025). */
    listen: z
      .string()
      .regex(/^(\[[0-9a-f:.]+\]|[^\s:[\]]+):\d{1,5}$/i, "host:port, like '127.0.0.1:8025' or '[::1]:8025'")
      .default('127.0.0.1:8025'),
    /** The bearer token API clients send; or `tokenFile`, a file holding it. */
    token: z.string().min(16, 'at least 16 characters (it guards operator actions)').optional(),
    tokenFile: z.string().min(1).optional(),
    /** Require the token on /metrics too (default false: Prometheus scrapes without one). */
    metricsAuth: z.boolean().optional(),
    /** How often the dashboard's queue-depth history is sampled (default 15 000 ms). */
    sampleIntervalMs: duration.optional(),
  })
  .optional();

// Where message bodies wait between the socket and the queue (one budget for every listener).
const intake = z
  .strictObject({
    /** Folder for bodies that outgrow memory (default .tern-data/spool beside the config); false: never spool, refuse with 451 4.3.1 past the budget. */
    spoolDir: z.union([z.string().min(1), z.literal(false)]).optional(),
    /** Bytes one message's body may hold in memory before it goes to the spool folder (default 256 KiB). */
    memoryPerMessage: z.number().int().positive().optional(),
    /** Bytes all messages being received may hold in memory together (default 64 MiB). */
    memoryBudget: z.number().int().positive().optional(),
  })
  .optional();

export const configSchema = z.strictObject({
  /** Our name in banners, EHLO and Received headers (default: the machine's host name). */
  hostname: z.string().min(1).optional(),
  listeners: z.array(listener).min(1, 'at least one listener, e.g. { kind: "mx", port: 25 }'),
  /** Domains this server receives mail for. */
  localDomains: z.array(domain).default([]),
  /** Networks that may relay without AUTH. */
  trustedNetworks: z.array(cidr).default(['127.0.0.1/32', '::1/128']),
  users: z.strictObject({ file: z.string().min(1) }).optional(),
  queue,
  delivery,
  plugins: z.array(pluginSchema).default([]),
  intake,
  log: z.strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') }).optional(),
  /** How long SIGTERM waits for open transactions (ms). */
  shutdownTimeoutMs: duration.optional(),
  admin,
});

/** The config as written (defaults optional). */
export type TernConfig = z.input<typeof configSchema>;
/** The config after validation and defaults. */
export type ResolvedConfig = z.output<typeof configSchema> & { readonly baseDir: string };

/** Declares a config; it only returns its argument, so editors check the config as you type. */
export function defineConfig(config: TernConfig): TernConfig {
  return config;
}

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    super(`${source}: invalid config\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

function fieldPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (acc, key) => (typeof key === 'number' ? `${acc}[${key}]` : `${acc}.${String(key)}`),
    'config',
  );
}

/** Validates a config object; file references are resolved against `baseDir`. Throws ConfigError. */
export function validateConfig(input: unknown, baseDir: string, source = 'config'): ResolvedConfig {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => {
        const unknownKeys = issue.code === 'unrecognized_keys' ? issue.keys : undefined;
        if (unknownKeys) {
          return `${fieldPath(issue.path)}: unknown key ${unknownKeys.map((k) => JSON.stringify(k)).join(', ')}: remove it or check its spelling`;
        }
        return `${fieldPath(issue.path)}: ${issue.message}`;
      }),
    );
  }
  const config = { ...result.data, baseDir };
  const problems = checkSemantics(config);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

const DEFAULT_PORTS = { mx: 25, submission: 587, smtps: 465 } as const;

/** A listener's port: its own, or the standard one of its kind. */
export function listenerPort(l: { kind: keyof typeof DEFAULT_PORTS; port?: number | undefined }): number {
  return l.port ?? DEFAULT_PORTS[l.kind];
}

/** Resolves a path in the config against the config file's folder. */
export function configPath(config: ResolvedConfig, path: string): string {
  return isAbsolute(path) ? path : resolve(config.baseDir, path);
}

function checkSemantics(config: ResolvedConfig): string[] {
  const problems: string[] = [];
  const seen = new Map<string, number>();
  config.listeners.forEach((l, i) => {
    const at = `config.listeners[${i}]`;
    const key = `${l.host}:${listenerPort(l)}`;
    const other = seen.get(key);
    if (other !== undefined && listenerPort(l) !== 0) {
      problems.push(
        `${at}.port: ${key} is already used by listeners[${other}]: give each listener its own port`,
      );
    }
    seen.set(key, i);
    if (l.kind !== 'mx' && !l.tls) {
      problems.push(
        `${at}.tls: a ${l.kind} listener takes passwords, so it needs a certificate: set tls: { key: 'key.pem', cert: 'cert.pem' }`,
      );
    }
    for (const field of ['key', 'cert'] as const) {
      const file = l.tls?.[field];
      if (file && !existsSync(configPath(config, file))) {
        problems.push(
          `${at}.tls.${field}: file not found: ${file} (relative paths start at the config's folder)`,
        );
      }
    }
    const receives = (l.localDomains ?? config.localDomains).length > 0;
    const relays = (l.trustedNetworks ?? config.trustedNetworks).length > 0 || l.requireAuth === true;
    if (l.kind === 'mx' && !receives && !relays) {
      problems.push(
        `${at}.localDomains: this mx listener would refuse every recipient: set localDomains: ['example.com'] (the domains it receives for), or trustedNetworks for a relay`,
      );
    }
  });
  if (config.admin && (config.admin.token === undefined) === (config.admin.tokenFile === undefined)) {
    problems.push(
      "config.admin: set exactly one of token or tokenFile (the API takes operator actions), e.g. tokenFile: 'admin.token'",
    );
  }
  if (config.users && !existsSync(dirname(configPath(config, config.users.file)))) {
    problems.push(`config.users.file: the folder of ${config.users.file} does not exist`);
  }
  return problems;
}

/** Reads a PEM file named in the config, with an error that names the field. */
export function readConfigFile(config: ResolvedConfig, path: string, field: string): string {
  try {
    return readFileSync(configPath(config, path), 'utf8');
  } catch (error) {
    throw new ConfigError('config', [
      `${field}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code}`,
    ]);
  }
}

let loads = 0;

/**
 * Imports a config module as the file is now: a SIGHUP reload must not get the module cached at
 * start-up. Node caches ES modules by URL (a query makes a new one); TypeScript goes through jiti
 * without its caches.
 */
async function importFresh(path: string): Promise<unknown> {
  if (path.endsWith('.json')) return JSON.parse(readFileSync(path, 'utf8'));
  if (/\.[cm]?ts$/.test(path)) {
    const jiti = createJiti(import.meta.url, { moduleCache: false, fsCache: false, interopDefault: true });
    return jiti.import(path, { default: true });
  }
  loads += 1;
  const module = (await import(`${pathToFileURL(path).href}?load=${loads}`)) as { default?: unknown };
  return module.default;
}

/** Loads a config file (.ts, .mts, .js, .mjs or .json) and validates it. */
export async function loadConfig(file: string): Promise<ResolvedConfig> {
  const path = resolve(file);
  if (!existsSync(path)) throw new ConfigError(file, [`file not found: ${path}`]);
  let loaded: unknown;
  try {
    loaded = await importFresh(path);
  } catch (error) {
    throw new ConfigError(file, [`cannot load: ${(error as Error).message.split('\n')[0]}`]);
  }
  return validateConfig(loaded, dirname(path), file);
}

/** Our host name: the config's, or the machine's. */
export function serverHostname(config: ResolvedConfig): string {
  return config.hostname ?? osHostname();
}
