// Messages and stores for the embedded queue tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Envelope } from '@tern/plugin-api';
import { memorySource } from '@tern/plugin-api/host';
import type { IncomingMessage } from '../../src/contract.js';

export interface TestMessageOptions {
  readonly from?: string;
  readonly to?: readonly string[];
  readonly subject?: string;
  readonly receivedAt?: number;
  readonly bodySize?: number;
}

/** A small well-formed message; the body is `bodySize` bytes of text when given. */
export function testMessage(options: TestMessageOptions = {}): IncomingMessage {
  const from = options.from ?? 'sender@origin.test';
  const to = options.to ?? ['rcpt@dest.test'];
  const envelope: Envelope = { mailFrom: from, recipients: to.map((address) => ({ address })) };
  const head = Buffer.from(
    `From: <${from}>\r\nTo: ${to.map((a) => `<${a}>`).join(', ')}\r\nSubject: ${options.subject ?? 'test'}\r\n` +
      `Message-ID: <${Math.random().toString(36).slice(2)}@origin.test>\r\n\r\n`,
  );
  const body = Buffer.from(
    options.bodySize === undefined
      ? 'Hello.\r\n'
      : `${'x'.repeat(76)}\r\n`.repeat(Math.ceil(options.bodySize / 78)).slice(0, options.bodySize),
  );
  return { envelope, content: memorySource([head, body]), receivedAt: options.receivedAt ?? Date.now() };
}

/** A fresh directory for one test's store; `cleanup` removes it. */
export function tempStore(): { path: string; dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'tern-embedded-'));
  return { dir, path: join(dir, 'queue.db'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Hands out fresh store paths and removes them all at `cleanup()` (call it in afterEach). */
export function storePaths(): { next: () => string; cleanup: () => void } {
  const made: (() => void)[] = [];
  return {
    next: () => {
      const s = tempStore();
      made.push(s.cleanup);
      return s.path;
    },
    cleanup: () => {
      for (const c of made.splice(0)) c();
    },
  };
}
