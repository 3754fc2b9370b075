#!/usr/bin/env node
// The `tern` command: start the MTA, check a config, print and check its DNS records, manage
// users, DKIM keys and the queue. Parsing, help and did-you-mean are commander's; each command's
// work lives in commands/ and is loaded only when that command runs.
import { readFileSync } from 'node:fs';
import { parseDuration } from '@tern/plugin-api';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  QUEUE_API_FLAGS,
  QUEUE_FLAGS,
  QUEUE_OPERATION_SPECS,
  QUEUE_OPERATIONS,
  type QueueOperationValues,
  SUPPRESSION_COMMANDS,
  type SuppressionCommand,
  WEBHOOK_COMMANDS,
  type WebhookCommand,
} from './ops/queue-operations.js';

/** What `start` returns: the listeners keep the process alive until a signal stops it. */
const KEEP_RUNNING = -1;
/** EX_USAGE-like: how the command was called is wrong. */
const EXIT_USAGE = 2;
/** EX_CONFIG (sysexits.h): the config cannot run. */
const EXIT_CONFIG = 78;
/**
 * After a command's verdict, how long to wait for the event loop to drain before exiting anyway.
 * Above the short timers clients end by themselves after closing (ioredis keeps its 2 s connect
 * timeout running when a connection is closed before it was made), so only a real leak hits it.
 */
const LINGER_MS = 5000;

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function integer(text: string): number {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError('expected a whole number');
  return Number(text);
}

/** `--processes`: as config.processes takes it (config.ts MAX_PROCESSES; not imported, so `tern --help` stays light). */
function processesArgument(text: string): number | 'auto' | { intake: number; delivery: number } {
  if (text === 'auto') return text;
  const roles = /^intake:(\d+),delivery:(\d+)$/.exec(text);
  if (roles) {
    const [intake, delivery] = [Number(roles[1]), Number(roles[2])];
    if (intake >= 1 && delivery >= 1 && intake + delivery <= 64) return { intake, delivery };
  }
  const n = /^\d+$/.test(text) ? Number(text) : 0;
  if (n < 1 || n > 64) {
    throw new InvalidArgumentError(
      "expected a whole number from 1 to 64, or 'auto', or intake:N,delivery:M (each at least 1, together at most 64)",
    );
  }
  return n;
}

function duration(text: string): string {
  if (parseDuration(text, { positive: true, digitsAreMs: true }) === undefined) {
    throw new InvalidArgumentError("expected a duration above 0: milliseconds, or '30s', '2m'");
  }
  return text;
}

