// DNSSEC for tests: zones signed with ldns-signzone and served by a private nsd (the authoritative
// side), and a private unbound that validates them against their keys (the resolver a DANE client
// trusts). Both listen on loopback ports; nothing else is asked, nothing is cached between answers.

import { execFileSync } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Daemon, findBinary, startDaemon } from './daemon.js';
import type { DnsRecordSet } from './dns.js';
import { freePort } from './port.js';

/** One TLSA record (RFC 6698): usage, selector, matching type and the association data in hex. */
export interface TlsaRecordData {
  usage: number;
  selector: number;
  matchingType: number;
  data: string;
}

/** The records of one name in a signed (or unsigned) test zone. */
export interface ZoneRecordSet extends Omit<DnsRecordSet, 'PTR'> {
  TLSA?: TlsaRecordData[];
}

/** A test zone: its apex and its names (every name at or below the apex, no trailing dot). */
export interface TestZone {
  /** The apex, e.g. 'dane.test'. */
  name: string;
  records: Record<string, ZoneRecordSet>;
  /** Sign the zone and make the resolver trust its key (default true). False: an insecure zone. */
  signed?: boolean;
  /**
   * RRsets whose signatures are spoiled after signing, e.g. `{ name: '_25._tcp.mx.dane.test', type: 'TLSA' }`:
   * a validating resolver answers SERVFAIL for them (bogus), while the rest of the zone stays secure.
   */
  bogus?: { name: string; type: string }[];
}

/** Running nsd with the test zones. */
export interface TestAuthority {
  port: number;
  /** '127.0.0.1:PORT' */
  server: string;
  /** Each signed zone's key as a DS record (presentation format), for a resolver's trust anchors. */
  trustAnchors: string[];
  zones: string[];
  /** Replaces a zone's records (same keys), re-signs it and waits until nsd serves the new version. */
  update(zone: TestZone): Promise<void>;
  stop(): Promise<void>;
}

/** Running unbound validating the authority's zones. */
export interface TestResolver {
  port: number;
  /** '127.0.0.1:PORT', for a client that trusts this resolver's AD bit. */
  server: string;
  stop(): Promise<void>;
}

const NEEDS =
  "DNSSEC test servers need Debian's nsd, ldnsutils and unbound (apt-get install nsd ldnsutils unbound)";
const START_TIMEOUT_MS = 15_000;

/** True when nsd, ldns-signzone, ldns-keygen and unbound are installed. */
export function dnssecAvailable(): boolean {
  return ['nsd', 'ldns-signzone', 'ldns-keygen', 'ldns-key2ds', 'unbound'].every(
    (name) => findBinary(name) !== undefined,
  );
}

function binary(name: string): string {
  const found = findBinary(name);
  if (found === undefined) throw new Error(`${name} not found: ${NEEDS}`);
  return found;
}

interface ZoneState {
  zone: TestZone;
  serial: number;
  /** Key file bases (without .key/.private): KSK then ZSK. */
  keys?: { ksk: string; zsk: string };
}

