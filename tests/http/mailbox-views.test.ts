/**
 * Mailbox views over HTTP against a real SQLite file (README, "Mailbox views"): per-device view settings and the soft
 * reset they cause (two devices of one user: only the changed one gets 410 viewChanged and a `softReset` push
 * event); Focused Inbox at delivery and its per-sender overrides; junk lists at delivery and report junk / not junk;
 * automatic replies (RFC 3834) once per sender per period; mailbox settings with versions.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { simpleParser } from 'mailparser';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import type { FolderKind } from '../../server/store/types';

const PW = 'mailbox-views-password-1';
let ctx: TestContext;
const ids: Record<string, string> = {};
const heads: Record<string, Record<string, string>> = {};
let serial = 0;

async function device(user: string): Promise<Record<string, string>> {
  const deviceId = `views-${user}-${String(++serial).padStart(3, '0')}-abcdefgh`;
  const t = await signIn(ctx, user, PW, { device_id: deviceId });
  const headers = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  const reg = await request(ctx.app).post('/v1/devices').set(headers).send({ friendlyName: `${user} ${serial}` });
  expect(reg.status).toBe(201);
  return headers;
}

const folderOf = async (user: string, kind: FolderKind) => (await ctx.store.folders.byKind(ids[user]!, kind))!;

let messageNo = 0;
/** A message as an MTA hands it over, delivered to `user` through the one delivery path (live). */
async function deliver(user: string, from: string, extraHeaders: string[] = [], subject = `Hello ${++messageNo}`, to = `${user}@views.test`) {
  const raw = Buffer.from(
    [`From: ${from}`, `To: ${to}`, `Subject: ${subject}`, `Message-ID: <views-${++messageNo}@example.org>`, 'Date: Mon, 07 Dec 2026 08:00:00 +0000', ...extraHeaders, 'Content-Type: text/plain', '', 'Body text.', ''].join('\r\n'),
  );
  const prepared = await ctx.built.delivery.prepare(raw);
  const [result] = await ctx.built.delivery.deliver(prepared, [{ userId: ids[user]! }], { duplicates: 'live' });
  const item = (await ctx.store.items.byId(ids[user]!, result!.itemId))!;
  const folder = (await ctx.store.folders.byId(ids[user]!, item.folderId))!;
  return { item, folder: folder.kind };
}

beforeAll(async () => {
  ctx = await buildTestApp({ mailHostname: 'mail.views.test' });
  for (const user of ['alice', 'bob', 'carol']) {
    const u = await ctx.users.addUser({ username: user, password: PW, role: 'user', email: `${user}@views.test`, displayName: `${user[0]!.toUpperCase()}${user.slice(1)} Views` });
    ids[user] = u.id;
    heads[user] = await device(user);
  }
});
afterAll(() => ctx.close());

