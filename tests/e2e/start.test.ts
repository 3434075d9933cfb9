/**
 * The production start an operator (or a supervisor) runs: `npm start` builds `dist/` and runs the server with plain
 * `node`, so SIGTERM or SIGINT sent to npm's PID reaches the server, which drains and exits; npm exits with it and
 * nothing is left listening.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ROOT, alive, childrenOf, devCertificate } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { CONFIG_TABLE } from '../../server/config';

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

const npmEnv = (dataDir: string, certFile: string, keyFile: string): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  npm_config_update_notifier: 'false',
  PIGEON_HOST: '127.0.0.1',
  PIGEON_PORT: '0',
  PIGEON_LMTP_PORT: '0',
  PIGEON_DATA_DIR: dataDir,
  PIGEON_DEMO: 'false',
  PIGEON_PASSWORD_GRANT: 'true',
  PIGEON_TLS_CERT: certFile,
  PIGEON_TLS_KEY: keyFile,
  // Every listener on a free port, so parallel test servers never race for a fixed default.
  ...Object.fromEntries(
    Object.values(CONFIG_TABLE)
      .filter((e) => e.env.endsWith('_PORT') && e.env !== 'PIGEON_PORT')
      .map((e) => [e.env, '0']),
  ),
});

// A fresh checkout compiles everything first (about 10 s on two cores); afterwards `tsc -b` finds dist/ up to date.
beforeAll(() => {
  const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME }, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);
}, 120_000);

test.each(['SIGTERM', 'SIGINT'] as const)('%s to npm start drains the server; npm exits 0 and nothing is left listening', async (signal) => {
  const dir = tempDir('pigeon-start-');
  const started: number[] = [];
  try {
    const { certFile, keyFile } = await devCertificate(dir);
    const npm = spawn('npm', ['start'], { cwd: ROOT, env: npmEnv(dir, certFile, keyFile), stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(npm.pid!);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => npm.once('exit', (code, sig) => resolve({ code, signal: sig })));
    const logs: Array<Record<string, unknown>> = [];
    let stderr = '';
    npm.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    let buffered = '';
    const ready = new Promise<void>((resolve, reject) => {
      npm.stdout!.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (!line.startsWith('{')) continue; // npm's own "> pigeon-server start" lines
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'ready') resolve();
        }
      });
      void exited.then(({ code }) => reject(new Error(`npm start exited with ${code} before ready:\n${stderr}`)));
    });
    await ready;
    const port = logs.find((l) => l.msg === 'ready')!.port as number;
    const lmtpPort = logs.find((l) => l.msg === 'lmtp listening')!.port as number;

    // npm runs the script through `sh -c`; the script execs node, so npm's only child is the server itself.
    const children = childrenOf(npm.pid!);
    expect(children).toHaveLength(1);
    const server = children[0]!;
    started.push(server);
    expect(fs.readFileSync(`/proc/${server}/cmdline`, 'utf8').split('\0')).toEqual(expect.arrayContaining([path.join('dist', 'main.js')]));
    expect(await refused(port)).toBe(false);

    npm.kill(signal);
    const result = await exited;
    expect(result).toEqual({ code: 0, signal: null });
    expect(logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['draining', 'stopped']));
    expect(logs.find((l) => l.msg === 'draining')!.signal).toBe(signal);
    expect(alive(server)).toBe(false);
    expect(await refused(port)).toBe(true);
    expect(await refused(lmtpPort)).toBe(true);
    for (const l of logs) if (/listening$/.test(String(l.msg)) && typeof l.port === 'number') expect(await refused(l.port)).toBe(true);
  } finally {
    // A failed assertion must not leave a server behind.
    for (const pid of started.reverse()) if (alive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 30_000);
