/**
 * POST /v1/messages/send over HTTP (supertest): local delivery seen through sync, Bcc kept only in the sender's copy,
 * attachments, replies that thread, validation, size limits, Idempotency-Key, bounces without a relay; then the relay
 * worker's passes against an in-process SMTP server, with a manual clock for the retry schedule.
 */
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';
import type { FolderKind } from '../../server/store/types';

const PW = 'send-test-password-1';
const MAX_MESSAGE = 200 * 1024;
const HOST = 'mail.pigeon.test';
const PEOPLE = ['alice', 'bob', 'carol', 'dave'] as const;
type Person = (typeof PEOPLE)[number];
const email = (p: Person) => `${p}@pigeon.test`;

/** Headers of the person's device, with a fresh access token. */
async function signedIn(ctx: TestContext, p: Person): Promise<Record<string, string>> {
  const deviceId = `send-test-${p}-0123456789`;
  const t = await signIn(ctx, p, PW, { device_id: deviceId });
  return { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
}

async function addPeople(ctx: TestContext): Promise<Record<Person, Record<string, string>>> {
  const out = {} as Record<Person, Record<string, string>>;
  for (const p of PEOPLE) {
    await ctx.users.addUser({ username: p, password: PW, role: 'user', email: email(p), displayName: `${p[0]!.toUpperCase()}${p.slice(1)} Tester` });
    out[p] = await signedIn(ctx, p);
    const reg = await request(ctx.app).post('/v1/devices').set(out[p]).send({ friendlyName: p });
    expect(reg.status).toBe(201);
  }
  return out;
}

const userId = async (ctx: TestContext, p: Person) => (await ctx.store.users.byUsername(p))!.id;
const folder = async (ctx: TestContext, p: Person, kind: FolderKind) => (await ctx.store.folders.byKind(await userId(ctx, p), kind))!;
const count = async (ctx: TestContext, p: Person, kind: FolderKind) => (await folder(ctx, p, kind)).totalCount;
/** The raw RFC 5322 bytes an item was stored from. */
async function rawOf(ctx: TestContext, p: Person, itemId: string): Promise<string> {
  const owner = await userId(ctx, p);
  const item = (await ctx.store.items.byId(owner, itemId))!;
  return (await ctx.store.blobs.read(owner, item.mimeBlobId!, 0, (await ctx.store.blobs.size(owner, item.mimeBlobId!))!)).toString('utf8');
}

/** What the person's device sees of a folder: a full sync from no token, newest first. */
async function synced(ctx: TestContext, h: Record<string, string>, p: Person, kind: FolderKind): Promise<any[]> {
  const res = await request(ctx.app).get(`/v1/folders/${(await folder(ctx, p, kind)).id}/items/sync?bodyBytes=4096`).set(h);
  expect(res.status).toBe(200);
  return res.body.created;
}

describe('send without a relay', () => {
  let ctx: TestContext;
  let h: Record<Person, Record<string, string>>;
  const send = (p: Person, body: unknown) => request(ctx.app).post('/v1/messages/send').set(h[p]).send(body as object);

  beforeAll(async () => {
    ctx = await buildTestApp({ maxMessageBytes: MAX_MESSAGE, maxRequestBytes: 64 * 1024, mailHostname: HOST });
    h = await addPeople(ctx);
  });
  afterAll(() => ctx.close());

  test('a local recipient: 202, in Bob\'s Inbox (subject, sender, preview) and in Alice\'s Sent Items, read', async () => {
    const res = await send('alice', { to: [{ name: 'Bob', address: email('bob') }], subject: 'Lunch on Friday?', body: { contentType: 'text', content: 'Shall we try the new place?\nAlice' } });
    expect(res.status).toBe(202);
    expectToMatchSpec(res, 'post', '/v1/messages/send');
    expect(res.body).toMatchObject({ localRecipients: [email('bob')], queuedRecipients: [], rejectedRecipients: [] });
    expect(res.body.internetMessageId).toMatch(new RegExp(`^<[A-Za-z0-9_-]+@${HOST.replace(/\./g, '\\.')}>$`));

    const inbox = await synced(ctx, h.bob, 'bob', 'inbox');
    const got = inbox.find((i) => i.internetMessageId === res.body.internetMessageId);
    expect(got).toMatchObject({ subject: 'Lunch on Friday?', from: { name: 'Alice Tester', address: email('alice') }, to: [{ name: 'Bob', address: email('bob') }], isRead: false });
    expect(got.preview).toContain('Shall we try the new place?');
    const sent = await synced(ctx, h.alice, 'alice', 'sentItems');
    expect(sent.map((i) => i.id)).toEqual([res.body.id]);
    expect(sent[0]).toMatchObject({ subject: 'Lunch on Friday?', isRead: true, internetMessageId: res.body.internetMessageId, conversationId: got.conversationId });
  });

  test('HTML bodies go with a plain-text alternative; importance is carried', async () => {
    const res = await send('alice', { to: [{ address: email('bob') }], subject: 'Agenda', importance: 'high', body: { contentType: 'html', content: '<p>Item <b>one</b></p><p>Item two</p>' } });
    expect(res.status).toBe(202);
    const item = (await synced(ctx, h.bob, 'bob', 'inbox')).find((i) => i.internetMessageId === res.body.internetMessageId);
    expect(item).toMatchObject({ importance: 'high', body: { contentType: 'html' } });
    expect(item.body.content).toContain('<b>one</b>');
    const raw = await rawOf(ctx, 'bob', item.id);
    expect(raw).toMatch(/Content-Type: multipart\/alternative/);
    expect(raw).toMatch(/Content-Type: text\/plain[^]*Item one Item two/);
  });

  test('Bcc: the blind copy arrives, To/Cc copies do not show it, the Sent Items copy does', async () => {
    const res = await send('alice', {
      to: [{ address: email('bob') }],
      cc: [{ address: email('carol') }],
      bcc: [{ name: 'Dave', address: email('dave') }],
      subject: 'Surprise party',
      body: { contentType: 'text', content: 'Do not tell Dave... oh wait.' },
    });
    expect(res.status).toBe(202);
    expect(res.body.localRecipients.sort()).toEqual([email('bob'), email('carol'), email('dave')]);
    for (const p of ['bob', 'carol', 'dave'] as const) {
      const copy = (await synced(ctx, h[p], p, 'inbox')).find((i) => i.internetMessageId === res.body.internetMessageId);
      expect(copy).toMatchObject({ subject: 'Surprise party', to: [{ address: email('bob') }], cc: [{ address: email('carol') }] });
      const raw = await rawOf(ctx, p, copy.id);
      expect(raw).not.toMatch(/^bcc:/im);
      expect(raw).not.toContain(email('dave')); // nowhere in the copies recipients get
    }
    expect(await rawOf(ctx, 'alice', res.body.id)).toMatch(/^Bcc: Dave <dave@pigeon\.test>\r$/m);
  });

  test('attachments round-trip: names, types, sizes, bytes; an inline image does not count as an attachment', async () => {
    const pdf = Buffer.alloc(5000, 0x25);
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    const res = await send('alice', {
      to: [{ address: email('bob') }],
      subject: 'Files',
      body: { contentType: 'html', content: '<p>See <img src="cid:logo@pigeon"></p>' },
      attachments: [
        { name: 'report.pdf', contentType: 'application/pdf', contentBase64: pdf.toString('base64') },
        { name: 'logo.png', contentType: 'image/png', contentBase64: png.toString('base64'), isInline: true, contentId: 'logo@pigeon' },
      ],
    });
    expect(res.status).toBe(202);
    const item = (await synced(ctx, h.bob, 'bob', 'inbox')).find((i) => i.internetMessageId === res.body.internetMessageId);
    expect(item.hasAttachments).toBe(true);
    expect(item.attachments.map((a: any) => [a.name, a.contentType, a.size, a.isInline]).sort()).toEqual([
      ['logo.png', 'image/png', png.length, true],
      ['report.pdf', 'application/pdf', pdf.length, false],
    ]);
    expect(item.attachments.find((a: any) => a.name === 'logo.png').contentId).toBe('logo@pigeon');
    const bobId = await userId(ctx, 'bob');
    const stored = (await ctx.store.items.attachments(bobId, item.id)).find((a) => a.name === 'report.pdf')!;
    expect((await ctx.store.blobs.read(bobId, stored.blobId, 0, stored.size)).equals(pdf)).toBe(true);
    const sent = (await ctx.store.items.byId(await userId(ctx, 'alice'), res.body.id))!;
    expect(sent.attachments.map((a) => a.size).sort()).toEqual([png.length, pdf.length].sort());
  });

  test('a reply via inReplyTo threads with the original on both sides; another user\'s item id is 404', async () => {
    const first = await send('alice', { to: [{ address: email('bob') }], subject: 'Budget 2026', body: { contentType: 'text', content: 'Numbers attached soon.' } });
    const original = (await synced(ctx, h.bob, 'bob', 'inbox')).find((i) => i.internetMessageId === first.body.internetMessageId);
    // The subject gives no hint: only In-Reply-To/References can thread it.
    const reply = await send('bob', { to: [{ address: email('alice') }], subject: 'numbers?', inReplyTo: original.id, body: { contentType: 'text', content: 'Still waiting.' } });
    expect(reply.status).toBe(202);
    const aliceInbox = (await synced(ctx, h.alice, 'alice', 'inbox')).find((i) => i.internetMessageId === reply.body.internetMessageId);
    expect(aliceInbox.conversationId).toBe((await ctx.store.items.byId(await userId(ctx, 'alice'), first.body.id))!.conversationId);
    expect((await ctx.store.items.byId(await userId(ctx, 'bob'), reply.body.id))!.conversationId).toBe(original.conversationId);
    const raw = await rawOf(ctx, 'bob', reply.body.id);
    expect(raw).toContain(`In-Reply-To: ${first.body.internetMessageId}`);
    expect(raw).toContain(`References: ${first.body.internetMessageId}`);

    const before = await count(ctx, 'bob', 'sentItems');
    const foreign = await send('bob', { to: [{ address: email('alice') }], subject: 'x', inReplyTo: first.body.id, body: { contentType: 'text', content: 'x' } });
    expect(foreign.status).toBe(404);
    expect(foreign.body.code).toBe('itemNotFound');
    expectToMatchSpec(foreign, 'post', '/v1/messages/send');
    expect(await count(ctx, 'bob', 'sentItems')).toBe(before);
  });

  test('bad requests: 400 with errors naming each field, 415 for a form, and nothing is sent', async () => {
    const before = { sent: await count(ctx, 'alice', 'sentItems'), bob: await count(ctx, 'bob', 'inbox') };
    const body = { contentType: 'text', content: 'x' };
    const bob = [{ address: email('bob') }];
    const cases: Array<[unknown, string]> = [
      [{ subject: 'no one', body }, 'to'],
      [{ to: [{ address: 'not an address' }], body }, 'to.0.address'],
      [{ to: [{ address: 'bob@pigeon.test\r\nBcc: eve@evil.test' }], body }, 'to.0.address'],
      [{ to: bob, subject: 'two\r\nBcc: eve@evil.test', body }, 'subject'],
      [{ to: bob, subject: 'x'.repeat(999), body }, 'subject'],
      [{ to: bob, body, unknown: true }, '(root)'],
      [{ to: [{ address: email('bob'), role: 'x' }], body }, 'to.0'],
      [{ to: bob }, 'body'],
      [{ to: bob, body: { contentType: 'rtf', content: 'x' } }, 'body.contentType'],
      [{ to: bob, body, importance: 'urgent' }, 'importance'],
      [{ to: bob, body, attachments: [{ name: 'a', contentType: 'text/plain', contentBase64: 'not base64!' }] }, 'attachments.0.contentBase64'],
      [{ to: bob, body, attachments: [{ name: '', contentType: 'text/plain', contentBase64: '' }] }, 'attachments.0.name'],
      [{ to: bob, body, attachments: [{ name: 'a', contentType: 'text/plain\r\nX: y', contentBase64: '' }] }, 'attachments.0.contentType'],
      [{ to: Array.from({ length: 300 }, (_, i) => ({ address: `r${i}@x.test` })), cc: Array.from({ length: 201 }, (_, i) => ({ address: `c${i}@x.test` })), body }, 'to'],
      [{ to: bob, body, inReplyTo: '' }, 'inReplyTo'],
    ];
    for (const [bad, field] of cases) {
      const res = await send('alice', bad);
      expect({ field, status: res.status, code: res.body.code }).toEqual({ field, status: 400, code: 'invalidRequest' });
      expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    const last = await send('alice', cases[0]![0]);
    expectToMatchSpec(last, 'post', '/v1/messages/send');
    const form = await request(ctx.app).post('/v1/messages/send').set(h.alice).type('form').send({ to: email('bob') });
    expect(form.status).toBe(415);
    expectToMatchSpec(form, 'post', '/v1/messages/send');
    expect({ sent: await count(ctx, 'alice', 'sentItems'), bob: await count(ctx, 'bob', 'inbox') }).toEqual(before);
  });

  test('size: a body over the general JSON limit is fine here; a message over the limit is 413 and nothing is sent', async () => {
    // 100 KiB of attachment is ~134 KiB of JSON: over PIGEON_MAX_REQUEST_BYTES (64 KiB here), under the send limit.
    const fits = await send('alice', { to: [{ address: email('bob') }], body: { contentType: 'text', content: 'big' }, attachments: [{ name: 'a.bin', contentType: 'application/octet-stream', contentBase64: Buffer.alloc(100 * 1024, 1).toString('base64') }] });
    expect(fits.status).toBe(202);

    const before = { sent: await count(ctx, 'alice', 'sentItems'), bob: await count(ctx, 'bob', 'inbox') };
    // 190 KiB decoded fits the JSON limit, but base64 in MIME makes it ~260 KiB: over the 200 KiB limit.
    const attachmentTooBig = await send('alice', { to: [{ address: email('bob') }], body: { contentType: 'text', content: 'x' }, attachments: [{ name: 'b.bin', contentType: 'application/octet-stream', contentBase64: Buffer.alloc(190 * 1024, 2).toString('base64') }] });
    expect(attachmentTooBig.status).toBe(413);
    expect(attachmentTooBig.body.code).toBe('payloadTooLarge');
    expectToMatchSpec(attachmentTooBig, 'post', '/v1/messages/send');
    // 140 KiB of attachment (~192 KiB encoded) fits alone; with 20 KB of text the composed message does not.
    const attachment = { name: 'c.bin', contentType: 'application/octet-stream', contentBase64: Buffer.alloc(140 * 1024, 3).toString('base64') };
    const fitsAlone = await send('alice', { to: [{ address: email('bob') }], body: { contentType: 'text', content: 'x' }, attachments: [attachment] });
    expect(fitsAlone.status).toBe(202);
    before.sent++;
    before.bob++;
    const composedTooBig = await send('alice', { to: [{ address: email('bob') }], body: { contentType: 'text', content: 'x'.repeat(20_000) }, attachments: [attachment] });
    expect(composedTooBig.status).toBe(413);
    const size = Number(/^The message would be (\d+) bytes; the largest this server sends is 204800 bytes\.$/.exec(composedTooBig.body.detail)?.[1]);
    expect(size).toBeGreaterThan(196_000 + 20_000); // the composed size: attachment and text together
    const jsonTooBig = await send('alice', { to: [{ address: email('bob') }], body: { contentType: 'text', content: 'y'.repeat(400 * 1024) } });
    expect(jsonTooBig.status).toBe(413);
    expectToMatchSpec(jsonTooBig, 'post', '/v1/messages/send');
    expect({ sent: await count(ctx, 'alice', 'sentItems'), bob: await count(ctx, 'bob', 'inbox') }).toEqual(before);
  });

  test('Idempotency-Key: a replay answers the same 202 body and sends nothing again', async () => {
    const before = { sent: await count(ctx, 'alice', 'sentItems'), bob: await count(ctx, 'bob', 'inbox') };
    const body = { to: [{ address: email('bob') }], subject: 'Once only', body: { contentType: 'text', content: 'One copy.' } };
    const first = await send('alice', body).set('Idempotency-Key', 'send-once-1');
    const again = await send('alice', body).set('Idempotency-Key', 'send-once-1');
    expect(first.status).toBe(202);
    expect(again.status).toBe(202);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expectToMatchSpec(again, 'post', '/v1/messages/send');
    expect(again.body).toEqual(first.body);
    expect({ sent: await count(ctx, 'alice', 'sentItems'), bob: await count(ctx, 'bob', 'inbox') }).toEqual({ sent: before.sent + 1, bob: before.bob + 1 });
    const other = await send('alice', { ...body, subject: 'Another' }).set('Idempotency-Key', 'send-once-1');
    expect(other.status).toBe(400);
  });

  test('a remote recipient without a relay bounces at once: an RFC 3464 report in Alice\'s Inbox names it; locals still get the mail', async () => {
    const res = await send('alice', { to: [{ address: 'zed@remote.example' }], cc: [{ address: email('bob') }], subject: 'Hello Zed', body: { contentType: 'text', content: 'Hi.' } });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ localRecipients: [email('bob')], queuedRecipients: [], rejectedRecipients: ['zed@remote.example'] });
    expect(await ctx.store.outbox.list(await userId(ctx, 'alice'))).toEqual([]);
    const ndr = (await synced(ctx, h.alice, 'alice', 'inbox')).find((i) => i.subject === 'Undeliverable: Hello Zed');
    expect(ndr).toMatchObject({ from: { address: `MAILER-DAEMON@${HOST}` }, to: [{ address: email('alice') }] });
    expect(ndr.preview).toContain('zed@remote.example');
    expect(ndr.conversationId).toBe((await ctx.store.items.byId(await userId(ctx, 'alice'), res.body.id))!.conversationId);
    const raw = await rawOf(ctx, 'alice', ndr.id);
    expect(raw).toMatch(/Content-Type: multipart\/report; report-type=delivery-status;/);
    expect(raw).toMatch(/Content-Type: message\/delivery-status\r\n\r\nReporting-MTA: dns; mail\.pigeon\.test\r\n/);
    expect(raw).toMatch(/Final-Recipient: rfc822; zed@remote\.example\r\nAction: failed\r\nStatus: 5\.4\.4\r\n/);
    expect(raw).toMatch(/Content-Type: text\/rfc822-headers[^]*Subject: Hello Zed/);
    expect((await synced(ctx, h.bob, 'bob', 'inbox')).some((i) => i.internetMessageId === res.body.internetMessageId)).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The relay worker, against an SMTP server in this process; passes are run by hand and the clock moved by hand.

interface Received {
  from: string;
  to: string[];
  raw: string;
}

/** An SMTP relay whose answer to each recipient the test decides (`undefined`: accept). */
async function testRelay(answer: (rcpt: string) => { code: number; text: string } | undefined) {
  const received: Received[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onRcptTo(address: SMTPServerAddress, _session, cb) {
      const a = answer(address.address);
      if (!a) return cb();
      cb(Object.assign(new Error(a.text), { responseCode: a.code }));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        received.push({
          from: (session.envelope.mailFrom as SMTPServerAddress).address,
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        cb();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  return { received, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('the relay worker', () => {
  const answers = new Map<string, { code: number; text: string }>();
  let relay: Awaited<ReturnType<typeof testRelay>>;
  let ctx: TestContext;
  let h: Record<Person, Record<string, string>>;
  const RETRY_BASE = 60;
  const GIVE_UP = 6 * 3600;

  beforeAll(async () => {
    relay = await testRelay((rcpt) => answers.get(rcpt));
    ctx = await buildTestApp({ mailHostname: HOST, smtpRelayUrl: `smtp://127.0.0.1:${relay.port}`, outboxRetryBase: RETRY_BASE, outboxGiveUpAfter: GIVE_UP });
    h = await addPeople(ctx);
  });
  afterAll(async () => {
    await ctx.built.relay.stop();
    await relay.close();
    await ctx.close();
  });
  beforeEach(() => {
    answers.clear();
    relay.received.length = 0;
  });

  const send = (body: object) => request(ctx.app).post('/v1/messages/send').set(h.alice).send(body);
  const outbox = async () => ctx.store.outbox.list(await userId(ctx, 'alice'));

  test('queued, then relayed once with the sender\'s envelope and without Bcc, even when passes overlap', async () => {
    const res = await send({ to: [{ address: 'x@remote.example' }, { address: email('bob') }], bcc: [{ address: 'hidden@remote.example' }], subject: 'Via relay', body: { contentType: 'text', content: 'Hello.' } });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ localRecipients: [email('bob')], queuedRecipients: ['x@remote.example', 'hidden@remote.example'], rejectedRecipients: [] });
    expect(await outbox()).toEqual([expect.objectContaining({ state: 'queued', recipients: ['x@remote.example', 'hidden@remote.example'], mailFrom: email('alice') })]);

    const passes = await Promise.all([ctx.built.relay.runOnce(), ctx.built.relay.runOnce(), ctx.built.relay.runOnce()]);
    expect(passes.reduce((n, p) => n + p.sent, 0)).toBe(1);
    expect(relay.received).toHaveLength(1);
    expect(relay.received[0]).toMatchObject({ from: email('alice'), to: ['x@remote.example', 'hidden@remote.example'] });
    expect(relay.received[0]!.raw).toContain(`Message-ID: ${res.body.internetMessageId}`);
    expect(relay.received[0]!.raw).not.toMatch(/^bcc:/im);
    expect(relay.received[0]!.raw).not.toContain('hidden@remote.example');
    expect(await outbox()).toEqual([expect.objectContaining({ state: 'sent', recipients: [] })]);
  });

  test('a permanent refusal of one recipient: the others go, the refused one gets a report with the relay\'s answer', async () => {
    answers.set('nobody@remote.example', { code: 550, text: '5.1.1 No such user here' });
    const res = await send({ to: [{ address: 'nobody@remote.example' }, { address: 'someone@remote.example' }], subject: 'Partly', body: { contentType: 'text', content: 'x' } });
    expect(res.status).toBe(202);
    const entry = (await outbox()).find((e) => e.state === 'queued')!;
    expect(await ctx.built.relay.runOnce()).toEqual({ sent: 1, retrying: 0, failed: 0 });
    expect(relay.received.map((r) => r.to)).toEqual([['someone@remote.example']]);
    expect(await ctx.store.outbox.byId(entry.id)).toMatchObject({ state: 'sent', recipients: [] });
    const ndr = (await synced(ctx, h.alice, 'alice', 'inbox')).find((i) => i.subject === 'Undeliverable: Partly');
    expect(ndr.preview).toContain('nobody@remote.example');
    const raw = await rawOf(ctx, 'alice', ndr.id);
    expect(raw).toMatch(/Final-Recipient: rfc822; nobody@remote\.example\r\nAction: failed\r\nStatus: 5\.1\.1\r\n/);
    expect(raw).toMatch(/Diagnostic-Code: smtp; 550 5\.1\.1 No such user here/);
    expect(raw).not.toContain('Final-Recipient: rfc822; someone@remote.example');
  });

  test('temporary failures back off (base, 2x, 4x ... at most 1 h), then give up with a report', async () => {
    answers.set('slow@remote.example', { code: 451, text: '4.3.0 Try again later' });
    const res = await send({ to: [{ address: 'slow@remote.example' }], subject: 'Eventually', body: { contentType: 'text', content: 'x' } });
    expect(res.status).toBe(202);
    const id = (await outbox()).find((e) => e.state === 'queued')!.id;
    const created = (await ctx.store.outbox.byId(id))!.createdAt;
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 7; attempt++) {
      const before = ctx.clock.now();
      expect(await ctx.built.relay.runOnce()).toEqual({ sent: 0, retrying: 1, failed: 0 });
      const entry = (await ctx.store.outbox.byId(id))!;
      expect(entry).toMatchObject({ state: 'queued', attempts: attempt, lastError: expect.stringContaining('451') });
      delays.push((entry.nextAttemptAt - before) / 1000);
      expect(await ctx.built.relay.runOnce()).toEqual({ sent: 0, retrying: 0, failed: 0 }); // not due yet
      ctx.clock.set(entry.nextAttemptAt);
    }
    expect(delays).toEqual([60, 120, 240, 480, 960, 1920, 3600]);
    expect(relay.received).toEqual([]);

    // Past the give-up time (6 h after the send): the last try fails, the entry is failed, Alice has a report.
    ctx.clock.set(created + GIVE_UP * 1000);
    expect(await ctx.built.relay.runOnce()).toEqual({ sent: 0, retrying: 0, failed: 1 });
    expect(await ctx.store.outbox.byId(id)).toMatchObject({ state: 'failed', recipients: ['slow@remote.example'] });
    h.alice = await signedIn(ctx, 'alice'); // the clock moved past the access token's life
    const ndr = (await synced(ctx, h.alice, 'alice', 'inbox')).find((i) => i.subject === 'Undeliverable: Eventually');
    expect(await rawOf(ctx, 'alice', ndr.id)).toMatch(/Final-Recipient: rfc822; slow@remote\.example\r\nAction: failed\r\nStatus: 4\.4\.7\r\n/);

    // Finished entries go after seven days.
    ctx.clock.advance(8 * 86400_000);
    await ctx.built.relay.runOnce();
    expect(await ctx.store.outbox.byId(id)).toBeUndefined();
  });

  test('a relay that cannot be reached is a temporary failure', async () => {
    const down = await testRelay(() => undefined);
    await down.close(); // a port nothing listens on
    const other = await buildTestApp({ smtpRelayUrl: `smtp://127.0.0.1:${down.port}`, outboxRetryBase: 5 });
    try {
      await other.users.addUser({ username: 'erin', password: PW, role: 'user', email: 'erin@pigeon.test' });
      const sender = (await other.store.users.byUsername('erin'))!;
      const now = other.clock.now();
      const blobId = await other.store.run(function* (tx) {
        const id = yield* tx.blobs.put(sender.id, Buffer.from('Subject: x\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n'), now);
        yield* tx.outbox.enqueue({ userId: sender.id, blobId: id, mailFrom: sender.email, recipients: ['a@remote.example'] }, now);
        return id;
      });
      expect(blobId).toMatch(/^[0-9a-f]{64}$/);
      expect(await other.built.relay.runOnce()).toEqual({ sent: 0, retrying: 1, failed: 0 });
      expect((await other.store.outbox.list(sender.id))[0]).toMatchObject({ state: 'queued', attempts: 1, nextAttemptAt: other.clock.now() + 5000, lastError: expect.stringMatching(/ECONNREFUSED|connect/i) });
    } finally {
      await other.built.relay.stop();
      await other.close();
    }
  });
});
