// Reports as remote MTAs send them back to the bounce domain, by independent SMTP clients: the
// fixtures under fixtures/feedback (a Postfix DSN, a Yahoo-shaped ARF report, a bounce in prose)
// filled in and sent by swaks or Python's smtplib. Shared by feedback.test.ts and
// e2e-sending-platform.test.ts.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { run } from '@tern/testkit';

const FIXTURES = resolve(import.meta.dirname, 'fixtures/feedback');

/** A fixture with its {{KEY}} placeholders filled, with CRLF line ends as it goes on the wire. */
export function fixture(name: string, values: Record<string, string>): string {
  let text = readFileSync(join(FIXTURES, name), 'utf8');
  for (const [key, value] of Object.entries(values)) text = text.replaceAll(`{{${key}}}`, value);
  // As it goes on the wire: CRLF line ends (smtplib sends bytes as given).
  return text.replace(/\r?\n/g, '\r\n');
}

/** A report as a remote MTA sends it: from <>, by swaks (an independent client). Its transcript. */
export async function swaksFrom(port: number, to: string, data: string): Promise<string> {
  const result = await run(
    'swaks',
    ['--server', `127.0.0.1:${port}`, '--from', '<>', '--to', to, '--helo', 'mx.dest.test', '--data', '-'],
    { input: data },
  );
  return result.output;
}

/** A feedback-loop report by Python's smtplib (another independent client). Its exit status. */
export async function smtplibFrom(port: number, to: string, data: string): Promise<number | null> {
  const script = [
    'import smtplib, sys',
    "s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))",
    "s.sendmail('', [sys.argv[2]], sys.stdin.buffer.read())",
    's.quit()',
  ].join('\n');
  return (await run('python3', ['-c', script, String(port), to], { input: data })).status;
}
