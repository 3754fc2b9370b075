#!/usr/bin/env node
// The `tern` command: start the MTA, check a config, manage users, DKIM keys and the queue.
import { parseArgs } from 'node:util';
import { ConfigError } from './config.js';
import { QUEUE_OPERATIONS_USAGE } from './ops/queue-cli.js';

interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly run: (argv: string[]) => Promise<number>;
}

const commands: Record<string, Command> = {
  start: {
    summary: 'start the MTA from a config file',
    usage:
      'tern start --config FILE [--no-worker]\n\n  Starts every listener and the delivery worker. SIGTERM or SIGINT stops accepting,\n  lets open transactions finish, then exits. --no-worker runs intake only: mail is\n  queued durably and another node (or a later start) delivers it.',
    run: async (argv) => {
      const { values } = parseArgs({
        args: argv,
        options: { config: { type: 'string', short: 'c' }, 'no-worker': { type: 'boolean' } },
      });
      if (!values.config) throw new UsageError('start needs --config FILE');
      const { runStart } = await import('./commands/start.js');
      return runStart(values.config, { worker: values['no-worker'] !== true });
    },
  },
  'check-config': {
    summary: 'validate a config file and exit (0 when valid)',
    usage:
      'tern check-config FILE\n\n  Loads and validates FILE; prints each problem with its field and the fix.',
    run: async (argv) => {
      const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
      const file = positionals[0];
      if (!file) throw new UsageError('check-config needs a FILE');
      const { loadConfig } = await import('./config.js');
      const config = await loadConfig(file);
      process.stdout.write(
        `${file}: valid (${config.listeners.length} listener(s), ${config.plugins.length} plugin(s))\n`,
      );
      return 0;
    },
  },
  user: {
    summary: 'manage users of the built-in users file (tern user add)',
    usage:
      'tern user add --file USERS_FILE USER [--password-stdin]\n\n  Adds USER (or changes its password) with a salted scrypt hash. The password is read from\n  standard input (one line) so it never shows in the process list or shell history.',
    run: async (argv) => {
      const { positionals, values } = parseArgs({
        args: argv,
        allowPositionals: true,
        options: { file: { type: 'string', short: 'f' }, 'password-stdin': { type: 'boolean' } },
      });
      const [action, user] = positionals;
      if (action !== 'add' || !user) throw new UsageError('usage: tern user add --file USERS_FILE USER');
      if (!values.file)
        throw new UsageError('user add needs --file USERS_FILE (the file config.users.file names)');
      const { runUserAdd } = await import('./commands/user.js');
      return runUserAdd(values.file, user);
    },
  },
  dkim: {
    summary: 'generate DKIM keys and check their DNS records',
    usage:
      'tern dkim keygen --domain D --selector S [--type rsa|ed25519] [--bits N] [--out FILE]\n' +
      'tern dkim check --domain D --selector S (--config FILE | --key FILE) [--dns IP:PORT]\n\n' +
      '  keygen writes the private key (mode 0600) and prints the DNS TXT record to publish.\n' +
      '  check looks the record up and says whether it matches the key the config signs with\n' +
      '  (its dkim() plugin; DNS servers from delivery.dns unless --dns), or the key in FILE.',
    run: async (argv) => {
      const { runDkim } = await import('./commands/dkim.js');
      return runDkim(argv);
    },
  },
  queue: {
    summary: 'inspect and manage the queue (summary, list, inspect, hold, retry, bounce, ...), export/import',
    // The operator commands' usage lives with them in ops/queue-cli.ts.
    usage: `${QUEUE_OPERATIONS_USAGE}\n\ntern queue export --config FILE --out FILE.jsonl\ntern queue import --config FILE --in FILE.jsonl\n\n  Export writes every message with its pending recipients; import enqueues them into the\n  backend the config names. Stop tern (or drain it) before exporting an embedded store.`,
    run: async (argv) => {
      const { runQueue } = await import('./commands/queue.js');
      return runQueue(argv);
    },
  },
};

export class UsageError extends Error {}

function help(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'tern: a pluggable mail transfer agent',
    '',
    'usage: tern <command> [options]   (tern <command> --help for details)',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`tern: unknown command ${name}\n\n${help()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      return 78; // EX_CONFIG
    }
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`tern ${name}: ${(error as Error).message}\n\n${command.usage}\n`);
      return 2;
    }
    if ((error as { code?: string }).code === 'TERN_ERR_PLUGIN_OPTION') {
      process.stderr.write(`tern ${name}: ${(error as Error).message}\n`);
      return 78;
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
    process.stderr.write(`tern ${name}: ${text}${hint}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== -1) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`tern: ${String(error)}\n`);
    process.exitCode = 1;
  },
);
