/**
 * Information protection's own endpoints (README, "Information protection"):
 * - apps: `GET /v1/protection` (the tenant's templates, labels and label policy, to offer when composing), the
 *   user's published S/MIME certificates (`/v1/me/certificates`) and the directory's (`GET /v1/directory/certificates`);
 * - admins of the tenant: the protection document (`/admin/v1/protection`, versioned: ETag / If-Match as the
 *   access document) and the tenant's keys (`/admin/v1/protection/keys`, rotation). Private keys never leave.
 */
import crypto from 'node:crypto';
import { z } from 'zod';
import { errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse } from '../http/validate';
import { newId } from '../ids';
import type { AdminService } from '../admin/service';
import type { Clock } from '../clock';
import type { Store, UserCertificate } from '../store/types';
import { etagOf, ifMatch } from '../access/adminRoutes';
import { CertificateInputError, parseUserCertificate } from './certificates';
import { EMPTY_PROTECTION_DOCUMENT, parseProtectionDocument } from './config';
import type { ProtectionService } from './service';

const Publish = z.strictObject({ certificate: z.string().min(1).max(32 * 1024) });
const DirectoryQuery = z.strictObject({
  address: z.string().min(3).max(254).regex(/^[^\s@]+@[^\s@]+$/, 'must be an email address'),
});

const certificateView = (c: UserCertificate) => ({
  id: c.id,
  email: c.email,
  certificate: c.certificatePem,
  fingerprint: c.fingerprint,
  notBefore: new Date(c.notBefore).toISOString(),
  notAfter: new Date(c.notAfter).toISOString(),
  createdAt: new Date(c.createdAt).toISOString(),
});

export interface ProtectionRouteDeps {
  protection: ProtectionService;
  store: Store;
  clock: Clock;
  admin: AdminService;
}

export function protectionRoutes(d: ProtectionRouteDeps): Route[] {
  const { protection, store, clock, admin } = d;
  const actor = (call: Call) => admin.actor(call.auth);

  /** Compare-and-set of the tenant's document with its audit entry; a lost race without If-Match is retried. */
  async function putDocument(call: Call, doc: unknown, expected: number | undefined) {
    const who = await actor(call);
    const json = JSON.stringify(doc);
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await store.protection.config(who.tenantId);
      const version = current?.version ?? 0;
      if (expected !== undefined && expected !== version) throw errors.conflict('The protection document changed since that version; read it again.');
      const now = clock.now();
      const put = await store.run(function* (tx) {
        const stored = yield* tx.protection.putConfig(who.tenantId, json, version, now);
        if (stored) {
          yield* tx.audit.append({ tenantId: who.tenantId, at: now, actorId: who.id, actorName: who.name, action: 'protection.update', targetType: 'protectionDocument', targetId: null, details: { version: stored.version } });
        }
        return stored;
      });
      if (put) return put.version;
    }
    throw errors.conflict('The protection document is being changed by someone else; read it again.');
  }

  return [
    {
      method: 'GET',
      path: '/v1/protection',
      handler: async (call) => ({ body: await protection.catalogue(call.auth.tenantId) }),
    },
    {
      method: 'GET',
      path: '/v1/me/certificates',
      handler: async (call) => ({ body: { certificates: (await store.protection.certificates(call.auth.userId)).map(certificateView) } }),
    },
    {
      method: 'POST',
      path: '/v1/me/certificates',
      idempotent: true,
      handler: async (call) => {
        const { certificate } = parse(Publish, call.body);
        const now = clock.now();
        let parsed;
        try {
          parsed = parseUserCertificate(certificate, now);
        } catch (err) {
          if (err instanceof CertificateInputError) throw errors.invalidRequest(err.message, [{ field: 'certificate', message: err.message }]);
          throw err;
        }
        const own = call.user.email.trim().toLowerCase();
        // A certificate is published under the user's own address only: nobody publishes a key for someone else.
        if (!parsed.emails.includes(own)) {
          throw errors.invalidRequest(`The certificate does not name your address (${own}).`, [{ field: 'certificate', message: 'must name your own address' }]);
        }
        const record: UserCertificate = {
          id: newId(),
          tenantId: call.auth.tenantId,
          userId: call.auth.userId,
          email: own,
          certificatePem: parsed.certificatePem,
          fingerprint: parsed.fingerprint,
          notBefore: parsed.notBefore,
          notAfter: parsed.notAfter,
          createdAt: now,
        };
        if (!(await store.protection.addCertificate(record))) {
          throw errors.invalidRequest('You have published this certificate already.', [{ field: 'certificate', message: 'already published' }]);
        }
        return { status: 201, headers: { Location: `/v1/me/certificates/${record.id}` }, body: certificateView(record) };
      },
    },
    {
      method: 'DELETE',
      path: '/v1/me/certificates/:certificateId',
      idempotent: true,
      handler: async (call) => {
        if (!(await store.protection.removeCertificate(call.auth.userId, call.params.certificateId!))) throw errors.notFound('No such certificate of yours.');
        return { status: 204 };
      },
    },
    {
      method: 'GET',
      path: '/v1/directory/certificates',
      handler: async (call) => {
        const { address } = parse(DirectoryQuery, call.query, 'query');
        const now = clock.now();
        // Only certificates that are valid now: a sender must not encrypt to an expired key.
        const found = (await store.protection.certificatesByEmail(call.auth.tenantId, address.trim().toLowerCase())).filter((c) => c.notAfter > now && c.notBefore <= now);
        return { body: { address: address.toLowerCase(), certificates: found.map(certificateView) } };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/protection',
      handler: async (call) => {
        const record = await store.protection.config(call.auth.tenantId);
        const version = record?.version ?? 0;
        return { headers: { ETag: etagOf(version) }, body: record ? JSON.parse(record.doc) : EMPTY_PROTECTION_DOCUMENT };
      },
    },
    {
      method: 'PUT',
      path: '/admin/v1/protection',
      handler: async (call) => {
        const doc = parseProtectionDocument(call.body);
        const version = await putDocument(call, doc, ifMatch(call));
        return { headers: { ETag: etagOf(version) }, body: doc };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/protection/keys',
      handler: async (call) => ({
        body: {
          keys: (await protection.keyring.keys(call.auth.tenantId)).map((k) => ({
            id: k.id,
            certificate: k.certificatePem,
            fingerprint: crypto.createHash('sha256').update(new crypto.X509Certificate(k.certificatePem).raw).digest('hex'),
            createdAt: new Date(k.createdAt).toISOString(),
            retiredAt: k.retiredAt === null ? null : new Date(k.retiredAt).toISOString(),
            active: k.retiredAt === null,
          })),
        },
      }),
    },
    {
      method: 'POST',
      path: '/admin/v1/protection/keys/rotate',
      body: 'none',
      handler: async (call) => {
        const who = await actor(call);
        const key = await protection.keyring.rotate(who.tenantId);
        await store.audit.append({ tenantId: who.tenantId, at: clock.now(), actorId: who.id, actorName: who.name, action: 'protection.rotateKey', targetType: 'protectionKey', targetId: key.id, details: {} });
        return { status: 201, body: { id: key.id, certificate: key.certificatePem, createdAt: new Date(key.createdAt).toISOString(), active: true } };
      },
    },
  ];
}
