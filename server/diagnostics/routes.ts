/**
 * The diagnostics API (issue 20; server/diagnostics/service.ts does the work):
 * - `POST /v1/diagnostics` — the calling registered device uploads a log bundle (`application/gzip` or
 *   `application/zip`, at most the bundle's compressed cap); 201 with the incident id. A refused bundle is 413
 *   (too large, too many entries, a compression ratio of a bomb), 415 (a type or an entry compression it does not
 *   read) or 400 (corrupt, encrypted, a bad entry name), a problem with `reason`; nothing is stored. At most
 *   DIAGNOSTICS_UPLOADS_PER_HOUR bundles read per device per hour (429 with Retry-After; UploadLimiter).
 * - `GET /v1/diagnostics`, `GET /v1/diagnostics/{incidentId}` — the user's own incidents; another user's is 404,
 *   exactly as one that does not exist.
 * - `GET /admin/v1/diagnostics/{incidentId}` and `…/bundle` — the tenant's incident and its zip (audited); another
 *   tenant's is 404 as above.
 * Incident ids in paths are read as a person types them (any case, with or without dashes or the prefix).
 */
import type { RequestHandler } from 'express';
import { ApiError, errors } from '../errors';
import type { Route } from '../http/table';
import { bytes } from '../http/table';
import type { AdminService } from '../admin/service';
import { BundleRejected } from './bundle';
import type { DiagnosticsService, UploadLimiter } from './service';

export const BUNDLE_TYPES = ['application/gzip', 'application/zip'] as const;

/** The status a refused bundle answers. */
function refusal(err: BundleRejected): ApiError {
  const extra = { reason: err.reason };
  switch (err.reason) {
    case 'tooLarge':
    case 'tooManyEntries':
    case 'compressionRatio':
      return new ApiError(413, 'payloadTooLarge', `The diagnostics bundle is refused: ${err.message}.`, extra);
    case 'unsupportedType':
      return new ApiError(415, 'unsupportedMediaType', `The diagnostics bundle is refused: ${err.message}.`, extra);
    default:
      return new ApiError(400, 'invalidRequest', `The diagnostics bundle is refused: ${err.message}.`, extra);
  }
}

const noSuchIncident = () => errors.notFound('No such incident.');

export interface DiagnosticsRouteDeps {
  diagnostics: DiagnosticsService;
  admin: AdminService;
  limiter: UploadLimiter;
}

export function diagnosticsRoutes(d: DiagnosticsRouteDeps): Route[] {
  const { diagnostics, admin, limiter } = d;
  // Before the body is read, a device over its allowance is refused without reading it (the handler counts the
  // attempt, and refuses too when concurrent uploads got past this check). A request without a registered device
  // is the handler's to refuse (403 deviceNotRegistered).
  const overAllowance: RequestHandler = (req, _res, next) => {
    const wait = req.device && limiter.wait(req.device.id);
    if (wait !== undefined) throw errors.rateLimited(wait);
    next();
  };
  return [
    {
      method: 'POST',
      path: '/v1/diagnostics',
      body: { raw: BUNDLE_TYPES },
      bodyLimit: diagnostics.limits.maxCompressedBytes,
      before: [overAllowance],
      handler: async (call) => {
        const device = call.device;
        const wait = limiter.take(device.id);
        if (wait !== undefined) throw errors.rateLimited(wait);
        const body = Buffer.isBuffer(call.body) ? call.body : Buffer.alloc(0);
        try {
          return { status: 201, body: await diagnostics.upload(call.user, device, body, String(call.headers['content-type'] ?? '')) };
        } catch (err) {
          if (err instanceof BundleRejected) throw refusal(err);
          throw err;
        }
      },
    },
    {
      method: 'GET',
      path: '/v1/diagnostics',
      handler: async (call) => ({ body: { incidents: await diagnostics.listOwn(call.user) } }),
    },
    {
      method: 'GET',
      path: '/v1/diagnostics/:incidentId',
      handler: async (call) => {
        const incident = await diagnostics.own(call.user, call.params.incidentId!);
        if (!incident) throw noSuchIncident();
        return { body: incident };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/diagnostics/:incidentId',
      handler: async (call) => {
        const incident = await diagnostics.forAdmin(await admin.actor(call.auth), call.params.incidentId!);
        if (!incident) throw noSuchIncident();
        return { body: incident };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/diagnostics/:incidentId/bundle',
      handler: async (call) => {
        const found = await diagnostics.download(await admin.actor(call.auth), call.params.incidentId!);
        if (!found) throw noSuchIncident();
        return {
          headers: {
            'Content-Type': 'application/zip',
            'Content-Length': found.zip.length,
            'Content-Disposition': `attachment; filename="${found.incident.id}.zip"`,
            'Cache-Control': 'no-store',
          },
          stream: bytes(found.zip),
        };
      },
    },
  ];
}
