// The tern config: its schema (with defaults), `defineConfig` for typed config files, loading
// TS or JS (ESM) config files under a deadline, and errors that name the field and the fix.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { Resolver } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseUsersFile } from '@tern/core';
import { NetworkList, type NextHop, type Plugin } from '@tern/plugin-api';
import { type Duration, durationMs } from '@tern/queue';
import { createJiti, type TransformOptions, type TransformResult } from 'jiti';
import { z } from 'zod';
import { pluginInstances, shutdownPlugins } from './plugins.js';

const port = z.number().int('a port is a whole number').min(0).max(65535, 'a port is 0 to 65535');
const domain = z
  .string()
  .min(1)
  .regex(
    /^[a-z0-9.-]+$|^\[[0-9a-f.:]+\]$/i,
    'a domain name like example.com (or an address literal like [192.0.2.1])',
  )
  .transform((d) => d.toLowerCase());
// Parsed by the NetworkList the listeners use, so what passes here also passes at start.
const cidr = z.string().superRefine((value, ctx) => {
  try {
    NetworkList.parse([value]);
  } catch (error) {
    ctx.addIssue({
      code: 'custom',
      message: `${(error as Error).message} (write a network in CIDR form, like 10.0.0.0/8, 192.0.2.7 or ::1/128)`,
    });
  }
});
/** What `net.Server#listen` binds: an address, or a name that resolves to one (checked by loadConfig). */
const listenHost = z
  .string()
  .refine(
    (host) => isIP(host) !== 0 || (!/^[\d.]+$/.test(host) && /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host)),
    {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not an IP address or host name: use an address of this machine, 0.0.0.0 (every IPv4 address) or :: (every address)`,
    },
  );
// Checked by node's own resolver, which tern's DNS lookups use: what passes here works at start.
const dnsServer = z.string().refine(
  (server) => {
    try {
      new Resolver().setServers([server]);
      return true;
    } catch {
      return false;
    }
  },
  {
    error: (issue) =>
      `${JSON.stringify(issue.input)} is not a name server address: give an IP address, with a port if not 53: '192.0.2.53', '127.0.0.1:5353', '[2001:db8::53]:53'`,
  },
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
  /** Address to bind (default :: — IPv4 and IPv6 — or 0.0.0.0 where the machine has no IPv6). */
  host: listenHost.optional(),
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
export const nextHop: z.ZodType<NextHop> = z.discriminatedUnion('type', [
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
      /** Longest wait between two write probes while Redis refuses writes (default 5000 ms). */
      probeIntervalMs: duration.optional(),
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
    dns: z
      .strictObject({
        servers: z.array(dnsServer).min(1),
        timeoutMs: duration.optional(),
        /** MX hosts of one domain looked up, most preferred first (default 10). */
        maxMxHosts: z.number().int().positive().optional(),
      })
      .optional(),
    /** What a next hop's reply may be before the connection is dropped as hostile (default 100 lines, 64 KiB). */
    replyLimits: z
      .strictObject({
        maxLines: z.number().int().positive().optional(),
        maxBytes: z.number().int().positive().optional(),
      })
      .optional(),
    /** Largest header block read from a stored message for beforeSend hooks (default 1 MiB). */
    maxHeaderBytes: z.number().int().positive().optional(),
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
        /** Bytes per second a next hop must take DATA at, on top of dataBlockMs (default 4096). */
        dataMinRate: z.number().int().positive().optional(),
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
  listeners: z
    .array(listener, {
      error: (issue) =>
        issue.input === undefined
          ? "missing: tern needs at least one listener, e.g. listeners: [{ kind: 'mx', port: 25 }]"
          : undefined,
    })
    .min(1, 'at least one listener, e.g. { kind: "mx", port: 25 }'),
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
  /**
   * `source: summary`, then one line per problem. A load failure has no list: its source is
   * `file:line:column` and its summary the cause, as compilers print them.
   */
  constructor(source: string, problems: readonly string[], summary = 'invalid config') {
    super(`${source}: ${summary}${problems.map((p) => `\n  - ${p}`).join('')}`);
    this.name = 'ConfigError';
    this.problems = problems.length > 0 ? problems : [summary];
  }
}

/** `config.listeners[0].tls`, `config.delivery.routes["*"]`: a field as the config file spells it. */
function fieldPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (acc, key) =>
      typeof key === 'number'
        ? `${acc}[${key}]`
        : /^[a-z_$][\w$]*$/i.test(String(key))
          ? `${acc}.${String(key)}`
          : `${acc}[${JSON.stringify(String(key))}]`,
    'config',
  );
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const key of path) value = (value as Record<PropertyKey, unknown> | null | undefined)?.[key];
  return value;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const at = fieldPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    return `${at}: unknown key ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}: remove it or check its spelling`;
  }
  // A mistyped member of a union (`type: 'smpt'`): name what was written and every allowed value.
  if (issue.code === 'invalid_union' && 'options' in issue && Array.isArray(issue.options)) {
    const allowed = (issue.options as unknown[]).map((o) => JSON.stringify(o)).join(', ');
    return `${at}: ${JSON.stringify(valueAt(input, issue.path))} is not one of ${allowed}`;
  }
  // A required field left out; fields with their own wording for this (listeners) start "missing".
  if (
    issue.code === 'invalid_type' &&
    valueAt(input, issue.path) === undefined &&
    !/^missing/.test(issue.message)
  ) {
    return `${at}: missing: expected ${issue.expected}`;
  }
  return `${at}: ${issue.message}`;
}

/** Validates a config object; file references are resolved against `baseDir`. Throws ConfigError. */
export function validateConfig(input: unknown, baseDir: string, source = 'config'): ResolvedConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(source, [
      `the config is ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}, not an object: export default defineConfig({ listeners: [...] })`,
    ]);
  }
  const result = configSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => describeIssue(issue, input)),
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

/** Runs `check`; a ConfigError it throws becomes problems in the list instead. */
function collect(problems: string[], check: () => void): void {
  try {
    check();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems);
  }
}

function checkSemantics(config: ResolvedConfig): string[] {
  const problems: string[] = [];
  const seen = new Map<string, number>();
  config.listeners.forEach((l, i) => {
    const at = `config.listeners[${i}]`;
    const host = l.host ?? '::';
    const key = `${host.includes(':') ? `[${host}]` : host}:${listenerPort(l)}`;
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
    if (l.tls) {
      const { tls } = l;
      collect(problems, () => readKeyPair(config, tls, `${at}.tls`));
      for (const [name, pair] of Object.entries(tls.sni ?? {})) {
        collect(problems, () => readKeyPair(config, pair, `${at}.tls.sni${fieldPath([name]).slice(6)}`));
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
  } else if (config.admin?.tokenFile !== undefined) {
    collect(problems, () => adminToken(config));
  }
  if (config.users) collect(problems, () => readUsersFile(config));
  const ca = config.delivery?.tls?.ca;
  if (ca !== undefined) collect(problems, () => readCertificates(config, ca, 'config.delivery.tls.ca'));
  return problems;
}

/** Reads a file named in the config, with an error that names the field. */
export function readConfigFile(config: ResolvedConfig, path: string, field: string): string {
  try {
    return readFileSync(configPath(config, path), 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ConfigError('config', [
      code === 'ENOENT'
        ? `${field}: file not found: ${path} (relative paths start at the config's folder)`
        : `${field}: cannot read ${path}: ${code ?? (error as Error).message}`,
    ]);
  }
}

