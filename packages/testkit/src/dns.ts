// An authoritative test DNS server (dns2) on 127.0.0.1, UDP and TCP on one port, answering from a
// table the test controls. Point node's dns.promises.Resolver at it with setServers([dns.server]).
import type { RemoteInfo } from 'node:dgram';
import type { EventEmitter } from 'node:events';
import { isIPv4, isIPv6, type Socket } from 'node:net';
import dns2 from 'dns2';
import { freePort, isAddressInUse } from './port.js';

const { Packet, TCPServer, UDPServer } = dns2;
type Packet = dns2.Packet;
type Resource = dns2.Packet.Resource;

/** The records of one name. */
export interface DnsRecordSet {
  A?: string[];
  AAAA?: string[];
  /** Null MX (RFC 7505): `[{ exchange: '.', priority: 0 }]` (or exchange ''). */
  MX?: { exchange: string; priority: number }[];
  /** Each string is one TXT record; strings over 255 bytes are sent as several character-strings. */
  TXT?: string[];
  PTR?: string[];
  CNAME?: string;
}

/** Name (case-insensitive, no trailing dot) → its records. */
export type DnsRecords = Record<string, DnsRecordSet>;

/** One question the server was asked. */
export interface DnsQuery {
  /** Lower case, without the trailing dot. */
  name: string;
  /** 'A', 'MX', ... or 'TYPE<n>' for types dns2 has no name for. */
  type: string;
  transport: 'udp' | 'tcp';
}

/** A running test DNS server. */
export interface TestDns {
  host: '127.0.0.1';
  port: number;
  /** '127.0.0.1:PORT', for dns.Resolver#setServers. */
  server: string;
  /** Replaces the records of `name`. */
  set(name: string, recordSet: DnsRecordSet): void;
  /** Removes `name` (it answers NXDOMAIN again unless a name below it exists). */
  remove(name: string): void;
  /** Makes `name` answer SERVFAIL (or stop doing so with on = false). */
  servfail(name: string, on?: boolean): void;
  stop(): Promise<void>;
  /** Every question received, in order. */
  queries: DnsQuery[];
}

// TTL 0 by default: resolvers may keep answers for their TTL, and tests change records between lookups.
const DEFAULT_TTL = 0;
const MAX_CNAME_CHAIN = 8;
const TYPE_NAMES = new Map<number, string>(Object.entries(Packet.TYPE).map(([name, code]) => [code, name]));
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3 } as const;

/**
 * Starts an authoritative DNS server answering from `records` on a free port of 127.0.0.1; every
 * record has TTL `options.ttl` (seconds, default 0: not to be kept).
 */
export async function startDnsServer(
  records: DnsRecords = {},
  options: { readonly ttl?: number } = {},
): Promise<TestDns> {
  const ttl = options.ttl ?? DEFAULT_TTL;
  const table = new Map<string, DnsRecordSet>();
  const failing = new Set<string>();
  const queries: DnsQuery[] = [];

  const set = (name: string, recordSet: DnsRecordSet): void => {
    const key = normalizeName(name);
    checkEncodable(key, recordSet);
    table.set(key, structuredClone(recordSet));
  };
  for (const [name, recordSet] of Object.entries(records)) set(name, recordSet);

  const respond = (request: Packet, transport: DnsQuery['transport']): Packet => {
    const response = Packet.createResponseFromRequest(request);
    response.header.aa = 1;
    const question = request.questions[0];
    if (request.questions.length !== 1 || question === undefined) {
      response.header.rcode = RCODE.FORMERR;
      return response;
    }
    const type = TYPE_NAMES.get(question.type) ?? `TYPE${question.type}`;
    queries.push({ name: normalizeName(question.name), type, transport });
    const { rcode, answers } = lookup(table, failing, question.name, type, ttl);
    response.header.rcode = rcode;
    response.answers = answers;
    // Echo EDNS so the client keeps its larger UDP budget; dns2 truncates (TC=1) past it.
    if (request.additionals.some((record) => record?.type === Packet.TYPE.EDNS)) {
      response.additionals = [{ ...Packet.Resource.EDNS([]), name: '' } as Resource];
    }
    return response;
  };

  const answer = (
    request: Packet,
    send: (response: Packet) => Promise<Buffer>,
    transport: DnsQuery['transport'],
  ): void => {
    let response: Packet;
    try {
      response = respond(request, transport);
    } catch {
      // A bug here must still answer, or the client only sees a timeout.
      response = Packet.createResponseFromRequest(request);
      response.header.rcode = RCODE.SERVFAIL;
    }
    send(response).catch(() => {});
  };

  const { udp, tcp, port } = await bindBoth();
  const sockets = new Set<Socket>();
  udp.on('request', (request: Packet, send: (r: Packet) => Promise<Buffer>, _client: RemoteInfo) =>
    answer(request, send, 'udp'),
  );
  tcp.on('request', (request: Packet, send: (r: Packet) => Promise<Buffer>) => answer(request, send, 'tcp'));
  tcp.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  udp.on('error', () => {});
  tcp.on('error', () => {});

  return {
    host: '127.0.0.1',
    port,
    server: `127.0.0.1:${port}`,
    set,
    remove(name: string): void {
      table.delete(normalizeName(name));
    },
    servfail(name: string, on = true): void {
      if (on) failing.add(normalizeName(name));
      else failing.delete(normalizeName(name));
    },
    async stop(): Promise<void> {
      // c-ares keeps TCP connections open; close() alone would wait for dns2's idle timeout.
      for (const socket of sockets) socket.destroy();
      await Promise.all([
        new Promise<void>((resolve) => tcp.close(() => resolve())),
        new Promise<void>((resolve) => udp.close(() => resolve())),
      ]);
    },
    queries,
  };
}

