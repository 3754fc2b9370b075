// mailauth's DKIM verifier as a second independent check, run in its own node process: vitest's
// workers add `--conditions import`, under which mailauth's require('nodemailer/lib/addressparser')
// gets nodemailer's ESM build and breaks. Reads a message on stdin; prints one JSON line.
// Usage: node verify_mailauth.mjs DNS_SERVER (127.0.0.1:PORT)
import { Resolver } from 'node:dns/promises';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';

const resolver = new Resolver();
resolver.setServers([process.argv[2]]);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const verdict = await dkimVerify(Buffer.concat(chunks), {
  resolver: (name, type) => resolver.resolve(name, type),
});
const results = verdict.results.map((r) => ({
  domain: r.signingDomain,
  selector: r.selector,
  algorithm: r.algo,
  result: r.status.result,
  comment: r.status.comment,
}));
process.stdout.write(`${JSON.stringify(results)}\n`);
