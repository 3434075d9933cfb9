/**
 * Generated bodies against every write operation of schema/openapi.yaml that takes JSON (issue 8), with fast-check:
 * arbitrary JSON values and texts, arbitrary bytes, and objects shaped like the operation's schema but often wrong
 * (tests/helpers/specCases.ts `shapedValue`). The document is the oracle:
 * - no response is ever a 5xx, and every response is one the document describes for the operation;
 * - a body the operation's schema rejects is never accepted: a 4xx and no change to any table of the store. The
 *   batch answers per operation, so there an operation its schema rejects must come back as a 400 entry.
 *
 * Runs: FUZZ_RUNS (default 1,000 in all; the deep tier 10,000). Users and ids come from the same world as the other
 * security tests; the administrator fuzzed here has a tenant of its own, so the rules and defaults it writes
 * cannot lock the fuzzing user's device out halfway through. The compliance partners' operation takes no token:
 * its bodies are signed by a partner of the test's own (one that manages none of the world's tenants, so a body
 * its schema accepts ends in 403), so they reach the parsing and validation behind the signature check.
 */
import fs from 'node:fs';
import http from 'node:http';
import fc from 'fast-check';
import request from 'supertest';
import { buildTestApp, tempDir, type TestContext } from '../helpers/testApp';
import { changedTables, snapshot } from '../helpers/storeDiff';
import { expectToMatchSpec, pointer, validateAt } from '../helpers/openapi';
import {
  WAITS,
  buildWorld,
  fillPath,
  idFor,
  ownId,
  partyHeaders,
  resolveSchema,
  shapedValue,
  specOperations,
  testCompliancePartner,
  validBody,
  type IdKind,
  type Party,
  type SpecOperation,
  type TestPartner,
} from '../helpers/specCases';
import { issuerOf } from '../../server/config';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);

let ctx: TestContext;
let server: http.Server;
let alice: Party;
let admin: Party;
let partnerDir: string;
let partner: TestPartner;
const api = () => request(server);

beforeAll(async () => {
  partnerDir = tempDir('pigeon-partner-');
  partner = testCompliancePartner(partnerDir, ['sec-unmanaged-tenant']);
  ctx = await buildTestApp({
    deviceRateLimit: 0,
    tokenRequestsPerIp: 1_000_000,
    loginFailuresPerUser: 10_000,
    loginFailuresPerUserGlobal: 10_000,
    maxMessageBytes: 256 * 1024,
    compliancePartnersFile: partner.file,
  });
  server = http.createServer(ctx.app).listen(0, '127.0.0.1');
  const world = await buildWorld(ctx, api, [
    { name: 'alice', role: 'user', tenant: 'A' },
    { name: 'fuzzadmin', role: 'admin', tenant: 'B' },
  ]);
  alice = world.alice!;
  admin = world.fuzzadmin!;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await ctx?.close();
  if (partnerDir) fs.rmSync(partnerDir, { recursive: true, force: true });
});

const WRITES = specOperations().filter((o) => ['post', 'put', 'patch', 'delete'].includes(o.method) && o.body?.mediaType === 'application/json');

/** Operations that answer a list of per-item results: an item its schema rejects is that item's 400, not the request's. */
const PER_ITEM: Record<string, { member: string; itemSchema: string }> = {
  'POST /v1/batch': { member: 'operations', itemSchema: pointer('components', 'schemas', 'BatchOperation') },
  'POST /v1/calendar/batch': { member: 'operations', itemSchema: pointer('components', 'schemas', 'CalendarBatchOperation') },
};

const partyOf = (op: SpecOperation) => (op.access === 'admin' ? admin : alice);
const idOf = (op: SpecOperation) => (kind: IdKind, slot: string) => (op.access === 'admin' ? ownId(admin, kind) : idFor(alice, kind, slot));

/** What a run sends: raw text or bytes as the body. */
function bodies(op: SpecOperation): fc.Arbitrary<string | Buffer> {
  // Real ids make valid bodies do real work; a long poll must never find its folder, or it would wait.
  const pool = WAITS.has(op.key) ? ['no-such-folder'] : [...alice.ids.folder, ...alice.ids.item];
  const stringify = (v: unknown) => JSON.stringify(v) ?? '';
  // A body the operation accepts, with one member dropped, replaced by a shaped (often wrong) value, or added.
  const p = partyOf(op);
  // Fresh for every run: valid bodies carry unique names and opIds.
  const valid = () => validBody(op, { id: WAITS.has(op.key) ? () => 'no-such-folder' : idOf(op), email: p.email, username: p.username, password: p.password, tenantId: p.tenantId }) as Record<string, unknown>;
  const members = Object.entries<Json>(resolveSchema(op.body!.schema).properties ?? {});
  const shapedMembers = new Map(members.map(([name, schema]) => [name, shapedValue(schema, pool)]));
  const mutated = fc
    .tuple(fc.constantFrom(...members.map(([name]) => name)), fc.constantFrom('drop', 'replace', 'replace', 'add'))
    .chain(([name, how]) =>
      how === 'drop'
        ? fc.constant(null).map(() => Object.fromEntries(Object.entries(valid()).filter(([k]) => k !== name)))
        : how === 'replace'
          ? shapedMembers.get(name)!.map((v) => ({ ...valid(), [name]: v }))
          : fc.tuple(fc.constantFrom('userId', 'id', 'owner', 'isAdmin', 'extra', name.toUpperCase()), fc.jsonValue({ maxDepth: 1 })).map(([k, v]) => ({ ...valid(), [k]: v })),
    );
  return fc.oneof(
    { weight: 4, arbitrary: mutated.map(stringify) },
    { weight: 3, arbitrary: shapedValue(op.body!.schema, pool).map(stringify) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map(stringify) },
    { weight: 1, arbitrary: fc.json({ maxDepth: 3 }) },
    { weight: 1, arbitrary: fc.anything({ maxDepth: 2 }).map(stringify) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 60 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b)) },
  );
}

