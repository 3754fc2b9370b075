// What the hostile next hop of fuzz-next-hop.test.ts found, each as a plain test with a scripted
// server: the exact exchange, so the finding stays fixed whatever the fuzzer draws.
import { describe, expect, it } from 'vitest';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';
import { delivererFor, serveScripted, speakSmtp } from './helpers/scripted-server.js';

describe('a reply that comes before the final dot', () => {
  // Found with TERN_FUZZ_SEED=1070621034 TERN_FUZZ_ROUNDS=8: a 250 sent early (meant for a later
  // command) was taken as the answer to the message, which the server then refused.
  it('is not taken as the answer to the message: a 2xx then defers with 4.5.0', async () => {
    const server = await serveScripted(async (conn) => {
      conn.write('220 early.test ESMTP\r\n');
      for (let line = await conn.line(); line !== undefined; line = await conn.line()) {
        if (/^EHLO/i.test(line)) conn.write('250-early.test\r\n250 PIPELINING\r\n');
        else if (/^DATA/i.test(line)) {
          conn.write('354 go ahead\r\n');
          const data = conn.readData();
          // The 250 goes out while the message is still coming: it cannot answer the final dot.
          await new Promise((resolve) => conn.socket.once('data', resolve));
          conn.write('250 2.0.0 Ok, said early\r\n');
          await data;
          conn.write('451 4.3.0 Message not taken\r\n');
        } else if (/^QUIT/i.test(line)) {
          conn.write('221 bye\r\n');
          conn.socket.end();
        } else conn.write('250 2.0.0 Ok\r\n');
      }
    });
    // Large enough that the client is still sending when the early reply arrives.
    const big = `${SIMPLE_MESSAGE}${`${'z'.repeat(998)}\r\n`.repeat(4096)}`;
    const report = await delivererFor(server).deliver(makeJob(['a@x.test']), storedMessage(big, 64 * 1024));
    expect(report.recipients[0]).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.5.0' },
    });
    expect(report.recipients[0]?.reply.text).toContain('a positive reply before the end of the message');
  });

  it('still takes a refusal sent before the dot as the answer (a server that stops reading)', async () => {
    const server = await serveScripted(async (conn) => {
      conn.write('220 early.test ESMTP\r\n');
      for (let line = await conn.line(); line !== undefined; line = await conn.line()) {
        if (/^DATA/i.test(line)) {
          conn.write('354 go ahead\r\n');
          const data = conn.readData();
          await new Promise((resolve) => conn.socket.once('data', resolve));
          conn.write('552 5.3.4 Message too big for this system\r\n');
          await data;
        } else conn.write('250 2.0.0 Ok\r\n');
      }
    });
    const big = `${SIMPLE_MESSAGE}${`${'z'.repeat(998)}\r\n`.repeat(4096)}`;
    const report = await delivererFor(server).deliver(makeJob(['a@x.test']), storedMessage(big, 64 * 1024));
    expect(report.recipients[0]).toMatchObject({ result: 'failed', reply: { code: 552, enhanced: '5.3.4' } });
  });

  it('a server that answers only after the dot is unaffected', async () => {
    const server = await serveScripted((conn) => speakSmtp(conn));
    const report = await delivererFor(server).deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients[0]).toMatchObject({ result: 'delivered' });
  });
});

describe('a reply line with no space or hyphen after its code', () => {
  // Found by the glued-code move of fuzz-next-hop (seed 1): `2501 Delivered` was read as a 250 and
  // `5501 No such user` as a 550. RFC 5321 §4.2 puts SP or "-" (or the line end) after the code; a
  // line without is malformed, and a malformed line must not become a bounce or a delivery.
  const glued = async (rcptReply: string, dataReply = '250 2.0.0 Ok') => {
    const server = await serveScripted(async (conn) => {
      conn.write('220 glued.test ESMTP\r\n');
      for (let line = await conn.line(); line !== undefined; line = await conn.line()) {
        if (/^RCPT/i.test(line)) conn.write(`${rcptReply}\r\n`);
        else if (/^DATA/i.test(line)) {
          conn.write('354 go ahead\r\n');
          await conn.readData();
          conn.write(`${dataReply}\r\n`);
        } else conn.write('250 2.0.0 Ok\r\n');
      }
    });
    const report = await delivererFor(server).deliver(makeJob(['a@x.test']), storedMessage(SIMPLE_MESSAGE));
    return report.recipients[0];
  };

  it('is a protocol violation, not a bounce', async () => {
    expect(await glued('5501 No such user')).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.5.0' },
    });
  });

  it('is a protocol violation, not a delivery', async () => {
    expect(await glued('250 2.1.5 Ok', '250OK')).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.5.0' },
    });
  });

  it('a line with a CR inside it is a protocol violation too', async () => {
    expect(await glued('250 2.1.5 Ok\r550 5.1.1 no')).toMatchObject({
      result: 'deferred',
      reply: { code: 451, enhanced: '4.5.0' },
    });
  });

  it('a code alone on its line is still a reply', async () => {
    expect(await glued('250', '250')).toMatchObject({ result: 'delivered', reply: { code: 250 } });
  });
});
