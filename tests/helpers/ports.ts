/**
 * Ports for servers whose address must be known before they start (an issuer URL names its port).
 *
 * Asking the kernel for port 0 and closing it leaves a window in which the same port can be handed out again, and
 * on Linux ports from the ephemeral range (32768–60999) are also used as the local side of every outgoing
 * connection the parallel test workers make. So a port is picked below that range, checked by binding it, and a
 * start that still loses the race with EADDRINUSE is retried on another port.
 */
import net from 'node:net';
import { startServer, type RunningServer } from './server';

const LOW = 20_000;
const HIGH = 32_000;

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A port below the ephemeral range that could be bound a moment ago. */
export async function pickPort(taken: readonly number[] = []): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (!taken.includes(port) && (await bindable(port))) return port;
  }
  throw new Error(`no free port between ${LOW} and ${HIGH}`);
}

function lostRace(err: unknown): boolean {
  return String((err as Error)?.message ?? err).includes('EADDRINUSE');
}

/** Runs start() with `count` picked ports, picking again when the start fails because a port was taken meanwhile. */
export async function withPickedPorts<T>(count: number, start: (ports: number[]) => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) ports.push(await pickPort(ports));
    try {
      return await start(ports);
    } catch (err) {
      if (!lostRace(err) || attempt >= attempts) throw err;
    }
  }
}

/**
 * A real server whose issuer is `https://127.0.0.1:<its port>` (the identity tests: tokens and discovery name it), on
 * a picked port, one worker, the password grant off unless `env` says otherwise.
 */
export async function startWithIssuer(env: Record<string, string>): Promise<RunningServer & { issuer: string }> {
  return withPickedPorts(1, async ([port]) => {
    const issuer = `https://127.0.0.1:${port}`;
    const server = await startServer({ PIGEON_PASSWORD_GRANT: 'false', PIGEON_WORKERS: '1', ...env, PIGEON_PORT: String(port), PIGEON_ISSUER: issuer });
    return Object.assign(server, { issuer });
  });
}
