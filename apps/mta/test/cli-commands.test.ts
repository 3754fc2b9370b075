// The tern command line as a user meets it: --version, --help on every command, did-you-mean for
// mistyped commands and flags, and errors that ask for what is missing. A real process each time.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { run } from '@tern/testkit';
import { describe, expect, test } from 'vitest';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const tern = (args: string[]) => run(process.execPath, [cli, ...args]);
const { version } = JSON.parse(readFileSync(resolve(import.meta.dirname, '../package.json'), 'utf8'));

describe('tern command line', () => {
  test('--version prints the package version', async () => {
    const result = await tern(['--version']);
    expect(result.stdout.trim()).toBe(version);
    expect(result.status).toBe(0);
  });

  test.each([
    'start',
    'check-config',
    'dns',
    'user',
    'user add',
    'dkim',
    'dkim keygen',
    'dkim check',
    'queue',
    'queue list',
    'queue reroute',
    'queue export',
    'queue import',
    'webhook',
    'webhook list',
    'webhook test',
  ])('tern %s --help', async (command) => {
    const result = await tern([...command.split(' '), '--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(`Usage: tern ${command}`);
  });

  test('every option that worked before is still declared', async () => {
    const help = async (...words: string[]) => (await tern([...words, '--help'])).stdout;
    expect(await help('start')).toMatch(/-c, --config <file>[\s\S]*--no-worker/);
    expect(await help('user', 'add')).toMatch(/-f, --file <users-file>[\s\S]*--password-stdin/);
    expect(await help('dkim', 'keygen')).toMatch(
      /--domain[\s\S]*--selector[\s\S]*--type[\s\S]*--bits[\s\S]*--out/,
    );
    expect(await help('dkim', 'check')).toMatch(/--config[\s\S]*--key[\s\S]*--dns/);
    expect(await help('queue', 'reroute')).toMatch(
      /--to <hop>[\s\S]*--destination[\s\S]*--admin[\s\S]*--token/,
    );
    expect(await help('queue', 'suspend')).toMatch(/--for[\s\S]*--until/);
  });

  test.each([
    [['staart'], "unknown command 'staart'", 'Did you mean start?'],
    [['queue', 'lst'], "unknown command 'lst'", 'Did you mean list?'],
    [['start', '--conifg', 'x.js'], "unknown option '--conifg'", 'Did you mean --config?'],
    [['queue', 'list', '--stat', 'held'], "unknown option '--stat'", 'Did you mean --state?'],
    [['dkim', 'keygen', '--domian', 'a.test', '--selector', 's'], "unknown option '--domian'", '--domain'],
  ])('%j: names the mistake and suggests what was meant', async (args, error, suggestion) => {
    const result = await tern(args);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(error);
    expect(result.stderr).toContain(suggestion);
  });

  test.each([
    [[], 'tern needs a command'],
    [['queue'], 'tern queue needs a subcommand: summary, list, inspect'],
    [['dkim'], 'tern dkim needs a subcommand: keygen, check'],
    [['user'], 'tern user needs a subcommand: add'],
    [['start'], "required option '-c, --config <file>' not specified"],
    [['check-config'], "missing required argument 'file'"],
    [['dns', 'example.com'], "required option '-c, --config <file>' not specified"],
    [['dkim', 'keygen', '--selector', 's'], "required option '--domain <domain>' not specified"],
    [
      ['dkim', 'keygen', '--domain', 'a.test', '--selector', 's', '--type', 'dsa'],
      'Allowed choices are rsa, ed25519',
    ],
    [['queue', 'export', '--config', 'x.js'], "required option '--out <file>' not specified"],
    [['queue', 'inspect'], "missing required argument 'id'"],
    [['--config-timeout', 'soon', 'check-config', 'x.js'], 'expected a duration above 0'],
  ])('%j: says what is missing and exits 2', async (args, message) => {
    const result = await tern(args);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(message);
  });
});
