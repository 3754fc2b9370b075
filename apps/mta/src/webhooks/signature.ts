// X-Tern-Signature, Stripe-style: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. The
// time in the signed text lets a receiver refuse replays older than it tolerates.
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-tern-signature';

/** The header value for `body`, signed at `now` (ms). */
export function signWebhook(secret: string, body: string, now: number = Date.now()): string {
  const t = Math.floor(now / 1000);
  const v1 = createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  return `t=${t},v1=${v1}`;
}

/**
 * Whether `header` signs `body` with `secret`, made within `toleranceSeconds` of `now`. What a
 * receiver does (the README shows the same in a few lines of its own).
 */
export function verifyWebhook(
  secret: string,
  body: string,
  header: string | undefined,
  toleranceSeconds = 300,
  now: number = Date.now(),
): boolean {
  const parts = new Map(
    (header ?? '').split(',').map((p) => {
      const i = p.indexOf('=');
      return [p.slice(0, i).trim(), p.slice(i + 1).trim()] as const;
    }),
  );
  const t = Number(parts.get('t'));
  const given = Buffer.from(parts.get('v1') ?? '', 'hex');
  if (!Number.isInteger(t) || Math.abs(now / 1000 - t) > toleranceSeconds) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}
