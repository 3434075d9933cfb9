/**
 * The admin API's users, tenant and regions (admins only; server/admin/userManagement.ts and ./service hold the
 * rules): `GET|POST /admin/v1/users`, `GET /admin/v1/users/{id}`, `POST /admin/v1/users/{id}/{disable,enable,
 * reset-password,revoke-sessions,reset-mfa}`, `GET /admin/v1/tenant`, `GET /admin/v1/regions`.
 */
import { z } from 'zod';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { AdminService } from './service';

const UserListQuery = z.strictObject({
  q: z.string().max(200).optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
  cursor: z.string().min(1).max(400).optional(),
});

const NewUser = z.strictObject({
  username: z.string().min(1).max(128),
  email: z.string().max(254).regex(/^[^\s@]+@[^\s@]+$/, 'must be an address').optional(),
  displayName: text(200).pipe(z.string().min(1)).optional(),
  role: z.enum(['user', 'admin']).default('user'),
  password: z.string().max(2048).optional(), // a bound on the body only: the policy (1024 characters) is passwordProblem's
});

const ResetPassword = z.strictObject({ password: z.string().max(2048).optional() });

/** A generated password is answered once: no cache may keep it. */
const NO_STORE = { 'Cache-Control': 'no-store' };

export function adminUserRoutes(admin: AdminService): Route[] {
  const users = admin.users;
  const action = (path: string, run: (actor: Awaited<ReturnType<AdminService['actor']>>, id: string) => Promise<unknown>): Route => ({
    method: 'POST',
    path: `/admin/v1/users/:id/${path}`,
    body: 'none', // the action takes no body (one sent is not read)
    handler: async (call) => ({ body: await run(await admin.actor(call.auth), call.params.id!) }),
  });
  return [
    {
      method: 'GET',
      path: '/admin/v1/users',
      handler: async (call) => ({ body: await users.list(await admin.actor(call.auth), parse(UserListQuery, call.query, 'query')) }),
    },
    {
      method: 'POST',
      path: '/admin/v1/users',
      handler: async (call) => {
        const body = parse(NewUser, call.body);
        return { status: 201, body: await users.create(await admin.actor(call.auth), body) };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/users/:id',
      handler: async (call) => ({ body: await users.get(await admin.actor(call.auth), call.params.id!) }),
    },
    action('disable', (actor, id) => users.setDisabled(actor, id, true)),
    action('enable', (actor, id) => users.setDisabled(actor, id, false)),
    action('revoke-sessions', (actor, id) => users.revokeSessions(actor, id)),
    action('reset-mfa', (actor, id) => users.resetMfa(actor, id)),
    {
      method: 'POST',
      path: '/admin/v1/users/:id/reset-password',
      handler: async (call) => {
        const { password } = parse(ResetPassword, call.body);
        return { headers: NO_STORE, body: await users.resetPassword(await admin.actor(call.auth), call.params.id!, password) };
      },
    },
    {
      method: 'GET',
      path: '/admin/v1/tenant',
      handler: async (call) => ({ body: await admin.tenant(call.auth.tenantId) }),
    },
    {
      method: 'GET',
      path: '/admin/v1/regions',
      handler: async (call) => ({ body: await admin.regions(call.auth.tenantId) }),
    },
  ];
}
