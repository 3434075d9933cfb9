/**
 * The contacts API over HTTP (issue 18; server/contacts/routes.ts), on a real SQLite file: create (idempotent),
 * whole replacement with If-Match, the photo (upload checked by its bytes, download through the attachment
 * endpoint, removal), vCard import with bad cards skipped and known UIDs updated, export, isolation between users
 * (another user's contact or folder is a 404 exactly like an id that exists nowhere), and item sync seeing it all.
 */
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { asCaller, buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { parseVCards } from '../../server/contacts/vcard';

let ctx: TestContext;
const PW = 'password-for-contacts-tests';

interface Caller {
  access: string;
  deviceId: string;
  userId: string;
  contactsFolderId: string;
  inboxId: string;
}
let alice: Caller;
let bob: Caller;

const as = (c: Caller) => asCaller(ctx, c);
const fixture = (name: string) => fs.readFileSync(path.resolve(__dirname, '../../fixtures/contacts', name), 'utf8');

/** A 1×1 PNG, a GIF and a JPEG header: what the photo upload tells apart by the first bytes. */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64');
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');

async function caller(username: string): Promise<Caller> {
  const user = await ctx.users.addUser({ username, password: PW, role: 'user', email: `${username}@example.test` });
  const deviceId = `contacts-${username}-device-0001`;
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const c = { access: t.access_token, deviceId };
  await asCaller(ctx, c).post('/v1/devices', { friendlyName: `${username}'s phone` }).expect(201);
  const contacts = await ctx.store.folders.byKind(user.id, 'contacts');
  const inbox = await ctx.store.folders.byKind(user.id, 'inbox');
  return { ...c, userId: user.id, contactsFolderId: contacts!.id, inboxId: inbox!.id };
}

beforeAll(async () => {
  ctx = await buildTestApp();
  alice = await caller('alice');
  bob = await caller('bob');
});
afterAll(() => ctx.close());

const raw = (c: Caller, method: 'post' | 'put', p: string, type: string, body: string | Buffer) =>
  request(ctx.app)[method](p).set('Authorization', `Bearer ${c.access}`).set('X-Device-Id', c.deviceId).set('Content-Type', type).send(body);

/** The bytes of a download (supertest parses only what it knows as text or JSON). */
const download = (c: Caller, p: string) =>
  request(ctx.app)
    .get(p)
    .set('Authorization', `Bearer ${c.access}`)
    .set('X-Device-Id', c.deviceId)
    .buffer(true)
    .parse((res, done) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => done(null, Buffer.concat(chunks)));
    });

/** Every item of the folder as a device's first sync sees it. */
async function syncAll(c: Caller, folderId: string) {
  const items: Array<Record<string, any>> = [];
  let token: string | undefined;
  for (;;) {
    const res = await as(c).get(`/v1/folders/${folderId}/items/sync?maxChanges=512${token ? `&token=${encodeURIComponent(token)}` : ''}`);
    expect(res.status).toBe(200);
    items.push(...res.body.created);
    token = res.body.token;
    if (!res.body.moreAvailable) return { items, token: token! };
  }
}

const CAROL = {
  displayName: 'Carol Nguyen',
  givenName: 'Carol',
  surname: 'Nguyen',
  emailAddresses: [{ address: 'carol@demo.example' }, { name: 'Carol (work)', address: 'c.nguyen@work.example' }],
  phones: [
    { type: 'mobile', number: '+1 555 462 3775' },
    { type: 'business', number: '+1 555 316 9034' },
  ],
  company: 'Demo Org',
  jobTitle: 'Product Manager',
  department: 'Product',
  addresses: [{ type: 'business', street: '1 Market St\nFloor 3', city: 'San Francisco', region: 'CA', postalCode: '94105', country: 'USA' }],
  birthday: '1990-07-14',
  notes: 'Prefers calls after 10.\nVegetarian.',
};

