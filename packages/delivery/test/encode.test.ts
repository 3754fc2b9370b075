import { describe, expect, it } from 'vitest';
import { DataEncoder, encodeData, hasEightBitBytes, isNonAscii } from '../src/encode.js';

const wire = (...parts: string[]): string =>
  Buffer.concat(encodeData(parts.map((p) => Buffer.from(p, 'latin1'))).chunks).toString('latin1');

describe('encodeData', () => {
  it('doubles a dot at the start of every line, including the first', () => {
    expect(wire('.first\r\nmid . dot\r\n.\r\n..two\r\n')).toBe(
      '..first\r\nmid . dot\r\n..\r\n...two\r\n.\r\n',
    );
  });

  it('turns bare LF and bare CR into CRLF and keeps CRLF as it is', () => {
    expect(wire('a\nb\rc\r\nd\n')).toBe('a\r\nb\r\nc\r\nd\r\n.\r\n');
  });

  it('treats a line break as a line start for dot-stuffing whatever its form', () => {
    expect(wire('a\n.b\r.c')).toBe('a\r\n..b\r\n..c\r\n.\r\n');
  });

  it('handles a CRLF and a dot split across chunks', () => {
    expect(wire('a\r', '\n', '.', 'b\r')).toBe('a\r\n..b\r\n.\r\n');
  });

  it('ends an unterminated last line before the terminator', () => {
    expect(wire('no newline at the end')).toBe('no newline at the end\r\n.\r\n');
  });

  it('sends only the terminator for an empty message', () => {
    expect(wire()).toBe('.\r\n');
  });

  it('counts the bytes it produces', () => {
    const encoded = encodeData([Buffer.from('.x\ny')]);
    expect(encoded.size).toBe(Buffer.concat(encoded.chunks).length);
    expect(encoded.size).toBe('..x\r\ny\r\n.\r\n'.length);
  });

  it('never produces a bare CR or LF for any mix of line breaks', () => {
    const encoder = new DataEncoder();
    const input = Buffer.from('\r\r\n\n\r.\n.\r\r.', 'latin1');
    const out = Buffer.concat([encoder.push(input), encoder.end()]).toString('latin1');
    expect(out.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    expect(out.endsWith('\r\n.\r\n')).toBe(true);
  });
});

describe('a chunk that needs no change', () => {
  it('goes out as the same buffer, not a copy', () => {
    const chunk = Buffer.from('Subject: hi\r\n\r\nmid . dot\r\n');
    const encoder = new DataEncoder();
    expect(encoder.push(chunk)).toBe(chunk);
    expect(encoder.end().toString()).toBe('.\r\n');
    expect(encoder.size).toBe(chunk.length);
  });

  it('is still changed where a line starts with a dot, a line break is bare or a CRLF is split', () => {
    const cases: [string[], string][] = [
      [['a\r\n', '.b\r\n'], 'a\r\n..b\r\n.\r\n'],
      [['a\r\n.b\r\n'], 'a\r\n..b\r\n.\r\n'],
      [['a\r', '\nb\r\n'], 'a\r\nb\r\n.\r\n'],
      [['a\r\nb\nc\r\n'], 'a\r\nb\r\nc\r\n.\r\n'],
      [['a\r\nb\rc\r\n'], 'a\r\nb\r\nc\r\n.\r\n'],
      [['a\r\n', '\n'], 'a\r\n\r\n.\r\n'],
      [['ab', '.c\r\n'], 'ab.c\r\n.\r\n'],
    ];
    for (const [parts, expected] of cases) expect(wire(...parts)).toBe(expected);
  });

  it('keeps dots as they are for BDAT', () => {
    const chunk = Buffer.from('a\r\n.b\r\n');
    expect(new DataEncoder({ dotStuffing: false }).push(chunk)).toBe(chunk);
  });
});

describe('what the encoder measures', () => {
  it('counts SIZE as RFC 1870 does: line ends as CRLF, no doubled dots, no final dot line', () => {
    const encoder = new DataEncoder();
    encoder.push(Buffer.from('.a\nb\r', 'latin1'));
    encoder.push(Buffer.from('\n.\r\nlast', 'latin1'));
    expect(encoder.size).toBe('.a\r\nb\r\n.\r\nlast'.length);
    encoder.end();
    // The line end added to an unended last line is sent, so it counts; the terminator does not.
    expect(encoder.size).toBe('.a\r\nb\r\n.\r\nlast\r\n'.length);
  });

  it('notes an 8-bit byte in any chunk', () => {
    const encoder = new DataEncoder();
    encoder.push(Buffer.from('plain\r\n'));
    expect(encoder.eightBit).toBe(false);
    encoder.push(Buffer.from('caf\u00e9\r\n', 'utf8'));
    encoder.push(Buffer.from('plain again\r\n'));
    expect(encoder.eightBit).toBe(true);
  });
});

describe('8-bit and non-ASCII detection', () => {
  it('finds a high byte in any chunk', () => {
    expect(hasEightBitBytes([Buffer.from('plain'), Buffer.from('caf\u00e9', 'utf8')])).toBe(true);
    expect(hasEightBitBytes([Buffer.from('plain ascii\r\n')])).toBe(false);
  });

  it('tells non-ASCII addresses apart', () => {
    expect(isNonAscii('j\u00f6rg@example.test')).toBe(true);
    expect(isNonAscii('joerg@example.test')).toBe(false);
  });
});
