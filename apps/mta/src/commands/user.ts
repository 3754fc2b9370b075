// tern user add: add a user (or change a password) in the built-in users file.
import { createInterface } from 'node:readline';
import { addUser } from '@tern/core';

async function readPassword(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('password: ');
  const lines = createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    lines.close();
    return line;
  }
  return '';
}

export async function runUserAdd(file: string, user: string): Promise<number> {
  const password = await readPassword();
  if (password.length < 8) {
    process.stderr.write(
      'tern user add: the password (read from standard input) must have at least 8 characters\n',
    );
    return 2;
  }
  await addUser(file, user, password);
  process.stdout.write(`${file}: user ${user} saved\n`);
  return 0;
}
