/**
 * The fast lane (issue 13): the hot reads — folder sync, item sync (the no-change poll above all) and the session
 * call — served from the same route table by a bare `node:http(s)` request handler that sits in front of Express,
 * without its middleware chain, router and request/response decoration, which cost about half of a poll's CPU.
 *
 * For the requests it takes it does everything the Express chain does, with the same code wherever the code can be
 * shared: the request id, the one log line and the metrics (http/requestContext.ts), the load shedder and the device
 * rate limit (http/overload.ts), the security headers (the app's configured helmet, run once at start-up against a
 * stub response and replayed, so they cannot drift), authentication (`createAuthenticator`), the device gate
 * (`gateCall`) and its last-seen touch, the 'simple' query parser (node:querystring), the route's handler through a
 * `Call`, problem rendering (`errorAnswer`, which the Express error handler uses too) and the app's own compression
 * middleware, run on the raw response exactly as Express runs it. tests/http/fast-lane.test.ts sends the same
 * requests with and without the lane and compares status, every header (names, values, order) and the body bytes.
 *
 * It takes a request only when it is sure Express would route it to the same handler and answer it the same way.
 * Everything else returns false and Express serves it: methods other than GET and HEAD; a path that is not exactly a
 * fast route's (case, trailing slashes, absolute-form targets, characters that make Express parse the URL another
 * way, a percent-escape that does not decode, a path an earlier route of the table would match first); a request
 * with a body; a conditional request (`If-None-Match`, `If-Modified-Since`: Express's freshness check may answer 304).
 */
