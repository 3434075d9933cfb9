/**
 * The admin API is for administrators only (issue 8): every `/admin/...` operation of schema/openapi.yaml, called
 * with a valid request (an administrator's ids, a body it would accept), answers 401 without a token and 403
 * `forbidden` with a user's token — unbound or bound to the user's registered device — and changes nothing. Spellings
 * of admin paths that a router might treat differently (case, slashes, dot segments, escapes) never reach an admin
 * handler as a user.
 *
 * That no undocumented route is live is proven by tests/http/openapi.test.ts (c), which walks the router stack and
 * compares it with the document. Here, from outside: paths an API like this might grow (user management, debug and
 * config endpoints) answer 404 even to an administrator.
 */
import http from 'node:http';
import request from 'supertest';
import { buildTestApp, type TestContext } from '../helpers/testApp';
import { changedTables, snapshot } from '../helpers/storeDiff';
import { DEVICE_HEADER, baseQuery, buildWorld, fillPath, ownId, partyHeaders, queryString, specOperations, validBody, type Party, type SpecOperation } from '../helpers/specCases';

let ctx: TestContext;
let server: http.Server;
let alice: Party;
let root: Party;
const api = () => request(server);

beforeAll(async () => {
  ctx = await buildTestApp({ deviceRateLimit: 0, tokenRequestsPerIp: 1_000_000 });
  server = http.createServer(ctx.app).listen(0, '127.0.0.1');
  const world = await buildWorld(ctx, api, [
    { name: 'alice', role: 'user', tenant: 'A' },
    { name: 'root', role: 'admin', tenant: 'A' },
  ]);
  [alice, root] = [world.alice!, world.root!];
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await ctx?.close();
});

const ADMIN_OPS = specOperations().filter((o) => o.path.startsWith('/admin/'));

/** The request an administrator would send, with the given credentials instead. */
function asIf(op: SpecOperation, headers: Record<string, string>) {
  const id = (kind: Parameters<typeof ownId>[1]) => ownId(root, kind);
  let req = api()[op.method as 'get'](fillPath(op, id) + queryString(baseQuery(op, id))).set(headers);
  const body = validBody(op, { id, email: alice.email, username: root.username, password: root.password });
  if (body !== undefined) req = req.type(op.body!.mediaType).send(body as object);
  return req;
}

const CALLERS: Array<[string, () => Record<string, string>, number, string]> = [
  ['no token', () => ({}), 401, 'unauthorized'],
  ["a user's token", () => ({ Authorization: `Bearer ${alice.token}` }), 403, 'forbidden'],
  ["a user's device-bound token with its device", () => ({ Authorization: `Bearer ${alice.device!.token}`, [DEVICE_HEADER]: alice.device!.deviceId }), 403, 'forbidden'],
];

test('the document has admin operations, and each documents 401 and 403', () => {
  expect(ADMIN_OPS.length).toBeGreaterThanOrEqual(10);
  expect(ADMIN_OPS.every((o) => o.access === 'admin')).toBe(true);
});

describe.each(CALLERS)('%s', (_who, headers, status, code) => {
  test.each(ADMIN_OPS.map((o) => [o.key, o] as const))(`%s → ${status} ${code}, nothing changed`, async (_key, op) => {
    const before = snapshot(ctx.store.db);
    const res = await asIf(op, headers());
    expect({ status: res.status, code: res.body?.code }).toEqual({ status, code });
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(changedTables(before, snapshot(ctx.store.db))).toEqual([]);
  });
});

test('the same requests succeed for the administrator (the 403s above are about the caller, not the request)', async () => {
  const reads = ADMIN_OPS.filter((o) => o.method === 'get');
  for (const op of reads) {
    const res = await asIf(op, { Authorization: `Bearer ${root.token}` });
    expect({ op: op.key, status: res.status }).toEqual({ op: op.key, status: 200 });
  }
});

test.each([
  '/ADMIN/v1/audit',
  '/Admin/V1/Audit',
  '/admin/v1/audit/',
  '/admin//v1/audit',
  '//admin/v1/audit',
  '/admin/v1/./audit',
  '/admin/v1/x/../audit',
  '/v1/../admin/v1/audit',
  '/%61dmin/v1/audit',
  '/admin%2Fv1%2Faudit',
  '/admin/v1/audit%00',
  '/admin/v1/audit;jsessionid=1',
  '/admin/v1/audit?role=admin',
  '/admin/v1/devices.json',
])("a user's token on %s never reaches an admin handler", async (target) => {
  const before = snapshot(ctx.store.db);
  const res = await api().get(target).set('Authorization', `Bearer ${alice.token}`);
  expect([400, 403, 404]).toContain(res.status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.text).not.toContain('"entries"');
  expect(changedTables(before, snapshot(ctx.store.db))).toEqual([]);
});

// `GET /admin` and `/admin/<page>` are the admin center's page (issue 21: an HTML shell that holds no data and
// calls the admin API itself); the test below shows a bearer token gets nothing more there than anyone.
test.each(['/admin', '/admin/', '/admin/devices'])('GET %s is the admin center page: HTML, no data, the same for any caller', async (target) => {
  const before = snapshot(ctx.store.db);
  const anonymous = await api().get(target);
  const withToken = await api().get(target).set('Authorization', `Bearer ${root.token}`);
  for (const res of [anonymous, withToken]) {
    expect(res.headers['content-type'] ?? '').not.toMatch(/json/);
    expect(res.text).not.toContain(root.userId);
  }
  expect(withToken.status).toBe(anonymous.status);
  expect(changedTables(before, snapshot(ctx.store.db))).toEqual([]);
});

test.each([
  ['GET', '/admin/v1'],
  // Issue 21 made GET|POST /admin/v1/users and GET /admin/v1/users/{id} routes (DELETE there is 405).
  ['PUT', '/admin/v1/users/{user}/role'],
  ['POST', '/admin/v1/users/{user}/delete'],
  ['GET', '/admin/v1/tenants'],
  ['GET', '/admin/v1/config'],
  ['GET', '/admin/v1/debug'],
  ['GET', '/admin/v1/logs'],
  ['POST', '/admin/v1/backup'],
  ['GET', '/v1/admin'],
  ['GET', '/v1/users'],
  ['GET', '/debug'],
  ['GET', '/debug/vars'],
  ['GET', '/.env'],
  ['GET', '/server-status'],
  ['GET', '/graphql'],
  ['GET', '/api'],
])('%s %s is not a route (404 even for an administrator, or under /v1/ a registered device)', async (method, template) => {
  // Under /v1/ the device gate answers first (callers without a registered device learn nothing about routes).
  const headers = template.startsWith('/v1/') ? partyHeaders(alice) : { Authorization: `Bearer ${root.token}` };
  const res = await api()
    [method.toLowerCase() as 'get'](template.replace('{user}', alice.userId))
    .set(headers);
  expect({ status: res.status, code: res.body?.code }).toEqual({ status: 404, code: 'notFound' });
});
