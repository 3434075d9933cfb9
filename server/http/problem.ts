/**
 * The one place where errors become HTTP responses: ApiError → RFC 9457 problem+json, OAuthError → RFC 6749 §5.2,
 * body-parser failures → the matching typed error, anything else → 500 `internal` with only the request id.
 */
import { StoreBusy, StoreFull, StoreUnavailable } from '../store/errors';
import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { ApiError, OAuthError, errors } from '../errors';

export const PROBLEM_TYPE_BASE = 'urn:pigeon:problem:';

/** body-parser and raw-body report their failures with a `type`; map each to the protocol's code. */
function fromBodyParser(err: { type?: string; limit?: number; status?: number }): ApiError | undefined {
  switch (err.type) {
    case 'entity.too.large':
      return errors.payloadTooLarge(err.limit ?? 0);
    case 'entity.parse.failed':
      return errors.invalidRequest('The request body is not valid JSON.');
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return errors.unsupportedMediaType('UTF-8 encoded');
    case 'entity.verify.failed':
    case 'request.size.invalid':
    case 'request.aborted':
    case 'stream.encoding.set':
    case 'parameters.too.many':
      return errors.invalidRequest('The request body could not be read.');
    default:
      // Client errors of express's own layers that carry no `type`: the router's URIError for a path segment whose
      // percent-escapes are not UTF-8, and body-parser's for a gzip or deflate body that does not inflate.
      if (err instanceof URIError && err.status === 400) return errors.invalidRequest('The request path has a percent-escape that is not valid UTF-8.');
      if (err.status === 400) return errors.invalidRequest('The request could not be read.');
      return undefined;
  }
}

/**
 * An error as the one error handler answers it, free of any framework, so the Express chain and the fast lane
 * (http/fastLane.ts) send the very same bytes: status, the headers it implies (in order), media type and body.
 */
export interface ErrorAnswer {
  status: number;
  headers: Array<[string, string]>;
  /** The media type; it goes out with `; charset=utf-8` (as Express's `res.type(…).send(text)` writes it). */
  type: string;
  body: string;
}

/** A typed error as problem+json (RFC 9457). */
export function problemAnswer(err: ApiError, requestId: string, headers: Array<[string, string]> = []): ErrorAnswer {
  return {
    status: err.status,
    headers: [...headers, ...Object.entries(err.headers)],
    type: 'application/problem+json',
    body: JSON.stringify({
      type: PROBLEM_TYPE_BASE + err.code,
      title: err.title,
      status: err.status,
      detail: err.message,
      code: err.code,
      requestId,
      ...err.extra,
    }),
  };
}

/**
 * What any error thrown while serving a request answers (before the response has started): never stored
 * (`Cache-Control: no-store`); an error that is not the client's is logged here with the request id.
 */
export function errorAnswer(err: unknown, requestId: string, log: Logger): ErrorAnswer {
  const noStore: Array<[string, string]> = [['Cache-Control', 'no-store']];
  if (err instanceof OAuthError) {
    if (err.status === 401) noStore.push(['WWW-Authenticate', 'Basic realm="pigeon"']);
    return { status: err.status, headers: noStore, type: 'application/json', body: JSON.stringify({ error: err.error, error_description: err.description, ...err.extra }) };
  }
  const mapped = err instanceof ApiError ? err : fromBodyParser(err as { type?: string });
  if (mapped) return problemAnswer(mapped, requestId, noStore);
  if (err instanceof StoreFull) return problemAnswer(errors.insufficientStorage(), requestId, noStore);
  if (err instanceof StoreBusy) return problemAnswer(errors.unavailable('The store is busy; retry shortly.', 1), requestId, noStore);
  if (err instanceof StoreUnavailable) {
    log.error({ err, requestId }, 'store unavailable');
    return problemAnswer(errors.unavailable('The store is unavailable; retry shortly.', 5), requestId, noStore);
  }
  log.error({ err, requestId }, 'unhandled error');
  return problemAnswer(new ApiError(500, 'internal', 'An internal error occurred; quote the request id when reporting it.'), requestId, noStore);
}

function sendAnswer(res: Response, answer: ErrorAnswer): void {
  for (const [name, value] of answer.headers) res.setHeader(name, value);
  res.status(answer.status).type(answer.type).send(answer.body);
}

export function sendProblem(res: Response, err: ApiError, requestId: string): void {
  sendAnswer(res, problemAnswer(err, requestId));
}

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, next) => {
    if (res.headersSent) {
      // Too late for a problem body (a stream broke midway): end the connection so the client sees the failure.
      log.error({ err, requestId: req.id }, 'error after response started');
      req.socket.destroy();
      return next;
    }
    sendAnswer(res, errorAnswer(err, req.id, log));
  };
}

/** The last route: nothing matched. */
export const notFoundHandler: RequestHandler = (req) => {
  throw errors.notFound(`No route for ${req.method} ${req.path}.`);
};
