/** Starts the ceiling process (ceilingServer.ts) and feeds it the responses Pigeon sent. */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { CeilingMessage, CeilingRoute } from './ceilingServer';
import { forget, type Exchange, type Recorded, type Target } from './http';

export interface Ceiling extends Target {
  proc: ChildProcess;
  lmtpPort: number;
  /** The process's own performance.now() when it was listening (as Pigeon's `readyMs`). */
  readyMs: number;
  wallReadyMs: number;
  /** From now on the ceiling answers `x` with exactly the bytes Pigeon answered. */
  replay(x: Exchange, r: Recorded, opts?: { stream?: boolean; trigger?: boolean }): Promise<void>;
  /** The bytes written to a stream when a delivery (or trigger) names it. */
  setEvent(bytes: string): Promise<void>;
  stop(): Promise<void>;
}

export const routeKey = (x: Pick<Exchange, 'method' | 'path'>) => `${x.method} ${x.path}`;

export async function startCeiling(tls: { certFile: string; keyFile: string; cert: string }): Promise<Ceiling> {
  const t0 = performance.now();
  const proc = fork(path.join(__dirname, 'ceilingServer.ts'), [], {
    execArgv: ['--import', 'tsx'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, BENCH_CEILING_CERT: tls.certFile, BENCH_CEILING_KEY: tls.keyFile },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await new Promise<{ port: number; lmtpPort: number; readyMs: number }>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`ceiling exited with ${code} before ready`)));
    proc.once('message', (m: { type: string; port: number; lmtpPort: number; readyMs: number }) => resolve(m));
  });
  const wallReadyMs = performance.now() - t0;
  let next = 0;
  const call = (msg: CeilingMessage) =>
    new Promise<void>((resolve) => {
      const onMessage = (m: { type: string; id: number }) => {
        if (m.type === 'ok' && m.id === msg.id) {
          proc.off('message', onMessage);
          resolve();
        }
      };
      proc.on('message', onMessage);
      proc.send(msg);
    });
  const target: Target = { port: ready.port, cert: tls.cert, pid: proc.pid };
  return {
    ...target,
    proc,
    lmtpPort: ready.lmtpPort,
    readyMs: ready.readyMs,
    wallReadyMs,
    replay(x, r, opts = {}) {
      const route: CeilingRoute = { key: routeKey(x), status: r.status, headers: r.headers, body: r.body.toString('base64'), ...opts };
      return call({ type: 'routes', id: ++next, routes: [route] });
    },
    setEvent(bytes) {
      return call({ type: 'event', id: ++next, bytes: Buffer.from(bytes).toString('base64') });
    },
    async stop() {
      forget(target);
      if (proc.exitCode !== null || proc.signalCode !== null) return; // already gone
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}