describe('create and replace', () => {
  test('POST /v1/contacts creates a contact in the contacts folder; Idempotency-Key replays it', async () => {
    const res = await as(alice).post('/v1/contacts', CAROL).set('Idempotency-Key', 'create-carol-1');
    expect(res.status).toBe(201);
    expect(res.headers.location).toBe(`/v1/items/${res.body.id}`);
    expect(res.body).toMatchObject({
      type: 'contact',
      folderId: alice.contactsFolderId,
      displayName: 'Carol Nguyen',
      givenName: 'Carol',
      surname: 'Nguyen',
      // An address given without a name is shown with the contact's.
      emailAddresses: [
        { name: 'Carol Nguyen', address: 'carol@demo.example' },
        { name: 'Carol (work)', address: 'c.nguyen@work.example' },
      ],
      phones: CAROL.phones,
      company: 'Demo Org',
      jobTitle: 'Product Manager',
    });
    const stored = await ctx.store.items.byId(alice.userId, res.body.id);
    expect(stored).toMatchObject({ type: 'contact', subject: 'Carol Nguyen', isRead: true });
    expect(stored!.data).toMatchObject({ department: 'Product', birthday: '1990-07-14', addresses: CAROL.addresses, uid: expect.stringMatching(/^urn:uuid:/) });
    expect((await ctx.store.items.body(alice.userId, res.body.id))!.text).toBe(CAROL.notes);

    const again = await as(alice).post('/v1/contacts', CAROL).set('Idempotency-Key', 'create-carol-1');
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.id).toBe(res.body.id);
    const { items } = await syncAll(alice, alice.contactsFolderId);
    expect(items.filter((i) => i.displayName === 'Carol Nguyen')).toHaveLength(1);
  });

  test.each([
    ['no displayName', { givenName: 'X' }, 'displayName'],
    ['an empty displayName', { displayName: '   ' }, 'displayName'],
    ['a malformed address', { displayName: 'X', emailAddresses: [{ address: 'not-an-address' }] }, 'emailAddresses.0.address'],
    ['an address listed twice', { displayName: 'X', emailAddresses: [{ address: 'a@b.example' }, { address: 'A@b.example' }] }, 'emailAddresses.1.address'],
    ['an unknown phone type', { displayName: 'X', phones: [{ type: 'pager', number: '1' }] }, 'phones.0.type'],
    ['an empty number', { displayName: 'X', phones: [{ number: ' ' }] }, 'phones.0.number'],
    ['a date that does not exist', { displayName: 'X', birthday: '1981-02-29' }, 'birthday'],
    ['an empty address', { displayName: 'X', addresses: [{ type: 'home' }] }, 'addresses.0'],
    ['a control character in a name', { displayName: 'X', givenName: 'a\u0007b' }, 'givenName'],
    ['a control character in the notes', { displayName: 'X', notes: 'a\u0000b' }, 'notes'],
    ['an unknown field', { displayName: 'X', nickname: 'Y' }, '(root)'],
    ['a long job title', { displayName: 'X', jobTitle: 'j'.repeat(256) }, 'jobTitle'],
  ])('%s → 400 naming the field', async (_name, body, field) => {
    const res = await as(alice).post('/v1/contacts', body);
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalidRequest');
    expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
  });

  test('folderId: another user\'s folder is a 404 exactly like one that exists nowhere; a mail folder is a 400', async () => {
    const nowhere = await as(alice).post('/v1/contacts', { displayName: 'X', folderId: 'no-such-folder' });
    const bobs = await as(alice).post('/v1/contacts', { displayName: 'X', folderId: bob.contactsFolderId });
    expect(nowhere.status).toBe(404);
    expect({ status: bobs.status, code: bobs.body.code, detail: bobs.body.detail }).toEqual({ status: 404, code: nowhere.body.code, detail: nowhere.body.detail });
    const inbox = await as(alice).post('/v1/contacts', { displayName: 'X', folderId: alice.inboxId });
    expect(inbox.status).toBe(400);
    expect(inbox.body.errors).toEqual([{ field: 'folderId', message: 'not a contacts folder' }]);
  });

  test('PUT /v1/contacts/{id} replaces the whole contact; a stale If-Match is a 412 with the current version', async () => {
    const created = (await as(alice).post('/v1/contacts', CAROL)).body;
    const before = await ctx.store.items.byId(alice.userId, created.id);

    const replaced = await as(alice).put(`/v1/contacts/${created.id}`, { displayName: 'Carol N. Okafor', surname: 'Okafor', phones: [{ type: 'home', number: '+1 555 000 1111' }] }).set('If-Match', `"${created.changeKey}"`);
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({ id: created.id, displayName: 'Carol N. Okafor', givenName: null, surname: 'Okafor', company: null, emailAddresses: [], phones: [{ type: 'home', number: '+1 555 000 1111' }] });
    expect(replaced.body.changeKey).not.toBe(created.changeKey);
    const after = await ctx.store.items.byId(alice.userId, created.id);
    // Whole replacement, but the UID and the place in the folder stay.
    expect(after!.data.uid).toBe(before!.data.uid);
    expect(after!.receivedAt).toBe(before!.receivedAt);
    expect((await ctx.store.items.body(alice.userId, created.id))!.text).toBeNull();

    const stale = await as(alice).put(`/v1/contacts/${created.id}`, CAROL).set('If-Match', `"${created.changeKey}"`);
    expect(stale.status).toBe(412);
    expect(stale.body.code).toBe('conflict');
    expect(stale.body.item).toMatchObject({ id: created.id, changeKey: replaced.body.changeKey, displayName: 'Carol N. Okafor' });

    const any = await as(alice).put(`/v1/contacts/${created.id}`, CAROL).set('If-Match', '*');
    expect(any.status).toBe(200);
    expect(any.body.displayName).toBe('Carol Nguyen');
    const moving = await as(alice).put(`/v1/contacts/${created.id}`, { ...CAROL, folderId: alice.inboxId });
    expect(moving.status).toBe(400);
  });

  test('another user\'s contact, an email and an id that exists nowhere are all the same 404', async () => {
    const contact = (await as(alice).post('/v1/contacts', { displayName: 'Private Person' })).body;
    const email = await ctx.store.items.create({ userId: bob.userId, folderId: bob.inboxId, type: 'email', receivedAt: Date.now(), subject: 'Hello', bodyText: 'Hi' }, Date.now());
    const answers = await Promise.all([
      as(bob).put(`/v1/contacts/${contact.id}`, { displayName: 'Stolen' }),
      as(bob).put(`/v1/contacts/${email.id}`, { displayName: 'Not a contact' }),
      as(bob).put('/v1/contacts/no-such-item', { displayName: 'Nobody' }),
      raw(bob, 'put', `/v1/contacts/${contact.id}/photo`, 'image/png', PNG),
      as(bob).delete(`/v1/contacts/${contact.id}/photo`),
    ]);
    const shapes = answers.map((r) => ({ status: r.status, code: r.body.code, detail: r.body.detail }));
    expect(shapes).toEqual(Array(5).fill({ status: 404, code: 'itemNotFound', detail: 'No such contact.' }));
    expect((await ctx.store.items.byId(alice.userId, contact.id))!.subject).toBe('Private Person');
  });
});

