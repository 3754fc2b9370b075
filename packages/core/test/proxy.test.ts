// Trusted networks (IPv4 and IPv6 CIDR), XCLIENT and the PROXY protocol: only clients in the
// trusted networks may use them.
import { definePlugin, type Plugin, reject } from '@tern/plugin-api';
import { afterAll, describe, expect, test } from 'vitest';
import { closeAll, dialFrom, LOCAL_DOMAIN, message, startListener } from './helpers.js';

afterAll(closeAll);

const RELAY_DENIED = '554 5.7.1 Relay access denied';

async function mail(
  client: { command(line: string): Promise<string>; send(b: string): void; read(): Promise<string> },
  to: string,
): Promise<string> {
  const from = await client.command('MAIL FROM:<a@example.org>');
  if (!from.startsWith('250')) return from;
  const rcpt = await client.command(`RCPT TO:<${to}>`);
  if (!rcpt.startsWith('250')) {
    await client.command('RSET');
    return rcpt;
  }
  await client.command('DATA');
  client.send(`${message()}.\r\n`);
  return client.read();
}

describe('trusted networks', () => {
  test('IPv4: a client inside a CIDR block relays, one outside does not', async () => {
    const h = await startListener({ trustedNetworks: ['127.0.0.2/31'] });
    const inside = await dialFrom(h.port, '127.0.0.3');
    await inside.read();
    await inside.command('EHLO a.example');
    expect(await mail(inside, 'x@remote.example')).toMatch(/^250 2\.0\.0 /);
    const outside = await dialFrom(h.port, '127.0.0.4');
    await outside.read();
    await outside.command('EHLO b.example');
    expect(await mail(outside, 'x@remote.example')).toBe(RELAY_DENIED);
  });

  test('IPv6: the same over ::1', async () => {
    const trusted = await startListener({ host: '::1', trustedNetworks: ['::1/128'] });
    const c = await dialFrom(trusted.port, '::1', '::1');
    await c.read();
    await c.command('EHLO a.example');
    expect(await mail(c, 'x@remote.example')).toMatch(/^250 2\.0\.0 /);
    expect(trusted.queue.raw(0).toString()).toMatch(/^Received: from a\.example \(\[IPv6:::1\]\)/);

    const untrusted = await startListener({
      host: '::1',
      trustedNetworks: ['2001:db8::/32', '127.0.0.1/32'],
    });
    const d = await dialFrom(untrusted.port, '::1', '::1');
    await d.read();
    await d.command('EHLO a.example');
    expect(await mail(d, 'x@remote.example')).toBe(RELAY_DENIED);
  });
});

