/**
 * Mass assignment (issue 8): every operation of schema/openapi.yaml that takes a JSON or form body gets a body it
 * accepts plus one protected member — owner, userId, deviceId, accessState, wipe, isAdmin, role, id, modseq,
 * changeKey, folderId, tenantId — set to another user's or tenant's value (or to a privilege). The member must be
 * refused (400 naming it, and no table of the store changed) or ignored, which a store diff proves: the rows the
 * request changed hold none of the planted values, and the caller is still who it was with the role it had.
 * Members an operation documents (an access rule's `accessState`, a batch move's `id`) are not protected there.
 * The batch is probed at the level of its operations too. The raw message import has no members to add. The
 * compliance partners' operation takes no token: its probes are signed by a partner of the test's own, so the
 * member, not a missing signature, is what they are refused for.
 */
import fs from 'node:fs';
import http from 'node:http';
import request from 'supertest';
import { buildTestApp, tempDir, type TestContext } from '../helpers/testApp';
import { diffRows, describeDiff, snapshot } from '../helpers/storeDiff';
import {
  buildWorld,
  fillPath,
  idFor,
  ownId,
  partyHeaders,
  resolveSchema,
  specOperations,
  testCompliancePartner,
  validBody,
  type IdKind,
  type Party,
  type SpecOperation,
  type TestPartner,
} from '../helpers/specCases';
import { issuerOf } from '../../server/config';

let ctx: TestContext;
let server: http.Server;
let partnerDir: string;
let partner: TestPartner;
let alice: Party;
let bob: Party;
let carol: Party;
let root: Party;
const api = () => request(server);

beforeAll(async () => {
  partnerDir = tempDir('pigeon-partner-');
  // The world's tenants are made after the partners file is read: the partner manages none of them (see
  // testCompliancePartner), which no probe gets far enough to find out.
  partner = testCompliancePartner(partnerDir, ['sec-unmanaged-tenant']);
  ctx = await buildTestApp({ deviceRateLimit: 0, tokenRequestsPerIp: 1_000_000, loginFailuresPerUser: 10_000, loginFailuresPerUserGlobal: 10_000, compliancePartnersFile: partner.file });
  server = http.createServer(ctx.app).listen(0, '127.0.0.1');
  const world = await buildWorld(ctx, api, [
    { name: 'alice', role: 'user', tenant: 'A' },
    { name: 'bob', role: 'user', tenant: 'A' },
    { name: 'root', role: 'admin', tenant: 'A' },
    { name: 'carol', role: 'user', tenant: 'B' },
  ]);
  [alice, bob, carol, root] = [world.alice!, world.bob!, world.carol!, world.root!];
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await ctx?.close();
  if (partnerDir) fs.rmSync(partnerDir, { recursive: true, force: true });
});

/** The protected members and what an attacker would put in them. */
const planted = (): Record<string, unknown> => ({
  owner: bob.userId,
  userId: bob.userId,
  deviceId: bob.device!.recordId,
  accessState: 'blocked',
  wipe: { scope: 'account' },
  isAdmin: true,
  role: 'admin',
  id: bob.ids.item[0],
  modseq: 987654321,
  changeKey: 'planted-change-key',
  folderId: bob.ids.folder[0],
  tenantId: carol.tenantId,
});
/** Strings a changed row must never hold after a request that "ignored" the planted members. */
const plantedStrings = () => [bob.userId, bob.device!.recordId, bob.ids.item[0]!, bob.ids.folder[0]!, carol.tenantId, '987654321', 'planted-change-key'];

const partyOf = (op: SpecOperation) => (op.access === 'admin' ? root : alice);
const idOf = (op: SpecOperation) => (kind: IdKind, slot: string) => (op.access === 'admin' ? ownId(root, kind) : idFor(alice, kind, slot));
const members = (schema: unknown) => new Set(Object.keys(resolveSchema(schema).properties ?? {}));

interface Probe {
  op: SpecOperation;
  field: string;
  where: 'body' | 'operations[0]';
  body: Record<string, unknown>;
}

function probes(): Probe[] {
  const out: Probe[] = [];
  for (const op of specOperations().filter((o) => o.body && (o.body.mediaType === 'application/json' || o.body.mediaType === 'application/x-www-form-urlencoded'))) {
    const p = partyOf(op);
    const make = () => validBody(op, { id: idOf(op), email: p.email, username: p.username, password: p.password, tenantId: p.tenantId }) as Record<string, unknown>;
    const documented = members(op.body!.schema);
    for (const [field, value] of Object.entries(planted())) {
      if (!documented.has(field)) out.push({ op, field, where: 'body', body: { ...make(), [field]: value } });
    }
    if (op.key === 'POST /v1/batch') {
      const moveMembers = members({ $ref: '#/components/schemas/BatchMove' });
      for (const [field, value] of Object.entries(planted())) {
        if (moveMembers.has(field)) continue;
        const body = make() as { operations: Array<Record<string, unknown>> };
        out.push({ op, field, where: 'operations[0]', body: { operations: [{ ...body.operations[0], [field]: value }] } });
      }
    }
  }
  return out;
}

const outcomes = { refused: 0, ignored: 0 };

