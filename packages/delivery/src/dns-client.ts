// A small stub resolver that reports whether an answer was DNSSEC-validated: it asks configured
// validating resolvers (UDP, TCP when truncated) with the DO bit and trusts their AD bit. Node's own
// resolver hides that bit, and DANE (RFC 7672) and the security of MX answers depend on it.
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { isIPv6, connect as netConnect } from 'node:net';
import dnsPacket, { type DecodedPacket } from 'dns-packet';

/** A record type this client asks for. */
export type RecordType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'TLSA' | 'CNAME';

/** One answer record of the type asked for, its data as dns-packet decodes it. */
export interface AnswerRecord {
  readonly name: string;
  readonly type: RecordType;
  readonly data: unknown;
  /** Seconds the answer may be kept. */
  readonly ttl: number;
}

/**
 * What a resolver said. `secure` is its AD bit: the answer (or the proof that there is none) was
 * validated. SERVFAIL is what a validating resolver says for bogus data, so it is `temporary`, as is
 * every timeout or unreachable server.
 */
export type DnsAnswer =
  | { readonly kind: 'records'; readonly records: readonly AnswerRecord[]; readonly secure: boolean }
  | { readonly kind: 'nxdomain' | 'nodata'; readonly secure: boolean }
  | { readonly kind: 'temporary'; readonly code: string };

export interface DnsClientOptions {
  /** Resolvers as 'ip' or 'ip:port' ('[v6]:port' for IPv6 with a port). */
  readonly servers: readonly string[];
  /** Per-try timeout in ms (default 5000). */
  readonly timeoutMs?: number;
  /** Tries per server (default 2). */
  readonly tries?: number;
}

interface Server {
  readonly host: string;
  readonly port: number;
}

// RFC 9715 / DNS flag day 2020: 1232 bytes fits every path without fragmentation.
const UDP_PAYLOAD = 1232;
const RCODE_NOERROR = 0;
const RCODE_NXDOMAIN = 3;

/** Queries validating resolvers and reports each answer with its DNSSEC status. */
export class DnsClient {
  readonly #servers: readonly Server[];
  readonly #timeoutMs: number;
  readonly #tries: number;

  constructor(options: DnsClientOptions) {
    if (options.servers.length === 0) throw new TypeError('DnsClient: at least one server is needed');
    this.#servers = options.servers.map(parseServer);
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#tries = options.tries ?? 2;
  }

  /** Asks for `type` records of `name`, following a CNAME chain in the answer. */
  async query(name: string, type: RecordType): Promise<DnsAnswer> {
    const qname = name.toLowerCase().replace(/\.$/, '');
    let last: DnsAnswer = { kind: 'temporary', code: 'ETIMEOUT' };
    for (let attempt = 0; attempt < this.#tries; attempt++) {
      for (const server of this.#servers) {
        last = await this.#ask(server, qname, type);
        // A definite answer (or a validator's SERVFAIL) ends the search; a timeout tries the next server.
        if (last.kind !== 'temporary' || last.code === 'ESERVFAIL') return last;
      }
    }
    return last;
  }

