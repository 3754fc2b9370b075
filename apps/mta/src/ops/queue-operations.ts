// The vocabulary of the `tern queue` operations: their names, operands and flags. Apart from
// queue-cli.ts, which runs them, so the CLI can declare them without loading the queue package.

export const QUEUE_OPERATIONS = [
  'summary',
  'list',
  'inspect',
  'retry',
  'hold',
  'release',
  'delete',
  'bounce',
  'reroute',
  'suspend',
  'resume',
  'shaping',
] as const;

export type QueueOperationName = (typeof QUEUE_OPERATIONS)[number];

/** What each operation does and takes, for `tern queue --help` and each operation's own help. */
export const QUEUE_OPERATION_SPECS: Readonly<
  Record<
    QueueOperationName,
    { readonly args: string; readonly summary: string; readonly flags: readonly QueueFlag[] }
  >
> = {
  summary: { args: '', summary: 'counts by destination and state', flags: [] },
  list: {
    args: '',
    summary: 'unfinished jobs, oldest first (FILTER, --limit N or --all)',
    flags: ['state', 'domain', 'sender', 'recipient', 'limit', 'all'],
  },
  inspect: { args: '<id>', summary: 'one message: envelope, headers, jobs, timeline', flags: [] },
  retry: {
    args: '[ids...]',
    summary: 'deliver now: messages by queue id or Message-ID, or every one a FILTER lists',
    flags: ['state', 'domain', 'sender', 'recipient', 'all'],
  },
  hold: {
    args: '[ids...]',
    summary: 'keep messages from delivery until released (ids or FILTER)',
    flags: ['state', 'domain', 'sender', 'recipient', 'all'],
  },
  release: {
    args: '[ids...]',
    summary: 'let held messages be delivered again (ids or FILTER)',
    flags: ['state', 'domain', 'sender', 'recipient', 'all'],
  },
  delete: {
    args: '[ids...]',
    summary: 'remove messages without a bounce (ids or FILTER)',
    flags: ['state', 'domain', 'sender', 'recipient', 'all'],
  },
  bounce: {
    args: '[ids...]',
    summary: 'bounce messages to their senders now and remove them (ids or FILTER)',
    flags: ['state', 'domain', 'sender', 'recipient', 'all', 'reason'],
  },
  reroute: {
    args: '[ids...]',
    summary: 'deliver messages (ids or FILTER), or a whole --destination, through --to HOP',
    flags: ['state', 'domain', 'sender', 'recipient', 'all', 'to', 'destination'],
  },
  suspend: {
    args: '<domain>',
    summary: 'hold deliveries to DOMAIN --for 2h or --until DATE',
    flags: ['for', 'until'],
  },
  resume: { args: '<domain>', summary: 'resume deliveries to DOMAIN', flags: [] },
  shaping: {
    args: '',
    summary: 'traffic shaping in force: back-off actions by source and destination',
    flags: [],
  },
};

/** Flags every operation takes: where the admin API is, and how to print. */
export const QUEUE_API_FLAGS = ['admin', 'token', 'token-file', 'config', 'json'] as const;

/** Every flag of the operations: its commander spelling and one line of help. */
export const QUEUE_FLAGS = {
  admin: {
    flags: '--admin <url>',
    help: 'the admin API (default TERN_ADMIN_URL, else http://127.0.0.1:8025)',
  },
  token: { flags: '--token <token>', help: 'the admin API token (default TERN_ADMIN_TOKEN)' },
  'token-file': { flags: '--token-file <file>', help: 'read the admin API token from a file' },
  config: { flags: '-c, --config <file>', help: "take the admin API's address and token from this config" },
  json: { flags: '--json', help: "print the API's JSON instead of text" },
  state: { flags: '--state <state>', help: 'FILTER: scheduled, deferred, active or held' },
  domain: {
    flags: '--domain <domain>',
    help: 'FILTER: recipient domain (reroute with ids: the one job to reroute)',
  },
  sender: { flags: '--sender <text>', help: 'FILTER: part of the envelope sender' },
  recipient: { flags: '--recipient <text>', help: 'FILTER: part of a recipient address' },
  limit: { flags: '--limit <n>', help: 'list at most N jobs (default 100)' },
  all: { flags: '--all', help: 'every job (bulk actions without a filter need it)' },
  reason: { flags: '--reason <text>', help: 'the reason the bounce gives the sender' },
  to: {
    flags: '--to <hop>',
    help: 'the next hop: smtp:HOST[:PORT], mx:DOMAIN, lmtp:HOST[:PORT], lmtp:/PATH, maildir:/PATH, none (clear) or JSON',
  },
  destination: { flags: '--destination <domain>', help: 'reroute every job of this domain, now and later' },
  for: { flags: '--for <duration>', help: 'how long to suspend, e.g. 2h' },
  until: { flags: '--until <date>', help: 'suspend until this time, e.g. 2030-01-01T00:00:00Z' },
} as const;

export type QueueFlag = keyof typeof QUEUE_FLAGS;

type CamelCase<S extends string> = S extends `${infer Head}-${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** The parsed flags of an operation, as commander names them: camel case, a string when it takes a value. */
export type QueueOperationValues = {
  readonly [K in QueueFlag as CamelCase<K>]?: (typeof QUEUE_FLAGS)[K]['flags'] extends `${string}<${string}`
    ? string
    : boolean;
};

/** The `tern suppression` commands (run by suppression-cli.ts). */
export const SUPPRESSION_COMMANDS = ['list', 'search', 'add', 'remove', 'import', 'export'] as const;
export type SuppressionCommand = (typeof SUPPRESSION_COMMANDS)[number];

/** The `tern webhook` commands (run by webhook-cli.ts). */
export const WEBHOOK_COMMANDS = ['list', 'test'] as const;
export type WebhookCommand = (typeof WEBHOOK_COMMANDS)[number];