/** Sends a probe; returns what was wrong (nothing when the member was refused or provably ignored). */
async function probe(p: Probe): Promise<string[]> {
  const { op } = p;
  const before = snapshot(ctx.store.db, { rows: true });
  const form = op.body!.mediaType === 'application/x-www-form-urlencoded';
  const sent = form ? Object.fromEntries(Object.entries(p.body).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])) : p.body;
  const url = fillPath(op, idOf(op));
  let req = api()[op.method as 'post'](url);
  if (op.access === 'partner') {
    // Signed over the exact bytes sent (the signature covers their digest).
    const bytes = JSON.stringify(sent);
    req = req.set(partner.sign(op.method, `${issuerOf(ctx.config)}${url}`, bytes, ctx.clock.now(), op.body!.mediaType)).send(bytes);
  } else {
    req = req
      .set(op.access === 'public' ? {} : partyHeaders(partyOf(op), op))
      .type(op.body!.mediaType)
      .send(sent);
  }
  const res = await req.timeout(10_000);
  const diff = diffRows(before, snapshot(ctx.store.db, { rows: true }));
  const wrong: string[] = [];
  const refused = p.where === 'operations[0]' ? res.status === 200 && res.body.results?.[0]?.status === 400 : res.status === 400;
  if (refused) {
    outcomes.refused++;
    const errors = JSON.stringify(p.where === 'operations[0]' ? res.body.results[0].problem : res.body);
    if (!errors.includes(p.field)) wrong.push(`refused, but not for ${p.field}: ${errors.slice(0, 200)}`);
    if (diff.length) wrong.push(`refused, yet changed ${describeDiff(diff)}`);
  } else if (res.status >= 200 && res.status < 300) {
    // Ignored: prove it. Nothing written may carry a planted value, and the caller kept its identity and role.
    outcomes.ignored++;
    const written = diff.flatMap((d) => [...d.added, ...d.changed]);
    const carried = plantedStrings().filter((s) => written.some((row) => row.includes(s)));
    if (carried.length) wrong.push(`accepted, and wrote ${carried.join(', ')}`);
    if (op.key === 'POST /oauth2/token') wrong.push(...(await sameCaller(res.body.access_token)));
  } else {
    wrong.push(`status ${res.status}: ${res.text?.slice(0, 200)}`);
  }
  const self = (await ctx.store.users.byUsername(partyOf(op).username))!;
  if (self.role !== partyOf(op).role || self.tenantId !== partyOf(op).tenantId) wrong.push(`the caller is now ${self.role} in ${self.tenantId}`);
  return wrong.map((w) => `${op.key} + ${p.where}.${p.field}: ${w}`);
}

/** A token from a grant that carried planted members is still alice's, a user's, with no admin access. */
async function sameCaller(token: string): Promise<string[]> {
  const session = await api().get('/v1/session').set('Authorization', `Bearer ${token}`);
  const wrong: string[] = [];
  if (session.status !== 200 || session.body.user.id !== alice.userId || session.body.user.role !== 'user' || session.body.user.tenantId !== alice.tenantId) {
    wrong.push(`the token is ${JSON.stringify(session.body.user ?? session.body)}`);
  }
  const admin = await api().get('/admin/v1/audit').set('Authorization', `Bearer ${token}`);
  if (admin.status !== 403) wrong.push(`the token reaches the admin API (${admin.status})`);
  return wrong;
}

test('every body operation of the document is probed with every protected member it does not document', () => {
  const all = probes();
  const ops = new Set(all.map((p) => p.op.key));
  const withBodies = specOperations().filter((o) => o.body && (o.body.mediaType === 'application/json' || o.body.mediaType === 'application/x-www-form-urlencoded')).map((o) => o.key);
  expect([...ops].sort()).toEqual([...withBodies].sort());
  expect(all.length).toBeGreaterThanOrEqual(withBodies.length * 10);
});

test('a protected member is refused (400 naming it, nothing changed) or provably ignored', async () => {
  const failures: string[] = [];
  for (const p of probes()) failures.push(...(await probe(p)));
  expect(failures).toEqual([]);
  // Both answers occur: the JSON schemas are strict (refused), the OAuth endpoints ignore unknown parameters as
  // RFC 6749 §3.2 requires (ignored, and proven so).
  expect(outcomes.refused).toBeGreaterThan(100);
  expect(outcomes.ignored).toBeGreaterThanOrEqual(20);
  // Every probe is a request and two store snapshots: over a hundred operations, more than the default 30 s on a
  // busy machine.
}, 180_000);

test('the probe can tell: a planted member that is written shows in the store diff', async () => {
  // The check itself, against a write that does carry a planted value (a folder named like bob's id).
  const before = snapshot(ctx.store.db, { rows: true });
  const res = await api().post('/v1/folders').set(partyHeaders(alice)).send({ displayName: `named ${bob.userId}` });
  expect(res.status).toBe(201);
  const written = diffRows(before, snapshot(ctx.store.db, { rows: true })).flatMap((d) => [...d.added, ...d.changed]);
  expect(written.some((row) => row.includes(bob.userId))).toBe(true);
});

test("the partner's probes are judged on their members: its signature is accepted (a statement it may not make is 403, not 401)", async () => {
  const op = specOperations().find((o) => o.access === 'partner');
  expect(op).toBeDefined();
  const url = fillPath(op!, idOf(op!));
  const bytes = JSON.stringify(validBody(op!, { id: idOf(op!), email: alice.email, username: alice.username, password: alice.password, tenantId: alice.tenantId }));
  const before = snapshot(ctx.store.db, { rows: true });
  const res = await api().put(url).set(partner.sign('PUT', `${issuerOf(ctx.config)}${url}`, bytes, ctx.clock.now())).send(bytes);
  expect({ status: res.status, code: res.body.code }).toEqual({ status: 403, code: 'forbidden' });
  expect(diffRows(before, snapshot(ctx.store.db, { rows: true }))).toEqual([]);
});
