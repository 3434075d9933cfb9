/**
 * Operational endpoints: liveness, readiness and the OpenAPI description. Unauthenticated on purpose (load balancers
 * carry no tokens); they reveal nothing about mailboxes. Prometheus metrics are not served here: they have their own
 * listener (metricsServer.ts), so the API port answers /metrics with 404.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Router } from 'express';
import { route } from './routes';
import { errors } from '../errors';
import type { Store } from '../store/types';

export const OPENAPI_FILE = path.resolve(__dirname, '../../schema/openapi.yaml');

export function opsRoutes(store: Store): Router {
  const router = Router();
  route(router, '/healthz', { get: (_req, res) => void res.json({ status: 'ok' }) });
  route(router, '/readyz', {
    get: (_req, res) => {
      try {
        store.ping();
      } catch {
        throw errors.unavailable('The store is not reachable.');
      }
      res.json({ status: 'ready' });
    },
  });
  route(router, '/openapi.yaml', {
    get: (_req, res) => {
      res.type('application/yaml').send(fs.readFileSync(OPENAPI_FILE));
    },
  });
  return router;
}
