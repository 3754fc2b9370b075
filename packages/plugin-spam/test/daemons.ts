// Real scanner daemons for the client tests: a private rspamd and a private spamd, each on a free
// port with its own temp dir, started by the test and stopped by it. Plus a silent TCP peer (it
// accepts and never answers) for the timeout tests, and a hostile one (endless, trickled or
// oversized replies, a reader that stops reading) for the limits: they stand in for broken or
// malicious scanners, not for a protocol.
import { type ChildProcess, spawn } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  constants,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '@tern/testkit';

export interface Daemon {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** What the daemon printed, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

function findBinary(name: string, dirs: string[]): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...dirs]) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  throw new Error(
    `${name} not found: install Debian's ${name === 'spamd' ? 'spamd and spamassassin' : name} packages`,
  );
}

/** Starts a daemon in its own process group and waits until `ready`; stopping removes `dir`. */
async function runDaemon(
  name: string,
  binary: string,
  args: string[],
  dir: string,
  port: number,
  startTimeoutMs: number,
  ready: () => Promise<boolean>,
): Promise<Daemon> {
  const child = spawn(binary, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let log = '';
  const collect = (d: Buffer): void => {
    log += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const output = (): string => log;
  const stop = async (): Promise<void> => {
    await terminate(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${output()}`);
        return await ready();
      },
      startTimeoutMs,
      100,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { host: '127.0.0.1', port, output, stop };
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    // The daemons fork workers: signal the whole process group this test started.
    process.kill(-child.pid, 'SIGTERM');
  } catch {}
  const timer = setTimeout(() => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {}
  }, 5000);
  await exited;
  clearTimeout(timer);
}

const isRoot = process.getuid?.() === 0;

/** Lua rules the rspamd test relies on: one echoes the envelope rspamd received, one has a fixed score. */
const RSPAMD_LUA = `
rspamd_config:register_symbol({
  name = 'TERN_ENVELOPE',
  score = 0.0,
  group = 'tern',
  callback = function(task)
    local opts = {}
    local ip = task:get_from_ip()
    table.insert(opts, 'ip=' .. (ip and ip:is_valid() and ip:to_string() or ''))
    local from = task:get_from('smtp')
    table.insert(opts, 'from=' .. ((from and from[1] and from[1].addr) or ''))
    for _, rcpt in ipairs(task:get_recipients('smtp') or {}) do
      table.insert(opts, 'rcpt=' .. (rcpt.addr or ''))
    end
    table.insert(opts, 'helo=' .. (task:get_helo() or ''))
    table.insert(opts, 'user=' .. (task:get_user() or ''))
    task:insert_result('TERN_ENVELOPE', 1.0, opts)
  end
})
rspamd_config:register_symbol({
  name = 'TERN_TAIL',
  score = 0.0,
  group = 'tern',
  callback = function(task)
    -- The last bytes of the raw message: proves the whole message arrived, however long.
    local content = tostring(task:get_content() or '')
    if content:sub(-200):find('tern-tail-marker', 1, true) then
      task:insert_result('TERN_TAIL', 1.0, tostring(#content))
    end
  end
})
rspamd_config:register_symbol({
  name = 'TERN_MARKER',
  score = 7.5,
  group = 'tern',
  callback = function(task)
    local subject = task:get_header('Subject') or ''
    if subject:find('tern-marker', 1, true) then
      task:insert_result('TERN_MARKER', 1.0)
    end
  end
})
`;

/**
 * Starts rspamd's normal worker only (no controller, proxy or fuzzy), asking `dnsServer` for DNS.
 * Compiled regular expressions are cached in the temp dir across runs: the first start compiles
 * them (about 10 s), later ones take under a second.
 */
export async function startRspamd(dnsServer: string): Promise<Daemon> {
  const binary = findBinary('rspamd', ['/usr/bin', '/usr/sbin']);
  const dir = mkdtempSync(join(tmpdir(), 'tern-rspamd-'));
  const cache = join(tmpdir(), 'tern-rspamd-hs-cache');
  for (const sub of ['local', 'db', 'run']) mkdirSync(join(dir, sub));
  mkdirSync(cache, { recursive: true });
  const port = await freePort();
  writeFileSync(join(dir, 'local', 'rspamd.local.lua'), RSPAMD_LUA);
  writeFileSync(
    join(dir, 'rspamd.conf'),
    `.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  hs_cache_dir = "${cache}";
  dns { nameserver = ["${dnsServer}"]; timeout = 1s; retransmits = 1; }
}
logging { type = "console"; level = "notice"; }
worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  .include "$CONFDIR/worker-normal.inc"
  count = 1;
}
`,
  );
  const args = [
    '-f',
    '-c',
    join(dir, 'rspamd.conf'),
    '--var',
    `LOCAL_CONFDIR=${join(dir, 'local')}`,
    '--var',
    `DBDIR=${join(dir, 'db')}`,
    '--var',
    `RUNDIR=${join(dir, 'run')}`,
    '--var',
    `LOGDIR=${dir}`,
    // rspamd refuses to run its workers as root unless told to.
    ...(isRoot ? ['-i'] : []),
  ];
  return await runDaemon('rspamd', binary, args, dir, port, 90_000, async () => {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/ping`);
      return (await res.text()).trim() === 'pong';
    } catch {
      return false;
    }
  });
}

