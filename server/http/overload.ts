/**
 * Staying up under more traffic than the machine can serve (issue 8):
 *
 * - `deviceRateLimit`: a token bucket per device (or per user for device-less calls). One misbehaving app — a sync
 *   loop, a retry storm — gets 429 with `Retry-After` and cannot starve the other devices.
 * - `loadShedder`: when the event loop lags (the process is saturated and every request already waits), new
 *   requests are refused at once with 503 `Retry-After` instead of joining the queue, so the requests it does take
 *   keep their latency and the backlog drains as soon as the burst ends. Health probes are never shed.
 * - `slowBodyGuard` (used by the HTTPS listener): a client that sends its body slower than a minimum rate is cut
 *   off. Node's headersTimeout reaps slow *headers*; nothing in Node reaps a slow *body* short of requestTimeout
 *   (minutes, so that real uploads finish).
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import { errors } from '../errors';

interface Bucket {
  tokens: number;
  at: number;
}

/** The bucket a call draws on: its device's, else its user's (else its address's). */
export function rateKey(device: { id: string } | undefined, userId: string | undefined, ip: () => string | undefined): string {
  return device ? `d:${device.id}` : `u:${userId ?? ip()}`;
}

export interface DeviceRateLimit extends RequestHandler {
  /** Takes one token from the bucket `key` names (see rateKey; asked only when limiting is on); throws 429 `rateLimited` when it is empty. */
  take(key: () => string): void;
  /** Forgets buckets that are full again; answers how many. */
  sweep(): number;
}

/** Refill-on-read token buckets; idle buckets are dropped by `sweep` so memory follows active devices only. */
export function deviceRateLimit(opts: { ratePerSecond: number; burst: number; now?: () => number }): DeviceRateLimit {
  const buckets = new Map<string, Bucket>();
  const { ratePerSecond, burst } = opts;
  // Real elapsed time, not the domain clock: a request rate is about the wall, and tests that move the domain clock
  // by days must not hand a device days of tokens.
  const clock = { now: opts.now ?? (() => performance.now()) };
  // Framework-free, so the Express chain and the fast lane (http/fastLane.ts) draw on the same buckets.
  const take = (keyOf: () => string) => {
    if (ratePerSecond <= 0) return;
    const key = keyOf();
    const now = clock.now();
    const b = buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * ratePerSecond);
    b.at = now;
    buckets.set(key, b);
    if (b.tokens < 1) throw errors.rateLimited(Math.max(1, Math.ceil((1 - b.tokens) / ratePerSecond)));
    b.tokens -= 1;
  };
  const handler = ((req, _res, next) => {
    take(() => rateKey(req.device, req.auth?.userId, () => req.ip));
    next();
  }) as DeviceRateLimit;
  handler.take = take;
  handler.sweep = () => {
    // A bucket full again is indistinguishable from a fresh one: forget it.
    const now = clock.now();
    let dropped = 0;
    for (const [key, b] of buckets) {
      if (b.tokens + ((now - b.at) / 1000) * ratePerSecond >= burst) {
        buckets.delete(key);
        dropped++;
      }
    }
    return dropped;
  };
  return handler;
}

export interface LagSource {
  /** The event loop's recent delay in milliseconds. */
  lagMs(): number;
  stop(): void;
}

/**
 * The event loop's mean delay, as the smaller of the last two 0.5 s windows: a saturated process is late on every
 * turn for as long as the overload lasts, while one long synchronous task (a big message parsed, a large commit)
 * raises one window only and must not shed the requests that come after it.
 */
export function eventLoopLag(windowMs = 500): LagSource {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  let previous = 0;
  let recent = 0;
  const timer = setInterval(() => {
    previous = recent;
    recent = h.count > 0 ? h.mean / 1e6 : 0;
    h.reset();
  }, windowMs);
  timer.unref();
  return {
    lagMs: () => Math.min(previous, recent),
    stop() {
      clearInterval(timer);
      h.disable();
    },
  };
}

export interface ShedOptions {
  maxLagMs: number;
  lag: LagSource;
  onShed?: () => void;
}

/** The shedder's check for one request path, free of any framework: throws 503 `unavailable` while the loop lags. */
export function shedCheck(opts: ShedOptions): (path: string) => void {
  return (path) => {
    if (opts.maxLagMs > 0 && opts.lag.lagMs() > opts.maxLagMs && !path.startsWith('/healthz') && !path.startsWith('/readyz')) {
      opts.onShed?.();
      throw errors.unavailable('The server is overloaded; retry shortly.', 1);
    }
  };
}

export function loadShedder(opts: ShedOptions): RequestHandler {
  const check = shedCheck(opts);
  return (req, _res, next) => {
    check(req.path);
    next();
  };
}

/**
 * Watches a request's body as it arrives (through the socket's byte counter, so the body itself stays untouched for
 * the parsers): after a grace period, a request that has not finished its body and received fewer than
 * `minBytesPerSecond` over the last check window is destroyed.
 */
export function slowBodyGuard(opts: { minBytesPerSecond: number; graceMs: number; checkEveryMs: number }) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    if (opts.minBytesPerSecond <= 0) return;
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (!hasBody || req.complete) return;
    const socket = req.socket;
    let last = socket.bytesRead;
    const started = Date.now();
    const timer = setInterval(() => {
      if (req.complete || res.writableEnded) return stop();
      const now = Date.now();
      const read = socket.bytesRead - last;
      if (now - started >= opts.graceMs && read < (opts.minBytesPerSecond * opts.checkEveryMs) / 1000) {
        stop();
        socket.destroy();
        return;
      }
      last = socket.bytesRead;
    }, opts.checkEveryMs);
    timer.unref();
    const stop = () => clearInterval(timer);
    req.once('end', stop);
    res.once('close', stop);
  };
}
