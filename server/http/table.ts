/**
 * The route table and the one adapter that serves it. A domain declares its routes as data — `{method, path,
 * handler}` plus what the body is and whether `Idempotency-Key` applies — and a handler receives one `Call` and
 * *returns* a `Reply` (or throws a typed error). Handlers never see Express's `req`/`res`: everything HTTP —
 * parsing and checking bodies, 405 with `Allow`, idempotent replays, writing the answer, streaming bytes at the
 * client's pace — happens here, once, and errors go to the one error handler (http/problem.ts).
 */
import crypto from 'node:crypto';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import type { AuthContext } from '../auth/authenticate';
import type { DeviceRecord, User } from '../store/types';
import { errors } from '../errors';
import { formBody, jsonBody } from './body';
import { requestHash, type Idempotency } from './idempotency';
import { MAILBOX_HEADER, enterMailbox, type MailboxResolver } from './mailbox';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** What a handler knows of the request. */
export interface Call {
  /** The authenticated caller; reading it on a request without one throws 401 (public routes never read it). */
  readonly auth: AuthContext;
  /** The caller's user row, as authentication read it for this request. */
  readonly user: User;
  /** The calling device, admitted by the device gate; reading it without one throws 403 `deviceNotRegistered`. */
  readonly device: DeviceRecord;
  /** The calling device when the gate found one registered (the session call and registration need none). */
  readonly deviceIfRegistered: DeviceRecord | undefined;
  /** `X-Device-Id` when the request sent a well-formed one. */
  readonly deviceIdHeader: string | undefined;
  readonly params: Readonly<Record<string, string>>;
  /** The parsed query string (values are strings or arrays of strings); validate it with `parse(…, 'query')`. */
  readonly query: unknown;
  /** The parsed body: JSON, form fields, or a Buffer for `raw` routes; `{}` when the request had none. */
  readonly body: unknown;
  readonly headers: IncomingHttpHeaders;
  readonly requestId: string;
  /** `HEAD` when a GET route answers a HEAD request (the body is then not sent). */
  readonly method: string;
  /** The path and query as the client sent them. */
  readonly url: string;
  readonly ip: string | undefined;
  /** Aborted when the client goes away before the answer is complete (long waits end early on it). */
  readonly signal: AbortSignal;
}

/** What a handler answers. One of `body`, `json`, `stream` at most; none is an empty answer. */
export interface Reply {
  /** Default: 200 with content, 204 without. */
  status?: number;
  headers?: Readonly<Record<string, string | number | readonly string[]>>;
  /** A JSON value, serialised here. */
  body?: unknown;
  /** JSON text already serialised (a sync page builds its own). */
  json?: string;
  /**
   * Bytes, sent at the client's pace; give `Content-Type` (and `Content-Length` when known) in `headers`. A
   * long-lived answer (an event stream) is a stream too: ending it ends the response, and a client that goes away
   * destroys it, which is how its producer learns to stop.
   */
  stream?: Readable;
}

export type Handler = (call: Call) => Reply | Promise<Reply>;

export type BodyKind = 'json' | 'form' | 'none' | { raw: string | readonly string[] };

export interface Route {
  method: Method;
  /** Express path syntax (`/v1/items/:itemId`). */
  path: string;
  handler: Handler;
  /**
   * Default: `json` for POST, PUT and PATCH, `none` otherwise. `{raw: type}` takes the bytes of that media type,
   * `{raw: [types]}` of any of them (the handler reads which from `Content-Type`).
   */
  body?: BodyKind;
  /** A body limit of the route's own instead of PIGEON_MAX_REQUEST_BYTES. */
  bodyLimit?: number;
  /** Whether `Idempotency-Key` applies (a kept successful answer is replayed). */
  idempotent?: boolean;
  /**
   * The answer's `body` as this caller may see it, applied after an idempotent answer is kept and again to a replay:
   * what is kept is the handler's own answer, never a caller's view of it (protected mail opened for one device
   * must not be written to the idempotency records in the clear).
   */
  present?: (call: Call, body: unknown) => Promise<unknown>;
  /** Middleware that runs before the body is read (the OAuth endpoints' rate limits). */
  before?: RequestHandler[];
  /** Middleware that runs after the body is read, before the handler (the OAuth failure limits key on form fields). */
  after?: RequestHandler[];
  /**
   * Served by the fast lane (http/fastLane.ts) when the request allows it: the same checks, handler and bytes without
   * the Express chain. For the hot `/v1` reads only: GET, no body, no middleware, no Idempotency-Key.
   */
  fast?: true;
  /**
   * Acts on mailbox data: the caller's mailbox, or the shared mailbox `X-Mailbox` names (http/mailbox.ts). The
   * handler reads it with `mailboxOf(call)`. Other routes refuse `X-Mailbox`.
   */
  mailbox?: true;
}

