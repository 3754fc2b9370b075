// `tern check-config` runs every check `tern start` runs, so a config it passes does not fail at
// start; each problem names its field and the fix. Real tern processes on real config files.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeCertificate, type RunResult, run, startRedis, type TestRedis } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
// Inside the repository, so config files resolve @tern/* from its node_modules as a user's would.
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs tern; the deadline only ends a process that hangs, which is itself a failure. */
const tern = (args: string[], env: Record<string, string> = {}): Promise<RunResult> =>
  run(process.execPath, [cli, ...args], { timeoutMs: 20_000, env });

let written = 0;
/** Writes a config file (`.js` unless `name` says otherwise) and returns its path. */
function config(text: string, name = `c${++written}.config.js`): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** A JS config: a valid MX listener that binds nothing until start, plus `extra` properties. */
const mx = (extra = '', listener = ''): string =>
  `export default { listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0${listener} }], localDomains: ['a.test'], queue: { backend: 'embedded', path: 'queue.db' }${extra} };\n`;

const pair = makeCertificate(['mx.a.test']);
const other = makeCertificate(['other.a.test']);
writeFileSync(join(dir, 'key.pem'), pair.key);
writeFileSync(join(dir, 'cert.pem'), pair.cert);
writeFileSync(join(dir, 'other-key.pem'), other.key);
writeFileSync(join(dir, 'garbage.pem'), 'not a key\n');
writeFileSync(join(dir, 'keys.txt'), '# no keys yet\n');

describe('check-config finds what start would fail on, and start says the same before binding', () => {
  test.each([
    [
      'trusted network prefix /33',
      mx(", trustedNetworks: ['10.0.0.0/33']"),
      'config.trustedNetworks[0]: prefix length must be 0 to 32',
    ],
    [
      'trusted network 999.1.1.1',
      mx(", trustedNetworks: ['999.1.1.1']"),
      'config.trustedNetworks[0]: not a CIDR block: "999.1.1.1"',
    ],
    [
      'listener trusted network ::1/129',
      mx('', ", trustedNetworks: ['::1/129']"),
      'config.listeners[0].trustedNetworks[0]: prefix length',
    ],
    [
      'listener host 127.0.0.999',
      mx().replace("host: '127.0.0.1'", "host: '127.0.0.999'"),
      'config.listeners[0].host: "127.0.0.999" is not an IP address',
    ],
    [
      'DNS server not-an-ip',
      mx(", delivery: { dns: { servers: ['not-an-ip'] } }"),
      'config.delivery.dns.servers[0]: "not-an-ip" is not a name server address',
    ],
    [
      'missing admin.tokenFile',
      mx(", admin: { tokenFile: 'missing.token' }"),
      'config.admin.tokenFile: file not found: missing.token',
    ],
    [
      'missing API keys file',
      mx(", http: { apiKeysFile: 'api-keys' }"),
      'config.http.apiKeysFile: file not found: api-keys: make the first key with tern apikey add --file api-keys ID --domains example.com',
    ],
    [
      'HTTP injection on the admin address',
      mx(
        ", admin: { token: 'a-token-of-16-chars', listen: '127.0.0.1:8025' }, http: { apiKeysFile: 'keys.txt', listen: '127.0.0.1:8025' }",
      ),
      "config.http.listen: 127.0.0.1:8025 is the admin API's address",
    ],
    [
      'HTTP injection TLS key not PEM',
      mx(", http: { apiKeysFile: 'keys.txt', tls: { key: 'garbage.pem', cert: 'cert.pem' } }"),
      'config.http.tls.key: garbage.pem is not a PEM private key',
    ],
    [
      'missing users file',
      mx(", users: { file: 'users.txt' }"),
      'config.users.file: file not found: users.txt: add the first user with tern user add --file users.txt USER',
    ],
    [
      'TLS key not PEM',
      mx('', ", tls: { key: 'garbage.pem', cert: 'cert.pem' }"),
      'config.listeners[0].tls.key: garbage.pem is not a PEM private key',
    ],
    [
      'TLS key of another certificate',
      mx('', ", tls: { key: 'other-key.pem', cert: 'cert.pem' }"),
      'config.listeners[0].tls.key: other-key.pem does not belong to the certificate in cert.pem',
    ],
    [
      'TLS certificate not PEM',
      mx('', ", tls: { key: 'key.pem', cert: 'key.pem' }"),
      'config.listeners[0].tls.cert: key.pem is not a PEM certificate',
    ],
  ])('%s', async (_, text, problem) => {
    const file = config(text);
    const checked = await tern(['check-config', file]);
    expect(checked.stderr).toContain(problem);
    expect(checked.status).toBe(78);
    expect(checked.stdout).toBe('');
    const started = await tern(['start', '--config', file]);
    expect(started.stderr).toContain(problem);
    expect(started.status).toBe(78);
    expect(started.output).not.toContain('tern started');
  });

  test('a good TLS key pair, users file and token file pass', async () => {
    writeFileSync(join(dir, 'users.txt'), '');
    writeFileSync(join(dir, 'admin.token'), 'a-token-of-more-than-16-characters\n');
    const file = config(
      mx(
        ", users: { file: 'users.txt' }, admin: { tokenFile: 'admin.token', listen: '127.0.0.1:0' }",
        ", tls: { key: 'key.pem', cert: 'cert.pem' }",
      ),
    );
    const checked = await tern(['check-config', file]);
    expect(checked.stderr).toBe('');
    expect(checked.stdout).toContain('valid (1 listener(s), 0 plugin(s))');
    expect(checked.status).toBe(0);
  });
});