import { createRequire } from 'node:module';
import type { IncomingHttpHeaders, IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import querystring from 'node:querystring';
import { pipeline } from 'node:stream/promises';
import type { Express, RequestHandler } from 'express';
import type { Logger } from 'pino';
import { originForAuth, socketOrigin, type AuthContext, type Authenticator, type RequestOrigin } from '../auth/authenticate';
import { admitsWithoutDevice, gateCall, type AccessCheck, type GateVerdict } from '../devices/gate';
import type { DeviceService } from '../devices/service';
import type { DeviceRecord } from '../store/types';
import { ApiError, errors } from '../errors';
import { clientGone, type Call, type Reply, type Route } from './table';
import { logWhenClosed, requestIdOf, type HttpMetrics } from './requestContext';
import { rateKey, type DeviceRateLimit } from './overload';
import { errorAnswer } from './problem';

// The very copies Express uses: its router's path-to-regexp, and its own charset formatting for `res.send`.
const fromExpress = createRequire(require.resolve('express'));
const { match } = createRequire(fromExpress.resolve('router'))('path-to-regexp') as typeof import('path-to-regexp');
const { setCharset } = fromExpress('./lib/utils') as { setCharset(type: string, charset: string): string };

export interface FastLaneDeps {
  /** The app's route table; the lane serves the routes marked `fast`. */
  routes: readonly Route[];
  authenticator: Authenticator;
  devices: DeviceService;
  deviceLimit: DeviceRateLimit;
  /** The load shedder's check (http/overload.ts `shedCheck`, over the app's own lag source). */
  shed: (path: string) => void;
  metrics: HttpMetrics;
  log: Logger;
  /** The app's security-header middleware (helmet with its options); run once here, its headers replayed. */
  securityHeaders: RequestHandler;
  /** The app's compression middleware; run on each response the lane writes, as Express runs it. */
  compression: RequestHandler;
  /** The client address as Express's `req.ip` has it (the app's trust-proxy setting); see `expressIp`. */
  ipOf: (req: IncomingMessage) => string | undefined;
  /** Conditional access and app protection after the device gate (devices/gate.ts `AccessCheck`). */
  accessCheck?: AccessCheck;
  /**
   * The scheme and host the client addressed as Express's `req.protocol` and `req.host` have them (the app's
   * trust-proxy setting; `expressOrigin` in auth/authenticate.ts), for DPoP proofs. Without it, the listener's and
   * the Host header's (`socketOrigin`): the same when no proxy is trusted.
   */
  originOf?: (req: IncomingMessage) => RequestOrigin;
}

export interface FastLane {
  /** Serves the request and answers true, or answers false without touching it (Express serves it then). */
  (req: IncomingMessage, res: ServerResponse): boolean;
  /** Requests the lane has taken since start. */
  served: number;
}

/** The API's request listener: the fast lane first, Express for every request the lane does not take. */
export function withFastLane(app: RequestListener, fastLane: FastLane | undefined): RequestListener {
  if (!fastLane) return app;
  return (req, res) => {
    if (!fastLane(req, res)) app(req, res);
  };
}

/** Express's `req.ip` for a bare request: the app's own getter (its trust-proxy setting) over the raw request. */
export function expressIp(app: Express): (req: IncomingMessage) => string | undefined {
  return (req) => {
    const view = Object.create(app.request, { headers: { value: req.headers }, socket: { value: req.socket }, connection: { value: req.socket } });
    return (view as { ip: string | undefined }).ip;
  };
}

type HeaderValue = string | number | readonly string[];

/**
 * The headers a middleware sets on every response, in order: run once against a stub response. It must set them
 * synchronously, whatever the request (helmet does, with static options).
 */
function headersOf(middleware: RequestHandler): Array<[string, HeaderValue]> {
  const headers = new Map<string, [string, HeaderValue]>();
  const stub = {
    setHeader(name: string, value: HeaderValue) {
      headers.set(name.toLowerCase(), [name, value]); // an existing name keeps its place, as in node:http
      return stub;
    },
    removeHeader(name: string) {
      headers.delete(name.toLowerCase());
    },
    getHeader: (name: string) => headers.get(name.toLowerCase())?.[1],
    hasHeader: (name: string) => headers.has(name.toLowerCase()),
  };
  let passed = false;
  middleware({ method: 'GET', url: '/', headers: {} } as never, stub as never, ((err?: unknown) => {
    if (err) throw err;
    passed = true;
  }) as never);
  if (!passed) throw new Error('fast lane: the security-header middleware did not pass on synchronously');
  return [...headers.values()];
}

/** Characters that make Express parse a URL with url.parse instead of splitting it at `?` (parseurl's fast path). */
const UNSPLIT_URL = /[\t\n\f\r #\u00a0\ufeff]/;

class Declined extends Error {}

/** The router's decodeParam, except that a bad escape declines the request (Express answers that 400 itself). */
function decodeParam(value: string): string {
  if (value.length === 0 || !value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    throw new Declined();
  }
}

type Matcher = (path: string) => false | { params: Partial<Record<string, string | string[]>> };

interface FastRoute {
  route: Route;
  /** The exact path (case-sensitive, no trailing slash) of this route, with its params decoded. */
  exact: Matcher;
  /** Routes the table's router would try before this one and that could match its paths (loose, as Express). */
  earlier: Matcher[];
  /** Whether the gate admits the route without a registered device (the session call): not counted as last-seen. */
  ungated: boolean;
}

/** The literal start of an Express path pattern (up to its first parameter, wildcard or group). */
const literalPrefix = (pattern: string) => pattern.split(/[:*{(\\]/)[0]!.toLowerCase();

function compile(routes: readonly Route[]): FastRoute[] {
  // The table's router tries paths in the order of their first declaration (http/table.ts `serveTable`).
  const paths: string[] = [];
  for (const r of routes) if (!paths.includes(r.path)) paths.push(r.path);
  const out: FastRoute[] = [];
  for (const route of routes) {
    if (!route.fast) continue;
    const where = `fast lane: ${route.method} ${route.path}`;
    if (route.method !== 'GET') throw new Error(`${where}: only GET routes can be fast`);
    if ((route.body ?? 'none') !== 'none' || route.before?.length || route.after?.length || route.idempotent) {
      throw new Error(`${where}: a fast route takes no body, middleware or Idempotency-Key`);
    }
    if (!route.path.startsWith('/v1/')) throw new Error(`${where}: the lane serves /v1 routes only (it runs the /v1 chain)`);
    const prefix = literalPrefix(route.path);
    const earlier = paths
      .slice(0, paths.indexOf(route.path))
      .filter((p) => {
        const other = literalPrefix(p);
        return other.startsWith(prefix) || prefix.startsWith(other);
      })
      .map((p) => match(p === '/' ? p : p.replace(/\/+$/, ''), { sensitive: false, end: true, trailing: true, decode: decodeParam }) as Matcher);
    out.push({
      route,
      exact: match(route.path, { sensitive: true, end: true, trailing: false, decode: decodeParam }) as Matcher,
      earlier,
      ungated: admitsWithoutDevice('GET', route.path.slice('/v1'.length)),
    });
  }
  return out;
}

const JSON_TYPE = 'application/json';
const charsetTypes = new Map<string, string>();
/** The Content-Type Express's `res.send` writes for a text body of this media type. */
function contentType(type: string): string {
  let full = charsetTypes.get(type);
  if (full === undefined) {
    full = setCharset(type, 'utf-8');
    if (charsetTypes.size < 64) charsetTypes.set(type, full);
  }
  return full;
}

/** A text body as Express's `res.send(string)` writes it (Content-Type with charset, Content-Length, HEAD). */
function sendText(req: IncomingMessage, res: ServerResponse, type: string, text: string): void {
  res.setHeader('Content-Type', contentType(type));
  let chunk = text;
  if (!res.getHeader('Transfer-Encoding')) res.setHeader('Content-Length', String(Buffer.byteLength(chunk)));
  if (res.statusCode === 204 || res.statusCode === 304) {
    res.removeHeader('Content-Type');
    res.removeHeader('Content-Length');
    res.removeHeader('Transfer-Encoding');
    chunk = '';
  }
  if (res.statusCode === 205) {
    res.setHeader('Content-Length', '0');
    res.removeHeader('Transfer-Encoding');
    chunk = '';
  }
  if (req.method === 'HEAD') res.end();
  else res.end(chunk, 'utf8');
}

/** A reply as the table's adapter writes it (http/table.ts `send`). */
async function send(req: IncomingMessage, res: ServerResponse, reply: Reply): Promise<void> {
  for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value as HeaderValue);
  const hasContent = reply.body !== undefined || reply.json !== undefined || reply.stream !== undefined;
  res.statusCode = reply.status ?? (hasContent ? 200 : 204);
  if (reply.stream) {
    if (req.method === 'HEAD') {
      reply.stream.destroy();
      res.end();
      return;
    }
    await pipeline(reply.stream, res).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ERR_STREAM_PREMATURE_CLOSE') throw err;
    });
    return;
  }
  if (reply.json !== undefined) return sendText(req, res, JSON_TYPE, reply.json);
  if (reply.body !== undefined) {
    const own = res.getHeader('Content-Type');
    return sendText(req, res, typeof own === 'string' ? own : JSON_TYPE, JSON.stringify(reply.body));
  }
  res.end();
}

/** What a handler knows of a request the lane took: the same `Call` the table's adapter builds from Express's. */
class LaneCall implements Call {
  private aborted: AbortSignal | undefined;
  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    readonly auth: AuthContext,
    private readonly verdict: GateVerdict,
    readonly params: Readonly<Record<string, string>>,
    private readonly rawQuery: string,
    readonly requestId: string,
    private readonly ipOf: (req: IncomingMessage) => string | undefined,
  ) {}
  /** Made when first read (the hot reads never wait): aborted when the client goes away before the answer is done. */
  get signal(): AbortSignal {
    this.aborted ??= clientGone(this.res);
    return this.aborted;
  }
  get user() {
    return this.auth.user;
  }
  get device(): DeviceRecord {
    if (!this.verdict.device) throw errors.deviceNotRegistered();
    return this.verdict.device;
  }
  get deviceIfRegistered() {
    return this.verdict.device;
  }
  get deviceIdHeader() {
    return this.verdict.deviceIdHeader;
  }
  get query() {
    return querystring.parse(this.rawQuery); // Express's 'simple' query parser
  }
  get body() {
    return {};
  }
  get headers(): IncomingHttpHeaders {
    return this.req.headers;
  }
  get method() {
    return this.req.method!;
  }
  get url() {
    return this.req.url!;
  }
  get ip() {
    return this.ipOf(this.req);
  }
}