describe('photo', () => {
  test('upload (checked by its bytes), download through the attachment endpoint, replace, remove', async () => {
    const contact = (await as(alice).post('/v1/contacts', { displayName: 'Pictured Person' })).body;
    const put = await raw(alice, 'put', `/v1/contacts/${contact.id}/photo`, 'image/png', PNG);
    expect(put.status).toBe(200);
    const [attachment] = await ctx.store.items.attachments(alice.userId, contact.id);
    expect(attachment).toMatchObject({ name: 'contact-photo', contentType: 'image/png', size: PNG.length });
    expect(put.body).toMatchObject({ id: contact.id, photo: attachment!.id });
    expect(put.body.changeKey).not.toBe(contact.changeKey);

    const got = await download(alice, `/v1/items/${contact.id}/attachments/${attachment!.id}`);
    expect(got.status).toBe(200);
    expect(got.headers['content-type']).toBe('image/png');
    expect(Buffer.compare(got.body as Buffer, PNG)).toBe(0);
    expect((await download(bob, `/v1/items/${contact.id}/attachments/${attachment!.id}`)).status).toBe(404);

    // Labelled as JPEG, but the bytes are a GIF: stored as what the bytes are.
    expect((await raw(alice, 'put', `/v1/contacts/${contact.id}/photo`, 'image/jpeg', GIF)).status).toBe(200);
    const replaced = await ctx.store.items.attachments(alice.userId, contact.id);
    expect(replaced.map((a) => ({ name: a.name, contentType: a.contentType, size: a.size }))).toEqual([{ name: 'contact-photo', contentType: 'image/gif', size: GIF.length }]);

    const removed = await as(alice).delete(`/v1/contacts/${contact.id}/photo`);
    expect(removed.status).toBe(200);
    expect(removed.body.photo).toBeNull();
    expect(await ctx.store.items.attachments(alice.userId, contact.id)).toEqual([]);
    expect((await download(alice, `/v1/items/${contact.id}/attachments/${replaced[0]!.id}`)).status).toBe(404);
    // Removing it again changes nothing.
    const again = await as(alice).delete(`/v1/contacts/${contact.id}/photo`);
    expect(again.status).toBe(200);
    expect(again.body.changeKey).toBe(removed.body.changeKey);
  });

  test('what is not a photo: another media type 415, bytes that are no image 400, empty 400, over 1 MiB 413', async () => {
    const contact = (await as(alice).post('/v1/contacts', { displayName: 'Camera Shy' })).body;
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
    const tooBig = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(1024 * 1024)]);
    const answers = await Promise.all([
      raw(alice, 'put', `/v1/contacts/${contact.id}/photo`, 'image/svg+xml', svg),
      raw(alice, 'put', `/v1/contacts/${contact.id}/photo`, 'image/png', svg),
      raw(alice, 'put', `/v1/contacts/${contact.id}/photo`, 'image/png', Buffer.alloc(0)),
      raw(alice, 'put', `/v1/contacts/${contact.id}/photo`, 'image/jpeg', tooBig),
    ]);
    expect(answers.map((r) => [r.status, r.body.code])).toEqual([
      [415, 'unsupportedMediaType'],
      [400, 'invalidRequest'],
      [400, 'invalidRequest'],
      [413, 'payloadTooLarge'],
    ]);
    expect(await ctx.store.items.attachments(alice.userId, contact.id)).toEqual([]);
  });
});

