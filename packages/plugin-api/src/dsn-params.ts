// The DSN extension's parameters (RFC 3461 §4) in one place for intake (checks what a client sent),
// the queue (writes notices) and delivery (passes them on). Envelopes hold ENVID and ORCPT decoded
// (smtp-server decodes xtext on the way in); they are encoded again only on the wire.

/** RFC 3461 §4.4: an ENVID is at most 100 characters (as xtext). */
export const MAX_ENVID_LENGTH = 100;
/** RFC 3461 §4.2: an ORCPT is at most 500 characters (as xtext, with its address type). */
export const MAX_ORCPT_LENGTH = 500;

// addr-type is an atom (RFC 3461 §4.2); `rfc822` and `utf-8` in practice.
const ADDR_TYPE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$/;
// What a decoded value may hold: printable US-ASCII (notices and logs carry it as it is).
const PRINTABLE = /^[\x20-\x7e]*$/;

/** Encodes text as xtext: '+', '=', controls, space and non-ASCII become `+XX` (of the UTF-8 bytes). */
export function encodeXtext(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out +=
      byte >= 0x21 && byte <= 0x7e && byte !== 0x2b && byte !== 0x3d
        ? String.fromCharCode(byte)
        : `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** What is wrong with a (decoded) ENVID, or undefined when it may be kept and passed on. */
export function envidProblem(envid: string): string | undefined {
  if (envid.length === 0) return 'ENVID is empty';
  if (!PRINTABLE.test(envid)) return 'ENVID must be printable US-ASCII (RFC 3461 section 4.4)';
  if (encodeXtext(envid).length > MAX_ENVID_LENGTH) {
    return `ENVID is longer than ${MAX_ENVID_LENGTH} characters (RFC 3461 section 4.4)`;
  }
  return undefined;
}

/** An ORCPT split at its first ';' into address type and address, or undefined when it has no type. */
export function splitOrcpt(orcpt: string): { type: string; address: string } | undefined {
  const semi = orcpt.indexOf(';');
  if (semi <= 0 || semi === orcpt.length - 1 || !ADDR_TYPE.test(orcpt.slice(0, semi))) return undefined;
  return { type: orcpt.slice(0, semi), address: orcpt.slice(semi + 1) };
}

/** What is wrong with a (decoded) ORCPT, `addr-type;address`, or undefined when it may be kept and passed on. */
export function orcptProblem(orcpt: string): string | undefined {
  const parts = splitOrcpt(orcpt);
  if (parts === undefined) return 'ORCPT must be addr-type;xtext (RFC 3461 section 4.2)';
  if (!PRINTABLE.test(parts.address)) return 'ORCPT must be printable US-ASCII (RFC 3461 section 4.2)';
  if (orcptParameter(parts).length > MAX_ORCPT_LENGTH + 'ORCPT='.length) {
    return `ORCPT is longer than ${MAX_ORCPT_LENGTH} characters (RFC 3461 section 4.2)`;
  }
  return undefined;
}

/** `ORCPT=rfc822;a+2Bb@x` as it goes on the wire, from its decoded parts. */
export function orcptParameter(parts: { type: string; address: string }): string {
  return `ORCPT=${parts.type};${encodeXtext(parts.address)}`;
}

/** An ORCPT as a notice's Original-Recipient shows it (RFC 3464 §2.3.1): `rfc822; a+b@x`. */
export function orcptForNotice(orcpt: string): string {
  const parts = splitOrcpt(orcpt);
  return parts === undefined ? `rfc822; ${orcpt}` : `${parts.type}; ${parts.address}`;
}