/**
 * Members an operation's description lets the body leave out because the path gives them ("its `id` may be left out
 * (it is the path's)"), which its schema, shared with the create, still lists as required: the body is judged with
 * the path's value filled in, as the server reads it.
 */
const FROM_PATH: Record<string, { member: string; param: string }> = Object.fromEntries(
  ['conditional-access/policies', 'named-locations', 'groups', 'app-protection-policies'].map((c) => [`PUT /admin/v1/${c}/{id}`, { member: 'id', param: 'id' }]),
);

/** The path parameter's value in the request the test sends for the operation. */
function pathValue(op: SpecOperation, param: string): string {
  let value = '';
  fillPath(op, (kind, slot) => {
    const id = idOf(op)(kind, slot);
    if (slot === `path:${param}`) value = id;
    return id;
  });
  return value;
}

/** Whether the document's schema accepts the body (undefined: not JSON at all). */
function acceptedBySpec(op: SpecOperation, body: string | Buffer): { valid: boolean; parsed?: unknown } {
  let parsed: unknown;
  try {
    // server/http/body.ts reads an empty body as `{}` and leaves it to the schema (every operation but PATCH
    // /v1/items/{itemId}, whose members are all optional, then answers 400).
    parsed = body.length === 0 ? {} : JSON.parse(Buffer.isBuffer(body) ? new TextDecoder('utf-8', { fatal: true }).decode(body) : body);
  } catch {
    return { valid: false };
  }
  const per = PER_ITEM[op.key];
  if (per && parsed && typeof parsed === 'object' && Array.isArray((parsed as Record<string, unknown>)[per.member])) {
    // The envelope is judged with every item replaced by a valid stand-in; the items are judged one by one.
    const items = (parsed as Record<string, unknown[]>)[per.member]!;
    const standIn = { opId: 'x', op: 'delete', id: 'x' };
    return { valid: validateAt(op.body!.schemaPtr, { ...(parsed as object), [per.member]: items.map(() => standIn) }).length === 0, parsed };
  }
  const fill = FROM_PATH[op.key];
  if (fill && parsed && typeof parsed === 'object' && !Array.isArray(parsed) && !(fill.member in parsed)) {
    return { valid: validateAt(op.body!.schemaPtr, { [fill.member]: pathValue(op, fill.param), ...(parsed as object) }).length === 0, parsed };
  }
  return { valid: validateAt(op.body!.schemaPtr, parsed).length === 0, parsed };
}

const statuses: Record<string, number> = {};

test(`${RUNS} generated bodies over every JSON write operation: never a 5xx, never a body the document rejects`, async () => {
  expect(WRITES.length).toBeGreaterThanOrEqual(10);
  const byKey = new Map(WRITES.map((o) => [o.key, o]));
  const bodiesOf = new Map(WRITES.map((o) => [o.key, bodies(o)])); // built once: building them is not cheap
  const arbitrary = fc.constantFrom(...byKey.keys()).chain((key) => fc.tuple(fc.constant(key), bodiesOf.get(key)!));
  await fc.assert(
    fc.asyncProperty(arbitrary, async ([key, body]) => {
      const op = byKey.get(key)!;
      const { valid, parsed } = acceptedBySpec(op, body);
      const before = valid ? undefined : snapshot(ctx.store.db);
      const url = fillPath(op, idOf(op));
      const headers = op.access === 'partner' ? partner.sign(op.method, `${issuerOf(ctx.config)}${url}`, body, ctx.clock.now()) : { ...partyHeaders(partyOf(op), op), 'Content-Type': 'application/json' };
      const res = await api()
        [op.method as 'post'](url)
        .set(headers)
        // The bytes as generated: superagent would otherwise send a Buffer as JSON (`{"type":"Buffer",...}`), which
        // is neither what acceptedBySpec judged nor what a partner's Content-Digest covers.
        .serialize((b: unknown) => b as string)
        .send(body as string)
        .timeout(10_000);
      const tally = `${op.key} ${valid ? 'valid' : 'invalid'} → ${res.status}`;
      statuses[tally] = (statuses[tally] ?? 0) + 1;
      expect(res.status).toBeLessThan(500);
      expectToMatchSpec(res, op.method, op.path);
      if (!valid) {
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(changedTables(before!, snapshot(ctx.store.db))).toEqual([]);
      }
      const per = PER_ITEM[op.key];
      if (valid && per && res.status === 200) {
        const items = (parsed as Record<string, unknown[]>)[per.member]!;
        const results = res.body.results as Array<{ status: number }>;
        items.forEach((item, i) => {
          if (validateAt(per.itemSchema, item).length) expect({ item, status: results[i]!.status }).toEqual({ item, status: 400 });
        });
      }
    }),
    { numRuns: RUNS },
  );
  // The runs reached past validation, not only into it: some writes were accepted.
  // Every operation was reached, and the runs got past validation too: bodies the document accepts did real work.
  expect(WRITES.filter((o) => !Object.keys(statuses).some((t) => t.startsWith(`${o.key} `))).map((o) => o.key)).toEqual([]);
  expect(Object.keys(statuses).filter((t) => / valid → 2\d\d$/.test(t)).length).toBeGreaterThanOrEqual(5);
  if (process.env.FUZZ_TALLY) console.log(Object.entries(statuses).sort().map(([t, n]) => `${n}\t${t}`).join('\n'));
}, 300_000);
