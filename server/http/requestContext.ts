/**
 * Request ids, one log line per request, and Prometheus metrics: the cross-cutting parts every route shares.
 */
import crypto from 'node:crypto';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { RequestHandler, Request } from 'express';
import type { AuthContext } from '../auth/authenticate';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { droppedLogLines, queuedLogBytes } from '../logger';

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A request's id: the client's `X-Request-Id` when it is sane, else a fresh one. */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const offered = headers['x-request-id'];
  return typeof offered === 'string' && SANE_REQUEST_ID.test(offered) ? offered : crypto.randomUUID();
}

export const requestId: RequestHandler = (req, res, next) => {
  req.id = requestIdOf(req.headers);
  res.setHeader('X-Request-Id', req.id);
  next();
};

/** The route pattern (`/v1/items/:id`), never the raw path: ids and tokens must not become metric labels. */
export function routeLabel(req: Request): string {
  const path = req.route?.path;
  return typeof path === 'string' ? req.baseUrl + path : 'unmatched';
}

export interface HttpMetrics {
  registry: Registry;
  middleware: RequestHandler;
  /**
   * Counts and times one response when it finishes (the framework-free form of `middleware`): `route` is asked then,
   * since a request's route is known only once it has been matched.
   */
  track(res: ServerResponse, method: string, route: () => string): void;
}

/** A registry per app (no global default registry), so every test app counts only its own requests. */
export function createMetrics(): HttpMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({
    name: 'pigeon_http_requests_total',
    help: 'HTTP requests by route, method and status.',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'pigeon_http_request_duration_seconds',
    help: 'HTTP request latency by route, method and status.',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  // The log sink is the process's (stdout), not the app's: read at scrape time.
  new Counter({
    name: 'pigeon_log_lines_dropped_total',
    help: 'Log lines dropped because the log output failed (full disk, closed pipe) or stalled (queue full).',
    registers: [registry],
    collect() {
      this.reset();
      const dropped = droppedLogLines();
      if (dropped) this.inc(dropped);
    },
  });
  new Gauge({
    name: 'pigeon_log_queue_bytes',
    help: 'Log output waiting in memory for a slow or stalled output (bounded; past the bound lines are dropped).',
    registers: [registry],
    collect() {
      this.set(queuedLogBytes());
    },
  });
  const track = (res: ServerResponse, method: string, route: () => string) => {
    const start = process.hrtime.bigint();
    res.once('finish', () => {
      const labels = { route: route(), method, status: String(res.statusCode) };
      requests.inc(labels);
      latency.observe(labels, Number(process.hrtime.bigint() - start) / 1e9);
    });
  };
  const middleware: RequestHandler = (req, res, next) => {
    track(res, req.method, () => routeLabel(req));
    next();
  };
  return { registry, middleware, track };
}

/** What the request log line says of a request, read when the response closes. */
export interface LoggedRequest {
  requestId: string;
  method: string;
  path: string;
  route: string;
  auth: AuthContext | undefined;
}

/**
 * Writes the one log line of a request when its response closes (the framework-free form of `requestLogger`).
 * `describe` is asked then, so it sees the route and caller as they ended up.
 */
export function logWhenClosed(log: Logger, res: ServerResponse, describe: () => LoggedRequest): void {
  const start = process.hrtime.bigint();
  res.once('close', () => {
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    const status = res.writableFinished ? res.statusCode : 499;
    const r = describe();
    const line = {
      requestId: r.requestId,
      method: r.method,
      path: r.path,
      route: r.route,
      status,
      ms: Math.round(ms * 100) / 100,
      user: r.auth?.userId,
      device: r.auth?.deviceId,
    };
    if (status >= 500) log.error(line, 'request');
    else log.info(line, 'request');
  });
}

/**
 * One JSON line per finished request. Only the path is logged, never the query string or headers, so tokens
 * (including a misplaced `?access_token=`) cannot reach the logs.
 */
export function requestLogger(log: Logger): RequestHandler {
  return (req, res, next) => {
    logWhenClosed(log, res, () => ({ requestId: req.id, method: req.method, path: req.path, route: routeLabel(req), auth: req.auth }));
    next();
  };
}
