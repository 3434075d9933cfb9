/**
 * Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI description. Unauthenticated on
 * purpose (load balancers and scrapers carry no tokens); they reveal nothing about mailboxes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Router } from 'express';
import type { Registry } from 'prom-client';
import { route } from './routes';
import { errors } from '../errors';
import type { Store } from '../store/types';

export const OPENAPI_FILE = path.resolve(__dirname, '../../schema/openapi.yaml');

export function opsRoutes(store: Store, registry: Registry): Router {
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
  route(router, '/metrics', {
    get: async (_req, res) => {
      res.type(registry.contentType).send(await registry.metrics());
    },
  });
  route(router, '/openapi.yaml', {
    get: (_req, res) => {
      res.type('application/yaml').send(fs.readFileSync(OPENAPI_FILE));
    },
  });
  return router;
}