describe('view settings and the soft reset', () => {
  test('two devices of one user: the one that changes its view gets 410 viewChanged and a softReset event; the other is untouched', async () => {
    const phone = await device('alice');
    const tablet = await device('alice');
    const inbox = await folderOf('alice', 'inbox');
    await deliver('alice', 'Bob Views <bob@views.test>');
    const first = async (h: Record<string, string>) => {
      const res = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(h);
      expect(res.status).toBe(200);
      return res.body.token as string;
    };
    const phoneToken = await first(phone);
    const tabletToken = await first(tablet);
    const hierarchy = await request(ctx.app).get('/v1/folders/sync').set(phone);

    // The phone's push stream, on a real socket.
    const server = http.createServer(ctx.app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    let streamed = '';
    const gotReset = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no softReset event; stream so far: ${streamed}`)), 5000);
      const req = http.get({ host: '127.0.0.1', port, path: '/v1/events', headers: phone, agent: false }, (res) => {
        expect(res.statusCode).toBe(200);
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          streamed += chunk;
          if (/event: softReset\ndata: \{[^\n]*"reason":"viewChanged"/.test(streamed)) {
            clearTimeout(timer);
            req.destroy();
            resolve();
          }
        });
      });
      req.on('error', () => undefined);
    });
    await new Promise((r) => setTimeout(r, 100)); // the stream is registered

    const current = await request(ctx.app).get('/v1/devices/current/view-settings').set(phone);
    expect(current.status).toBe(200);
    expect(current.body).toMatchObject({ focusedInbox: true, threaded: false });

    const changed = await request(ctx.app).put('/v1/devices/current/view-settings').set(phone).send({ focusedInbox: true, threaded: true });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ focusedInbox: true, threaded: true, softReset: true });
    expect(changed.body.epoch).toBeGreaterThan(current.body.epoch);
    await gotReset;
    server.close();

    // The phone's held tokens answer 410 with reason viewChanged (items and hierarchy alike)…
    const stale = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).query({ token: phoneToken }).set(phone);
    expect(stale.status).toBe(410);
    expect(stale.body).toMatchObject({ code: 'resyncRequired', reason: 'viewChanged' });
    const staleHierarchy = await request(ctx.app).get('/v1/folders/sync').query({ token: hierarchy.body.token }).set(phone);
    expect(staleHierarchy.status).toBe(410);
    expect(staleHierarchy.body.reason).toBe('viewChanged');
    // …and the next sync from no token rebuilds the view.
    expect((await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(phone)).status).toBe(200);

    // The tablet is untouched: its token still polls.
    const tablet2 = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).query({ token: tabletToken }).set(tablet);
    expect(tablet2.status).toBe(200);
    expect((await request(ctx.app).get('/v1/devices/current/view-settings').set(tablet)).body).toMatchObject({ focusedInbox: true, threaded: false });

    // The same settings again are no reset.
    const again = await request(ctx.app).put('/v1/devices/current/view-settings').set(phone).send({ focusedInbox: true, threaded: true });
    expect(again.body).toMatchObject({ softReset: false, epoch: changed.body.epoch });
  });

  test('bad view settings are a 400 and change nothing', async () => {
    const h = heads.bob!;
    const before = (await request(ctx.app).get('/v1/devices/current/view-settings').set(h)).body;
    for (const body of [{}, { focusedInbox: 'yes', threaded: false }, { focusedInbox: true, threaded: false, extra: 1 }]) {
      const res = await request(ctx.app).put('/v1/devices/current/view-settings').set(h).send(body);
      expect(res.status).toBe(400);
      expect(res.headers['content-type']).toMatch(/problem\+json/);
    }
    expect((await request(ctx.app).get('/v1/devices/current/view-settings').set(h)).body).toEqual(before);
  });
});

describe('Focused Inbox', () => {
  test('a colleague is focused; a newsletter with list headers and a no-reply sender are other; the reason is not a guess', async () => {
    expect((await deliver('alice', 'Carol Views <carol@views.test>')).item.inferenceClassification).toBe('focused');
    expect((await deliver('alice', 'Deals <deals@shop.example>', ['List-Unsubscribe: <mailto:unsub@shop.example>', 'Precedence: bulk'])).item.inferenceClassification).toBe('other');
    expect((await deliver('alice', 'Receipts <no-reply@payments.example>')).item.inferenceClassification).toBe('other');
  });

  test('"always move to Other" remembers the sender, moves their existing mail, and classifies their next message', async () => {
    const a = await deliver('alice', 'Dan Stranger <dan@stranger.example>');
    const b = await deliver('alice', 'Dan Stranger <dan@stranger.example>');
    expect(a.item.inferenceClassification).toBe('focused');
    const res = await request(ctx.app).post(`/v1/items/${b.item.id}/classify`).set(heads.alice!).send({ classification: 'other', always: true });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ item: { id: b.item.id, inferenceClassification: 'other' }, reclassified: 1, override: true });
    expect((await ctx.store.items.byId(ids.alice!, a.item.id))!.inferenceClassification).toBe('other');
    expect((await deliver('alice', 'DAN Stranger <Dan@Stranger.example>')).item.inferenceClassification).toBe('other');
    const settings = await request(ctx.app).get('/v1/mailbox/settings').set(heads.alice!);
    expect(settings.body.focusedOverrides).toContainEqual({ sender: 'dan@stranger.example', classification: 'other' });

    // Removing the override: the next message is judged by the rules again.
    const removed = await request(ctx.app).delete('/v1/mailbox/settings/focused-overrides').query({ sender: 'dan@stranger.example' }).set(heads.alice!);
    expect(removed.status).toBe(200);
    expect((await deliver('alice', 'Dan Stranger <dan@stranger.example>')).item.inferenceClassification).toBe('focused');
    expect((await request(ctx.app).delete('/v1/mailbox/settings/focused-overrides').query({ sender: 'dan@stranger.example' }).set(heads.alice!)).status).toBe(404);
  });

  test('classify: another user\'s item is 404, a bad body 400', async () => {
    const mine = await deliver('bob', 'X <x@example.org>');
    expect((await request(ctx.app).post(`/v1/items/${mine.item.id}/classify`).set(heads.alice!).send({ classification: 'other' })).status).toBe(404);
    expect((await request(ctx.app).post(`/v1/items/${mine.item.id}/classify`).set(heads.bob!).send({ classification: 'spam' })).status).toBe(400);
    expect((await ctx.store.items.byId(ids.bob!, mine.item.id))!.inferenceClassification).toBe('focused');
  });
});

describe('junk', () => {
  test('a blocked sender or domain goes to Junk Email; a safe address beats a blocked domain', async () => {
    const put = await request(ctx.app).put('/v1/mailbox/settings/junk').set(heads.carol!).send({ safeSenders: ['friend@spammy.example'], blockedSenders: ['spammy.example', 'Pest@Annoying.example'] });
    expect(put.status).toBe(200);
    expect(put.body.junk).toEqual({ safeSenders: ['friend@spammy.example'], blockedSenders: ['spammy.example', 'pest@annoying.example'] });
    expect((await deliver('carol', 'Spam <win@spammy.example>')).folder).toBe('junkEmail');
    expect((await deliver('carol', 'Spam <win@mail.spammy.example>')).folder).toBe('junkEmail');
    expect((await deliver('carol', 'Pest <pest@annoying.example>')).folder).toBe('junkEmail');
    expect((await deliver('carol', 'Friend <friend@spammy.example>')).folder).toBe('inbox');
    expect((await deliver('carol', 'Other <other@annoying.example>')).folder).toBe('inbox');
  });

  test('report junk moves the message and blocks its sender; not junk moves it back and marks the sender safe', async () => {
    const m = await deliver('carol', 'Nuisance <nuisance@junky.example>');
    expect(m.folder).toBe('inbox');
    const junk = await request(ctx.app).post(`/v1/items/${m.item.id}/report-junk`).set(heads.carol!).send({ verdict: 'junk' });
    expect(junk.status).toBe(200);
    expect(junk.body).toMatchObject({ sender: 'nuisance@junky.example', list: 'blockedSenders', item: { folderId: (await folderOf('carol', 'junkEmail')).id } });
    expect((await deliver('carol', 'Nuisance <nuisance@junky.example>')).folder).toBe('junkEmail');
    const notJunk = await request(ctx.app).post(`/v1/items/${m.item.id}/report-junk`).set(heads.carol!).send({ verdict: 'notJunk' });
    expect(notJunk.body).toMatchObject({ list: 'safeSenders', item: { folderId: (await folderOf('carol', 'inbox')).id } });
    const settings = (await request(ctx.app).get('/v1/mailbox/settings').set(heads.carol!)).body;
    expect(settings.junk.safeSenders).toContain('nuisance@junky.example');
    expect(settings.junk.blockedSenders).not.toContain('nuisance@junky.example');
    expect((await deliver('carol', 'Nuisance <nuisance@junky.example>')).folder).toBe('inbox');
  });

  test('bad lists are 400 and change nothing; one sender on both lists is refused', async () => {
    const before = (await request(ctx.app).get('/v1/mailbox/settings').set(heads.carol!)).body;
    for (const body of [{ safeSenders: ['not a domain'], blockedSenders: [] }, { safeSenders: ['a@b.example'], blockedSenders: ['a@b.example'] }, { safeSenders: [] }]) {
      const res = await request(ctx.app).put('/v1/mailbox/settings/junk').set(heads.carol!).send(body);
      expect(res.status).toBe(400);
    }
    expect((await request(ctx.app).get('/v1/mailbox/settings').set(heads.carol!)).body).toEqual(before);
  });
});

describe('automatic replies', () => {
  const inboxSubjects = async (user: string) => {
    const inbox = await folderOf(user, 'inbox');
    const res = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(heads[user]!);
    return (res.body.created as Array<{ subject: string; id: string }>);
  };

  test('settings: versioned, ETag and If-None-Match 304, If-Match 412 on a stale version, 400 on a bad schedule', async () => {
    const first = await request(ctx.app).get('/v1/mailbox/settings').set(heads.bob!);
    expect(first.status).toBe(200);
    expect(first.body.automaticReplies).toMatchObject({ status: 'disabled', active: false });
    const tag = first.headers.etag as string;
    expect((await request(ctx.app).get('/v1/mailbox/settings').set(heads.bob!).set('If-None-Match', tag)).status).toBe(304);
    const bad = await request(ctx.app).put('/v1/mailbox/settings/automatic-replies').set(heads.bob!).send({ status: 'scheduled', scheduledStart: '2026-12-10T00:00:00Z', scheduledEnd: '2026-12-01T00:00:00Z' });
    expect(bad.status).toBe(400);
    const stale = await request(ctx.app).put('/v1/mailbox/settings/automatic-replies').set(heads.bob!).set('If-Match', '"999"').send({ status: 'alwaysEnabled' });
    expect(stale.status).toBe(412);
    expect((await request(ctx.app).get('/v1/mailbox/settings').set(heads.bob!)).headers.etag).toBe(tag);
  });

  test('on: one reply per sender per period, with Auto-Submitted; never to lists or automated mail; internal and external texts', async () => {
    const on = await request(ctx.app)
      .put('/v1/mailbox/settings/automatic-replies')
      .set(heads.bob!)
      .send({ status: 'alwaysEnabled', internalReply: 'Away until Monday (internal).', externalReply: 'Away until Monday.', externalAudience: 'all' });
    expect(on.status).toBe(200);
    expect(on.body.automaticReplies).toMatchObject({ status: 'alwaysEnabled', active: true });

    await deliver('bob', 'Alice Views <alice@views.test>', [], 'Project question');
    await deliver('bob', 'Alice Views <alice@views.test>', [], 'Project question, again');
    await deliver('bob', 'List <list@lists.example>', ['List-Id: <team.lists.example>'], 'List post');
    await deliver('bob', 'Bot <bot@ci.example>', ['Auto-Submitted: auto-generated'], 'Build passed');
    await ctx.built.autoReplier.drain();

    const replies = (await inboxSubjects('alice')).filter((i) => i.subject.startsWith('Automatic reply'));
    expect(replies.map((r) => r.subject)).toEqual(['Automatic reply: Project question']);
    const stored = (await ctx.store.items.byId(ids.alice!, replies[0]!.id))!;
    const raw = await ctx.store.blobs.read(ids.alice!, stored.mimeBlobId!, 0, (await ctx.store.blobs.size(ids.alice!, stored.mimeBlobId!))!);
    const parsed = await simpleParser(raw);
    expect(parsed.headers.get('auto-submitted')).toBe('auto-replied');
    expect(parsed.text).toContain('Away until Monday (internal).');
    expect(parsed.from?.value[0]?.address).toBe('bob@views.test');
    // Bob's Sent Items holds no copy of an automatic reply.
    expect((await folderOf('bob', 'sentItems')).totalCount).toBe(0);
    // Alice's own reply rules never answer an automatic reply (no loop): she has none on, and Bob got nothing back.
    const claims = await ctx.store.autoReplies.ofPeriod(ids.bob!, JSON.parse((await ctx.store.mailboxSettings.get(ids.bob!))!.doc).autoReplyPeriod);
    expect(claims.map((c) => [c.sender, c.state])).toEqual([['alice@views.test', 'sent']]);

    // A new period (reworded): Alice hears it once more.
    await request(ctx.app).put('/v1/mailbox/settings/automatic-replies').set(heads.bob!).send({ status: 'alwaysEnabled', internalReply: 'Back on Tuesday now.' });
    await deliver('bob', 'Alice Views <alice@views.test>', [], 'Third question');
    await ctx.built.autoReplier.drain();
    expect((await inboxSubjects('alice')).filter((i) => i.subject.startsWith('Automatic reply')).length).toBe(2);

    // Off: nothing more.
    await request(ctx.app).put('/v1/mailbox/settings/automatic-replies').set(heads.bob!).send({ status: 'disabled' });
    await deliver('bob', 'Carol Views <carol@views.test>', [], 'While off');
    await ctx.built.autoReplier.drain();
    expect((await inboxSubjects('carol')).some((i) => i.subject.startsWith('Automatic reply'))).toBe(false);
  });

  test('scheduled: replies only inside the window', async () => {
    const now = ctx.clock.now();
    const later = await request(ctx.app)
      .put('/v1/mailbox/settings/automatic-replies')
      .set(heads.carol!)
      .send({ status: 'scheduled', scheduledStart: new Date(now + 3600_000).toISOString(), scheduledEnd: new Date(now + 7200_000).toISOString(), internalReply: 'On leave.' });
    expect(later.status).toBe(200);
    expect(later.body.automaticReplies.active).toBe(false);
    await deliver('carol', 'Alice Views <alice@views.test>', [], 'Before the leave');
    await ctx.built.autoReplier.drain();
    expect((await inboxSubjects('alice')).some((i) => i.subject === 'Automatic reply: Before the leave')).toBe(false);
    ctx.clock.advance(3600_000 + 1000);
    await deliver('carol', 'Alice Views <alice@views.test>', [], 'During the leave');
    await ctx.built.autoReplier.drain();
    expect((await inboxSubjects('alice')).some((i) => i.subject === 'Automatic reply: During the leave')).toBe(true);
  });

  test('external audience "none": outsiders get nothing; a Bcc copy gets nothing (RFC 3834 §2)', async () => {
    await request(ctx.app).put('/v1/mailbox/settings/automatic-replies').set(heads.alice!).send({ status: 'alwaysEnabled', internalReply: 'Out.', externalReply: 'Out (external).', externalAudience: 'none' });
    await deliver('alice', 'Stranger <someone@outside.example>', [], 'From outside');
    await deliver('alice', 'Bob Views <bob@views.test>', [], 'Bcc copy', 'undisclosed-recipients:;');
    await ctx.built.autoReplier.drain();
    const claims = await ctx.store.autoReplies.ofPeriod(ids.alice!, JSON.parse((await ctx.store.mailboxSettings.get(ids.alice!))!.doc).autoReplyPeriod);
    expect(claims).toEqual([]);
    await request(ctx.app).put('/v1/mailbox/settings/automatic-replies').set(heads.alice!).send({ status: 'disabled' });
  });
});
