import { describe, expect, it } from 'vitest';
import { sessionId } from '../src/session-id.js';

describe('sessionId', () => {
  it('gives 16 base-32 digits, as smtp-server does, and no two alike across pool refills', () => {
    const ids = Array.from({ length: 2000 }, () => sessionId());
    for (const id of ids) expect(id).toMatch(/^[0-9a-v]{16}$/);
    expect(new Set(ids).size).toBe(ids.length);
    // Every digit position varies (no fixed prefix or counter): the ids are random throughout.
    for (let i = 0; i < 16; i++) expect(new Set(ids.map((id) => id[i])).size).toBeGreaterThan(16);
  });
});
