/**
 * `PUT /compliance/v1/devices/{deviceId}`: a compliance partner (an MDM) says whether a user's device is compliant.
 * No bearer token: the request is signed (HTTP Message Signatures, RFC 9421, over the method, the target URI and
 * a Content-Digest of the body, RFC 9530) by a key of a configured partner (PIGEON_COMPLIANCE_PARTNERS_FILE), fresh,
 * and never seen before (its nonce). Unsigned, forged, stale or replayed → 401; a tenant the partner does not manage
 * → 403. A change ends access on devices it makes noncompliant within seconds (a re-check of their live channels).
 */
import { z } from 'zod';
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import { ApiError, errors } from '../errors';
import type { Route } from '../http/table';
import { parse } from '../http/validate';
import type { DeviceSignals } from '../devices/signals';
import { DEVICE_ID_PATTERN } from '../devices/service';
import type { DeviceCompliance, Store } from '../store/types';
import { PartnerNonceMemoryFull, PartnerRequestRefused, assertTenantAllowed, type PartnerVerifier } from './compliancePartner';

const MAX_BODY_BYTES = 16 * 1024;

const Statement = z.strictObject({
  tenantId: z.string().min(1).max(200),
  /** The user's email address, username or id. */
  user: z.string().min(1).max(320),
  state: z.enum(['compliant', 'noncompliant', 'unknown']),
  reasons: z.array(z.string().min(1).max(200)).max(50).default([]),
  expiresAt: z.union([z.number().int().min(0), z.iso.datetime({ offset: true })]).optional(),
});

export interface ComplianceRouteDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  signals: DeviceSignals;
  verifier: PartnerVerifier | undefined;
  /** Pigeon's published origin: the signature covers the target URI the partner addressed. */
  issuer: string;
}

export function complianceView(c: DeviceCompliance) {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return { deviceId: c.deviceId, userId: c.userId, state: c.state, reasons: c.reasons, expiresAt: iso(c.expiresAt), partner: c.partner, noncompliantSince: iso(c.noncompliantSince), updatedAt: iso(c.updatedAt) };
}

function refused(err: unknown): ApiError {
  if (err instanceof PartnerRequestRefused) {
    if (err.reason === 'tenant_not_allowed') return errors.forbidden(err.message);
    return new ApiError(401, 'unauthorized', err.message, { reason: err.reason }, { 'WWW-Authenticate': 'Signature' });
  }
  if (err instanceof PartnerNonceMemoryFull) return errors.unavailable('Too many signed requests to check at once; retry shortly.', 1);
  throw err;
}

export function complianceRoutes(d: ComplianceRouteDeps): Route[] {
  return [
    {
      method: 'PUT',
      path: '/compliance/v1/devices/:deviceId',
      body: { raw: 'application/json' },
      bodyLimit: MAX_BODY_BYTES,
      handler: async (call) => {
        if (!d.verifier) throw new ApiError(401, 'unauthorized', 'No compliance partner is configured on this server.', { reason: 'unknown_key' }, { 'WWW-Authenticate': 'Signature' });
        const bytes = Buffer.isBuffer(call.body) ? call.body : Buffer.alloc(0);
        let partner;
        try {
          partner = await d.verifier.verify({ method: call.method, url: `${d.issuer.replace(/\/+$/, '')}${call.url}`, headers: call.headers, body: bytes });
        } catch (err) {
          throw refused(err);
        }
        const deviceId = call.params.deviceId!;
        if (!DEVICE_ID_PATTERN.test(deviceId)) throw errors.invalidRequest('The device id must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -.', [{ field: 'deviceId', message: 'malformed' }]);
        let json: unknown;
        try {
          json = JSON.parse(bytes.toString('utf8'));
        } catch {
          throw errors.invalidRequest('The body is not JSON.');
        }
        const statement = parse(Statement, json);
        try {
          assertTenantAllowed(partner, statement.tenantId);
        } catch (err) {
          throw refused(err);
        }
        // An address may belong to users of several tenants: only the statement's tenant's counts.
        const byEmail = (await d.store.users.byEmail(statement.user)).filter((u) => u.tenantId === statement.tenantId);
        const user = (await d.store.users.byId(statement.user)) ?? (await d.store.users.byUsername(statement.user)) ?? (byEmail.length === 1 ? byEmail[0] : undefined);
        if (!user || user.tenantId !== statement.tenantId) throw errors.notFound('No such user in that tenant.');
        const now = d.clock.now();
        const expiresAt = statement.expiresAt === undefined ? null : typeof statement.expiresAt === 'number' ? statement.expiresAt : Date.parse(statement.expiresAt);
        if (expiresAt !== null && expiresAt <= now) throw errors.invalidRequest('expiresAt is in the past.', [{ field: 'expiresAt', message: 'must be in the future' }]);
        const previous = await d.store.access.compliance(user.tenantId, user.id, deviceId);
        const record: DeviceCompliance = {
          tenantId: user.tenantId,
          userId: user.id,
          deviceId,
          state: statement.state,
          reasons: statement.reasons,
          expiresAt,
          partner: partner.partnerId,
          // The grace period counts from when the device turned noncompliant, not from each repeated report.
          noncompliantSince: statement.state === 'noncompliant' ? (previous?.state === 'noncompliant' && previous.noncompliantSince !== null ? previous.noncompliantSince : now) : null,
          updatedAt: now,
        };
        await d.store.run(function* (tx) {
          yield* tx.access.setCompliance(record);
          yield* tx.audit.append({ tenantId: user.tenantId, at: now, actorId: null, actorName: `partner:${partner.partnerId}`, action: 'device.compliance', targetType: 'device', targetId: deviceId, details: { userId: user.id, state: record.state, reasons: record.reasons, previous: previous?.state ?? null } });
        });
        d.log.info({ partner: partner.partnerId, userId: user.id, deviceId, state: record.state }, 'device compliance set');
        d.signals.recheck({ tenantId: user.tenantId, userId: user.id, deviceId });
        return { body: complianceView(record) };
      },
    },
  ];
}
