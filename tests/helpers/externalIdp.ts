/**
 * Starts and stops tests/helpers/external-idp.js (a stand-in for a company's Keycloak or Entra ID, in a process of
 * its own) and talks to its test endpoints. Each call starts a fresh IdP with fresh keys; `stop()` ends it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

export interface MintOptions {
  claims?: Record<string, unknown>;
  /** RS256 (default), PS256, ES256, EdDSA; HS256 (with `secret`, default the RSA public key PEM) or none to forge. */
  alg?: string;
  /** The header's key id instead of the signing key's (null: none). */
  kid?: string | null;
  /** Seconds from now to `exp` (default 300; negative for an expired token). */
  expiresIn?: number;
  /** `aud` (default `pigeon`). */
  audience?: string | string[];
  /** `iss` instead of the IdP's own URL. */
  issuer?: string;
  /** The header's `typ` (default `JWT`; null: none). */
  typ?: string | null;
  /** Claims to leave out, e.g. ['exp']. */
  omit?: string[];
  /** The HMAC secret for HS* tokens. */
  secret?: string;
}

export interface ExternalIdp {
  /** The issuer (`iss`) and base URL. */
  url: string;
  mint(options?: MintOptions): Promise<string>;
  /** A new RSA signing key; the old one stays published only with `keep`. */
  rotate(options?: { keep?: boolean }): Promise<{ kid: string; previous: string }>;
  /** `outage`: discovery and JWKS answer 503. `discoveryIssuer`: the discovery document names that issuer. */
  settings(settings: { outage?: boolean; discoveryIssuer?: string | null }): Promise<void>;
  stats(): Promise<{ jwksFetches: number; discoveryFetches: number }>;
  stop(): Promise<void>;
}

const SCRIPT = path.join(__dirname, 'external-idp.js');

async function call<T>(base: string, method: 'GET' | 'POST', route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as T & { error?: string };
  if (!res.ok) throw new Error(`external IdP ${route}: ${res.status} ${json.error ?? ''}`);
  return json;
}

function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    const timer = setTimeout(() => fail(new Error(`external IdP did not start within ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      lines.close();
      reject(err);
    };
    child.once('exit', (code) => fail(new Error(`external IdP exited (code ${code}) before it listened`)));
    child.once('error', fail);
    lines.once('line', (line) => {
      clearTimeout(timer);
      lines.close();
      resolve(line);
    });
  });
}

export async function startExternalIdp(): Promise<ExternalIdp> {
  // stdin is a pipe the IdP watches: should this process die without stop(), the IdP goes with it.
  const child = spawn(process.execPath, [SCRIPT, '--exit-with-stdin'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let url: string;
  try {
    url = (JSON.parse(await firstLine(child, 15000)) as { url: string }).url;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return {
    url,
    mint: async (options = {}) => (await call<{ token: string }>(url, 'POST', '/mint', options)).token,
    rotate: (options = {}) => call(url, 'POST', '/rotate', options),
    settings: async (settings) => void (await call(url, 'POST', '/settings', settings)),
    stats: () => call(url, 'GET', '/stats'),
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