describe('check-config says where a config is broken', () => {
  test.each([
    [
      'syntax.config.js',
      "export default {\n  listeners: [{ kind: 'mx' }],,\n};\n",
      "syntax.config.js:2:31: syntax error: Unexpected token ','",
    ],
    [
      'syntax.config.ts',
      "export default {\n  listeners: [{ kind: 'mx' }]\n  foo: 1\n};\n",
      'syntax.config.ts:3:3: syntax error: Unexpected token, expected ","',
    ],
    [
      'syntax.config.json',
      '{\n  "listeners": [{ "kind": "mx" }],\n}\n',
      'syntax.config.json:3:1: syntax error: Expected double-quoted property name',
    ],
    ['throws.config.js', "const x = 1;\nJSON.parse('{');\nexport default {};\n", 'throws.config.js:2:6: '],
    [
      'union.config.js',
      mx(", delivery: { routes: { '*': { type: 'smpt', host: 'relay.a.test' } } }"),
      'config.delivery.routes["*"].type: "smpt" is not one of "mx", "smtp", "lmtp", "maildir"',
    ],
    [
      'backend.config.js',
      mx().replace("backend: 'embedded'", "backend: 'sqlite'"),
      'config.queue.backend: "sqlite" is not one of "embedded", "redis"',
    ],
    [
      'nolisteners.config.js',
      "export default { localDomains: ['a.test'] };\n",
      "config.listeners: missing: tern needs at least one listener, e.g. listeners: [{ kind: 'mx', port: 25 }]",
    ],
    [
      'nodefault.config.js',
      "export const config = { listeners: [{ kind: 'mx' }] };\n",
      'no default export: the config file must export it, as in export default defineConfig(',
    ],
  ])('%s', async (name, text, message) => {
    const result = await tern(['check-config', config(text, name)]);
    expect(result.stderr).toContain(message);
    expect(result.status).toBe(78);
  });
});

