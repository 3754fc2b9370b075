// tern apikey add|list|remove: the API keys HTTP injection accepts, in the file config names.
import { ApiKeyStore, addApiKey, removeApiKey } from '../http/api-keys.js';

export async function runApiKeyAdd(file: string, id: string, domains: string): Promise<number> {
  const token = await addApiKey(file, id, domains.split(','));
  process.stderr.write(
    `${file}: key ${id} saved; the application sends this token (it is shown only now):\n`,
  );
  process.stdout.write(`${token}\n`);
  return 0;
}

export async function runApiKeyList(file: string): Promise<number> {
  const keys = await (await ApiKeyStore.open(file)).list();
  if (keys.length === 0) process.stdout.write('no keys\n');
  for (const key of keys) process.stdout.write(`${key.id}\t${key.domains.join(',')}\n`);
  return 0;
}

export async function runApiKeyRemove(file: string, id: string): Promise<number> {
  if (await removeApiKey(file, id)) {
    process.stdout.write(`${file}: key ${id} removed\n`);
    return 0;
  }
  process.stderr.write(`tern apikey remove: ${file} has no key ${id}\n`);
  return 1;
}