/**
 * Reads a TLS key and certificate and checks them as the TLS stack will: a PEM private key, a PEM
 * certificate (chain), and the key belonging to the first certificate.
 */
export function readKeyPair(
  config: ResolvedConfig,
  pair: { readonly key: string; readonly cert: string },
  field: string,
): { key: string; cert: string } {
  const problems: string[] = [];
  const read = (path: string, at: string): string | undefined => {
    try {
      return readConfigFile(config, path, at);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
      return undefined;
    }
  };
  const key = read(pair.key, `${field}.key`);
  const cert = read(pair.cert, `${field}.cert`);
  if (key === undefined || cert === undefined) throw new ConfigError('config', problems);
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new ConfigError('config', [
      `${field}.key: ${pair.key} is not a PEM private key (${(error as Error).message}): give the key the certificate was made for`,
    ]);
  }
  const [leaf] = readCertificates(config, pair.cert, `${field}.cert`, cert);
  if (leaf && !leaf.checkPrivateKey(privateKey)) {
    throw new ConfigError('config', [
      `${field}.key: ${pair.key} does not belong to the certificate in ${pair.cert} (${leaf.subject.replace(/\n/g, ', ')}): give the matching key, or a certificate made for this key`,
    ]);
  }
  return { key, cert };
}

/** The certificates of a PEM file, first (the leaf, in a chain) first. */
function readCertificates(
  config: ResolvedConfig,
  path: string,
  field: string,
  text = readConfigFile(config, path, field),
): X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  try {
    if (blocks.length === 0) throw new Error('no BEGIN CERTIFICATE block');
    return blocks.map((block) => new X509Certificate(block));
  } catch (error) {
    throw new ConfigError('config', [
      `${field}: ${path} is not a PEM certificate (${(error as Error).message}): give the certificate file (-----BEGIN CERTIFICATE-----)`,
    ]);
  }
}