describe('XCLIENT', () => {
  const xclientListener = (plugins: Plugin[] = []) =>
    startListener({ xclient: true, trustedNetworks: ['127.0.0.2/32'] }, { plugins });

  test('refused from an untrusted client, and not advertised to it', async () => {
    const h = await xclientListener();
    const c = await dialFrom(h.port, '127.0.0.1');
    await c.read();
    expect(await c.command('EHLO a.example')).not.toMatch(/XCLIENT/);
    expect(await c.command('XCLIENT ADDR=10.1.2.3 LOGIN=admin')).toBe('550 5.7.0 XCLIENT not allowed');
    expect(await mail(c, 'x@remote.example')).toBe(RELAY_DENIED);
  });

  test('not available at all when the listener does not enable it, even for trusted clients', async () => {
    const h = await startListener({ trustedNetworks: ['127.0.0.2/32'] });
    const c = await dialFrom(h.port, '127.0.0.2');
    await c.read();
    expect(await c.command('EHLO a.example')).not.toMatch(/XCLIENT/);
    expect(await c.command('XCLIENT ADDR=10.1.2.3')).toMatch(/^500 5\.5\.2 /);
  });

  test('a trusted proxy hands over a client: new greeting, connect hooks again, trust of the new address', async () => {
    const seen: string[] = [];
    const h = await xclientListener([
      definePlugin({
        name: 'seen',
        connect: (ctx) => {
          seen.push(`${ctx.session.remoteAddress} trusted=${ctx.session.trusted}`);
        },
      }),
    ]);
    const c = await dialFrom(h.port, '127.0.0.2');
    await c.read();
    expect(await c.command('EHLO proxy.example')).toMatch(/\n250[ -]XCLIENT /);
    expect(await c.command('XCLIENT ADDR=192.0.2.7 NAME=client.example.net')).toMatch(
      /^220 mx\.tern\.test ESMTP/,
    );
    expect(await c.command('EHLO client.example.net')).not.toMatch(/XCLIENT/);
    // the forwarded client is not trusted: no relay
    expect(await mail(c, 'x@remote.example')).toBe(RELAY_DENIED);
    expect(await mail(c, `user@${LOCAL_DOMAIN}`)).toMatch(/^250 2\.0\.0 /);
    expect(seen).toEqual(['127.0.0.2 trusted=true', '192.0.2.7 trusted=false']);
    const raw = h.queue.raw(0).toString();
    expect(raw).toMatch(/^Received: from client\.example\.net \(client\.example\.net \[192\.0\.2\.7\]\)/);
    expect(h.queue.messages[0]?.message.source?.remoteAddress).toBe('192.0.2.7');
    // a second XCLIENT cannot change the client again
    expect(await c.command('XCLIENT ADDR=192.0.2.8')).toMatch(/^550 5\.7\.0 /);
  });

  test('XCLIENT LOGIN authenticates the forwarded user, who may relay', async () => {
    const h = await xclientListener();
    const c = await dialFrom(h.port, '127.0.0.2');
    await c.read();
    await c.command('EHLO proxy.example');
    expect(await c.command('XCLIENT ADDR=192.0.2.7 LOGIN=alice')).toMatch(/^220 /);
    await c.command('EHLO client.example.net');
    expect(await mail(c, 'x@remote.example')).toMatch(/^250 2\.0\.0 /);
    expect(h.queue.messages[0]?.message.source?.user).toBe('alice');
    expect(h.queue.raw(0).toString()).toMatch(/with ESMTPA id/);
  });

  test('a forwarded client the connect hooks refuse gets the refusal instead of a greeting', async () => {
    const h = await xclientListener([
      definePlugin({
        name: 'blocklist',
        connect: (ctx) =>
          ctx.session.remoteAddress === '192.0.2.66' ? reject(554, '5.7.1', 'Listed') : undefined,
      }),
    ]);
    const c = await dialFrom(h.port, '127.0.0.2');
    await c.read();
    await c.command('EHLO proxy.example');
    expect(await c.command('XCLIENT ADDR=192.0.2.66')).toBe('554 5.7.1 Listed');
    await c.closed;
  });
});

describe('PROXY protocol', () => {
  const proxyHeader = 'PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n';

  test('a trusted client must send a PROXY header; the session then belongs to the proxied address', async () => {
    const seen: string[] = [];
    const h = await startListener(
      { proxy: true, trustedNetworks: ['127.0.0.2/32'] },
      {
        plugins: [
          definePlugin({ name: 'seen', connect: (ctx) => void seen.push(ctx.session.remoteAddress) }),
        ],
      },
    );
    const c = await dialFrom(h.port, '127.0.0.2');
    c.send(proxyHeader);
    expect(await c.read()).toMatch(/^220 /);
    await c.command('EHLO client.example');
    expect(await mail(c, 'x@remote.example')).toBe(RELAY_DENIED); // 198.51.100.7 is not trusted
    expect(await mail(c, `user@${LOCAL_DOMAIN}`)).toMatch(/^250 /);
    expect(seen).toEqual(['198.51.100.7']);
    expect(h.queue.raw(0).toString()).toMatch(/\(\[198\.51\.100\.7\]\)/);
  });

  test('an untrusted client is not asked for a header and cannot send one', async () => {
    const seen: string[] = [];
    const h = await startListener(
      { proxy: true, trustedNetworks: ['127.0.0.2/32'] },
      {
        plugins: [
          definePlugin({ name: 'seen', connect: (ctx) => void seen.push(ctx.session.remoteAddress) }),
        ],
      },
    );
    const c = await dialFrom(h.port, '127.0.0.1');
    expect(await c.read()).toMatch(/^220 /);
    expect(await c.command(proxyHeader.trimEnd())).toMatch(/^500 5\.5\.2 /);
    expect(seen).toEqual(['127.0.0.1']);
  });

  test('a trusted client that sends no valid header is dropped', async () => {
    const h = await startListener({ proxy: true, trustedNetworks: ['127.0.0.2/32'] });
    const c = await dialFrom(h.port, '127.0.0.2');
    c.send('EHLO sneaky.example\r\n');
    await c.closed;
    expect(h.listener.connections).toBe(0);
  });
});
