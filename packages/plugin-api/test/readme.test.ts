// The README is part of the API: every hook of HOOK_KINDS has a section in its reference, with its
// kind as the runner has it, and the tutorial's code is the code of files this suite runs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { HOOK_KINDS, type HookName, PLUGIN_META_KEYS } from '../src/index.js';

const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

/** The text of a `## ` section, up to the next one. */
function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  if (start === -1) throw new Error(`README.md has no section "## ${title}"`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end === -1 ? undefined : end);
}

/** The `### \`hook\`` subsections of the hook reference, by hook name. */
function hookSections(): Map<string, string> {
  const reference = section('Hook reference');
  const sections = new Map<string, string>();
  const parts = reference.split(/\n### `([^`]+)`\n/);
  for (let i = 1; i < parts.length; i += 2) sections.set(parts[i] as string, parts[i + 1] ?? '');
  return sections;
}

describe('the hook reference', () => {
  const sections = hookSections();

  test.each(Object.keys(HOOK_KINDS) as HookName[])('documents %s with its kind', (hook) => {
    const text = sections.get(hook);
    expect(text, `README.md: no "### \`${hook}\`" in the hook reference`).toBeDefined();
    expect(text).toContain(`Kind: **${HOOK_KINDS[hook]}**`);
  });

  test('documents no hook that does not exist', () => {
    expect([...sections.keys()].filter((name) => !(name in HOOK_KINDS))).toEqual([]);
  });

  test('lists every key a plugin may have', () => {
    const plugins = section('Plugins');
    for (const key of PLUGIN_META_KEYS) expect(plugins).toContain(`| \`${key}\` |`);
  });
});

describe('the tutorial', () => {
  const tutorial = section('Your first plugin');
  const blocks = [...tutorial.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

  test.each(['moved-mailboxes.ts', 'moved-mailboxes.test.ts'])('shows %s as it is', (file) => {
    expect(blocks).toContain(readFileSync(join(root, 'test/tutorial', file), 'utf8'));
  });

  test('the plugin takes fewer than 40 lines of code', () => {
    const code = readFileSync(join(root, 'test/tutorial/moved-mailboxes.ts'), 'utf8')
      .split('\n')
      .filter(
        (line) => line.trim() !== '' && !line.trim().startsWith('//') && !line.trim().startsWith('/**'),
      );
    expect(code.length).toBeLessThan(40);
  });
});