/**
 * Starts spamd with the distribution's rules, local tests only (-L), no user preferences (-x),
 * Bayes off, and one extra rule: TERN_MARKER (7.5 points) for a body containing "tern-marker".
 */
export async function startSpamd(): Promise<Daemon> {
  const binary = findBinary('spamd', ['/usr/sbin', '/usr/bin']);
  const dir = mkdtempSync(join(tmpdir(), 'tern-spamd-'));
  // spamd drops to nobody when started as root: it must be able to read its config.
  chmodSync(dir, 0o755);
  for (const file of readdirSync('/etc/spamassassin')) {
    if (file.endsWith('.pre')) copyFileSync(join('/etc/spamassassin', file), join(dir, file));
  }
  writeFileSync(
    join(dir, 'local.cf'),
    `required_score 5.0
use_bayes 0
bayes_auto_learn 0
body TERN_MARKER /tern-marker/
describe TERN_MARKER Marker used by the Tern tests
score TERN_MARKER 7.5
full TERN_TAIL /tern-tail-marker\\s*$/
describe TERN_TAIL The raw message ends with the tail marker: it arrived whole
score TERN_TAIL 0.001
`,
  );
  const port = await freePort();
  const args = [
    `--listen=127.0.0.1:${port}`,
    '--allowed-ips=127.0.0.1',
    '--local',
    '--nouser-config',
    '--max-children=2',
    '--min-children=1',
    `--siteconfigpath=${dir}`,
    `--pidfile=${join(dir, 'spamd.pid')}`,
    '--syslog=stderr',
    ...(isRoot ? ['--username=nobody'] : []),
  ];
  return await runDaemon('spamd', binary, args, dir, port, 60_000, async () =>
    /^SPAMD\/\S+ 0 PONG/.test(await spamdPing(port)),
  );
}

function spamdPing(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    socket.on('connect', () => socket.end('PING SPAMC/1.5\r\n\r\n'));
    socket.on('data', (d: Buffer) => {
      reply += d.toString();
    });
    socket.on('close', () => resolve(reply));
    socket.on('error', () => resolve(''));
  });
}