/** Signs `zones` and serves them from a private nsd on a free port of 127.0.0.1. */
export async function startSignedZones(zones: TestZone[]): Promise<TestAuthority> {
  const dir = mkdtempSync(join(tmpdir(), 'tern-nsd-'));
  const states = new Map<string, ZoneState>();
  const trustAnchors: string[] = [];
  try {
    for (const zone of zones) {
      const state: ZoneState = { zone, serial: 1 };
      if (zone.signed !== false) {
        state.keys = makeKeys(dir, zone.name);
        trustAnchors.push(dsOf(dir, state.keys.ksk));
      }
      writeZone(dir, state);
      states.set(apex(zone.name), state);
    }
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  const started = await startDnsDaemon('nsd', dir, [...states.keys()][0], (port) =>
    nsdConfig(dir, port, [...states.values()]),
  );
  let running = started.daemon;
  const port = started.port;
  return {
    port,
    server: `127.0.0.1:${port}`,
    trustAnchors,
    zones: [...states.keys()],
    async update(zone: TestZone): Promise<void> {
      const state = states.get(apex(zone.name));
      if (!state) throw new Error(`startSignedZones: ${zone.name} is not one of the zones served`);
      if ((zone.signed !== false) !== (state.keys !== undefined)) {
        throw new Error(`startSignedZones: ${zone.name} cannot change between signed and unsigned`);
      }
      state.zone = zone;
      state.serial++;
      writeZone(dir, state);
      // A restart, not SIGHUP: after a reload nsd's old server process may still answer for a while
      // with the old zone, and a test must see the new one from its very next query.
      await running.stop();
      running = (
        await startDnsDaemon('nsd', dir, zone.name, () => nsdConfig(dir, port, [...states.values()]), {
          port,
          keepDir: true,
        })
      ).daemon;
      if ((await soaSerial(port, zone.name)) !== state.serial) {
        throw new Error(`nsd did not serve serial ${state.serial} of ${zone.name} after a restart`);
      }
    },
    async stop(): Promise<void> {
      await running.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts a private unbound on a free port of 127.0.0.1 that resolves the authority's zones (stub
 * zones, nothing else) and validates them with its trust anchors. No cache: each answer reflects the
 * zone as it is now. Unsigned zones come back insecure (no AD bit), spoiled signatures as SERVFAIL.
 */
export async function startValidatingResolver(authority: TestAuthority): Promise<TestResolver> {
  const dir = mkdtempSync(join(tmpdir(), 'tern-unbound-'));
  const started = await startDnsDaemon('unbound', dir, authority.zones[0], (port) =>
    unboundConfig(dir, port, authority),
  );
  const { daemon: running, port } = started;
  return {
    port,
    server: `127.0.0.1:${port}`,
    async stop(): Promise<void> {
      await running.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts nsd or unbound (`-d -c <dir>/<name>.conf`) on a free port, ready once it answers the SOA of
 * `zone`. freePort() checks TCP only and both need UDP too: a port taken meanwhile is tried again.
 * When it cannot start, `dir` is removed and the process's own words are thrown.
 */
async function startDnsDaemon(
  name: 'nsd' | 'unbound',
  dir: string,
  zone: string | undefined,
  config: (port: number) => string,
  again?: { port: number; keepDir: true },
): Promise<{ daemon: Daemon; port: number }> {
  const path = join(dir, `${name}.conf`);
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    // A restart keeps its port (the resolver points at it); the kernel may hold it a moment longer.
    const port = again?.port ?? (await freePort());
    writeFileSync(path, config(port));
    try {
      const daemon = await startDaemon({
        name,
        binary: binary(name),
        args: ['-d', '-c', path],
        cwd: dir,
        startTimeoutMs: START_TIMEOUT_MS,
        ready: async () => zone === undefined || (await soaSerial(port, zone)) !== undefined,
      });
      return { daemon, port };
    } catch (error) {
      lastError = error;
      if (!/address already in use|could not bind|can't bind|could not open ports/i.test(String(error)))
        break;
    }
  }
  throw lastError;
}

function apex(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function makeKeys(dir: string, zone: string): { ksk: string; zsk: string } {
  const keygen = binary('ldns-keygen');
  const run = (args: string[]): string =>
    execFileSync(keygen, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
      .toString()
      .trim();
  // ECDSA P-256 (algorithm 13): small, fast, and what unbound validates by default.
  const ksk = run(['-a', 'ECDSAP256SHA256', '-k', apex(zone)]);
  const zsk = run(['-a', 'ECDSAP256SHA256', apex(zone)]);
  return { ksk: join(dir, ksk), zsk: join(dir, zsk) };
}

function dsOf(dir: string, ksk: string): string {
  const ds = execFileSync(binary('ldns-key2ds'), ['-n', '-2', `${ksk}.key`], { cwd: dir })
    .toString()
    .trim();
  return ds.replace(/\s+/g, ' ');
}

/** Writes the zone file (and its signed form), spoiling the signatures the zone asks to be bogus. */
function writeZone(dir: string, state: ZoneState): void {
  const zone = state.zone;
  const origin = apex(zone.name);
  const file = join(dir, `${origin}.zone`);
  writeFileSync(file, zoneText(origin, state.serial, zone.records));
  if (!state.keys) return;
  execFileSync(binary('ldns-signzone'), ['-f', `${file}.signed`, file, state.keys.ksk, state.keys.zsk], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  if (!zone.bogus || zone.bogus.length === 0) return;
  const spoil = new Set(zone.bogus.map((b) => `${apex(b.name)} ${b.type.toUpperCase()}`));
  const signed = readFileSync(`${file}.signed`, 'utf8')
    .split('\n')
    .map((line) => {
      const fields = line.split(/\s+/);
      // owner TTL IN RRSIG covered-type ... signature(base64, last field)
      if (fields[3] !== 'RRSIG' || !spoil.has(`${apex(fields[0] ?? '')} ${fields[4]}`)) return line;
      const signature = fields.at(-1) ?? '';
      const flipped = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
      return [...fields.slice(0, -1), flipped].join('\t');
    });
  writeFileSync(`${file}.signed`, signed.join('\n'));
}

function zoneText(origin: string, serial: number, records: Record<string, ZoneRecordSet>): string {
  const lines = [
    `$ORIGIN ${origin}.`,
    // Short TTLs: the resolver caches nothing anyway, and a test that changes a zone sees it at once.
    '$TTL 1',
    `@ IN SOA ns.${origin}. hostmaster.${origin}. ${serial} 3600 600 86400 1`,
    `@ IN NS ns.${origin}.`,
    `ns.${origin}. IN A 127.0.0.1`,
  ];
  for (const [rawName, set] of Object.entries(records)) {
    const name = apex(rawName);
    if (name !== origin && !name.endsWith(`.${origin}`)) {
      throw new Error(`startSignedZones: ${rawName} is not inside the zone ${origin}`);
    }
    const owner = `${name}.`;
    for (const address of set.A ?? []) lines.push(`${owner} IN A ${address}`);
    for (const address of set.AAAA ?? []) lines.push(`${owner} IN AAAA ${address}`);
    for (const { exchange, priority } of set.MX ?? []) {
      const target = exchange === '' || exchange === '.' ? '.' : `${apex(exchange)}.`;
      lines.push(`${owner} IN MX ${priority} ${target}`);
    }
    for (const text of set.TXT ?? []) lines.push(`${owner} IN TXT ${txtStrings(text)}`);
    if (set.CNAME !== undefined) lines.push(`${owner} IN CNAME ${apex(set.CNAME)}.`);
    for (const t of set.TLSA ?? []) {
      lines.push(`${owner} IN TLSA ${t.usage} ${t.selector} ${t.matchingType} ${t.data}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** TXT data as quoted character-strings of at most 255 bytes. */
function txtStrings(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  const parts: string[] = [];
  for (let start = 0; start < bytes.length || parts.length === 0; start += 255) {
    const chunk = [...bytes.subarray(start, start + 255)].map((byte) =>
      // Zone files are read byte by byte: anything but plain printable ASCII goes as \DDD.
      byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\${byte.toString().padStart(3, '0')}`,
    );
    parts.push(`"${chunk.join('')}"`);
  }
  return parts.join(' ');
}

function nsdConfig(dir: string, port: number, states: ZoneState[]): string {
  const zones = states.flatMap((state) => {
    const name = apex(state.zone.name);
    return ['zone:', `  name: "${name}"`, `  zonefile: "${name}.zone${state.keys ? '.signed' : ''}"`];
  });
  return [
    'server:',
    '  ip-address: 127.0.0.1',
    `  port: ${port}`,
    '  server-count: 1',
    '  username: ""',
    `  zonesdir: "${dir}"`,
    `  pidfile: "${join(dir, 'nsd.pid')}"`,
    '  database: ""',
    `  zonelistfile: "${join(dir, 'zone.list')}"`,
    `  xfrdfile: "${join(dir, 'xfrd.state')}"`,
    `  xfrdir: "${dir}"`,
    '  verbosity: 0',
    '  hide-version: yes',
    'remote-control:',
    '  control-enable: no',
    ...zones,
    '',
  ].join('\n');
}

function unboundConfig(dir: string, port: number, authority: TestAuthority): string {
  return [
    'server:',
    '  interface: 127.0.0.1',
    `  port: ${port}`,
    '  do-daemonize: no',
    '  username: ""',
    '  chroot: ""',
    `  directory: "${dir}"`,
    '  pidfile: ""',
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 0',
    '  val-log-level: 1',
    '  do-ip6: no',
    '  do-not-query-localhost: no',
    '  access-control: 127.0.0.0/8 allow',
    '  module-config: "validator iterator"',
    '  num-threads: 1',
    '  so-reuseport: no',
    '  outgoing-range: 64',
    '  num-queries-per-thread: 32',
    '  msg-cache-size: 1m',
    '  rrset-cache-size: 1m',
    '  key-cache-size: 1m',
    '  neg-cache-size: 1m',
    // Tests change zones between deliveries: nothing is kept, not even a bogus verdict.
    '  cache-max-ttl: 0',
    '  cache-max-negative-ttl: 0',
    '  val-bogus-ttl: 0',
    '  aggressive-nsec: no',
    '  trust-anchor-signaling: no',
    '  harden-dnssec-stripped: yes',
    // unbound answers names under test. itself (RFC 6761) unless told not to.
    '  local-zone: "test." nodefault',
    ...authority.trustAnchors.map((ds) => `  trust-anchor: "${ds}"`),
    ...authority.zones.flatMap((zone) => [
      'stub-zone:',
      `  name: "${zone}."`,
      `  stub-addr: 127.0.0.1@${authority.port}`,
    ]),
    '',
  ].join('\n');
}

/** The SOA serial `port` answers for `zone`, or undefined when it does not answer (yet). */
async function soaSerial(port: number, zone: string): Promise<number | undefined> {
  const resolver = new Resolver({ timeout: 500, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  try {
    return (await resolver.resolveSoa(zone)).serial;
  } catch {
    return undefined;
  } finally {
    resolver.cancel();
  }
}
