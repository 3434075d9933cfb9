/**
 * GET /v1/search (protocol.md §7): what it finds (subject, sender name and address, body, the last word as a
 * prefix), that it never crosses mailboxes, the folder filter, bad input, and `inWindow` against the 500-item window.
 */
import request from 'supertest';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';
import { DEFAULT_WINDOW } from '../../server/sync/itemSync';
import type { FolderKind } from '../../server/store/types';

let ctx: TestContext;
const PW = 'search-password-1';
const headers: Record<string, Record<string, string>> = {};
const ids: Record<string, string> = {};

const userId = async (name: string) => (await ctx.store.users.byUsername(name))!.id;
const folder = async (name: string, kind: FolderKind) => (await ctx.store.folders.byKind(await userId(name), kind))!;

/** A real message through the one delivery path, so the index sees what LMTP would give it. */
async function deliver(to: string, key: string, m: { from: string; subject: string; body: string; folder?: FolderKind }) {
  const raw = Buffer.from(
    [`From: ${m.from}`, `To: ${to}@example.test`, `Subject: ${m.subject}`, `Message-ID: <${key}@search.test>`, 'Content-Type: text/plain; charset=utf-8', '', m.body, ''].join('\r\n'),
  );
  const prepared = await ctx.built.delivery.prepare(raw);
  const [result] = await ctx.built.delivery.deliver(prepared, [{ userId: await userId(to), folderKind: m.folder ?? 'inbox' }], { duplicates: 'live' });
  ids[key] = result!.itemId;
}

beforeAll(async () => {
  ctx = await buildTestApp();
  for (const name of ['alice', 'bob']) {
    await ctx.users.addUser({ username: name, password: PW, role: 'user', email: `${name}@example.test` });
    const device = `search-device-${name}-0001`;
    const t = await signIn(ctx, name, PW, { device_id: device });
    headers[name] = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': device };
    await request(ctx.app).post('/v1/devices').set(headers[name]!).send({}).expect(201);
  }
  await deliver('alice', 'invoice', { from: 'Marguerite Oyelaran <marguerite@ledger.test>', subject: 'Quarterly invoice for Zephyrine Logistics', body: 'Please find the totals below.' });
  await deliver('alice', 'lunch', { from: 'Tom <tom@cafe.test>', subject: 'Lunch', body: 'The kumquat tart was excellent; shall we go again?' });
  await deliver('alice', 'archived', { from: 'Ledger <noreply@ledger.test>', subject: 'Invoice copy', body: 'Archived for the auditors.', folder: 'archive' });
  await deliver('bob', 'secret', { from: 'Quinn <quinn@else.test>', subject: 'Plans', body: 'The xylophonic surprise stays between us. Zephyrine too.' });
});
afterAll(() => ctx.close());

async function search(who: string, query: Record<string, string | number>) {
  const res = await request(ctx.app).get('/v1/search').query(query).set(headers[who]!);
  expectToMatchSpec(res, 'get', '/v1/search');
  return res;
}
const found = async (who: string, query: Record<string, string | number>) => {
  const res = await search(who, query);
  expect(res.status).toBe(200);
  return (res.body.results as Array<{ item: { id: string } }>).map((r) => r.item.id);
};

test('finds by subject word, and each result is the item exactly as sync sends it', async () => {
  const res = await search('alice', { q: 'zephyrine' });
  expect(res.status).toBe(200);
  expect(res.body.results).toHaveLength(1);
  const [hit] = res.body.results;
  const page = await request(ctx.app).get(`/v1/folders/${(await folder('alice', 'inbox')).id}/items/sync`).set(headers.alice!);
  expect(hit.item).toEqual(page.body.created.find((i: { id: string }) => i.id === ids.invoice));
  expect(hit).toMatchObject({ inWindow: true, score: expect.any(Number) });
});

test('finds by sender name and address, by body word, and by a prefix of the last word only', async () => {
  expect(await found('alice', { q: 'Oyelaran' })).toEqual([ids.invoice]);
  expect(await found('alice', { q: 'marguerite@ledger.test' })).toEqual([ids.invoice]);
  expect(await found('alice', { q: 'KUMQUAT' })).toEqual([ids.lunch]);
  expect(await found('alice', { q: 'tart kumq' })).toEqual([ids.lunch]);
  expect(await found('alice', { q: 'kumq tart' })).toEqual([]); // only the last word is a prefix
  expect(await found('alice', { q: 'kumquat sorbet' })).toEqual([]); // every word must match
  expect((await found('alice', { q: 'invoice' })).sort()).toEqual([ids.invoice, ids.archived].sort());
});