describe('commands exit when their work is done', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  const rateLimited = (extra = ''): string =>
    `import { rateLimit } from '@tern/plugin-ratelimit';\n${mx(
      `, plugins: [rateLimit({ redis: ${JSON.stringify(redis.url)}, failMode: 'open', rules: [{ key: 'ip', count: 'connections', limit: 20 }] })]${extra}`,
    )}`;

  test('check-config of a config whose plugin opens Redis prints its verdict and exits', async () => {
    const result = await tern(['check-config', config(rateLimited())]);
    expect(result.stdout).toContain('valid (1 listener(s), 1 plugin(s))');
    expect(result.status).toBe(0);
    // Closed by the plugin's shutdown, not by the last-resort exit after the verdict.
    expect(result.stderr).toBe('');
  });

  test('so does a refused one: the plugins its file made are shut down', async () => {
    const result = await tern(['check-config', config(rateLimited(", trustedNetworks: ['300.0.0.0/8']"))]);
    expect(result.stderr).toContain('config.trustedNetworks[0]: not a CIDR block');
    expect(result.stderr).not.toContain('still open');
    expect(result.status).toBe(78);
  });

  test('dkim check and dns --config close the plugins of the config they read', async () => {
    const file = config(rateLimited(", delivery: { dns: { servers: ['127.0.0.1:9'] } }"));
    const dns = await tern(['dns', 'a.test', '--config', file]);
    expect(dns.stdout).toContain('; SPF FAIL');
    expect(dns.stderr).toBe('');
    expect(dns.status).toBe(1);
    const dkim = await tern(['dkim', 'check', '--config', file, '--domain', 'a.test', '--selector', 's']);
    expect(dkim.stderr).toContain('has no DKIM key for selector s of a.test');
    expect(dkim.stderr).not.toContain('still open');
    expect(dkim.status).toBe(2);
  });
});

describe('plugins start once each, and one that cannot start stops tern start', () => {
  const trace = join(dir, 'lifecycle.log');
  const lifecycle = `import { appendFileSync } from 'node:fs';
import { definePlugin } from '@tern/plugin-api';
const traced = (name) => definePlugin({
  name,
  init() { appendFileSync(${JSON.stringify(trace)}, \`init \${name}\\n\`); },
  shutdown() { appendFileSync(${JSON.stringify(trace)}, \`shutdown \${name}\\n\`); },
});
const broken = definePlugin({ name: 'reputation', init() { throw new Error('cannot reach the reputation service at 192.0.2.1:8080'); } });
`;

  test('check-config runs each init, global and per listener, then each shutdown', async () => {
    writeFileSync(trace, '');
    const file = config(`${lifecycle}${mx(", plugins: [traced('global')]", ", plugins: [traced('own')]")}`);
    const result = await tern(['check-config', file]);
    expect(result.status).toBe(0);
    expect(readFileSync(trace, 'utf8').split('\n').filter(Boolean).sort()).toEqual([
      'init global',
      'init own',
      'shutdown global',
      'shutdown own',
    ]);
  });

  test('a JavaScript plugin with an unknown hook is refused at load, with the hook it meant', async () => {
    writeFileSync(trace, '');
    const typo = "const greeter = { name: 'greeter', mailfrom() {} };\n";
    const file = config(`${lifecycle}${typo}${mx(", plugins: [traced('fine')]", ', plugins: [greeter]')}`);
    for (const command of [
      ['check-config', file],
      ['start', '--config', file],
    ]) {
      const result = await tern(command);
      expect(result.stderr).toContain('plugin greeter: unknown hook "mailfrom"; did you mean "mailFrom"?');
      expect(result.status).toBe(78);
    }
    // Nothing started; what the config's factories made is closed once per refusal.
    expect(readFileSync(trace, 'utf8')).toBe('shutdown fine\nshutdown fine\n');
  });

  test.each([
    ['in the global list', mx(', plugins: [broken]')],
    ['in a listener list', mx('', ', plugins: [broken]')],
  ])('a plugin whose init throws (%s): start exits 78 naming it, and never listens', async (_, text) => {
    const result = await tern(['start', '--config', config(`${lifecycle}${text}`)]);
    expect(result.stderr).toContain(
      'tern start: plugin reputation: init threw: cannot reach the reputation service at 192.0.2.1:8080',
    );
    expect(result.status).toBe(78);
    expect(result.output).not.toContain('tern started');
    expect(result.output).not.toContain('"msg":"listening"');
  });

  test('the plugins that did start are shut down again', async () => {
    writeFileSync(trace, '');
    const result = await tern([
      'start',
      '--config',
      config(`${lifecycle}${mx(", plugins: [traced('fine'), broken]")}`),
    ]);
    expect(result.status).toBe(78);
    expect(readFileSync(trace, 'utf8')).toBe('init fine\nshutdown fine\n');
  });
});