describe('import and export', () => {
  test('an import with bad cards imports the good ones and names the bad ones; importing again updates by UID', async () => {
    const first = await raw(bob, 'post', '/v1/contacts/import', 'text/vcard', fixture('with-bad-cards.vcf'));
    expect(first.status).toBe(200);
    expect(first.body).toEqual({
      imported: 2,
      skipped: [
        { index: 1, reason: expect.stringContaining('this line is not a property') },
        { index: 2, reason: 'The card is a group (KIND:group), not a person.' },
        { index: 3, reason: 'The card has no name: no FN, N, ORG or EMAIL.' },
        { index: 5, reason: 'The card is not closed with END:VCARD.' },
      ],
    });
    const names = async () => (await syncAll(bob, bob.contactsFolderId)).items.map((i) => i.displayName).sort();
    expect(await names()).toEqual(['Good One', 'Good Two']);

    const edited = fixture('with-bad-cards.vcf').replace('FN:Good One', 'FN:Good One (edited)');
    const second = await raw(bob, 'post', '/v1/contacts/import', 'text/vcard; charset=utf-8', edited);
    expect(second.body.imported).toBe(2);
    expect(await names()).toEqual(['Good One (edited)', 'Good Two']);
  });

  test('fixtures of every exporter import with their photos; the export reads back to the same contacts', async () => {
    const carla = await caller('carla');
    const files = ['apple.vcf', 'google.vcf', 'outlook.vcf', 'android.vcf', 'v4.vcf'];
    for (const name of files) {
      ctx.clock.advance(1000); // each file a second after the one before, as a person importing them would
      const res = await raw(carla, 'post', `/v1/contacts/import?folderId=${carla.contactsFolderId}`, 'text/vcard', fixture(name));
      expect({ name, status: res.status, skipped: res.body.skipped }).toEqual({ name, status: 200, skipped: [] });
    }
    const expected = files.flatMap((name) => parseVCards(fixture(name)));

    const exported = await as(carla).get('/v1/contacts/export.vcf');
    expect(exported.status).toBe(200);
    expect(exported.headers['content-type']).toBe('text/vcard; charset=utf-8');
    expect(exported.headers['content-disposition']).toBe('attachment; filename=Contacts.vcf');
    // In the order they were imported, each exactly as its card describes it (photos byte for byte).
    expect(parseVCards(exported.text)).toEqual(expected);

    // The export imported elsewhere is the same address book.
    const dave = await caller('dave');
    expect((await raw(dave, 'post', '/v1/contacts/import', 'text/vcard', exported.text)).body).toEqual({ imported: expected.length, skipped: [] });
    expect(parseVCards((await as(dave).get('/v1/contacts/export.vcf')).text)).toEqual(expected);
    // Importing carla's own export again changes no contact's number: every UID is known.
    expect((await raw(carla, 'post', '/v1/contacts/import', 'text/vcard', exported.text)).body.imported).toBe(expected.length);
    expect((await syncAll(carla, carla.contactsFolderId)).items).toHaveLength(expected.length);
  });

  test('bad imports: wrong media type, no card, bad bytes, someone else\'s folder, a mail folder', async () => {
    const card = 'BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Nobody Special\r\nEND:VCARD\r\n';
    const answers = await Promise.all([
      raw(alice, 'post', '/v1/contacts/import', 'text/plain', card),
      raw(alice, 'post', '/v1/contacts/import', 'text/vcard', 'just some text'),
      raw(alice, 'post', '/v1/contacts/import', 'text/vcard', Buffer.concat([Buffer.from('BEGIN:VCARD\r\nFN:'), Buffer.from([0xff, 0xfe]), Buffer.from('\r\nEND:VCARD\r\n')])),
      raw(alice, 'post', `/v1/contacts/import?folderId=${bob.contactsFolderId}`, 'text/vcard', card),
      raw(alice, 'post', '/v1/contacts/import?folderId=no-such-folder', 'text/vcard', card),
      raw(alice, 'post', `/v1/contacts/import?folderId=${alice.inboxId}`, 'text/vcard', card),
    ]);
    expect(answers.map((r) => [r.status, r.body.code])).toEqual([
      [415, 'unsupportedMediaType'],
      [400, 'invalidRequest'],
      [400, 'invalidRequest'],
      [404, 'folderNotFound'],
      [404, 'folderNotFound'],
      [400, 'invalidRequest'],
    ]);
    expect(answers[1]!.body.detail).toMatch(/no vCard/);
    expect(answers[3]!.body.detail).toBe(answers[4]!.body.detail);
    expect((await syncAll(bob, bob.contactsFolderId)).items.map((i) => i.displayName)).not.toContain('Nobody Special');
  });

  test('an export holds only the caller\'s contacts; another user\'s folder is a 404', async () => {
    const own = (await as(alice).post('/v1/contacts', { displayName: 'Only Alice Knows', emailAddresses: [{ address: 'secret@alice.example' }] })).body;
    const bobs = await as(bob).get('/v1/contacts/export.vcf');
    expect(bobs.status).toBe(200);
    expect(bobs.text).not.toContain('Only Alice Knows');
    expect(parseVCards(bobs.text).map((c) => c.displayName)).toEqual((await syncAll(bob, bob.contactsFolderId)).items.map((i) => i.displayName).reverse());
    expect(parseVCards((await as(alice).get('/v1/contacts/export.vcf')).text).map((c) => c.displayName)).toContain(own.displayName);
    const other = await as(bob).get(`/v1/contacts/export.vcf?folderId=${alice.contactsFolderId}`);
    expect([other.status, other.body.code]).toEqual([404, 'folderNotFound']);
  });
});