/** For options given more than once (`--dns A --dns B`). */
function repeated(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

const dnsOption = (): Option =>
  new Option(
    '--dns <server>',
    "name server to ask, IP[:PORT] (repeatable; default: the config's delivery.dns, else the system's)",
  ).argParser(repeated);

/**
 * Options a command cannot run without. Checked after commander has looked for unknown options
 * (its own requiredOption is checked before, so `--conifg` would get "missing --config" instead
 * of "did you mean --config?").
 */
const mandatory = new WeakSet<Option>();

function required(flags: string, description: string): Option {
  const option = new Option(flags, `${description} (required)`);
  mandatory.add(option);
  return option;
}

function checkMandatory(command: Command): void {
  for (const option of command.options) {
    if (mandatory.has(option) && command.getOptionValue(option.attributeName()) === undefined) {
      command.error(`error: required option '${option.flags}' not specified`, {
        code: 'commander.missingMandatoryOptionValue',
      });
    }
  }
}

/** A command that only groups subcommands: called alone, it says which ones there are. */
function group(parent: Command, name: string, summary: string): Command {
  return parent
    .command(name)
    .summary(summary)
    .description(summary)
    .addHelpText('before', ({ error, command }) =>
      error
        ? `error: ${commandPath(command)} needs a subcommand: ${command.commands.map((c) => c.name()).join(', ')}\n`
        : '',
    );
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Builds the `tern` program; each action stores its exit code through `done`. */
function program(done: (code: number) => void): Command {
  const tern = new Command('tern')
    .description('tern: a pluggable mail transfer agent')
    .version(version, '-V, --version', 'print the version')
    .addOption(
      new Option(
        '--config-timeout <duration>',
        "how long loading a config may take before it is given up: ms or '30s', '2m' (default 30s)",
      )
        .env('TERN_CONFIG_TIMEOUT')
        .argParser(duration),
    )
    .showSuggestionAfterError()
    .showHelpAfterError('(add --help for usage)')
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .addHelpText('before', ({ error }) => (error ? 'error: tern needs a command\n' : ''))
    .hook('preAction', (root, action) => {
      checkMandatory(action);
      // One deadline for every load in this process: commands, SIGHUP and API reloads (loadConfig).
      const timeout = root.opts<{ configTimeout?: string }>().configTimeout;
      if (timeout !== undefined) process.env.TERN_CONFIG_TIMEOUT = timeout;
    });
  const act =
    <A extends unknown[]>(run: (...args: A) => Promise<number>) =>
    async (...args: A): Promise<void> => {
      done(await run(...args));
    };

  tern
    .command('start')
    .summary('start the MTA from a config file')
    .description(
      'Starts every listener and the delivery worker. SIGTERM or SIGINT stops accepting, lets open ' +
        'transactions finish, then exits. SIGHUP reads the config again and applies what can change live. ' +
        'SIGUSR2 drains (rolling restarts): stop accepting, finish active deliveries, leave queued mail to the other nodes, exit 0.',
    )
    .addOption(required('-c, --config <file>', 'the config file (.ts, .mts, .js, .mjs or .json)'))
    .option('--no-worker', 'intake only: queue mail durably; another node (or a later start) delivers it')
    .option(
      '--watch',
      'reload (as SIGHUP does) when the config file or a local file it imports changes: for development',
    )
    .addOption(
      new Option(
        '--processes <n>',
        "worker processes sharing the listeners and the Redis queue, or 'auto' (one per core), or intake:N,delivery:M (listener processes and delivery processes); in place of config.processes",
      )
        .env('TERN_PROCESSES')
        .argParser(processesArgument),
    )
    .action(
      act(
        async (options: {
          config: string;
          worker: boolean;
          watch?: boolean;
          processes?: number | 'auto' | { intake: number; delivery: number };
        }) => {
          const { runStart } = await import('./commands/start.js');
          return runStart(options.config, {
            worker: options.worker,
            watch: options.watch === true,
            ...(options.processes !== undefined ? { processes: options.processes } : {}),
          });
        },
      ),
    );

  tern
    .command('check-config')
    .summary('run every check tern start runs, without binding ports (exit 0 when valid)')
    .description(
      'Loads and validates FILE as tern start does: the schema, the files it names (keys, certificates, ' +
        'users, admin token), listener and delivery options, and each plugin starting. Prints each ' +
        'problem with its field and the fix, and exits 78 when there is one.',
    )
    .argument('<file>', 'the config file')
    .action(
      act(async (file: string) => {
        const { runCheckConfig } = await import('./commands/check.js');
        return runCheckConfig(file);
      }),
    );

  tern
    .command('dns')
    .summary('print the DNS records to publish for a domain and check what DNS has now')
    .description(
      'Prints the records a domain needs for the mail this config sends and receives (MX from the mx ' +
        'listeners receiving for it, SPF, DKIM for each selector the dkim() plugin signs it with, DMARC), ' +
        'then looks each one up and says pass or fail. Exits 0 when every record passes, 1 otherwise.',
    )
    .argument('<domain>', 'the domain, e.g. example.com')
    .addOption(required('-c, --config <file>', 'the config file'))
    .addOption(dnsOption())
    .action(
      act(async (domain: string, options: { config: string; dns?: string[] }) => {
        const { runDns } = await import('./commands/dns.js');
        return runDns({ domain, config: options.config, dns: options.dns });
      }),
    );

  const tlsReport = group(tern, 'tls-report', 'inspect the TLS-RPT (RFC 8460) reports tern sends');
  tlsReport
    .command('show')
    .summary('print the TLS report of a domain as the daily run would send it')
    .description(
      'Builds the report for DOMAIN from the outcomes counted in the queue (the JSON on stdout) and says ' +
        "where it would go (the domain's _smtp._tls rua) on stderr. With the embedded queue, run it while " +
        'tern is stopped; with Redis, at any time.',
    )
    .argument('<domain>', 'the policy domain, e.g. example.com')
    .addOption(required('-c, --config <file>', 'the config file'))
    .option(
      '--date <day>',
      'YYYY-MM-DD (UTC), today or yesterday (default: yesterday, the day the next run sends)',
    )
    .action(
      act(async (domain: string, options: { config: string; date?: string }) => {
        const { runTlsReportShow } = await import('./commands/tls-report.js');
        return runTlsReportShow({ domain, config: options.config, date: options.date });
      }),
    );

  const user = group(tern, 'user', 'manage users of the built-in users file');
  user
    .command('add')
    .summary('add a user, or change its password')
    .description(
      'Adds USER to the users file (or changes its password) with a salted scrypt hash. The password ' +
        'is read from standard input (one line), so it never shows in the process list or shell history.',
    )
    .argument('<user>', 'the user name')
    .addOption(required('-f, --file <users-file>', 'the users file (the one config.users.file names)'))
    .option('--password-stdin', 'read the password from standard input (always the case; for scripts)')
    .action(
      act(async (name: string, options: { file: string }) => {
        const { runUserAdd } = await import('./commands/user.js');
        return runUserAdd(options.file, name);
      }),
    );

  const apikey = group(tern, 'apikey', 'manage the API keys of HTTP injection');
  apikey
    .command('add')
    .summary('make a key for sender domains (or replace the one with this id); prints its token once')
    .argument('<id>', 'the key id: letters, digits and dashes')
    .addOption(required('-f, --file <keys-file>', 'the API keys file'))
    .addOption(required('--domains <list>', 'sender domains the key may use, comma-separated, or *'))
    .action(
      act(async (id: string, options: { file: string; domains: string }) => {
        const { runApiKeyAdd } = await import('./commands/apikey.js');
        return runApiKeyAdd(options.file, id, options.domains);
      }),
    );
  apikey
    .command('list')
    .summary('the keys and their sender domains (never their secrets)')
    .addOption(required('-f, --file <keys-file>', 'the API keys file'))
    .action(
      act(async (options: { file: string }) => {
        const { runApiKeyList } = await import('./commands/apikey.js');
        return runApiKeyList(options.file);
      }),
    );
  apikey
    .command('remove')
    .summary('remove a key: applications holding its token are refused at once')
    .argument('<id>', 'the key id')
    .addOption(required('-f, --file <keys-file>', 'the API keys file'))
    .action(
      act(async (id: string, options: { file: string }) => {
        const { runApiKeyRemove } = await import('./commands/apikey.js');
        return runApiKeyRemove(options.file, id);
      }),
    );

  const dkim = group(tern, 'dkim', 'generate DKIM keys and check their DNS records');
  dkim
    .command('keygen')
    .summary('write a new signing key and print its DNS record')
    .description(
      'Writes the private key (mode 0600) and prints the TXT record to publish, in zone-file form.',
    )
    .addOption(required('--domain <domain>', 'the signing domain (d=)'))
    .addOption(required('--selector <selector>', 'the selector (s=)'))
    .addOption(new Option('--type <type>', 'the key type').choices(['rsa', 'ed25519']).default('rsa'))
    .option('--bits <n>', 'RSA key size (default 2048)', integer)
    .option(
      '--out <path>',
      'the key file to write, or a folder for SELECTOR.DOMAIN.TYPE.pem (made when missing; default: that name here)',
    )
    .option('--overwrite', 'replace the key file if it exists')
    .action(
      act(
        async (options: {
          domain: string;
          selector: string;
          type: 'rsa' | 'ed25519';
          bits?: number;
          out?: string;
          overwrite?: boolean;
        }) => {
          const { runDkimKeygen } = await import('./commands/dkim.js');
          return runDkimKeygen(options);
        },
      ),
    );
  dkim
    .command('check')
    .summary('check that DNS publishes the key tern signs with')
    .description(
      "Looks up SELECTOR._domainkey.DOMAIN and says whether it publishes the key the config's dkim() " +
        'plugin signs with (or the key in --key FILE).',
    )
    .addOption(required('--domain <domain>', 'the signing domain (d=)'))
    .addOption(required('--selector <selector>', 'the selector (s=)'))
    .option('-c, --config <file>', 'check the key this config signs with')
    .option('--key <file>', 'check the key in this PEM file')
    .addOption(dnsOption())
    .action(
      act(
        async (options: {
          domain: string;
          selector: string;
          config?: string;
          key?: string;
          dns?: string[];
        }) => {
          const { runDkimCheck } = await import('./commands/dkim.js');
          return runDkimCheck(options);
        },
      ),
    );

  const queue = group(tern, 'queue', 'inspect and manage the queue; move it between backends');
  queue.addHelpText(
    'after',
    '\nThe operations talk to the admin API of a running tern: --admin URL with --token T or\n' +
      '--token-file F, or --config FILE for its admin section (else TERN_ADMIN_URL, TERN_ADMIN_TOKEN).\n' +
      'Bulk actions take a FILTER (--state, --domain, --sender, --recipient) or --all, and report\n' +
      'their progress on stderr.',
  );
  for (const name of QUEUE_OPERATIONS) {
    const spec = QUEUE_OPERATION_SPECS[name];
    const operation = queue.command(name).summary(spec.summary).description(spec.summary);
    if (spec.args) operation.argument(spec.args);
    for (const flag of [...spec.flags, ...QUEUE_API_FLAGS]) {
      operation.option(QUEUE_FLAGS[flag].flags, QUEUE_FLAGS[flag].help);
    }
    operation.action(
      act(async () => {
        const operands = operation.processedArgs.flat().filter((a): a is string => typeof a === 'string');
        const { runQueueOperation } = await import('./ops/queue-cli.js');
        return runQueueOperation(name, operation.opts<QueueOperationValues>(), operands);
      }),
    );
  }
  queue
    .command('export')
    .summary("write the embedded store's unfinished mail to a JSONL file (stop tern first)")
    .addOption(required('-c, --config <file>', 'the config whose embedded store to read'))
    .addOption(required('--out <file>', 'the JSONL file to write'))
    .action(
      act(async (options: { config: string; out: string }) => {
        const { runQueueExport } = await import('./commands/queue.js');
        return runQueueExport(options.config, options.out);
      }),
    );
  queue
    .command('import')
    .summary('enqueue the mail of an export into the backend the config names')
    .addOption(required('-c, --config <file>', 'the config whose queue to fill'))
    .addOption(required('--in <file>', 'the JSONL file tern queue export wrote'))
    .action(
      act(async (options: { config: string; in: string }) => {
        const { runQueueImport } = await import('./commands/queue.js');
        return runQueueImport(options.config, options.in);
      }),
    );
  const suppression = group(
    tern,
    'suppression',
    'recipients senders must not mail again: list, search, add, remove, import, export',
  );
  suppression.addHelpText(
    'after',
    '\nThe commands talk to the admin API of a running tern (as tern queue does): --admin URL with\n' +
      '--token T or --token-file F, or --config FILE. --scope is a sender domain, tag:NAME (mail\n' +
      'carrying tag NAME, when suppression.tagScopes lists it), or * (the default) for every sender.\n' +
      'Files are CSV with the header scope,address,source,reason,category,created_at,expires_at\n' +
      '(what export writes), JSON lines, or one address per line.',
  );
  const suppressionSpecs: Record<
    SuppressionCommand,
    { args: string; summary: string; flags: readonly (readonly [string, string])[] }
  > = {
    list: { args: '', summary: 'suppressed recipients, newest first', flags: [LIMIT, ALL] },
    search: {
      args: '<text>',
      summary: 'suppressed recipients whose address contains TEXT',
      flags: [LIMIT, ALL],
    },
    add: {
      args: '<addresses...>',
      summary: 'suppress recipients for --scope (default every sender)',
      flags: [
        ['--reason <text>', 'why, for the record'],
        ['--expires-in <duration>', 'stop suppressing after this long, e.g. 30d'],
        ['--until <date>', 'stop suppressing at this time, e.g. 2030-01-01T00:00:00Z'],
      ],
    },
    remove: { args: '<addresses...>', summary: 'stop suppressing recipients for --scope', flags: [] },
    import: {
      args: '<file>',
      summary: 'add the entries of a file (- for stdin); --scope for rows without one',
      flags: [],
    },
    export: {
      args: '',
      summary: 'write every entry as CSV (or --format jsonl) to stdout or --out FILE',
      flags: [
        ['--out <file>', 'write to this file instead of stdout'],
        ['--format <format>', 'csv (default) or jsonl'],
      ],
    },
  };
  for (const name of SUPPRESSION_COMMANDS) {
    const spec = suppressionSpecs[name];
    const command = suppression.command(name).summary(spec.summary).description(spec.summary);
    if (spec.args) command.argument(spec.args);
    command.option(
      '--scope <scope>',
      'the sender domain, tag:NAME for mail with that tag, or * for every sender',
    );
    for (const [flags, help] of spec.flags) command.option(flags, help);
    for (const flag of QUEUE_API_FLAGS) command.option(QUEUE_FLAGS[flag].flags, QUEUE_FLAGS[flag].help);
    command.action(
      act(async () => {
        const operands = command.processedArgs.flat().filter((a): a is string => typeof a === 'string');
        const { runSuppressionCommand } = await import('./ops/suppression-cli.js');
        return runSuppressionCommand(name, command.opts(), operands);
      }),
    );
  }
  const webhook = group(tern, 'webhook', 'delivery webhook endpoints: their state, and a signed test event');
  webhook.addHelpText(
    'after',
    '\nThe commands talk to the admin API of a running tern (as tern queue does): --admin URL with\n' +
      '--token T or --token-file F, or --config FILE.',
  );
  const webhookSpecs: Record<WebhookCommand, { args: string; summary: string }> = {
    list: { args: '', summary: 'each endpoint: pending events, last success and failure, last error' },
    test: { args: '<name>', summary: 'post a signed test event to endpoint NAME now and say how it went' },
  };
  for (const name of WEBHOOK_COMMANDS) {
    const spec = webhookSpecs[name];
    const command = webhook.command(name).summary(spec.summary).description(spec.summary);
    if (spec.args) command.argument(spec.args);
    for (const flag of QUEUE_API_FLAGS) command.option(QUEUE_FLAGS[flag].flags, QUEUE_FLAGS[flag].help);
    command.action(
      act(async () => {
        const operands = command.processedArgs.flat().filter((a): a is string => typeof a === 'string');
        const { runWebhookCommand } = await import('./ops/webhook-cli.js');
        return runWebhookCommand(name, command.opts(), operands);
      }),
    );
  }
  return tern;
}

const LIMIT = ['--limit <n>', 'show at most N entries (default 100)'] as const;
const ALL = ['--all', 'show every entry'] as const;

/** The exit code for a failure, after saying what went wrong and how to fix it. */
function report(error: unknown, command: string): number {
  const code = (error as { code?: unknown }).code;
  const name = (error as { name?: unknown }).name;
  if (error instanceof CommanderError) {
    // commander has already printed the message (and the help, when one was asked for).
    return error.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  if (name === 'ConfigError') {
    process.stderr.write(`${(error as Error).message}\n`);
    return EXIT_CONFIG;
  }
  if (
    code === 'TERN_ERR_PLUGIN_OPTION' ||
    code === 'TERN_ERR_PLUGIN_INIT' ||
    code === 'TERN_ERR_PLUGIN_REGISTRATION'
  ) {
    process.stderr.write(`${command}: ${(error as Error).message}\n`);
    return EXIT_CONFIG;
  }
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`${command}: ${(error as Error).message}\n(${command} --help shows the usage)\n`);
    return EXIT_USAGE;
  }
  // An operator needs the cause, not our stack (TERN_DEBUG=1 shows it).
  const text = process.env.TERN_DEBUG
    ? ((error as Error).stack ?? String(error))
    : String((error as Error).message ?? error);
  const hint = /EADDRINUSE/.test(text)
    ? ' (another process listens there: stop it or give this listener another port)'
    : /EACCES/.test(text)
      ? ' (ports below 1024 need root or CAP_NET_BIND_SERVICE)'
      : '';
  process.stderr.write(`${command}: ${text}${hint}\n`);
  return 1;
}

async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  let running = 'tern';
  const tern = program((code) => {
    exitCode = code;
  });
  tern.hook('preAction', (_root, action) => {
    running = commandPath(action);
  });
  try {
    await tern.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    return report(error, running);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code === KEEP_RUNNING) return;
    process.exitCode = code;
    // Every command closes what it opened, so the process ends by itself here. Something a config
    // made may still hold the event loop (a plugin that opens a connection and has no shutdown
    // hook): the verdict is printed and the work done, so exit anyway rather than hang.
    setTimeout(() => {
      process.stderr.write(
        'tern: exiting although something the config started is still open (a connection or a timer that nothing closes)\n',
      );
      process.exit(code);
    }, LINGER_MS).unref();
  },
  (error: unknown) => {
    process.stderr.write(`tern: ${String(error)}\n`);
    process.exitCode = 1;
  },
);
