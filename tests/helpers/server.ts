/**
 * Runs the real server process (`server/main.ts` through tsx) on an ephemeral port over a temporary data dir, and
 * reads its JSON log lines so tests can wait for "ready" and inspect what it logged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { loadCertificate } from '../../server/tls';
import { openSqliteStore } from '../../server/store/sqlite';
import { hashPassword } from '../../server/identity/passwords';
import { tempDir } from './testApp';
import { assertNoSecretsInLogs } from './secrets';

export const ROOT = path.resolve(__dirname, '../..');

export interface RunningServer {
  proc: ChildProcess;
  port: number;
  /** The LMTP listener's port (logged as `lmtp listening` before `ready`); undefined when LMTP is disabled. */
  lmtpPort: number | undefined;
  dataDir: string;
  cert: string;
  logs: Array<Record<string, unknown>>;
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  stop(): Promise<void>;
}

/** A development certificate from the same generator `npm start` uses, in its own temporary folder. */
export async function devCertificate(dir: string): Promise<{ certFile: string; keyFile: string; cert: string }> {
  const { certFile } = await loadCertificate({ tlsCert: '', tlsKey: '' }, path.join(dir, 'certs'));
  return { certFile, keyFile: path.join(dir, 'certs', 'dev-key.pem'), cert: fs.readFileSync(certFile, 'utf8') };
}

/**
 * The environment of a test server process: loopback, ephemeral ports (parallel test servers must not race for the
 * fixed default HTTPS, LMTP and metrics ports), no demo, one process (no workers: `PIGEON_WORKERS` in `env` asks for
 * them), the given data directory and certificate.
 */
export function serverEnv(dataDir: string, tls: { certFile: string; keyFile: string }, env: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PIGEON_PORT: '0',
    PIGEON_LMTP_PORT: '0',
    PIGEON_METRICS_PORT: '0',
    PIGEON_HOST: '127.0.0.1',
    PIGEON_DATA_DIR: dataDir,
    PIGEON_DEMO: 'false',
    PIGEON_PASSWORD_GRANT: 'true',
    PIGEON_WORKERS: '1',
    PIGEON_TLS_CERT: tls.certFile,
    PIGEON_TLS_KEY: tls.keyFile,
    ...env,
  };
}

/** A store file in `dataDir` with one tenant and one user (role `user`) with this password and a mailbox. */
export async function storeWithUser(dataDir: string, username: string, password: string): Promise<void> {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const tenant = await store.tenants.create('T', Date.now());
  const user = await store.users.create(
    { tenantId: tenant.id, username, email: `${username}@x`, displayName: username, role: 'user', passwordHash: await hashPassword(password) },
    Date.now(),
  );
  await store.mailboxes.create(user.id, Date.now());
  await store.close();
}

export async function startServer(env: Record<string, string> = {}, timeoutMs = 60_000): Promise<RunningServer> {
  const dataDir = env.PIGEON_DATA_DIR ?? tempDir('pigeon-e2e-');
  const tls = await devCertificate(dataDir);
  const { cert } = tls;
  const proc = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: ROOT,
    env: serverEnv(dataDir, tls, env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  let buffered = '';
  const ready = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready in ${timeoutMs} ms: ${stderr.join('')}`)), timeoutMs);
    proc.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line);
          logs.push(entry);
          if (entry.msg === 'ready') {
            clearTimeout(timer);
            resolve(entry.port);
          }
        } catch {
          /* not a log line */
        }
      }
    });
    proc.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString('utf8')));
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before ready: ${stderr.join('')}`));
    });
  });
  const port = await ready;
  return {
    proc,
    port,
    lmtpPort: logs.find((l) => l.msg === 'lmtp listening')?.port as number | undefined,
    dataDir,
    cert,
    logs,
    stderr,
    exited,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        await exited;
      }
      if (!env.PIGEON_DATA_DIR) fs.rmSync(dataDir, { recursive: true, force: true });
      assertNoSecretsInLogs([...logs.map((l) => JSON.stringify(l)), ...stderr], [], 'the server process log');
    },
  };
}

/** One request to a running server over real HTTPS (its dev certificate trusted); a JSON body comes back parsed. */
export function httpsCall(
  server: Pick<RunningServer, 'port' | 'cert'>,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: server.port, method, path, headers, ca: server.cert, servername: 'localhost' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined });
      });
    });
    req.once('error', reject);
    req.end(body);
  });
}

/** The processes whose parent is `pid` (Linux /proc). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may contain spaces and parentheses, so read after the last ')'.
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Whether `pid` still runs: a zombie (exited, not yet reaped) has ended. */
export function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
