// A small client of the admin API for the `tern queue` commands: where the API is, its token,
// and JSON requests whose errors carry the API's own message.
import { readFileSync } from 'node:fs';
import { adminToken, withConfig } from '../config.js';

/** The API refused a request; `message` is the API's own explanation. */
export class AdminApiError extends Error {
  readonly status: number;
  readonly body: Record<string, unknown>;
  constructor(status: number, message: string, body: Record<string, unknown>) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export interface AdminTarget {
  readonly url: string;
  readonly token: string;
}

export interface AdminTargetOptions {
  readonly admin?: string | undefined;
  readonly token?: string | undefined;
  readonly tokenFile?: string | undefined;
  readonly config?: string | undefined;
}

const DEFAULT_URL = 'http://127.0.0.1:8025';

/**
 * Where the API is and its token: flags first, then a config file's `admin` section, then the
 * environment (TERN_ADMIN_URL, TERN_ADMIN_TOKEN), then the default loopback address.
 */
export async function adminTarget(options: AdminTargetOptions): Promise<AdminTarget> {
  let url = options.admin;
  let token =
    options.token ?? (options.tokenFile ? readFileSync(options.tokenFile, 'utf8').trim() : undefined);
  const file = options.config;
  if (file && (url === undefined || token === undefined)) {
    const fromConfig = await withConfig(file, async (config) => {
      if (!config.admin) throw new UsageProblem(`${file} has no admin section: the admin API is off`);
      return {
        url: `http://${config.admin.listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:')}`,
        token: adminToken(config),
      };
    });
    url ??= fromConfig.url;
    token ??= fromConfig.token;
  }
  url ??= process.env.TERN_ADMIN_URL ?? DEFAULT_URL;
  token ??= process.env.TERN_ADMIN_TOKEN;
  if (!token) {
    throw new UsageProblem(
      'no admin token: pass --token T, --token-file FILE or --config FILE, or set TERN_ADMIN_TOKEN',
    );
  }
  return { url: url.replace(/\/+$/, ''), token };
}

/** A problem with how the command was called (exit code 2). */
export class UsageProblem extends Error {
  readonly code = 'ERR_PARSE_ARGS_USAGE';
}

export class AdminClient {
  readonly #target: AdminTarget;

  constructor(target: AdminTarget) {
    this.#target = target;
  }

  get<T>(path: string): Promise<T> {
    return this.#request<T>('GET', path);
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.#request<T>('POST', path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.#request<T>('DELETE', path);
  }

  async #request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.#target.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.#target.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new AdminApiError(
        0,
        `cannot reach the admin API at ${this.#target.url}: ${cause?.code ?? cause?.message ?? (error as Error).message} (is tern running with an admin section? pass --admin URL)`,
        {},
      );
    }
    const text = await response.text();
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new AdminApiError(response.status, `the admin API answered ${response.status} without JSON`, {});
    }
    if (!response.ok) {
      throw new AdminApiError(response.status, String(parsed.error ?? `HTTP ${response.status}`), parsed);
    }
    return parsed as T;
  }
}

/**
 * Runs a command against the admin API the flags name; a refusal by the API is printed as
 * `<label>: <the API's message>` and exits 1.
 */
export async function withAdminClient(
  values: AdminTargetOptions,
  label: string,
  run: (client: AdminClient) => Promise<number>,
): Promise<number> {
  const client = new AdminClient(
    await adminTarget({
      admin: values.admin,
      token: values.token,
      tokenFile: values.tokenFile,
      config: values.config,
    }),
  );
  try {
    return await run(client);
  } catch (error) {
    if (error instanceof AdminApiError) {
      process.stderr.write(`${label}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
