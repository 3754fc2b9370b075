// The dashboard in a real headless chromium (Debian's, driven by playwright-core) against a real
// tern process: token prompt, queue depth over time, destinations, recent deliveries, bounces and
// refusals (a plugin's and core's own), one message's timeline by Message-ID and by #id= link, and
// the layout at desktop (1440×900) and laptop (1280×720) sizes, with screenshots of each. Set
// TERN_DASHBOARD_SHOTS=<folder> to keep the screenshots there; otherwise a temp folder is removed.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryLogger } from '@tern/plugin-api/testing';
import { openEmbeddedQueue, type QueueBackend, type QueueHealth } from '@tern/queue';
import { freePort, type SmtpSink, startSmtpSink, waitFor } from '@tern/testkit';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActivityLog } from '../src/ops/activity.js';
import { type AdminServer, startAdminServer } from '../src/ops/admin-server.js';
import { IntakeRecorder } from '../src/ops/intake-recorder.js';
import { TernMetrics } from '../src/ops/metrics.js';
import { type SentMessage, sendMail, tryRecipients } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

const GATE = `[{
  name: 'gate',
  rcptTo(ctx) {
    if (ctx.recipient.address.startsWith('spam')) {
      return { kind: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'No spam here' } };
    }
  },
}]`;

// A remote server that explains itself at length: the dashboard must not let it take the page.
const LONG_REPLY = `5.7.1 ${'This mailbox refuses mail from senders it does not know, see https://help.dest.test/policy. '.repeat(3).trim()}`;

const VIEWPORTS = [
  { name: 'desktop', width: 1440, height: 900 },
  { name: 'laptop', width: 1280, height: 720 },
] as const;

/** The little of the DOM the layout probe reads in the page (these tests are type-checked without the DOM library). */
interface ProbedElement {
  readonly id: string;
  readonly hidden: boolean;
  readonly scrollWidth: number;
  readonly clientWidth: number;
  readonly parentElement: ProbedElement;
  getBoundingClientRect(): { top: number; bottom: number; right: number };
  querySelectorAll(selector: string): Iterable<ProbedElement>;
}
declare const document: {
  getElementById(id: string): ProbedElement;
  readonly documentElement: ProbedElement;
};
declare const window: { readonly scrollY: number; readonly innerHeight: number };

let sink: SmtpSink;
let mta: OpsTern;
let browser: Browser;
let page: Page;
const keep = process.env.TERN_DASHBOARD_SHOTS;
const shots = keep ?? mkdtempSync(join(tmpdir(), 'tern-dashboard-'));
const sent: Record<'delivered' | 'bounced' | 'wordy' | 'hostile', SentMessage> = {} as never;

let closedPort: number;