/**
 * The reverse-lookup name of an IP address: '1.2.3.4' → '4.3.2.1.in-addr.arpa', IPv6 → nibbles under
 * ip6.arpa. Use it as the key of PTR records.
 */
export function reverseName(ip: string): string {
  if (isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  if (isIPv6(ip)) {
    const hex = ipv6Groups(ip)
      .map((group) => group.padStart(4, '0'))
      .join('');
    return `${[...hex].reverse().join('.')}.ip6.arpa`;
  }
  throw new Error(`reverseName: not an IP address: ${ip}`);
}

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

interface Lookup {
  rcode: number;
  answers: Resource[];
}

function lookup(
  table: Map<string, DnsRecordSet>,
  failing: Set<string>,
  asked: string,
  type: string,
  ttl: number,
): Lookup {
  const answers: Resource[] = [];
  let owner = asked.replace(/\.$/, '');
  for (let depth = 0; depth < MAX_CNAME_CHAIN; depth++) {
    const name = normalizeName(owner);
    if (failing.has(name)) return { rcode: RCODE.SERVFAIL, answers: [] };
    const recordSet = table.get(name);
    if (recordSet === undefined) {
      // Past a CNAME the target is outside our zone: the chain so far is the answer.
      if (answers.length > 0) break;
      return { rcode: hasNameBelow(table, name) ? RCODE.NOERROR : RCODE.NXDOMAIN, answers };
    }
    const own = resources(owner, recordSet, type, ttl);
    if (own.length > 0 || recordSet.CNAME === undefined || type === 'CNAME') {
      answers.push(...own);
      break;
    }
    answers.push(...resources(owner, recordSet, 'CNAME', ttl));
    owner = recordSet.CNAME.replace(/\.$/, '');
  }
  return { rcode: RCODE.NOERROR, answers };
}

/** An empty non-terminal (a name with records only below it) exists: NODATA, not NXDOMAIN. */
function hasNameBelow(table: Map<string, DnsRecordSet>, name: string): boolean {
  const suffix = `.${name}`;
  for (const key of table.keys()) if (key.endsWith(suffix)) return true;
  return false;
}

function resources(owner: string, recordSet: DnsRecordSet, type: string, ttl: number): Resource[] {
  const base = { name: owner, class: Packet.CLASS.IN, ttl };
  const out: Resource[] = [];
  const want = (t: string): boolean => type === t || type === 'ANY';
  if (want('A')) {
    for (const address of recordSet.A ?? []) out.push(resource({ ...base, type: Packet.TYPE.A, address }));
  }
  if (want('AAAA')) {
    for (const address of recordSet.AAAA ?? []) {
      // dns2's own IPv6 parser mishandles embedded IPv4 and some '::' forms; give it all 8 groups.
      out.push(resource({ ...base, type: Packet.TYPE.AAAA, address: expandIPv6(address) }));
    }
  }
  if (want('MX')) {
    for (const { exchange, priority } of recordSet.MX ?? []) {
      // '.' and '' both encode as the root name: the null MX of RFC 7505.
      out.push(resource({ ...base, type: Packet.TYPE.MX, exchange: exchange.replace(/\.$/, ''), priority }));
    }
  }
  if (want('TXT')) {
    for (const text of recordSet.TXT ?? []) {
      // dns2 writes a character-string's length in one byte without checking it: chunk here.
      out.push(resource({ ...base, type: Packet.TYPE.TXT, data: txtChunks(text) as unknown as string[] }));
    }
  }
  if (want('PTR')) {
    for (const domain of recordSet.PTR ?? []) out.push(resource({ ...base, type: Packet.TYPE.PTR, domain }));
  }
  if (want('CNAME') && recordSet.CNAME !== undefined) {
    out.push(resource({ ...base, type: Packet.TYPE.CNAME, domain: recordSet.CNAME }));
  }
  return out;
}

function resource(fields: Partial<Resource>): Resource {
  return new Packet.Resource(fields);
}

/** Splits a TXT string into character-strings of at most 255 bytes, never inside a UTF-8 sequence. */
function txtChunks(text: string): Buffer[] {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length === 0) return [bytes];
  const chunks: Buffer[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(start + 255, bytes.length);
    // Back off from continuation bytes (10xxxxxx) so each chunk decodes on its own.
    while (end < bytes.length && end > start && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
    chunks.push(bytes.subarray(start, end));
    start = end;
  }
  return chunks;
}

function ipv6Groups(address: string): string[] {
  let text = address;
  const tail: string[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1] !== undefined) {
    const [a = 0, b = 0, c = 0, d = 0] = v4[1].split('.').map(Number);
    tail.push(((a << 8) | b).toString(16), ((c << 8) | d).toString(16));
    text = text.slice(0, -v4[1].length);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const [head = '', rest] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const all = [...right, ...tail];
  const missing = 8 - left.length - all.length;
  const groups = rest === undefined ? [...left, ...all] : [...left, ...Array(missing).fill('0'), ...all];
  if (groups.length !== 8) throw new Error(`not an IPv6 address: ${address}`);
  return groups;
}

function expandIPv6(address: string): string {
  if (!isIPv6(address)) throw new Error(`startDnsServer: AAAA record is not an IPv6 address: ${address}`);
  return ipv6Groups(address)
    .map((group) => group.padStart(4, '0'))
    .join(':');
}

/** Fails at set() time, with the name, rather than with a silent SERVFAIL at query time. */
function checkEncodable(name: string, recordSet: DnsRecordSet): void {
  for (const address of recordSet.A ?? []) {
    if (!isIPv4(address))
      throw new Error(`startDnsServer: ${name}: A record is not an IPv4 address: ${address}`);
  }
  try {
    const probe = new Packet();
    probe.answers = resources(name, recordSet, 'ANY', DEFAULT_TTL);
    probe.toBuffer();
  } catch (error) {
    throw new Error(`startDnsServer: ${name}: records cannot be encoded: ${(error as Error).message}`);
  }
}

async function bindBoth(): Promise<{ udp: dns2.UDPServer; tcp: dns2.TCPServer; port: number }> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = await freePort();
    const tcp = new TCPServer();
    try {
      await bound(tcp, (done) => tcp.listen(port, '127.0.0.1', done));
    } catch (error) {
      lastError = error;
      if (isAddressInUse(error)) continue;
      throw error;
    }
    const udp = new UDPServer({ type: 'udp4' });
    try {
      await bound(udp, (done) => udp.bind(port, '127.0.0.1', done));
      return { udp, tcp, port };
    } catch (error) {
      lastError = error;
      try {
        udp.close();
      } catch {}
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      if (isAddressInUse(error)) continue;
      throw error;
    }
  }
  throw new Error(`startDnsServer: no port free for both UDP and TCP: ${(lastError as Error)?.message}`);
}

/** Runs a listen/bind and settles on its callback or its first 'error'. */
function bound(target: EventEmitter, start: (done: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    target.once('error', reject);
    start(() => {
      target.removeListener('error', reject);
      resolve();
    });
  });
}