test('item sync sees creates, edits, photos and deletes of contacts', async () => {
  const erin = await caller('erin');
  const { token: start } = await syncAll(erin, erin.contactsFolderId);
  const poll = async (token: string) => {
    const res = await as(erin).get(`/v1/folders/${erin.contactsFolderId}/items/sync?token=${encodeURIComponent(token)}`);
    expect(res.status).toBe(200);
    return res.body as { token: string; created: Array<Record<string, any>>; updated: Array<Record<string, any>>; removed: Array<Record<string, any>> };
  };

  const created = (await as(erin).post('/v1/contacts', { displayName: 'Frank Moreau', company: 'Moreau & Fils' })).body;
  const afterCreate = await poll(start);
  expect(afterCreate.created).toEqual([created]);

  const replaced = (await as(erin).put(`/v1/contacts/${created.id}`, { displayName: 'Frank Moreau-Laurent', company: 'Moreau & Fils' })).body;
  const afterEdit = await poll(afterCreate.token);
  expect(afterEdit.created).toEqual([]);
  expect(afterEdit.updated).toEqual([expect.objectContaining({ id: created.id, changeKey: replaced.changeKey, displayName: 'Frank Moreau-Laurent' })]);

  const pictured = (await raw(erin, 'put', `/v1/contacts/${created.id}/photo`, 'image/png', PNG)).body;
  const afterPhoto = await poll(afterEdit.token);
  expect(afterPhoto.updated).toEqual([expect.objectContaining({ id: created.id, changeKey: pictured.changeKey, photo: pictured.photo })]);

  const imported = await raw(erin, 'post', '/v1/contacts/import', 'text/vcard', fixture('v4.vcf'));
  const afterImport = await poll(afterPhoto.token);
  expect(afterImport.created.map((c) => c.displayName).sort()).toEqual(['Simon Perreault', 'Zoë Ångström']);
  expect(imported.body.imported).toBe(2);

  // A contact is deleted like any item, for good (not to Deleted Items).
  expect((await as(erin).delete(`/v1/items/${created.id}`)).status).toBe(204);
  const afterDelete = await poll(afterImport.token);
  expect(afterDelete.removed).toEqual([{ id: created.id, reason: 'deleted' }]);
  // Everything a new device would get is what this one holds now.
  const fresh = await syncAll(erin, erin.contactsFolderId);
  expect(fresh.items.map((i) => i.displayName).sort()).toEqual(['Simon Perreault', 'Zoë Ångström']);
});