export interface TableOptions {
  maxRequestBytes: number;
  maxJsonDepth: number;
  idempotency: Idempotency;
  /** Resolves `X-Mailbox` for `mailbox` routes; without it, no route accepts the header. */
  mailboxes?: MailboxResolver;
}

/**
 * A signal aborted when the client goes away before the answer is complete: a response that closes before it has
 * finished. (After it has finished nothing is waiting any more.) Both lanes' calls use it.
 */
export function clientGone(res: ServerResponse): AbortSignal {
  const abort = new AbortController();
  if (res.destroyed) {
    if (!res.writableFinished) abort.abort();
  } else {
    res.once('close', () => {
      if (!res.writableFinished) abort.abort();
    });
  }
  return abort.signal;
}

class RequestCall implements Call {
  readonly signal: AbortSignal;
  constructor(
    private readonly req: Request,
    res: Response,
  ) {
    this.signal = clientGone(res);
  }
  get auth(): AuthContext {
    if (!this.req.auth) throw errors.unauthorized('A bearer access token is required.', '');
    return this.req.auth;
  }
  get user(): User {
    return this.auth.user;
  }
  get device(): DeviceRecord {
    if (!this.req.device) throw errors.deviceNotRegistered();
    return this.req.device;
  }
  get deviceIfRegistered() {
    return this.req.device;
  }
  get deviceIdHeader() {
    return this.req.deviceIdHeader;
  }
  get params() {
    return this.req.params as Record<string, string>;
  }
  get query() {
    return this.req.query;
  }
  get body() {
    return this.req.body ?? {};
  }
  get headers() {
    return this.req.headers;
  }
  get requestId() {
    return this.req.id;
  }
  get method() {
    return this.req.method;
  }
  get url() {
    return this.req.originalUrl;
  }
  get ip() {
    return this.req.ip;
  }
}

/** The body parsers a route's body kind needs. */
function bodyParsers(route: Route, o: TableOptions): RequestHandler[] {
  const kind = route.body ?? (route.method === 'GET' || route.method === 'DELETE' ? 'none' : 'json');
  const limit = route.bodyLimit ?? o.maxRequestBytes;
  if (kind === 'json') return jsonBody(limit, o.maxJsonDepth);
  if (kind === 'form') return formBody(limit);
  if (kind === 'none') return [];
  const types: readonly string[] = typeof kind.raw === 'string' ? [kind.raw] : kind.raw;
  return [
    (req, _res, next) => {
      // The header itself, not req.is(): that answers "no type" for a request without a body, which is a 415 here.
      const given = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (!types.includes(given)) throw errors.unsupportedMediaType(types.join(' or '));
      next();
    },
    express.raw({ type: () => true, limit }),
  ];
}

/** Writes a reply. Errors before the first byte reach the error handler; a stream that breaks later ends the socket. */
async function send(res: Response, reply: Reply): Promise<void> {
  for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value as string | number | string[]);
  const hasContent = reply.body !== undefined || reply.json !== undefined || reply.stream !== undefined;
  res.status(reply.status ?? (hasContent ? 200 : 204));
  if (reply.stream) {
    if (res.req.method === 'HEAD') {
      reply.stream.destroy();
      res.end();
      return;
    }
    await pipeline(reply.stream, res).catch((err: NodeJS.ErrnoException) => {
      // Closed early without an error — the client went away, or the producer cut off a slow one: the response is
      // over and nothing failed. A real error of the stream still reaches the error handler (which logs it).
      if (err.code !== 'ERR_STREAM_PREMATURE_CLOSE') throw err;
    });
    return;
  }
  if (reply.json !== undefined) {
    res.type('json').send(reply.json);
    return;
  }
  if (reply.body !== undefined) {
    res.json(reply.body);
    return;
  }
  res.end();
}