/** The bearer token of the admin API: `admin.token`, or the content of `admin.tokenFile`. */
export function adminToken(config: ResolvedConfig): string {
  const admin = config.admin;
  if (admin?.token !== undefined) return admin.token;
  if (admin?.tokenFile === undefined)
    throw new ConfigError('config', ['config.admin: no token or tokenFile']);
  const token = readConfigFile(config, admin.tokenFile, 'config.admin.tokenFile').trim();
  if (token.length < 16) {
    throw new ConfigError('config', [
      `config.admin.tokenFile: ${admin.tokenFile} holds ${token.length === 0 ? 'no token' : 'a token shorter than 16 characters'} (it guards operator actions): write one, e.g. openssl rand -hex 24 > ${admin.tokenFile}`,
    ]);
  }
  return token;
}

/** Checks the users file as the listeners will read it: it exists and every line is a user. */
function readUsersFile(config: ResolvedConfig): void {
  const file = config.users?.file;
  if (file === undefined) return;
  const path = configPath(config, file);
  if (!existsSync(dirname(path))) {
    throw new ConfigError('config', [`config.users.file: the folder of ${file} does not exist`]);
  }
  if (!existsSync(path)) {
    throw new ConfigError('config', [
      `config.users.file: file not found: ${file}: add the first user with tern user add --file ${file} USER`,
    ]);
  }
  try {
    parseUsersFile(readConfigFile(config, file, 'config.users.file'), file);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError('config', [`config.users.file: ${(error as Error).message}`]);
  }
}

/**
 * Checks what needs the network: each listener host that is a name resolves (the listener binds to
 * what it resolves to). Run by loadConfig, so `check-config` and `start` both do.
 */
async function checkHosts(config: ResolvedConfig, source: string): Promise<void> {
  const problems = await Promise.all(
    config.listeners.map(async (l, i) => {
      if (l.host === undefined || isIP(l.host) !== 0) return undefined;
      try {
        await lookup(l.host);
        return undefined;
      } catch (error) {
        return `config.listeners[${i}].host: cannot resolve ${l.host} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): use an IP address of this machine, or leave host out to listen on all (::)`;
      }
    }),
  );
  const found = problems.filter((p) => p !== undefined);
  if (found.length > 0) throw new ConfigError(source, found);
}

/** How long loading a config may take unless TERN_CONFIG_TIMEOUT (or `tern --config-timeout`) says otherwise. */
export const DEFAULT_CONFIG_TIMEOUT_MS = 30_000;