beforeAll(async () => {
  mkdirSync(shots, { recursive: true });
  sink = await startSmtpSink({
    rcptReply: (address) =>
      address.startsWith('ghost')
        ? { code: 550, message: '5.1.1 No such user' }
        : address.startsWith('wordy')
          ? { code: 550, message: LONG_REPLY }
          : undefined,
  });
  closedPort = await freePort();
  mta = await startOpsTern(
    {
      localDomains: ['example.test'],
      delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
      queue: { backend: 'embedded', retry: { intervals: ['1s'], maxAge: '1h' } },
      // Nothing listens on that port: every post fails, so the Webhooks tab has a failing endpoint.
      webhooks: {
        endpoints: [
          {
            name: 'crm',
            url: `http://127.0.0.1:${closedPort}/hooks?token=private`,
            secret: 'a-dashboard-webhook-secret',
            retry: { initialInterval: '200ms', maxInterval: '1s' },
          },
        ],
      },
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
  if (!keep) rmSync(shots, { recursive: true, force: true });
});

async function text(selector: string): Promise<string> {
  return (await page.locator(selector).textContent()) ?? '';
}

/** Waits for the page's next successful poll after this moment. */
async function nextRefresh(): Promise<void> {
  const before = await text('#status');
  await waitFor(async () => {
    const now = await text('#status');
    return now !== before && /^updated /.test(now);
  }, 12_000);
}

async function screenshot(name: string): Promise<void> {
  const file = join(shots, `${name}.png`);
  await page.screenshot({ path: file });
  expect(statSync(file).size).toBeGreaterThan(20_000);
  expect(readFileSync(file).subarray(0, 8)).toEqual(
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  );
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
    // A healthy store says so in the summary.
    await page.locator('#store-health').waitFor({ state: 'visible' });
    expect(await text('#store-state')).toBe('store writable');
  });

  it('shows depth over time, destinations, deliveries, bounces and refusals, and a timeline by Message-ID', async () => {
    await mta.api('POST', '/api/destinations/slow.test/suspend', { for: '1h' });
    sent.delivered = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['bob@dest.test', 'spam@dest.test'],
      subject: 'Shown on the dashboard',
    });
    sent.bounced = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['ghost@dest.test'],
      subject: 'Ghost',
    });
    sent.wordy = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['wordy@dest.test'],
      subject: 'Wordy',
    });
    for (let i = 0; i < 3; i++) {
      await sendMail(mta.port, { from: 'alice@src.test', to: [`q${i}@slow.test`], subject: `Waiting ${i}` });
    }
    // A subject written by a stranger must show as text, never run.
    sent.hostile = await sendMail(mta.port, {
      from: 'mallory@src.test',
      to: ['victim@slow.test'],
      subject: '<img src=x onerror="document.title=\'owned\'">',
    });
    // Core's own refusal, which no plugin sees: a client outside the trusted networks may not relay.
    expect(
      await tryRecipients(mta.port, {
        from: 'mallory@src.test',
        to: ['victim@elsewhere.test'],
        localAddress: '127.0.0.2',
      }),
    ).toEqual([expect.stringMatching(/^554 5\.7\.1 /)]);
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
    expect(await text('#tile-total')).toMatch(/^[4-9]$/);

    // Several samples (one every 200 ms) make the depth lines; slow.test has its own.
    await waitFor(async () => (await page.locator('#depth-chart polyline').count()) >= 2, 10_000);
    const totalLine = page.locator('#depth-chart polyline[data-series="total"]');
    expect((await totalLine.getAttribute('points'))?.split(' ').length).toBeGreaterThan(1);
    expect(await page.locator('#depth-chart polyline[data-series="slow.test"]').count()).toBe(1);
    // Samples read a summary up to a second old; the page reloads its data every 5 s.
    await waitFor(async () => /slow\.test \(4\)/.test(await text('#depth-legend')), 12_000);

    await waitFor(async () => (await text('#bounces tbody')).includes(sent.wordy.queueId), 10_000);
    expect(await text('#bounces tbody')).toContain(sent.bounced.queueId);
    expect(await text('#deliveries tbody')).toContain(sent.delivered.queueId);
    expect(await text('#deliveries tbody')).toMatch(/bob@dest\.testdelivered250 2\.0\.0/);
    expect(await text('#bounces tbody')).toMatch(/ghost@dest\.test550 5\.1\.1 No such userpermanent/);
    expect(await text('#count-bounces')).toBe('2');
    const refusal = page.locator('#rejections tbody tr', { hasText: 'spam@dest.test' });
    expect(await refusal.locator('td').allTextContents()).toEqual([
      expect.any(String),
      `127.0.0.1 (client.src.test) on mx-${mta.port}`,
      '<alice@src.test>',
      'spam@dest.test',
      'gate / rcptTo',
      '550 5.7.1 No spam here',
    ]);
    const denied = page.locator('#rejections tbody tr', { hasText: '127.0.0.2' });
    expect(await denied.locator('td').allTextContents()).toEqual([
      expect.any(String),
      `127.0.0.2 (stranger.test) on mx-${mta.port}`,
      '<mallory@src.test>',
      '',
      'core (RCPT)',
      '554 5.7.1 Relay access denied',
    ]);
    expect(await text('#count-refusals')).toBe('2');

    // Where is my message? By Message-ID.
    await page.click('#tab-message');
    await page.fill('#lookup-id', sent.delivered.messageId);
    await page.click('#lookup-form button');
    await page.locator('#timeline li').first().waitFor();
    expect(new URL(page.url()).hash).toBe(`#id=${encodeURIComponent(sent.delivered.messageId)}`);
    const events = await page.locator('#timeline li').allTextContents();
    expect(events[0]).toMatch(
      /received from <alice@src\.test> for bob@dest\.test from 127\.0\.0\.1 \(client\.src\.test\)/,
    );
    expect(events.some((e) => /gate rcptTo: reject 550 5\.7\.1 No spam here/.test(e))).toBe(true);
    expect(events.some((e) => /attempt 1 to dest\.test via .*bob@dest\.test delivered \(250/.test(e))).toBe(
      true,
    );
    expect(await page.locator('#timeline li.refused').count()).toBe(1);
    expect(await text('#message-facts')).toContain(sent.delivered.queueId);

    // The hostile subject is text in the page: no element made from it, no script run.
    await page.fill('#lookup-id', sent.hostile.queueId);
    await page.click('#lookup-form button');
    await waitFor(async () => (await text('#message-facts')).includes(sent.hostile.queueId), 5000);
    expect(await text('#message-facts')).toContain('<img src=x onerror="document.title=\'owned\'">');
    expect(await page.locator('#message img').count()).toBe(0);
    expect(await page.title()).toBe('tern dashboard');

    // An unknown id says so.
    await page.fill('#lookup-id', 'nobody@nowhere.test');
    await page.click('#lookup-form button');
    await page.locator('#lookup-error').waitFor();
    expect(await text('#lookup-error')).toMatch(/no message with Message-ID/);
  });

  for (const viewport of VIEWPORTS) {
    it(`fits a ${viewport.name} screen (${viewport.width}×${viewport.height}): no table overflows, bounces and refusals one click from the top`, async () => {
      await page.setViewportSize({ width: viewport.width, height: viewport.height });
      await page.goto('about:blank');
      await page.goto(`${mta.url}/`);
      await waitFor(async () => (await text('#bounces tbody')).includes(sent.wordy.queueId), 10_000);
      await screenshot(`${viewport.name}-deliveries`);
      for (const tab of ['deliveries', 'bounces', 'refusals', 'destinations', 'suppressions', 'message']) {
        await page.click(`#tab-${tab}`);
        const layout = await page.evaluate((name) => {
          const panel = document.getElementById(`panel-${name}`);
          const tabButton = document.getElementById(`tab-${name}`);
          return {
            visible: !panel.hidden,
            scrollY: window.scrollY,
            panelTop: panel.getBoundingClientRect().top,
            tabBottom: tabButton.getBoundingClientRect().bottom,
            innerHeight: window.innerHeight,
            pageOverflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            tables: [...panel.querySelectorAll('table')].map((table) => ({
              id: table.id,
              overflow: table.scrollWidth - table.parentElement.clientWidth,
              right: table.getBoundingClientRect().right,
              cardRight: document.getElementById('panels').getBoundingClientRect().right,
            })),
          };
        }, tab);
        expect(layout.visible).toBe(true);
        expect(layout.pageOverflow).toBe(0);
        for (const table of layout.tables) {
          expect(table.overflow, `#${table.id} overflows its card`).toBeLessThanOrEqual(0);
          expect(table.right).toBeLessThanOrEqual(table.cardRight);
        }
        // The tab and the start of its panel are on the first screen, without scrolling.
        expect(layout.scrollY).toBe(0);
        expect(layout.tabBottom).toBeLessThan(layout.innerHeight);
        expect(layout.panelTop).toBeLessThan(layout.innerHeight - 100);
        if (tab === 'bounces' || tab === 'refusals') await screenshot(`${viewport.name}-${tab}`);
      }
    });
  }

  it('cuts a long reply short with a control that shows it whole, and keeps it open across refreshes', async () => {
    await page.click('#tab-bounces');
    const cell = page.locator('#bounces tbody tr', { hasText: 'wordy@dest.test' }).locator('td').nth(3);
    const clippedText = await cell.locator('.clip-text').textContent();
    expect(clippedText?.endsWith('…')).toBe(true);
    expect(clippedText?.length).toBeLessThan(200);
    const rowHeight = (await cell.boundingBox())?.height ?? 0;
    await cell.locator('button.more').click();
    expect(await cell.locator('.clip-text').textContent()).toBe(`550 ${LONG_REPLY}`);
    expect(await cell.locator('button.more').getAttribute('aria-expanded')).toBe('true');
    expect((await cell.boundingBox())?.height).toBeGreaterThan(rowHeight);
    await nextRefresh();
    expect(await cell.locator('.clip-text').textContent()).toBe(`550 ${LONG_REPLY}`);
    await cell.locator('button.more').click();
    expect(await cell.locator('.clip-text').textContent()).toBe(clippedText);
  });

  it("opens a message's timeline from its queue id link (#id=) and from an address with #id=", async () => {
    await page.click('#tab-deliveries');
    await page.locator('#deliveries a.qid', { hasText: sent.delivered.queueId }).first().click();
    await waitFor(async () => (await text('#message-facts')).includes(sent.delivered.queueId), 5000);
    expect(await page.locator('#panel-message').isVisible()).toBe(true);
    expect(new URL(page.url()).hash).toBe(`#id=${sent.delivered.queueId}`);
    expect(await page.locator('#timeline li.attempt').count()).toBeGreaterThan(0);

    // The bounce's own timeline names the notice it sent, as a link too.
    await page.goto('about:blank');
    await page.goto(`${mta.url}/#id=${sent.bounced.queueId}`);
    await waitFor(async () => (await text('#message-facts')).includes(sent.bounced.queueId), 10_000);
    expect(await page.locator('#tab-message').getAttribute('aria-selected')).toBe('true');
    const notice = page.locator('#timeline li.attempt a.qid').first();
    const noticeId = (await notice.textContent()) ?? '';
    expect(noticeId).toMatch(/^[0-9A-Z]{21}$/);
    await notice.click();
    await waitFor(async () => (await text('#message-facts')).includes(noticeId), 5000);
    await screenshot('laptop-timeline');
  });
  it('lists suppressed recipients (the hard bounce among them), searches, adds and removes them', async () => {
    await page.goto('about:blank');
    await page.goto(`${mta.url}/`);
    await page.click('#tab-suppressions');
    // ghost@dest.test bounced 5.1.1 earlier: suppressed for alice's domain.
    const ghost = page.locator('#suppressions tbody tr', { hasText: 'ghost@dest.test' });
    await ghost.waitFor({ timeout: 10_000 });
    expect((await ghost.locator('td').allTextContents()).slice(0, 3)).toEqual([
      'src.test',
      'ghost@dest.test',
      'bounce, bad-mailbox',
    ]);

    await page.fill('#suppression-address', 'Added@Dest.test');
    await page.fill('#suppression-reason', 'asked us by phone');
    await page.click('#suppression-add button');
    const added = page.locator('#suppressions tbody tr', { hasText: 'added@dest.test' });
    await added.waitFor({ timeout: 5000 });
    expect((await added.locator('td').allTextContents()).slice(0, 3)).toEqual([
      '*',
      'added@dest.test',
      'manual',
    ]);
    expect((await mta.api('GET', '/api/suppressions/*/added@dest.test')).body).toMatchObject({
      reason: 'asked us by phone',
    });

    await page.fill('#suppression-text', 'ghost');
    await page.click('#suppression-search button');
    await waitFor(async () => (await page.locator('#suppressions tbody tr').count()) === 1, 5000);
    await page.fill('#suppression-text', '');
    await page.click('#suppression-search button');
    await added.waitFor({ timeout: 5000 });
    await screenshot('laptop-suppressions');

    await added.locator('button.remove').click();
    await added.waitFor({ state: 'detached', timeout: 5000 });
    expect((await mta.api('GET', '/api/suppressions/*/added@dest.test')).status).toBe(404);

    await page.fill('#suppression-address', 'not an address');
    await page.click('#suppression-add button');
    await page.locator('#suppression-error').waitFor({ state: 'visible', timeout: 5000 });
    expect(await text('#suppression-error')).toMatch(/address: "not an address" is not an email address/);
  });
});

