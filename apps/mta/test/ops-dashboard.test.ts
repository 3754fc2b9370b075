// The dashboard in a real headless chromium (Debian's, driven by playwright-core) against a real
// tern process: token prompt, queue depth over time, destinations, recent deliveries, bounces and
// refusals, and one message's timeline looked up by Message-ID. Ends with a screenshot.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SmtpSink, startSmtpSink, waitFor } from '@tern/testkit';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendMail } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

const GATE = `[{
  name: 'gate',
  rcptTo(ctx) {
    if (ctx.recipient.address.startsWith('spam')) {
      return { kind: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'No spam here' } };
    }
  },
}]`;

let sink: SmtpSink;
let mta: OpsTern;
let browser: Browser;
let page: Page;
const shots = mkdtempSync(join(tmpdir(), 'tern-dashboard-'));

beforeAll(async () => {
  sink = await startSmtpSink({
    rcptReply: (address) =>
      address.startsWith('ghost') ? { code: 550, message: '5.1.1 No such user' } : undefined,
  });
  mta = await startOpsTern(
    {
      localDomains: ['example.test'],
      delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
      queue: { backend: 'embedded', retry: { intervals: ['1s'], maxAge: '1h' } },
    },
    { plugins: GATE },
  );
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
});

afterAll(async () => {
  await browser?.close();
  await stopAllOpsTern();
  await sink?.stop();
  rmSync(shots, { recursive: true, force: true });
});

async function text(selector: string): Promise<string> {
  return (await page.locator(selector).textContent()) ?? '';
}

describe('dashboard', () => {
  it('asks for the token and refuses a wrong one', async () => {
    await page.goto(`${mta.url}/`);
    await page.locator('#token-dialog').waitFor({ state: 'visible' });
    await page.fill('#token-input', 'not-the-token');
    await page.click('#token-form button');
    await page.locator('#token-dialog').waitFor({ state: 'visible' });
    expect(await text('#status')).toMatch(/token was refused/);
    await page.fill('#token-input', mta.token);
    await page.click('#token-form button');
    await page.locator('#token-dialog').waitFor({ state: 'hidden' });
    await waitFor(async () => /^updated /.test(await text('#status')), 5000);
    expect(await text('#backend')).toMatch(/^embedded queue, 0 job\(s\)/);
  });

  it('shows depth over time, destinations, deliveries, bounces and refusals, and a timeline by Message-ID', async () => {
    await mta.api('POST', '/api/destinations/slow.test/suspend', { for: '1h' });
    const delivered = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['bob@dest.test', 'spam@dest.test'],
      subject: 'Shown on the dashboard',
    });
    const bounced = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['ghost@dest.test'],
      subject: 'Ghost',
    });
    for (let i = 0; i < 3; i++) {
      await sendMail(mta.port, { from: 'alice@src.test', to: [`q${i}@slow.test`], subject: `Waiting ${i}` });
    }
    // A subject written by a stranger must show as text, never run.
    const hostile = await sendMail(mta.port, {
      from: 'mallory@src.test',
      to: ['victim@slow.test'],
      subject: '<img src=x onerror="document.title=\'owned\'">',
    });
    await sink.waitFor(1, 5000);

    // A fresh load with the token in the fragment (it never reaches the server's logs).
    await page.goto('about:blank');
    await page.goto(`${mta.url}/#token=${mta.token}`);
    expect(page.url()).toBe(`${mta.url}/`);
    await waitFor(async () => (await text('#summary tbody')).includes('slow.test'), 10_000);
    const row = page.locator('#summary tbody tr', { hasText: 'slow.test' });
    const cells = await row.locator('td').allTextContents();
    expect(cells.slice(0, 6)).toEqual(['slow.test', '4', '4', '0', '0', '0']);
    expect(cells[7]).toMatch(/^suspended until /);

    // Several samples (one every 200 ms) make the depth lines; slow.test has its own.
    await waitFor(async () => (await page.locator('#depth-chart polyline').count()) >= 2, 10_000);
    const totalLine = page.locator('#depth-chart polyline[data-series="total"]');
    expect((await totalLine.getAttribute('points'))?.split(' ').length).toBeGreaterThan(1);
    expect(await page.locator('#depth-chart polyline[data-series="slow.test"]').count()).toBe(1);
    // Samples read a summary up to a second old; the page reloads its data every 5 s.
    await waitFor(async () => /slow\.test \(4\)/.test(await text('#depth-legend')), 12_000);

    await waitFor(async () => (await text('#bounces tbody')).includes(bounced.queueId), 10_000);
    expect(await text('#deliveries tbody')).toContain(delivered.queueId);
    expect(await text('#deliveries tbody')).toMatch(/bob@dest\.test250 2\.0\.0/);
    expect(await text('#bounces tbody')).toMatch(/ghost@dest\.test550 5\.1\.1 No such userpermanent/);
    const refusal = page.locator('#rejections tbody tr', { hasText: 'spam@dest.test' });
    expect(await refusal.locator('td').allTextContents()).toEqual([
      expect.any(String),
      `127.0.0.1 (client.src.test) on mx-${mta.port}`,
      '<alice@src.test>',
      'spam@dest.test',
      'gate / rcptTo',
      '550 5.7.1 No spam here',
    ]);

    // Where is my message? By Message-ID.
    await page.fill('#lookup-id', delivered.messageId);
    await page.click('#lookup-form button');
    await page.locator('#timeline li').first().waitFor();
    const events = await page.locator('#timeline li').allTextContents();
    expect(events[0]).toMatch(
      /received from <alice@src\.test> for bob@dest\.test from 127\.0\.0\.1 \(client\.src\.test\)/,
    );
    expect(events.some((e) => /gate rcptTo: reject 550 5\.7\.1 No spam here/.test(e))).toBe(true);
    expect(events.some((e) => /attempt 1 to dest\.test via .*bob@dest\.test delivered \(250/.test(e))).toBe(
      true,
    );
    expect(await page.locator('#timeline li.refused').count()).toBe(1);
    expect(await text('#message-facts')).toContain(delivered.queueId);

    // The hostile subject is text in the page: no element made from it, no script run.
    await page.fill('#lookup-id', hostile.queueId);
    await page.click('#lookup-form button');
    await waitFor(async () => (await text('#message-facts')).includes(hostile.queueId), 5000);
    expect(await text('#message-facts')).toContain('<img src=x onerror="document.title=\'owned\'">');
    expect(await page.locator('#message img').count()).toBe(0);
    expect(await page.title()).toBe('tern dashboard');

    // An unknown id says so.
    await page.fill('#lookup-id', 'nobody@nowhere.test');
    await page.click('#lookup-form button');
    await page.locator('#lookup-error').waitFor();
    expect(await text('#lookup-error')).toMatch(/no message with Message-ID/);

    const file = join(shots, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    expect(statSync(file).size).toBeGreaterThan(20_000);
    expect(readFileSync(file).subarray(0, 8)).toEqual(
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    );
  });
});
