// DNS records as zone files write them, for the commands that print records to publish
// (`tern dkim keygen`, `tern dns`).

/** A TXT character-string holds at most 255 bytes (RFC 1035 §3.3); longer values are several. */
const MAX_CHARACTER_STRING = 255;

/**
 * A TXT value in zone-file form: quoted character-strings of at most 255 bytes each, which DNS
 * joins back into one value (`"v=DKIM1; k=rsa; p=MIIB..." "...AQAB"`).
 */
export function txtStrings(value: string): string {
  const bytes = Buffer.from(value, 'utf8');
  const strings: string[] = [];
  for (let start = 0; start < bytes.length || strings.length === 0; ) {
    let end = Math.min(start + MAX_CHARACTER_STRING, bytes.length);
    // Never split inside a UTF-8 sequence (continuation bytes are 10xxxxxx).
    while (end < bytes.length && end > start && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
    strings.push(bytes.subarray(start, end).toString('utf8'));
    start = end;
  }
  return strings.map((s) => `"${s.replace(/["\\]/g, '\\$&')}"`).join(' ');
}

/** The value of a TXT record as printed by txtStrings, joined again (for tests and for reading it back). */
export function joinTxtStrings(text: string): string {
  return [...text.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => (m[1] ?? '').replace(/\\(.)/g, '$1')).join('');
}

/** One resource record as a line of a zone file; `data` is already in presentation form. */
export function zoneLine(name: string, type: string, data: string): string {
  return `${name.replace(/\.?$/, '.')} IN ${type} ${data}`;
}