describe('dashboard: webhooks', () => {
  it('shows each endpoint: failing, its pending events, last failure and error; the tab counts failing ones', async () => {
    await page.goto('about:blank');
    await page.goto(`${mta.url}/`);
    await page.click('#tab-webhooks');
    const row = page.locator('#webhooks tbody tr', { hasText: 'crm' });
    await row.waitFor({ timeout: 10_000 });
    await waitFor(async () => /^failing/.test((await row.locator('td').nth(1).textContent()) ?? ''), 15_000);
    const cells = await row.locator('td').allTextContents();
    expect(cells[0]).toBe('crm');
    expect(Number(cells[2])).toBeGreaterThan(0);
    expect(cells[3]).toBe('never');
    expect(cells[4]).not.toBe('never');
    expect(cells[5]).toMatch(/ECONNREFUSED/);
    expect(await text('#count-webhooks')).toBe('1');
    // The URL is shown without its query (it may hold a token).
    expect(await row.locator('td').first().getAttribute('title')).toBe(
      `http://127.0.0.1:${closedPort}/hooks`,
    );
  });
});

describe('dashboard: the queue store health', () => {
  let admin: AdminServer;
  let queue: QueueBackend;
  const dir = mkdtempSync(join(tmpdir(), 'tern-health-'));

  afterAll(async () => {
    await admin?.close();
    await queue?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows whether the store is writable, since when and its last error, when the backend offers health()', async () => {
    const embedded = openEmbeddedQueue({ path: join(dir, 'queue.db') });
    const since = Date.UTC(2026, 10, 30, 8, 15, 0);
    const health = (): QueueHealth => ({
      writable: false,
      since,
      lastError: 'SQLITE_FULL: database or disk is full',
    });
    // How the page draws a store that cannot write (the real failure and recovery are tested with a
    // full tmpfs in packages/queue and apps/mta): everything else is the real queue.
    queue = new Proxy(embedded, {
      get: (target, key) => {
        if (key === 'health') return health;
        const value = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const logger = memoryLogger();
    admin = await startAdminServer({
      listen: '127.0.0.1:0',
      token: 'health-token',
      metricsAuth: false,
      queue,
      hostname: 'tern.test',
      metrics: new TernMetrics({ connections: () => ({}) }),
      activity: new ActivityLog(),
      recorder: new IntakeRecorder(),
      logger,
    });
    const response = await fetch(`${admin.url}/api/health`, {
      headers: { authorization: 'Bearer health-token' },
    });
    expect(await response.json()).toEqual({
      ok: true,
      queue: 'embedded',
      store: { writable: false, since, lastError: 'SQLITE_FULL: database or disk is full' },
    });

    await page.setViewportSize({ width: 1280, height: 720 });
    await page.goto('about:blank');
    await page.goto(`${admin.url}/#token=health-token`);
    await page.locator('#store-health').waitFor({ state: 'visible' });
    expect(await text('#store-state')).toBe('store NOT writable');
    expect(await page.locator('#store-state').getAttribute('class')).toBe('bad');
    expect(await text('#store-detail')).toMatch(
      /^since .*; last error: SQLITE_FULL: database or disk is full$/,
    );
    await screenshot('laptop-store-not-writable');
  });
});
