// `tern webhook list|test`: webhook endpoints over the admin API of a running tern: each one's
// pending events, back-off and last outcome; and a signed test event sent to one of them now.
import type { EndpointStatus, PostResult } from '../webhooks/dispatcher.js';
import { UsageProblem, withAdminClient } from './admin-client.js';
import type { WebhookCommand } from './queue-operations.js';

export interface WebhookValues {
  readonly admin?: string;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly config?: string;
  readonly json?: boolean;
}

export async function runWebhookCommand(
  command: WebhookCommand,
  values: WebhookValues,
  operands: readonly string[],
): Promise<number> {
  const out = (text: string): void => void process.stdout.write(`${text}\n`);
  return withAdminClient(values, `tern webhook ${command}`, async (client) => {
    if (command === 'list') {
      const { endpoints } = await client.get<{ endpoints: EndpointStatus[] }>('/api/webhooks');
      if (values.json) out(JSON.stringify(endpoints, null, 2));
      else if (endpoints.length === 0) out('no webhook endpoints (config.webhooks.endpoints is empty)');
      else for (const e of endpoints) out(formatEndpoint(e));
      return 0;
    }
    const name = operands[0];
    if (!name) throw new UsageProblem('tern webhook test needs the name of an endpoint');
    const result = await client.post<PostResult & { endpoint: string }>(
      `/api/webhooks/${encodeURIComponent(name)}/test`,
    );
    if (values.json) out(JSON.stringify(result, null, 2));
    else if (result.outcome === 'success')
      out(`${name}: test event accepted (HTTP ${result.status}, ${result.ms} ms)`);
    else out(`${name}: test event failed: ${result.error ?? result.outcome} (${result.ms} ms)`);
    return result.outcome === 'success' ? 0 : 1;
  });
}

function time(ms: number | undefined): string {
  return ms === undefined ? 'never' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** One endpoint as a few lines: health at a glance, then the details that explain it. */
export function formatEndpoint(e: EndpointStatus, now: number = Date.now()): string {
  const failing = e.attempts > 0;
  const lines = [
    `${e.name}  ${failing ? 'FAILING' : 'ok'}  ${e.pending} pending  ${e.url}`,
    `  events: ${e.events.join(', ')}`,
    `  last success: ${time(e.lastSuccessAt)}   last failure: ${time(e.lastFailureAt)}`,
  ];
  if (e.oldestAt !== undefined) lines.push(`  oldest pending since ${time(e.oldestAt)}`);
  if (failing) {
    const wait = Math.max(0, Math.ceil((e.nextAttemptAt - now) / 1000));
    lines.push(`  ${e.attempts} failed post(s) in a row; next try in ${wait} s`);
  }
  if (e.lastError !== undefined) lines.push(`  last error: ${e.lastError}`);
  return lines.join('\n');
}