/** Runs the handler, with `Idempotency-Key` around it when the route takes one, then the route's `present`. */
async function answer(route: Route, call: RequestCall, req: Request, o: TableOptions): Promise<Reply> {
  const reply = await kept(route, call, req, o);
  if (!route.present) return reply;
  if (reply.body !== undefined) return { ...reply, body: await route.present(call, reply.body) };
  if (reply.json !== undefined) {
    const { json, ...rest } = reply;
    return { ...rest, body: await route.present(call, JSON.parse(json)) };
  }
  return reply;
}

/** The handler's answer, or the kept answer of an earlier request with the same `Idempotency-Key`. */
async function kept(route: Route, call: RequestCall, req: Request, o: TableOptions): Promise<Reply> {
  const key = route.idempotent ? o.idempotency.keyOf(req.headers['idempotency-key']) : undefined;
  if (key === undefined) return route.handler(call);
  const userId = call.auth.userId;
  // A raw body (a message, a vCard file) is hashed as its bytes, not as the JSON of a Buffer (several times larger).
  const body: unknown = Buffer.isBuffer(req.body) ? { sha256: crypto.createHash('sha256').update(req.body).digest('hex') } : req.body ?? null;
  // The mailbox is part of the request: one key reused on another mailbox is another request (refused as a reused key, never replayed).
  const hash = requestHash([req.method, req.originalUrl, body, ...(req.headers[MAILBOX_HEADER] === undefined ? [] : [String(req.headers[MAILBOX_HEADER])])]);
  const prior = await o.idempotency.replay(userId, key, hash);
  if (prior) {
    return {
      status: prior.status,
      headers: { 'Idempotent-Replayed': 'true' },
      ...(prior.body === '' ? {} : { json: prior.body }),
    };
  }
  const reply = await route.handler(call);
  // Keep the first successful answer (JSON or empty). Failures are not kept: retrying them is meaningful.
  const status = reply.status ?? (reply.body !== undefined || reply.json !== undefined ? 200 : 204);
  if (status < 300 && reply.stream === undefined) {
    const body = reply.json ?? (reply.body !== undefined ? JSON.stringify(reply.body) : '');
    await o.idempotency.remember(userId, key, hash, status, body);
  }
  return reply;
}

function adapt(route: Route, o: TableOptions): RequestHandler {
  return async (req, res) => {
    const call = new RequestCall(req, res);
    await enterMailbox(call, route, o.mailboxes);
    const reply = await answer(route, call, req, o);
    await send(res, reply);
  };
}

/**
 * Serves a table: every path once, its methods in table order, HEAD with GET, and 405 with `Allow` for any other
 * method on a known path. A path declared twice for one method is a programming error, refused at start-up.
 */
export function serveTable(routes: readonly Route[], o: TableOptions): Router {
  const router = Router();
  const byPath = new Map<string, Route[]>();
  for (const route of routes) {
    const list = byPath.get(route.path) ?? [];
    if (list.some((r) => r.method === route.method)) throw new Error(`route table: ${route.method} ${route.path} is declared twice`);
    list.push(route);
    byPath.set(route.path, list);
  }
  for (const [path, list] of byPath) {
    const r = router.route(path);
    const allowed: string[] = [];
    for (const route of list) {
      const method = route.method.toLowerCase() as 'get' | 'post' | 'put' | 'patch' | 'delete';
      r[method](...(route.before ?? []), ...bodyParsers(route, o), ...(route.after ?? []), adapt(route, o));
      allowed.push(route.method);
      if (route.method === 'GET') allowed.push('HEAD');
    }
    r.all(() => {
      throw errors.methodNotAllowed(allowed);
    });
  }
  return router;
}

/** A readable of one buffer or string, for replies built in memory but sent as bytes. */
export const bytes = (data: Buffer | string): Readable => Readable.from([typeof data === 'string' ? Buffer.from(data) : data]);
