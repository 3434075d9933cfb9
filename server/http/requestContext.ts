/**
 * Request ids, one log line per request, and Prometheus metrics: the cross-cutting parts every route shares.
 */
import crypto from 'node:crypto';
import type { RequestHandler, Request } from 'express';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { droppedLogLines, queuedLogBytes } from '../logger';

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export const requestId: RequestHandler = (req, res, next) => {
  const offered = req.headers['x-request-id'];
  req.id = typeof offered === 'string' && SANE_REQUEST_ID.test(offered) ? offered : crypto.randomUUID();
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
  const middleware: RequestHandler = (req, res, next) => {
    const start = process.hrtime.bigint();
    res.once('finish', () => {
      const labels = { route: routeLabel(req), method: req.method, status: String(res.statusCode) };
      requests.inc(labels);
      latency.observe(labels, Number(process.hrtime.bigint() - start) / 1e9);
    });
    next();
  };
  return { registry, middleware };
}

/**
 * One JSON line per finished request. Only the path is logged, never the query string or headers, so tokens
 * (including a misplaced `?access_token=`) cannot reach the logs.
 */
export function requestLogger(log: Logger): RequestHandler {
  return (req, res, next) => {
    const start = process.hrtime.bigint();
    res.once('close', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const status = res.writableFinished ? res.statusCode : 499;
      const line = {
        requestId: req.id,
        method: req.method,
        path: req.path,
        route: routeLabel(req),
        status,
        ms: Math.round(ms * 100) / 100,
        user: req.auth?.userId,
        device: req.auth?.deviceId,
      };
      if (status >= 500) log.error(line, 'request');
      else log.info(line, 'request');
    });
    next();
  };
}
