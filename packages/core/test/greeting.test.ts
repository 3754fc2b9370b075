// The wait before the banner: early talkers are refused on mx listeners; trusted clients and
// submission listeners get the banner at once (a client opening a connection per message would
// otherwise be capped at 10 messages a second by smtp-server's fixed 100 ms).
import { connect } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { closeAll, startListener } from './helpers.js';

afterEach(closeAll);

/** Connects, optionally talks at once, and returns the first reply and how long it took. */
function firstReply(port: number, talkFirst: boolean): Promise<{ reply: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = connect(port, '127.0.0.1', () => {
      if (talkFirst) socket.write('EHLO early.example\r\n');
    });
    let data = '';
    socket.on('data', (chunk) => {
      data += chunk;
      if (data.includes('\r\n')) {
        socket.destroy();
        resolve({ reply: data.split('\r\n')[0] ?? '', ms: performance.now() - started });
      }
    });
    socket.on('error', reject);
  });
}

describe('greeting delay', () => {
  test('mx: an early talker is refused; a patient client gets the banner after the delay', async () => {
    const h = await startListener({ trustedNetworks: [], greetingDelayMs: 300 });
    expect((await firstReply(h.port, true)).reply).toMatch(/^421 /);
    const patient = await firstReply(h.port, false);
    expect(patient.reply).toMatch(/^220 /);
    expect(patient.ms).toBeGreaterThanOrEqual(250);
  });

  test('trusted networks and a zero delay get the banner at once', async () => {
    const trusted = await startListener({ trustedNetworks: ['127.0.0.1/32'], greetingDelayMs: 300 });
    const fromTrusted = await firstReply(trusted.port, false);
    expect(fromTrusted.reply).toMatch(/^220 /);
    expect(fromTrusted.ms).toBeLessThan(200);
    const none = await startListener({ trustedNetworks: [], greetingDelayMs: 0 });
    expect((await firstReply(none.port, false)).ms).toBeLessThan(200);
  });

  test('the delay is checked', async () => {
    await expect(startListener({ greetingDelayMs: -1 })).rejects.toThrow(/greetingDelayMs/);
  });
});