test('never another user\'s mail: bob does not find alice\'s words, alice not bob\'s; another user\'s folder is 404', async () => {
  expect(await found('bob', { q: 'kumquat' })).toEqual([]);
  expect(await found('bob', { q: 'zephyrine' })).toEqual([ids.secret]);
  expect(await found('alice', { q: 'xylophonic' })).toEqual([]);
  const res = await search('alice', { q: 'xylophonic', folderId: (await folder('bob', 'inbox')).id });
  expect(res.status).toBe(404);
  expect(res.body.code).toBe('folderNotFound');
});

test('folderId narrows to one folder; a move changes where an item is found, not whether', async () => {
  expect(await found('alice', { q: 'invoice', folderId: (await folder('alice', 'archive')).id })).toEqual([ids.archived]);
  expect(await found('alice', { q: 'kumquat', folderId: (await folder('alice', 'archive')).id })).toEqual([]);
  await request(ctx.app).post(`/v1/items/${ids.lunch}/move`).set(headers.alice!).send({ destinationFolderId: (await folder('alice', 'archive')).id }).expect(200);
  expect(await found('alice', { q: 'kumquat', folderId: (await folder('alice', 'archive')).id })).toEqual([ids.lunch]);
  expect(await found('alice', { q: 'kumquat', folderId: (await folder('alice', 'inbox')).id })).toEqual([]);
});

test('limit caps the results', async () => {
  expect(await found('alice', { q: 'invoice', limit: 1 })).toHaveLength(1);
  expect(await found('alice', { q: 'invoice', limit: 100 })).toHaveLength(2);
});

test('bad q, limit or parameters are 400 invalidRequest and name the field', async () => {
  const cases: Array<[Record<string, string | number>, string]> = [
    [{}, 'q'],
    [{ q: '' }, 'q'],
    [{ q: '!!! ... --- @@@' }, 'q'],
    [{ q: 'x'.repeat(257) }, 'q'],
    [{ q: Array.from({ length: 17 }, (_, i) => `w${i}`).join(' ') }, 'q'],
    [{ q: 'invoice', limit: 0 }, 'limit'],
    [{ q: 'invoice', limit: 101 }, 'limit'],
    [{ q: 'invoice', limit: 'ten' }, 'limit'],
    [{ q: 'invoice', folder: 'inbox' }, '(root)'],
  ];
  for (const [query, field] of cases) {
    const res = await search('alice', query);
    expect({ query, status: res.status, code: res.body.code }).toEqual({ query, status: 400, code: 'invalidRequest' });
    expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
  }
  // Sixteen words are fine; repeated parameters are not one string.
  expect((await search('alice', { q: Array.from({ length: 16 }, (_, i) => `w${i}`).join(' ') })).status).toBe(200);
  expect((await request(ctx.app).get('/v1/search?q=a&q=b').set(headers.alice!)).status).toBe(400);
});

test('inWindow: an item older than the newest 500 of its folder is found and reported outside the window', async () => {
  const created = await request(ctx.app).post('/v1/folders').set(headers.alice!).send({ displayName: 'Bulk' }).expect(201);
  const bulk = created.body.id as string;
  const base = ctx.clock.now() - 10 * 86400_000;
  const alice = await userId('alice');
  const now = ctx.clock.now();
  const byIndex = await ctx.store.run(function* (tx) {
    const ids: string[] = [];
    // Index 0 is the oldest; the newest DEFAULT_WINDOW (indexes 1..500) are the window.
    for (let i = 0; i <= DEFAULT_WINDOW; i++) {
      const word = i === 0 ? 'ancient' : i === 1 ? 'borderline' : i === DEFAULT_WINDOW ? 'freshest' : 'filler';
      const item = yield* tx.items.create(
        { userId: alice, folderId: bulk, type: 'email', receivedAt: base + i * 1000, subject: `bulkitem ${word}`, bodyText: `number ${i}` },
        now,
      );
      ids.push(item.id);
    }
    return ids;
  });
  const windowOf = async (q: string) => {
    const res = await search('alice', { q, folderId: bulk });
    expect(res.body.results).toHaveLength(1);
    return { id: res.body.results[0].item.id, inWindow: res.body.results[0].inWindow };
  };
  expect(await windowOf('bulkitem ancient')).toEqual({ id: byIndex[0], inWindow: false });
  expect(await windowOf('bulkitem borderline')).toEqual({ id: byIndex[1], inWindow: true });
  expect(await windowOf('bulkitem freshest')).toEqual({ id: byIndex[DEFAULT_WINDOW], inWindow: true });
});