/** The deadline for loading a config: TERN_CONFIG_TIMEOUT ('30s', '2m' or milliseconds), else the default. */
export function configTimeoutMs(): number {
  const text = process.env.TERN_CONFIG_TIMEOUT;
  if (text === undefined || text === '') return DEFAULT_CONFIG_TIMEOUT_MS;
  try {
    const ms = durationMs((/^\d+$/.test(text) ? Number(text) : text) as Duration, 'TERN_CONFIG_TIMEOUT');
    if (ms > 0) return ms;
  } catch {}
  throw new ConfigError('TERN_CONFIG_TIMEOUT', [
    `${JSON.stringify(text)} is not a duration above 0: use milliseconds or '30s', '2m'`,
  ]);
}

/** Set by bin/tern.js when tern runs from its TypeScript sources (a clone that is not built yet). */
const fromSources = process.env.TERN_FROM_SOURCES === '1';

let loads = 0;

/**
 * Imports a config module as the file is now: a SIGHUP reload must not get the module cached at
 * start-up. Node caches ES modules by URL (a query makes a new one); TypeScript goes through jiti
 * without its caches. Resolves to the module's exports.
 */
async function importFresh(
  path: string,
  source: string,
  sources: Set<string> | undefined,
): Promise<{ default?: unknown }> {
  if (path.endsWith('.json')) return { default: JSON.parse(source) };
  const recording = sources ? { transform: recordingTransform(sources) } : {};
  if (fromSources) {
    // tern itself runs through jiti, which maps @tern/* to sources: the config must too, and must
    // share its module instances (jiti's module cache), so only the config file is evaluated anew.
    const jiti = createJiti(import.meta.url, { fsCache: false, interopDefault: false, ...recording });
    return (await jiti.evalModule(source, { filename: path, async: true, forceTranspile: true })) as {
      default?: unknown;
    };
  }
  if (/\.[cm]?ts$/.test(path)) {
    const jiti = createJiti(import.meta.url, {
      moduleCache: false,
      fsCache: false,
      interopDefault: false,
      ...recording,
    });
    return jiti.import<{ default?: unknown }>(path);
  }
  loads += 1;
  return (await import(`${pathToFileURL(path).href}?load=${loads}`)) as { default?: unknown };
}

/**
 * jiti's own transform, noting each file outside node_modules it compiles: the TypeScript (and
 * ES module) sources a config imports, which `tern start --watch` watches. Node caches the modules
 * a .js or .mjs config imports, so only the config file itself is read anew for those.
 */
function recordingTransform(sources: Set<string>): (options: TransformOptions) => TransformResult {
  const compiler = createJiti(import.meta.url, { fsCache: false });
  return (options) => {
    const file = options.filename;
    if (file !== undefined && !file.split(sep).includes('node_modules')) sources.add(resolve(file));
    return { code: compiler.transform(options) };
  };
}

/**
 * Where a config failed to load, as `file:line:column`: from the error (jiti's parse errors, a
 * stack frame in the config), or by parsing the source when node gave none (its SyntaxErrors).
 */
function loadFailure(file: string, path: string, source: string, error: unknown): ConfigError {
  const message = error instanceof Error ? error.message : String(error);
  // jiti: "ParseError: <reason> \n <path>:<line>:<column0>".
  const parsed = /^\w*Error: ([\s\S]*?)\s*\n\s*(\S+):(\d+):(\d+)\s*$/.exec(message);
  if (parsed && resolve(parsed[2] as string) === path) {
    return new ConfigError(`${file}:${parsed[3]}:${Number(parsed[4]) + 1}`, [], `syntax error: ${parsed[1]}`);
  }
  if (path.endsWith('.json') && error instanceof SyntaxError) {
    const at = /at position (\d+)/.exec(message);
    if (at) {
      const before = source.slice(0, Number(at[1])).split('\n');
      const where = `${file}:${before.length}:${(before.at(-1)?.length ?? 0) + 1}`;
      return new ConfigError(
        where,
        [],
        `syntax error: ${message.replace(/ in JSON at position \d+.*$/, '')}`,
      );
    }
  }
  if (error instanceof SyntaxError && !path.endsWith('.json')) {
    const where = syntaxErrorAt(path, source);
    if (where) return new ConfigError(`${file}:${where}`, [], `syntax error: ${message}`);
  }
  const stack = error instanceof Error ? (error.stack ?? '') : '';
  const frame = new RegExp(`${escapeRegExp(pathToFileURL(path).href)}(?:\\?load=\\d+)?:(\\d+):(\\d+)`).exec(
    stack,
  );
  if (frame) return new ConfigError(`${file}:${frame[1]}:${frame[2]}`, [], message.split('\n')[0] ?? message);
  return new ConfigError(file, [message.split('\n')[0] ?? message], 'cannot load');
}