const noop = () => {};

export function createFastLane(deps: FastLaneDeps): FastLane {
  const { authenticator, devices, deviceLimit, shed, metrics, log, compression, ipOf, accessCheck } = deps;
  const originOf = deps.originOf ?? socketOrigin;
  const fast = compile(deps.routes);
  const security = headersOf(deps.securityHeaders);

  /** The fast route Express would serve this raw path with, and its params; undefined when unsure. */
  function find(path: string): { to: FastRoute; params: Record<string, string> } | undefined {
    try {
      for (const to of fast) {
        const m = to.exact(path);
        if (!m) continue;
        if (to.earlier.some((e) => e(path) !== false)) return undefined;
        return { to, params: m.params as Record<string, string> };
      }
    } catch (err) {
      if (err instanceof Declined) return undefined;
      throw err;
    }
    return undefined;
  }

  function fail(req: IncomingMessage, res: ServerResponse, requestId: string, err: unknown): void {
    // As the Express error handler (http/problem.ts), with the same renderer.
    if (res.headersSent) {
      log.error({ err, requestId }, 'error after response started');
      req.socket.destroy();
      return;
    }
    const answer = errorAnswer(err, requestId, log);
    for (const [name, value] of answer.headers) res.setHeader(name, value);
    res.statusCode = answer.status;
    sendText(req, res, answer.type, answer.body);
  }

  async function serve(req: IncomingMessage, res: ServerResponse, to: FastRoute, params: Record<string, string>, path: string, rawQuery: string) {
    const method = req.method!;
    const { route } = to;
    // The Express chain's order: request id, log line, metrics, shedder, security headers, compression; then the
    // /v1 chain (authentication, device gate, device rate limit); then the route.
    const requestId = requestIdOf(req.headers);
    res.setHeader('X-Request-Id', requestId);
    let auth: AuthContext | undefined;
    let routed = false; // the route label is the pattern once the router has matched it, as `routeLabel` reads it
    const label = () => (routed ? route.path : 'unmatched');
    logWhenClosed(log, res, () => ({ requestId, method, path, route: label(), auth }));
    metrics.track(res, method, label);
    try {
      shed(path);
      for (const [name, value] of security) res.setHeader(name, value);
      compression(req as never, res as never, noop);
      // The origin (for a DPoP proof's `htu`) is made only for the DPoP scheme: a Bearer poll allocates nothing more.
      auth = await authenticator(method, req.url!, req.headers, originForAuth(req, originOf));
      const verdict = await gateCall(devices, method, path.slice('/v1'.length), req.headers, auth, accessCheck && { check: accessCheck, ip: () => ipOf(req) });
      const { device } = verdict;
      // Last-seen times: gated calls only, as the Express gate counts them.
      if (device && !to.ungated) res.once('finish', () => devices.touch(device, res.statusCode < 400));
      const userId = auth.userId;
      deviceLimit.take(() => rateKey(device, userId, () => ipOf(req)));
      routed = true;
      const reply = await route.handler(new LaneCall(req, res, auth, verdict, params, rawQuery, requestId, ipOf));
      await send(req, res, reply);
    } catch (err) {
      fail(req, res, requestId, err);
    }
  }

  const lane = ((req: IncomingMessage, res: ServerResponse): boolean => {
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') return false;
    // A shared mailbox's call resolves its mailbox first (http/mailbox.ts): the Express chain does that.
    if (req.headers['x-mailbox'] !== undefined) return false;
    const url = req.url ?? '';
    if (url.charCodeAt(0) !== 0x2f /* / */ || UNSPLIT_URL.test(url)) return false;
    const h = req.headers;
    if (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')) return false;
    if (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined) return false;
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const found = find(path);
    if (!found) return false;
    lane.served++;
    serve(req, res, found.to, found.params, path, q < 0 ? '' : url.slice(q + 1)).catch((err: unknown) => {
      // Not reached (serve answers its own errors); should it be, the connection ends rather than hangs.
      log.error({ err }, 'fast lane failed');
      res.destroy();
    });
    return true;
  }) as FastLane;
  lane.served = 0;
  return lane;
}