  async #ask(server: Server, qname: string, type: RecordType): Promise<DnsAnswer> {
    const id = randomInt(0, 0x10000);
    const query = dnsPacket.encode({
      type: 'query',
      id,
      // AD in a query asks for the AD bit in the answer (RFC 6840 §5.7); DO below asks for DNSSEC.
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
      questions: [{ type, name: qname, class: 'IN' }],
      additionals: [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: UDP_PAYLOAD,
          extendedRcode: 0,
          ednsVersion: 0,
          flags: dnsPacket.DNSSEC_OK,
          flag_do: true,
          options: [],
        },
      ],
    });
    let response: Buffer;
    try {
      response = await this.#udp(server, query, id);
      let packet = decode(response, id, qname, type);
      if (packet?.flag_tc) {
        response = await this.#tcp(server, query);
        packet = decode(response, id, qname, type);
      }
      if (!packet) return { kind: 'temporary', code: 'EBADRESP' };
      return interpret(packet, qname, type);
    } catch (error) {
      return { kind: 'temporary', code: (error as NodeJS.ErrnoException).code ?? 'ETIMEOUT' };
    }
  }

  #udp(server: Server, query: Buffer, id: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const socket = createSocket(isIPv6(server.host) ? 'udp6' : 'udp4');
      const timer = setTimeout(() => done(timeout()), this.#timeoutMs);
      const done = (error?: Error, message?: Buffer): void => {
        clearTimeout(timer);
        socket.close();
        if (error) reject(error);
        else resolve(message as Buffer);
      };
      socket.on('message', (message, from) => {
        // Only the server asked, only the id we sent: anything else is ignored, not trusted.
        if (from.port !== server.port || message.length < 2 || message.readUInt16BE(0) !== id) return;
        done(undefined, message);
      });
      socket.once('error', (error) => done(error));
      socket.connect(server.port, server.host, () => socket.send(query));
    });
  }

  #tcp(server: Server, query: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host: server.host, port: server.port });
      let received = Buffer.alloc(0);
      const timer = setTimeout(() => done(timeout()), this.#timeoutMs);
      const done = (error?: Error, message?: Buffer): void => {
        clearTimeout(timer);
        socket.destroy();
        if (error) reject(error);
        else resolve(message as Buffer);
      };
      socket.once('connect', () => {
        const length = Buffer.alloc(2);
        length.writeUInt16BE(query.length);
        socket.write(Buffer.concat([length, query]));
      });
      socket.on('data', (chunk: Buffer) => {
        // A message is at most 65535 bytes (its 2-byte length), so this buffer is bounded.
        received = Buffer.concat([received, chunk]);
        if (received.length < 2) return;
        const length = received.readUInt16BE(0);
        if (received.length >= 2 + length) done(undefined, received.subarray(2, 2 + length));
      });
      socket.once('error', (error) => done(error));
      socket.once('close', () => done(Object.assign(new Error('connection closed'), { code: 'ECONNRESET' })));
    });
  }
}

function timeout(): Error {
  return Object.assign(new Error('DNS query timed out'), { code: 'ETIMEOUT' });
}

/** The response to our question, or undefined for anything else (wrong id, question, or garbage). */
function decode(message: Buffer, id: number, qname: string, type: RecordType): DecodedPacket | undefined {
  let packet: DecodedPacket;
  try {
    packet = dnsPacket.decode(message);
  } catch {
    return undefined;
  }
  const question = packet.questions?.[0];
  if (packet.id !== id || packet.type !== 'response' || packet.questions?.length !== 1 || !question)
    return undefined;
  if (question.name.toLowerCase().replace(/\.$/, '') !== qname || question.type !== type) return undefined;
  return packet;
}

function interpret(packet: DecodedPacket, qname: string, type: RecordType): DnsAnswer {
  const rcode = (packet.flags ?? 0) & 0x0f;
  const secure = packet.flag_ad;
  if (rcode === RCODE_NXDOMAIN) return { kind: 'nxdomain', secure };
  if (rcode !== RCODE_NOERROR)
    return { kind: 'temporary', code: rcode === 2 ? 'ESERVFAIL' : `ERCODE${rcode}` };
  // Follow the CNAME chain from the name asked (a recursive resolver sends the whole chain).
  // OPT never appears among answers; every other record has `data`.
  const answers = (packet.answers ?? []) as { type: string; name: string; data?: unknown; ttl?: number }[];
  let owner = qname;
  for (let hops = 0; hops < 8 && type !== 'CNAME'; hops++) {
    const alias = answers.find((a) => a.type === 'CNAME' && sameName(a.name, owner));
    if (!alias) break;
    owner = String(alias.data).toLowerCase().replace(/\.$/, '');
  }
  const records = answers
    .filter((a) => a.type === type && sameName(a.name, owner))
    .map((a): AnswerRecord => ({ name: owner, type, data: a.data, ttl: a.ttl ?? 0 }));
  if (records.length === 0) return { kind: 'nodata', secure };
  return { kind: 'records', records, secure };
}

function sameName(a: string, b: string): boolean {
  return a.toLowerCase().replace(/\.$/, '') === b;
}

function parseServer(text: string): Server {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) return { host: bracketed[1] ?? '', port: Number(bracketed[2] ?? 53) };
  if (isIPv6(text)) return { host: text, port: 53 };
  const [host = '', port] = text.split(':');
  return { host, port: port === undefined ? 53 : Number(port) };
}
