/**
 * A plain HTTPS client for setting scenarios up and for recording the exact responses the ceiling replays. Bodies
 * are kept as the bytes that crossed the wire (still gzipped when they were), because the ceiling must send the
 * same bytes; `json()` decodes them for the scenario code.
 */
import https from 'node:https';
import zlib from 'node:zlib';
import { performance } from 'node:perf_hooks';
import type { PgMeter } from './postgres';

export interface Target {
  port: number;
  /** The CA to trust: the server's own development certificate. */
  cert: string;
  /** The serving process, when the runner started it: its CPU time is measured too. */
  pid?: number;
  /** The PostgreSQL database behind it (`--store pg`): its backends' CPU time is measured too. */
  pg?: PgMeter;
}

export interface Exchange {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface Recorded {
  status: number;
  /** Response headers as sent, in order, without the hop-by-hop ones the ceiling's own HTTP stack writes. */
  headers: Array<[string, string]>;
  body: Buffer;
  ms: number;
}

const HOP_BY_HOP = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding']);
const agents = new Map<number, https.Agent>();

function agentFor(target: Target): https.Agent {
  let agent = agents.get(target.port);
  if (!agent) {
    agent = new https.Agent({ keepAlive: true, maxSockets: 4, ca: target.cert, servername: 'localhost' });
    agents.set(target.port, agent);
  }
  return agent;
}

/** Closes the keep-alive sockets of a target that is going away. */
export function forget(target: Target): void {
  agents.get(target.port)?.destroy();
  agents.delete(target.port);
}

export function send(target: Target, x: Exchange): Promise<Recorded> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const headers = { ...x.headers, ...(x.body !== undefined ? { 'content-length': String(Buffer.byteLength(x.body)) } : {}) };
    const req = https.request(
      { host: '127.0.0.1', port: target.port, method: x.method, path: x.path, headers, agent: agentFor(target) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const pairs: Array<[string, string]> = [];
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            const name = res.rawHeaders[i]!;
            if (!HOP_BY_HOP.has(name.toLowerCase())) pairs.push([name, res.rawHeaders[i + 1]!]);
          }
          resolve({ status: res.statusCode!, headers: pairs, body: Buffer.concat(chunks), ms: performance.now() - t0 });
        });
        res.once('error', reject);
      },
    );
    req.once('error', reject);
    req.end(x.body);
  });
}

export function header(r: Recorded, name: string): string | undefined {
  return r.headers.find(([k]) => k.toLowerCase() === name)?.[1];
}

/** The decoded JSON body (gunzipped when it was sent gzipped). */
export function json<T = any>(r: Recorded): T {
  const raw = header(r, 'content-encoding') === 'gzip' ? zlib.gunzipSync(r.body) : r.body;
  return JSON.parse(raw.toString('utf8')) as T;
}

/** Sends and insists on a status, so a scenario never measures an error page by mistake. */
export async function expectStatus(target: Target, x: Exchange, status: number | number[]): Promise<Recorded> {
  const r = await send(target, x);
  const ok = Array.isArray(status) ? status.includes(r.status) : r.status === status;
  if (!ok) throw new Error(`${x.method} ${x.path.split('?')[0]}: expected ${status}, got ${r.status} ${r.body.toString('utf8').slice(0, 300)}`);
  return r;
}