/** Listens on a free port of 127.0.0.1 and says which. */
async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** A TCP peer that accepts and reads but never answers: a hung scanner. */
export async function startSilentPeer(): Promise<{
  port: number;
  connections: () => number;
  stop(): Promise<void>;
}> {
  const sockets = new Set<Socket>();
  let count = 0;
  // allowHalfOpen: a client's FIN (spamc half-closes after the message) must not close our side.
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    count++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.resume();
  });
  return {
    port: await listen(server),
    connections: () => count,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** How a hostile scanner behaves once a request arrives. */
export type Hostility =
  /** Answers without end, as fast as the client reads (an HTTP chunked body, or SPAMD header lines). */
  | 'endless'
  /** Starts a valid-looking answer, then sends one byte every 50 ms for ever. */
  | 'trickle'
  /** rspamd only: announces a reply of 1 GiB in Content-Length, then sends nothing more. */
  | 'huge-length'
  /** Reads 64 KiB of the request, then stops reading (and never answers). */
  | 'stall'
  /** Reads the whole request (by its Content-Length) and answers correctly, keeping what it read. */
  | 'record';

export interface HostilePeer {
  readonly port: number;
  connections(): number;
  /** Connections the client has closed (or that broke). */
  closed(): number;
  /** Bytes written to clients. */
  sent(): number;
  /** What each connection sent before the peer answered or stopped reading. */
  requests(): Buffer[];
  stop(): Promise<void>;
}

const RSPAMD_REPLY = JSON.stringify({
  score: 1.5,
  required_score: 15,
  action: 'no action',
  symbols: { TERN_FAKE: {} },
});

/**
 * A fake scanner on real TCP that speaks just enough of rspamd's HTTP or spamd's SPAMC protocol to
 * be hostile in one way. Everything it sends is written as the socket drains, so an endless
 * answer is endless only for as long as the client keeps reading.
 */
export async function startHostilePeer(
  protocol: 'rspamd' | 'spamd',
  hostility: Hostility,
): Promise<HostilePeer> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const requests: Buffer[] = [];
  let connections = 0;
  let closed = 0;
  let sent = 0;
  const write = (socket: Socket, data: string | Buffer): boolean => {
    if (socket.destroyed) return false;
    sent += Buffer.byteLength(data);
    return socket.write(data);
  };
  const answerEndlessly = (socket: Socket): void => {
    const filler =
      protocol === 'rspamd' ? `4000\r\n${'x'.repeat(0x4000)}\r\n` : `X-Filler: ${'x'.repeat(1000)}\r\n`;
    write(
      socket,
      protocol === 'rspamd'
        ? 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n'
        : 'SPAMD/1.1 0 EX_OK\r\n',
    );
    const pump = (): void => {
      while (!socket.destroyed && write(socket, filler)) {}
    };
    socket.on('drain', pump);
    pump();
  };
  const answerByTheByte = (socket: Socket): void => {
    const text =
      protocol === 'rspamd'
        ? `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n${'{'.repeat(100_000)}`
        : `SPAMD/1.1 0 EX_OK\r\n${'X-Filler: x\r\n'.repeat(10_000)}`;
    let i = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || i >= text.length) return clearInterval(timer);
      write(socket, text[i++] ?? '');
    }, 50);
    timers.add(timer);
  };
  const answerCorrectly = (socket: Socket): void => {
    if (protocol === 'rspamd') {
      write(
        socket,
        `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${RSPAMD_REPLY.length}\r\nConnection: close\r\n\r\n${RSPAMD_REPLY}`,
      );
    } else {
      write(socket, 'SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: False ; 1.5 / 5.0\r\n\r\nTERN_FAKE');
    }
    socket.end();
  };

  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => {
      closed++;
      sockets.delete(socket);
    });
    let request = Buffer.alloc(0);
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      request = Buffer.concat([request, chunk]);
      if (answered) return;
      if (hostility === 'stall') {
        if (request.length >= 64 * 1024) {
          answered = true;
          requests.push(request);
          socket.pause();
        }
        return;
      }
      const headEnd = request.indexOf('\r\n\r\n');
      if (headEnd === -1) return;
      const length = Number(
        /content-length: *(\d+)/i.exec(request.subarray(0, headEnd).toString('latin1'))?.[1] ?? 0,
      );
      if (hostility === 'record' && request.length < headEnd + 4 + length) return;
      answered = true;
      requests.push(request);
      if (hostility === 'endless') answerEndlessly(socket);
      else if (hostility === 'trickle') answerByTheByte(socket);
      else if (hostility === 'huge-length')
        write(
          socket,
          'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{',
        );
      else answerCorrectly(socket);
    });
  });
  return {
    port: await listen(server),
    connections: () => connections,
    closed: () => closed,
    sent: () => sent,
    requests: () => requests,
    stop: async () => {
      for (const timer of timers) clearInterval(timer);
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