/** `line:column` of the first syntax error in a JS or TS source, by jiti's parser; undefined when it parses. */
function syntaxErrorAt(path: string, source: string): string | undefined {
  const code = createJiti(import.meta.url, { fsCache: false }).transform({
    source,
    filename: path,
    ts: /\.[cm]?ts$/.test(path),
    async: true,
  });
  const marker = 'exports.__JITI_ERROR__ = ';
  if (!code.startsWith(marker)) return undefined;
  const { line, column } = JSON.parse(code.slice(marker.length)) as { line: number; column: number };
  return `${line}:${column + 1}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface LoadOptions {
  /** Give up after this long (default: configTimeoutMs()): a top-level await that never settles. */
  readonly timeoutMs?: number;
  /**
   * Filled with the local files the config is made of, even when loading fails: the config file
   * and the sources it imports outside node_modules (see recordingTransform). For --watch.
   */
  readonly sources?: Set<string>;
}

/**
 * Loads a config file (.ts, .mts, .js, .mjs or .json) and validates it: the schema, the files it
 * names (keys, certificates, users, token) and the listener hosts. `tern start` and
 * `tern check-config` both go through here. A config that fails validation has the plugins it
 * made shut down, so their connections do not outlive it (a refused reload, a failed check).
 */
export async function loadConfig(file: string, options: LoadOptions = {}): Promise<ResolvedConfig> {
  const path = resolve(file);
  if (!existsSync(path)) throw new ConfigError(file, [`file not found: ${path}`], 'cannot load');
  const timeoutMs = options.timeoutMs ?? configTimeoutMs();
  options.sources?.add(path);
  const source = readFileSync(path, 'utf8');
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new ConfigError(
          file,
          [
            `loading took longer than ${timeoutMs} ms and was given up: a top-level await in the config (or in a module it imports) never settled. Fix it, or allow more time with --config-timeout or TERN_CONFIG_TIMEOUT`,
          ],
          'cannot load',
        ),
      );
    }, timeoutMs);
  });
  let module: { default?: unknown };
  try {
    module = await Promise.race([importFresh(path, source, options.sources), deadline]);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw loadFailure(file, path, source, error);
  } finally {
    clearTimeout(timer);
  }
  const loaded = module?.default;
  if (loaded === undefined) {
    throw new ConfigError(file, [
      'no default export: the config file must export it, as in export default defineConfig({ listeners: [...] })',
    ]);
  }
  try {
    const config = validateConfig(loaded, dirname(path), file);
    await checkHosts(config, file);
    return config;
  } catch (error) {
    await shutdownPlugins(pluginInstances(loaded), {});
    throw error;
  }
}

/**
 * Loads a config for a command that only reads it (dkim check, dns, queue export, the queue
 * operations' --config): runs `use`, then shuts down the plugins the file made, which may hold
 * connections (a rate limiter's Redis client) that would keep the command from exiting.
 */
export async function withConfig<T>(
  file: string,
  use: (config: ResolvedConfig) => Promise<T>,
  options: LoadOptions = {},
): Promise<T> {
  const config = await loadConfig(file, options);
  try {
    return await use(config);
  } finally {
    await shutdownPlugins(pluginInstances(config), {});
  }
}

/** Our host name: the config's, or the machine's. */
export function serverHostname(config: ResolvedConfig): string {
  return config.hostname ?? osHostname();
}
