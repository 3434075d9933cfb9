/**
 * The `openssl` command line in a temporary directory, for tests that need CMS and X.509 data made (or checked) by a
 * tool nobody here wrote. Arguments are passed as an array (no shell); a failing run throws with openssl's stderr.
 * Call `dispose()` in afterAll: it deletes the directory.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class OpensslError extends Error {
  override readonly name = 'OpensslError';
  constructor(
    readonly args: string[],
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(`openssl ${args.join(' ')} failed (${status ?? 'no exit status'}): ${stderr.trim().split('\n').slice(0, 8).join(' | ')}`);
  }
}

export interface KeyFiles {
  certFile: string;
  keyFile: string;
  /** The certificate, PEM. */
  certificatePem: string;
  /** The private key, unencrypted PKCS#8 PEM. */
  privateKeyPem: string;
}

export interface OpensslWorkspace {
  dir: string;
  /** The absolute path of `name` in the workspace (a plain file name: no directories). */
  file(name: string): string;
  /** Writes `data` to `name` and answers its path. */
  write(name: string, data: string | Buffer): string;
  read(name: string): Buffer;
  /** Runs openssl with `args` in the workspace; answers its stdout, or throws OpensslError. */
  run(args: string[], input?: Buffer): Buffer;
  /** Runs openssl and answers how it went, without throwing (for checks that must fail). */
  attempt(args: string[], input?: Buffer): { status: number | null; stdout: Buffer; stderr: string };
  /** An RSA-2048 key and a self-signed certificate for it (`openssl req -x509 -newkey`), as `<name>.crt`/`.key`. */
  selfSigned(name: string, commonName: string): KeyFiles;
}

function plainName(name: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(name) || name.startsWith('.')) throw new Error(`not a plain file name: ${name}`);
  return name;
}

export function opensslWorkspace(): OpensslWorkspace & { dispose(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-openssl-'));
  const file = (name: string) => path.join(dir, plainName(name));

  const attempt = (args: string[], input?: Buffer) => {
    const r = spawnSync('openssl', args, { cwd: dir, input, maxBuffer: 64 * 1024 * 1024 });
    if (r.error) throw new Error(`openssl could not be run: ${r.error.message}`);
    return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
  };

  const run = (args: string[], input?: Buffer) => {
    const r = attempt(args, input);
    if (r.status !== 0) throw new OpensslError(args, r.status, r.stderr);
    return r.stdout;
  };

  return {
    dir,
    file,
    write(name, data) {
      fs.writeFileSync(file(name), data);
      return file(name);
    },
    read: (name) => fs.readFileSync(file(name)),
    run,
    attempt,
    selfSigned(name, commonName) {
      const certFile = file(`${name}.crt`);
      const keyFile = file(`${name}.key`);
      run(['req', '-x509', '-newkey', 'rsa:2048', '-noenc', '-keyout', keyFile, '-out', certFile, '-days', '30', '-subj', `/CN=${commonName}`]);
      return { certFile, keyFile, certificatePem: fs.readFileSync(certFile, 'utf8'), privateKeyPem: fs.readFileSync(keyFile, 'utf8') };
    },
    dispose() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs openssl with `args` in `cwd` and answers its stdout as text; throws with its last lines of output. `purpose`
 * names the tests that need it, for the message when openssl is not installed.
 */
export function runOpenssl(args: string[], cwd: string, purpose: string): string {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`the openssl command could not be run (${r.error.message}); the ${purpose} tests need it on PATH`);
  if (r.status !== 0) {
    const output = `${r.stdout}${r.stderr}`.trim().split('\n').slice(-4).join(' | ');
    throw new Error(`openssl ${args.slice(0, 2).join(' ')} failed (exit ${r.status}): ${output}`);
  }
  return r.stdout;
}

/**
 * Removes temporary directories named `<prefix><pid>-…` whose process no longer exists (killed before its exit
 * handler ran); another user's directories are left alone.
 */
export function sweepAbandonedDirs(prefix: string): void {
  const tmp = os.tmpdir();
  for (const name of fs.readdirSync(tmp)) {
    const m = new RegExp(`^${prefix}(\\d+)-`).exec(name);
    if (!m || isAlive(Number(m[1]))) continue;
    try {
      fs.rmSync(path.join(tmp, name), { recursive: true, force: true });
    } catch {
      // another user's: not ours to remove
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
