/**
 * The directory's endpoints (issue 18):
 * - apps: `GET /v1/people?q=&limit=` (people search), `GET /v1/people/:userId` (a person),
 *   `GET /v1/people/:userId/organization` (their managers, direct reports and colleagues); the caller's tenant only;
 * - administrators of the tenant: `GET|PUT /admin/v1/users/:userId/directory` (a user's entry; a change is audited
 *   `directory.update`) and `POST /admin/v1/directory/import` (a CSV file, one unit of work, audited
 *   `directory.import`).
 * app.ts puts authentication in front (`/v1`: a token and the device gate; `/admin`: an administrator).
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { AdminService } from '../admin/service';
import { DirectoryNotFound, DirectoryRefused, MAX_FIELD_LENGTH, MAX_SEARCH_LIMIT, DEFAULT_SEARCH_LIMIT, type DirectoryService } from './service';

export interface DirectoryRouteDeps {
  directory: DirectoryService;
  /** Who the acting administrator is (the audit log names them). */
  admin: Pick<AdminService, 'actor'>;
}

const SearchQuery = z.strictObject({
  q: z.string().trim().min(1, 'must not be empty').max(100),
  limit: z
    .string()
    .regex(/^\d{1,3}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(1).max(MAX_SEARCH_LIMIT))
    .optional(),
});

const fact = text(MAX_FIELD_LENGTH).nullable().optional();
const EntryChangeBody = z
  .strictObject({
    title: fact,
    department: fact,
    office: fact,
    phone: fact,
    mobile: fact,
    managerId: z.string().min(1).max(64).nullable().optional(),
    hiddenFromDirectory: z.boolean().optional(),
  })
  .refine((b) => Object.values(b).some((v) => v !== undefined), 'name at least one field to change');

/** The service's refusals as the API's errors. */
async function answering<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof DirectoryNotFound) throw errors.notFound(err.message);
    if (err instanceof DirectoryRefused) throw errors.invalidRequest(err.message, err.problems);
    throw err;
  }
}

export function directoryRoutes({ directory, admin }: DirectoryRouteDeps): Route[] {
  const actor = (call: Call) => admin.actor(call.auth);
  return [
    {
      method: 'GET',
      path: '/v1/people',
      handler: async (call) => {
        const { q, limit } = parse(SearchQuery, call.query, 'query');
        return { body: { people: await directory.search(call.auth, q, limit ?? DEFAULT_SEARCH_LIMIT) } };
      },
    },
    {
      method: 'GET',
      path: '/v1/people/:userId',
      handler: async (call) => ({ body: await answering(() => directory.person(call.auth.tenantId, call.params.userId!)) }),
    },
    {
      method: 'GET',
      path: '/v1/people/:userId/organization',
      handler: async (call) => ({ body: await answering(() => directory.organization(call.auth.tenantId, call.params.userId!)) }),
    },
    {
      method: 'GET',
      path: '/admin/v1/users/:userId/directory',
      handler: async (call) => ({ body: await answering(() => directory.entry(call.auth.tenantId, call.params.userId!)) }),
    },
    {
      method: 'PUT',
      path: '/admin/v1/users/:userId/directory',
      handler: async (call) => {
        const change = parse(EntryChangeBody, call.body);
        const who = await actor(call);
        return { body: await answering(() => directory.update(who, call.params.userId!, change)) };
      },
    },
    {
      method: 'POST',
      path: '/admin/v1/directory/import',
      body: { raw: 'text/csv' },
      handler: async (call) => {
        const bytes = call.body as Buffer;
        const csv = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
        let content: string;
        try {
          content = csv.decode(bytes);
        } catch {
          throw errors.invalidRequest('The file is not UTF-8 text.');
        }
        const who = await actor(call);
        return { body: await answering(() => directory.importCsv(who, content)) };
      },
    },
  ];
}
