/**
 * Operational endpoints: liveness, readiness and the OpenAPI description. Unauthenticated on purpose (load balancers
 * carry no tokens); they reveal nothing about mailboxes. Prometheus metrics are not served here: they have their own
 * listener (metricsServer.ts), so the API port answers /metrics with 404.
 */
import fs from 'node:fs';
import path from 'node:path';
import { errors } from '../errors';
import { bytes, type Route } from './table';

export const OPENAPI_FILE = path.resolve(__dirname, '../../schema/openapi.yaml');

/** Readiness asks only whether the store answers (the store itself, or anything that pings it). */
export interface Pingable {
  ping(): Promise<void>;
}

export function opsRoutes(readiness: Pingable): Route[] {
  return [
    { method: 'GET', path: '/healthz', handler: () => ({ body: { status: 'ok' } }) },
    {
      method: 'GET',
      path: '/readyz',
      handler: async () => {
        try {
          await readiness.ping();
        } catch {
          throw errors.unavailable('The store is not reachable.');
        }
        return { body: { status: 'ready' } };
      },
    },
    {
      method: 'GET',
      path: '/openapi.yaml',
      handler: () => {
        const file = fs.readFileSync(OPENAPI_FILE);
        return { headers: { 'Content-Type': 'application/yaml', 'Content-Length': file.length }, stream: bytes(file) };
      },
    },
  ];
}
