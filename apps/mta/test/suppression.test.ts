// Suppression lists end to end on both backends: a real tern (two sharing one Redis), a receiving
// sink that refuses one mailbox for good, RCPT over real SMTP, the admin API and `tern suppression`
// as an operator runs it. A hard bounce suppresses the recipient for its sender domain; the next
// RCPT from that domain gets a 550 saying since when; an operator's entries hold for every sender.
// Tag scopes (`tag:newsletter`) through the CLI, and checked at DATA on the intake node and again
// at delivery on the worker.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SmtpSink, smtpDialog, startRedis, startSmtpSink, type TestRedis, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendMail } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern, tern } from './ops-fixtures/tern.js';

let sink: SmtpSink;
let redis: TestRedis;
const dir = mkdtempSync(join(tmpdir(), 'tern-suppression-'));

beforeAll(async () => {
  sink = await startSmtpSink({
    rcptReply: (address) =>
      address.startsWith('gone') ? { code: 550, message: '5.1.1 No such user' } : undefined,
  });
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
});

afterAll(async () => {
  await stopAllOpsTern();
  await sink?.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** MAIL FROM and RCPT TO only: the RCPT replies. */
async function rcpt(port: number, from: string, to: readonly string[]): Promise<string[]> {
  const smtp = await smtpDialog(port);
  try {
    await smtp.read();
    await smtp.command('EHLO client.test');
    await smtp.command(`MAIL FROM:<${from}>`);
    const replies: string[] = [];
    for (const address of to) replies.push(await smtp.command(`RCPT TO:<${address}>`));
    await smtp.command('QUIT').catch(() => '');
    return replies;
  } finally {
    smtp.close();
  }
}

/** A whole transaction with `X-Tern-Tag: newsletter` (127.0.0.1 is a trusted network): the end-of-DATA reply. */
async function newsletter(port: number, from: string, to: readonly string[]): Promise<string> {
  const smtp = await smtpDialog(port);
  try {
    await smtp.read();
    await smtp.command('EHLO client.test');
    await smtp.command(`MAIL FROM:<${from}>`);
    for (const address of to) expect(await smtp.command(`RCPT TO:<${address}>`)).toMatch(/^250/);
    expect(await smtp.command('DATA')).toMatch(/^354/);
    const body = [`From: <${from}>`, 'Subject: News', 'X-Tern-Tag: newsletter', '', 'News.', '.'].join(
      '\r\n',
    );
    const reply = await smtp.command(body);
    await smtp.command('QUIT').catch(() => '');
    return reply;
  } finally {
    smtp.close();
  }
}

function config(queue: Record<string, unknown>): Record<string, unknown> {
  return {
    localDomains: ['example.test'],
    suppression: { tagScopes: ['newsletter'] },
    delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
    queue: { ...queue, retry: { intervals: ['1s'], maxAge: '1h' } },
  };
}

describe.each([
  [
    'embedded',
    async (): Promise<[OpsTern, OpsTern]> => {
      const one = await startOpsTern(config({ backend: 'embedded' }));
      return [one, one];
    },
  ],
  [
    'redis, two nodes',
    async (): Promise<[OpsTern, OpsTern]> => {
      const shared = config({ backend: 'redis', url: redis.url, prefix: 'supE2E' });
      // The intake node takes mail in; the worker delivers, sees the bounce and suppresses.
      const intake = await startOpsTern(shared, { args: ['--no-worker'] });
      return [intake, await startOpsTern(shared)];
    },
  ],
])('suppression: %s', (name, start) => {
  let intake: OpsTern;
  let worker: OpsTern;
  const tag = name.split(',')[0] as string;
  const cli = (): string[] => ['--admin', worker.url, '--token', worker.token];

  beforeAll(async () => {
    [intake, worker] = await start();
  });

  it('a hard bounce suppresses the recipient for its sender domain, and RCPT then says since when', async () => {
    const gone = `gone-${tag}@dest.test`;
    const sent = await sendMail(intake.port, {
      from: 'news@shop.test',
      to: [gone, `fine-${tag}@dest.test`],
      subject: `S ${tag}`,
    });
    let entry: Record<string, unknown> | undefined;
    await waitFor(async () => {
      const { body } = await worker.api('GET', `/api/suppressions/shop.test/${encodeURIComponent(gone)}`);
      entry = body.address === gone ? body : undefined;
      return entry !== undefined;
    }, 15_000);
    expect(entry).toMatchObject({
      scope: 'shop.test',
      source: 'bounce',
      category: 'bad-mailbox',
      queueId: sent.queueId,
      reason: expect.stringContaining('550 5.1.1 No such user'),
    });
    const since = new Date(entry?.createdAt as number).toISOString().replace(/\.\d{3}Z$/, 'Z');

    // On the node that takes mail in (on Redis, not the one that saw the bounce).
    const [refused, other] = await rcpt(intake.port, 'news@shop.test', [gone, `new-${tag}@dest.test`]);
    expect(refused).toBe(
      `550 5.1.1 <${gone}>: recipient is suppressed for shop.test since ${since} (bounce: bad-mailbox)`,
    );
    expect(other).toMatch(/^250/);
    // Another sender domain may still write to it; mail for our own domains is never checked.
    expect(await rcpt(intake.port, 'someone@other.test', [gone])).toEqual([expect.stringMatching(/^250/)]);
    const { body: timeline } = await worker.api('GET', `/api/messages/${sent.queueId}`);
    const attempt = timeline.timeline.find((e: { type: string }) => e.type === 'attempt');
    expect(attempt.recipients).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ address: gone, result: 'failed', category: 'bad-mailbox' }),
      ]),
    );
  });

  it('tern suppression: add, list, search, export, remove and import, as an operator runs them', async () => {
    const angry = `angry-${tag}@dest.test`;
    const added = await tern([
      'suppression',
      'add',
      angry,
      '--reason',
      'complained by phone',
      '--expires-in',
      '30d',
      ...cli(),
    ]);
    expect(added).toMatchObject({ status: 0, stdout: '1 recipient(s) suppressed for every sender (*)\n' });
    // For every sender, as a policy refusal.
    const [refused] = await rcpt(intake.port, 'anyone@any.test', [angry]);
    expect(refused).toMatch(
      new RegExp(
        `^550 5\\.7\\.1 <${angry}>: recipient is suppressed for every sender since \\S+Z \\(manual\\)$`,
      ),
    );

    const list = await tern(['suppression', 'list', ...cli()]);
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(
      new RegExp(`^\\*\\t${angry}\\tmanual\\tsince \\S+ until \\S+\\tcomplained by phone$`, 'm'),
    );
    expect(list.stdout).toMatch(
      new RegExp(`^shop\\.test\\tgone-${tag}@dest\\.test\\tbounce/bad-mailbox\\t`, 'm'),
    );
    const search = await tern(['suppression', 'search', `ANGRY-${tag}`, '--json', ...cli()]);
    expect(JSON.parse(search.stdout)).toEqual([expect.objectContaining({ address: angry, scope: '*' })]);

    const file = join(dir, `export-${tag}.csv`);
    const exported = await tern(['suppression', 'export', '--out', file, ...cli()]);
    expect(exported.status).toBe(0);
    const csv = readFileSync(file, 'utf8').trim().split('\n');
    expect(csv[0]).toBe('scope,address,source,reason,category,created_at,expires_at');
    expect(csv).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^\\*,${angry},manual,complained by phone,,\\S+Z,\\S+Z$`)),
      ]),
    );

    expect(await tern(['suppression', 'remove', angry, ...cli()])).toMatchObject({
      status: 0,
      stdout: `${angry}: removed\n`,
    });
    const again = await tern(['suppression', 'remove', angry, ...cli()]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/is not suppressed for \*/);
    expect(await rcpt(intake.port, 'anyone@any.test', [angry])).toEqual([expect.stringMatching(/^250/)]);

    // The export goes back in as it came out; a plain list of addresses takes --scope.
    const imported = await tern(['suppression', 'import', file, ...cli()]);
    expect(imported).toMatchObject({ status: 0, stdout: `${csv.length - 1} recipient(s) imported\n` });
    const plain = join(dir, `plain-${tag}.txt`);
    writeFileSync(plain, `# one per line\nplain1-${tag}@dest.test\nPLAIN2-${tag}@dest.test\n`);
    expect(await tern(['suppression', 'import', plain, '--scope', 'shop.test', ...cli()])).toMatchObject({
      status: 0,
      stdout: '2 recipient(s) imported\n',
    });
    expect(
      (await rcpt(intake.port, 'x@shop.test', [angry, `plain2-${tag}@dest.test`])).map((r) => r.slice(0, 9)),
    ).toEqual(['550 5.7.1', '550 5.7.1']);
    const bad = join(dir, `bad-${tag}.txt`);
    writeFileSync(bad, 'not-an-address\n');
    const refusedImport = await tern(['suppression', 'import', bad, ...cli()]);
    expect(refusedImport.status).toBe(1);
    expect(refusedImport.stderr).toMatch(/entries\[0\]\.address: "not-an-address" is not an email address/);
  });

  it('the admin API names what is wrong with a request', async () => {
    expect(
      await worker.api('POST', '/api/suppressions', { address: 'x@y.test', scope: 'bad scope!' }),
    ).toMatchObject({
      status: 400,
      body: { error: expect.stringMatching(/^scope: "bad scope!" is not a sender domain/) },
    });
    expect(await worker.api('GET', '/api/suppressions?colour=red')).toMatchObject({ status: 400 });
    expect(await worker.api('GET', '/api/suppressions/shop.test/nobody@x.test')).toMatchObject({
      status: 404,
    });
    const created = await worker.api('POST', '/api/suppressions', {
      address: 'One@X.test',
      scope: 'shop.test',
    });
    expect(created).toMatchObject({
      status: 201,
      body: { added: 1, entry: { address: 'one@x.test', source: 'manual' } },
    });
    const { body } = await worker.api('GET', '/api/suppressions?scope=shop.test&search=one@');
    expect(body.entries).toEqual([expect.objectContaining({ address: 'one@x.test' })]);
  });

  it('tag scopes: tern suppression --scope tag:newsletter, export and import keep it; DATA refuses when every recipient is on it', async () => {
    const [a, b, fine] = ['a', 'b', 'fine'].map((n) => `${n}-news-${tag}@dest.test`) as [
      string,
      string,
      string,
    ];
    expect(await tern(['suppression', 'add', a, b, '--scope', 'tag:Newsletter', ...cli()])).toMatchObject({
      status: 0,
      stdout: '2 recipient(s) suppressed for tag:newsletter\n',
    });
    const bad = await tern(['suppression', 'add', a, '--scope', 'tag:two words', ...cli()]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/scope: "tag:two words" is not a sender domain .*a tag like tag:newsletter/);
    // Export, remove, import: the entries come back with their scope.
    const file = join(dir, `tags-${tag}.csv`);
    expect(
      (await tern(['suppression', 'export', '--out', file, '--scope', 'tag:newsletter', ...cli()])).status,
    ).toBe(0);
    const csv = readFileSync(file, 'utf8').trim().split('\n');
    expect(csv.slice(1).sort()).toEqual([
      expect.stringMatching(new RegExp(`^tag:newsletter,${a},manual,`)),
      expect.stringMatching(new RegExp(`^tag:newsletter,${b},manual,`)),
    ]);
    expect((await tern(['suppression', 'remove', a, b, '--scope', 'tag:newsletter', ...cli()])).status).toBe(
      0,
    );
    expect(await tern(['suppression', 'import', file, ...cli()])).toMatchObject({
      status: 0,
      stdout: '2 recipient(s) imported\n',
    });
    const list = await tern(['suppression', 'list', '--scope', 'tag:newsletter', '--json', ...cli()]);
    expect(
      JSON.parse(list.stdout)
        .map((e: { address: string }) => e.address)
        .sort(),
    ).toEqual([a, b]);

    // RCPT knows no tags yet: both are taken. The tag comes with the header: DATA refuses.
    expect(await newsletter(intake.port, 'news@shop.test', [a, b])).toBe(
      '550 5.7.1 Every recipient (2) is suppressed for tag:newsletter',
    );
    // Mail without the tag to them is taken and delivered.
    const plain = await sendMail(intake.port, { from: 'news@shop.test', to: [a], subject: `plain ${tag}` });
    await waitFor(() => sink.messages.some((m) => m.rcptTo.includes(a)), 15_000);
    expect(plain.queueId).toBeTruthy();

    // One suppressed, one not: taken (on Redis by the intake node), then the worker bounces the one.
    const taken = await newsletter(intake.port, 'news@shop.test', [b, fine]);
    const queueId = /queued as (\S+)/.exec(taken)?.[1];
    expect(taken).toMatch(/^250 /);
    await waitFor(() => sink.messages.some((m) => m.rcptTo.includes(fine)), 15_000);
    await waitFor(
      () => sink.messages.some((m) => m.rcptTo.includes('news@shop.test') && m.raw.includes(b)),
      15_000,
    );
    expect(sink.messages.filter((m) => m.rcptTo.includes(b))).toEqual([]);
    // The bounce can reach the sink before the attempt's outcome is in the store (outcomes are
    // written in batches, the bounce by its own enqueue): wait for the attempt in the timeline.
    let attempt: { recipients: unknown } | undefined;
    await waitFor(async () => {
      const { body } = await worker.api('GET', `/api/messages/${queueId}`);
      attempt = body.timeline.find((e: { type: string }) => e.type === 'attempt');
      return attempt !== undefined;
    }, 15_000);
    expect(attempt?.recipients).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ address: b, result: 'failed', enhanced: '5.7.1' }),
        expect.objectContaining({ address: fine, result: 'delivered' }),
      ]),
    );
  });
});
