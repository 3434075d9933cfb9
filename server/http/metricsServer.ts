/**
 * Prometheus metrics on their own plain-HTTP listener (issue 12): per-route request counts and process details are
 * for the operator's scraper, not for API clients, so the API port has no /metrics. The listener binds loopback by
 * default (`PIGEON_METRICS_HOST`, `PIGEON_METRICS_PORT`); with `PIGEON_METRICS_TOKEN` set, a scrape needs
 * `Authorization: Bearer <token>` (compared in constant time). It answers `GET`/`HEAD /metrics` and nothing else.
 * With workers the primary process serves it, and a scrape sums every worker's metrics (server/cluster.ts).
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import zlib from 'node:zlib';

/** What a scrape reads: a prom-client Registry, or (workers) the primary's sum of every worker's (server/cluster.ts). */
export interface MetricsSource {
  metrics(): Promise<string>;
  contentType: string;
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  /** Empty: no token asked (rely on the bind address). */
  token: string;
  registry: MetricsSource;
}

export interface MetricsServer {
  server: http.Server;
  port: number;
  /** Stops listening and cuts open connections (a scrape under way is not worth waiting for). */
  close(): Promise<void>;
}

const digest = (text: string) => crypto.createHash('sha256').update(text, 'utf8').digest();

/** True when `authorization` is `Bearer <token>`: constant time in the token (both sides hashed to equal length). */
export function bearerMatches(authorization: string | undefined, token: string): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(authorization ?? '');
  const equal = crypto.timingSafeEqual(digest(m?.[1] ?? ''), digest(token));
  return m !== null && equal;
}

/** gzip unless the client refuses it (`gzip;q=0`) or did not ask. */
function wantsGzip(acceptEncoding: string | undefined): boolean {
  return (acceptEncoding ?? '').split(',').some((part) => {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    if (name !== 'gzip' && name !== 'x-gzip') return false;
    const q = params.map((p) => /^\s*q=([0-9.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
    return q === undefined || Number(q) > 0;
  });
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server = http.createServer({ maxHeaderSize: 8192 }, (req, res) => {
    const send = (status: number, headers: Record<string, string>, body: string | Buffer) => {
      res.writeHead(status, { 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', 'Content-Length': String(Buffer.byteLength(body)), ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const text = (status: number, body: string, headers: Record<string, string> = {}) =>
      send(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers }, `${body}\n`);

    const pathname = (req.url ?? '').split('?')[0];
    if (pathname !== '/metrics') return text(404, 'Not found: this listener serves GET /metrics only.');
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'Method not allowed.', { Allow: 'GET, HEAD' });
    if (options.token && !bearerMatches(req.headers.authorization, options.token)) {
      return text(401, 'A bearer token is required.', { 'WWW-Authenticate': 'Bearer realm="pigeon-metrics"' });
    }
    options.registry
      .metrics()
      .then((body) => {
        const type = { 'Content-Type': options.registry.contentType, Vary: 'Accept-Encoding' };
        if (!wantsGzip(req.headers['accept-encoding'])) return send(200, type, body);
        zlib.gzip(body, (err, zipped) => (err ? send(200, type, body) : send(200, { ...type, 'Content-Encoding': 'gzip' }, zipped)));
      })
      .catch(() => {
        if (!res.headersSent) text(500, 'Metrics could not be collected.');
      });
  });
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    server,
    port,
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
