/**
 * Route declaration with 405s: every path lists its methods once, and any other method on that path answers
 * 405 problem+json with an `Allow` header instead of falling through to 404.
 */
import type { RequestHandler, Router } from 'express';
import { errors } from '../errors';

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
export type MethodHandlers = Partial<Record<Method, RequestHandler | RequestHandler[]>>;

export function route(router: Router, path: string, handlers: MethodHandlers): void {
  const r = router.route(path);
  const allowed: string[] = [];
  for (const [method, handler] of Object.entries(handlers) as [Method, RequestHandler | RequestHandler[]][]) {
    r[method](...(Array.isArray(handler) ? handler : [handler]));
    allowed.push(method.toUpperCase());
    if (method === 'get') allowed.push('HEAD');
  }
  r.all(() => {
    throw errors.methodNotAllowed(allowed);
  });
}
