/**
 * Information protection over HTTP (issue 17; README "Information protection"), on a real SQLite file:
 * - a protected message is opened on the server for a device that registered `rightsManagement` and for nobody
 *   else (the other device, the store file and the raw message never show its text);
 * - each right the server enforces: reply / reply-all / forward by audience, attaching the original, saving an
 *   attachment (export); the owner holds every right;
 * - expiry on the injected clock binds everyone; key rotation keeps old mail readable; a tampered licence or
 *   content is unreadable, logged, and never a 5xx;
 * - sensitivity labels: catalogue, mandatory labelling, justification for a downgrade, the msip_labels header,
 *   a label that protects, labels in list items;
 * - S/MIME: a client-built signed message sent as raw MIME is stored byte for byte in Sent Items and arrives with
 *   its signature status; users publish certificates in the directory.
 */
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import nodemailer from 'nodemailer';
import { createLogger } from '../../server/logger';
import { startLmtp, type LmtpHandle } from '../../server/lmtp/server';
import { buildTestApp, signIn, asCaller, type TestContext } from '../helpers/testApp';
import { disposeSmimePki, signedMessage, smimePki } from '../helpers/smimePki';

let ctx: TestContext;
const PW = 'password-for-protection-tests';
const SECRET = 'Quarterly numbers TOPSECRET-PLAIN-4711';
const ATTACHMENT_TEXT = 'ATTACHED-SECRET-0815 merger plan';
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
let serial = 0;

interface Device {
  access: string;
  deviceId: string;
}

const as = (d: { access: string; deviceId?: string }) => asCaller(ctx, d);

/** The bytes of a download (supertest parses only what it knows as text or JSON). */
async function bytes(d: Device, p: string): Promise<{ status: number; body: Buffer; json: Record<string, any> }> {
  const res = await request(ctx.app)
    .get(p)
    .set('Authorization', `Bearer ${d.access}`)
    .set('X-Device-Id', d.deviceId)
    .buffer(true)
    .parse((r, done) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => done(null, Buffer.concat(chunks)));
    });
  const body = res.body as Buffer;
  return { status: res.status, body, json: res.status >= 400 ? JSON.parse(body.toString()) : {} };
}

/** A raw message/rfc822 request body. */
const postMime = (d: Device, p: string, raw: Buffer) =>
  request(ctx.app).post(p).set('Authorization', `Bearer ${d.access}`).set('X-Device-Id', d.deviceId).set('Content-Type', 'message/rfc822').send(raw);

async function device(username: string, capable: boolean): Promise<Device> {
  const deviceId = `${username}-${capable ? 'rm' : 'plain'}-${String(++serial).padStart(4, '0')}-abcdefgh`;
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const d = { access: t.access_token, deviceId };
  const res = await as(d).post('/v1/devices', {
    friendlyName: `${username}'s phone`,
    deviceType: 'iPhone',
    deviceOS: 'iOS 19.1',
    clientType: 'PigeonMail',
    clientVersion: '5.0',
    capabilities: capable ? ['rightsManagement'] : [],
  });
  expect(res.status).toBe(201);
  return d;
}

let root: Device;
let alice: Device;
let bobRm: Device;
let bobPlain: Device;
let carolRm: Device;
let addr: { root: string; alice: string; bob: string; carol: string };

async function folderId(d: Device, kind: string): Promise<string> {
  const res = await as(d).get('/v1/folders/sync');
  expect(res.status).toBe(200);
  return (res.body.created as Array<{ id: string; kind: string }>).find((f) => f.kind === kind)!.id;
}

/** Every item of the folder as a brand-new sync shows it to `d`. */
async function items(d: Device, kind = 'inbox', query = ''): Promise<Array<Record<string, any>>> {
  const res = await as(d).get(`/v1/folders/${await folderId(d, kind)}/items/sync${query}`);
  expect(res.status).toBe(200);
  return res.body.created;
}

async function newest(d: Device, kind = 'inbox', subject?: string) {
  const list = await items(d, kind);
  const found = subject ? list.find((i) => i.subject === subject) : list[0];
  expect(found).toBeDefined();
  return found!;
}

/** The SQLite files (database and write-ahead log) hold none of the protected text. */
function expectNoPlaintextInStore(): void {
  for (const name of fs.readdirSync(ctx.dir).filter((f) => f.startsWith('pigeon.db'))) {
    const bytes = fs.readFileSync(path.join(ctx.dir, name));
    expect(bytes.includes('TOPSECRET')).toBe(false);
    expect(bytes.includes('ATTACHED-SECRET')).toBe(false);
  }
}

const send = (d: Device, body: Record<string, unknown>) =>
  as(d).post('/v1/messages/send', { body: { contentType: 'text', content: SECRET }, ...body });

beforeAll(async () => {
  ctx = await buildTestApp({ accessTokenTtl: 30 * 86_400 });
  const pki = smimePki();
  addr = { root: 'root@example.test', alice: pki.alice.email, bob: pki.bob.email, carol: 'carol@example.test' };
  for (const [username, role] of [['root', 'admin'], ['alice', 'user'], ['bob', 'user'], ['carol', 'user']] as const) {
    await ctx.users.addUser({ username, password: PW, role, email: addr[username] });
  }
  root = await device('root', false);
  alice = await device('alice', true);
  bobRm = await device('bob', true);
  bobPlain = await device('bob', false);
  carolRm = await device('carol', true);
}, 60_000);
afterAll(async () => {
  disposeSmimePki();
  await ctx.close();
});

describe('a Do Not Forward message', () => {
  let itemId: string;

  beforeAll(async () => {
    const res = await send(alice, {
      to: [{ address: addr.bob }],
      subject: 'Numbers (DNF)',
      protection: { template: 'do-not-forward' },
      attachments: [{ name: 'plan.txt', contentType: 'text/plain', contentBase64: Buffer.from(ATTACHMENT_TEXT).toString('base64') }],
    });
    expect(res.status).toBe(202);
    itemId = (await newest(bobRm, 'inbox', 'Numbers (DNF)')).id;
  });

  test('a capable device sees the content, the rights and the protection', async () => {
    const item = await newest(bobRm, 'inbox', 'Numbers (DNF)');
    expect(item.preview).toContain(SECRET);
    expect(item.rights).toEqual(['view', 'reply', 'replyAll']);
    expect(item.protection).toMatchObject({ state: 'readable', owner: addr.alice, template: { id: 'do-not-forward' } });
    expect(item.attachments).toEqual([expect.objectContaining({ id: 'protected-0', name: 'plan.txt', contentType: 'text/plain', size: ATTACHMENT_TEXT.length })]);
    expect(item.hasAttachments).toBe(true);
    const read = await as(bobRm).get(`/v1/items/${itemId}`);
    expect(read.status).toBe(200);
    expect(read.body.body.content).toContain(SECRET);
    expect(read.headers['cache-control']).toBe('private, no-store');
  });

  test('a device without the capability gets the placeholder and no protected bytes', async () => {
    const list = await as(bobPlain).get(`/v1/folders/${await folderId(bobPlain, 'inbox')}/items/sync?bodyBytes=4096`);
    const read = await as(bobPlain).get(`/v1/items/${itemId}`);
    const attachment = await as(bobPlain).get(`/v1/items/${itemId}/attachments/protected-0`);
    const raw = await bytes(bobPlain, `/v1/items/${itemId}/mime`);
    const item = (list.body.created as Array<Record<string, any>>).find((i) => i.id === itemId)!;
    expect(item.protection).toMatchObject({ state: 'capabilityRequired' });
    expect(item.rights).toEqual([]);
    expect(item.attachments).toEqual([]);
    expect(read.body.body.content).toMatch(/protected with rights management/);
    expect(attachment.status).toBe(403);
    expect(attachment.body.code).toBe('rightsDenied');
    for (const text of [JSON.stringify(list.body), JSON.stringify(read.body), JSON.stringify(attachment.body), raw.body.toString('latin1')]) {
      expect(text).not.toContain('TOPSECRET');
      expect(text).not.toContain('ATTACHED-SECRET');
    }
  });

  test('the store file holds no plaintext of it', () => expectNoPlaintextInStore());

  test('item changes answer the item as the device may see it: PATCH, a conflict, a batch', async () => {
    // With an Idempotency-Key the answer is kept for replays: what is kept must be the stored view, not the opened one.
    const patched = await as(bobRm).patch(`/v1/items/${itemId}`, { isFlagged: true }).set('Idempotency-Key', 'protected-patch-1');
    expect(patched.status).toBe(200);
    expect(patched.body.protection.state).toBe('readable');
    expect(patched.body.preview).toContain(SECRET);
    const replayed = await as(bobRm).patch(`/v1/items/${itemId}`, { isFlagged: true }).set('Idempotency-Key', 'protected-patch-1');
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.body.preview).toContain(SECRET);
    const replayedElsewhere = await as(bobPlain).patch(`/v1/items/${itemId}`, { isFlagged: true }).set('Idempotency-Key', 'protected-patch-1');
    expect(replayedElsewhere.headers['idempotent-replayed']).toBe('true');
    expect(replayedElsewhere.body.protection.state).toBe('capabilityRequired');
    expect(JSON.stringify(replayedElsewhere.body)).not.toContain('TOPSECRET');
    const conflict = await as(bobRm).patch(`/v1/items/${itemId}`, { isFlagged: false }).set('If-Match', '"stale"');
    expect(conflict.status).toBe(412);
    expect(conflict.body.item.protection.state).toBe('readable');
    expect(conflict.body.item.preview).toContain(SECRET);
    const batch = await as(bobRm).post('/v1/batch', { operations: [{ opId: 'dnf-read', op: 'update', id: itemId, isRead: true }] });
    expect(batch.status).toBe(200);
    expect(batch.body.results[0].item.rights).toEqual(['view', 'reply', 'replyAll']);
    const plainBatch = await as(bobPlain).post('/v1/batch', { operations: [{ opId: 'dnf-unread', op: 'update', id: itemId, isRead: false }] });
    expect(plainBatch.body.results[0].item.protection.state).toBe('capabilityRequired');
    expect(JSON.stringify(plainBatch.body)).not.toContain('TOPSECRET');
    expectNoPlaintextInStore();
  });

  test('saving its attachment needs export, which Do Not Forward does not grant', async () => {
    const res = await as(bobRm).get(`/v1/items/${itemId}/attachments/protected-0`);
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'rightsDenied', right: 'export' });
  });

  test('a reply to the sender is allowed, and goes out protected', async () => {
    const res = await send(bobRm, { to: [{ address: addr.alice }], subject: 'Re: Numbers (DNF)', inReplyTo: itemId, body: { contentType: 'text', content: 'REPLY-BODY-123' } });
    expect(res.status).toBe(202);
    const reply = await newest(alice, 'inbox', 'Re: Numbers (DNF)');
    expect(reply.protection).toMatchObject({ state: 'readable', template: { id: 'do-not-forward' }, owner: addr.bob });
    expect(reply.preview).toContain('REPLY-BODY-123');
  });

  test('answering someone who never had it is forwarding: refused', async () => {
    const res = await send(bobRm, { to: [{ address: addr.carol }], subject: 'Re: Numbers', inReplyTo: itemId });
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ code: 'rightsDenied', right: 'forward' });
  });

  test('attaching the original (forward, or reply with the original) is refused', async () => {
    const forward = await send(bobRm, { to: [{ address: addr.carol }], subject: 'Fw: Numbers', attachItems: [itemId] });
    const replyWithOriginal = await send(bobRm, { to: [{ address: addr.alice }], subject: 'Re: Numbers', inReplyTo: itemId, attachItems: [itemId] });
    for (const res of [forward, replyWithOriginal]) {
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ code: 'rightsDenied', right: 'forward' });
    }
  });

  test('a device without the capability cannot even reply', async () => {
    const res = await send(bobPlain, { to: [{ address: addr.alice }], subject: 'Re: Numbers', inReplyTo: itemId });
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('rightsDenied');
  });

  test('the owner holds every right on the Sent Items copy', async () => {
    const sent = await newest(alice, 'sentItems', 'Numbers (DNF)');
    expect(sent.protection.state).toBe('readable');
    expect(sent.rights).toEqual(['view', 'reply', 'replyAll', 'forward', 'extract', 'print', 'export']);
    const res = await bytes(alice, `/v1/items/${sent.id}/attachments/protected-0`);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe(ATTACHMENT_TEXT);
  });
});

describe('Encrypt Only', () => {
  test('allows saving attachments and forwarding; the forward stays protected', async () => {
    await send(alice, {
      to: [{ address: addr.bob }],
      subject: 'Shareable',
      protection: { template: 'encrypt-only' },
      attachments: [{ name: 'plan.txt', contentType: 'text/plain', contentBase64: Buffer.from(ATTACHMENT_TEXT).toString('base64') }],
    }).expect(202);
    const item = await newest(bobRm, 'inbox', 'Shareable');
    const saved = await bytes(bobRm, `/v1/items/${item.id}/attachments/protected-0`);
    expect(saved.status).toBe(200);
    expect(saved.body.toString()).toBe(ATTACHMENT_TEXT);
    const forward = await send(bobRm, { to: [{ address: addr.carol }], subject: 'Fw: Shareable', attachItems: [item.id], body: { contentType: 'text', content: 'see below' } });
    expect(forward.status).toBe(202);
    const got = await newest(carolRm, 'inbox', 'Fw: Shareable');
    expect(got.protection).toMatchObject({ state: 'readable', template: { id: 'encrypt-only' } });
    expect(got.attachments.map((a: { contentType: string }) => a.contentType)).toEqual(['message/rfc822']);
  });
});

describe('the protection document, expiry and keys', () => {
  let etag: string;
  const admin = () => as(root);

  test('an admin adds a template that expires; If-Match guards the document', async () => {
    const first = await admin().get('/admin/v1/protection');
    expect(first.status).toBe(200);
    etag = String(first.headers.etag);
    const doc = { ...first.body, templates: [{ id: 'one-day', name: 'Read within a day', description: 'Expires after a day', rights: ['view', 'reply'], expiry: { days: 1 }, builtIn: false }] };
    const put = await admin().put('/admin/v1/protection', doc).set('If-Match', etag);
    expect(put.status).toBe(200);
    expect(put.headers.etag).not.toBe(etag);
    const stale = await admin().put('/admin/v1/protection', doc).set('If-Match', etag);
    expect(stale.status).toBe(412);
    const catalogue = await as(alice).get('/v1/protection');
    expect(catalogue.body.templates.map((t: { id: string }) => t.id)).toEqual(['do-not-forward', 'encrypt-only', 'confidential-view-only', 'one-day']);
  });

  test('after expiry nobody gets the content, the owner included', async () => {
    await send(alice, { to: [{ address: addr.bob }], subject: 'Ephemeral', protection: { template: 'one-day' } }).expect(202);
    const item = await newest(bobRm, 'inbox', 'Ephemeral');
    expect(item.preview).toContain(SECRET);
    ctx.clock.advance(2 * DAY);
    const later = await as(bobRm).get(`/v1/items/${item.id}`);
    expect(later.status).toBe(200);
    expect(later.body.protection.state).toBe('expired');
    expect(JSON.stringify(later.body)).not.toContain('TOPSECRET');
    const own = await newest(alice, 'sentItems', 'Ephemeral');
    expect(own.protection.state).toBe('expired');
  });

  test('after a key rotation, mail protected with the old key still opens, and new mail uses the new key', async () => {
    const before = await admin().get('/admin/v1/protection/keys');
    expect(before.body.keys).toHaveLength(1);
    const rotated = await admin().post('/admin/v1/protection/keys/rotate');
    expect(rotated.status).toBe(201);
    const after = await admin().get('/admin/v1/protection/keys');
    expect(after.body.keys.map((k: { active: boolean }) => k.active)).toEqual([true, false]);
    expect(JSON.stringify(after.body)).not.toMatch(/PRIVATE KEY/);
    ctx.clock.advance(2 * MINUTE); // past the reader's memory of opened messages
    const old = await newest(bobRm, 'inbox', 'Numbers (DNF)');
    expect(old.protection.state).toBe('readable');
    await send(alice, { to: [{ address: addr.bob }], subject: 'After rotation', protection: { template: 'encrypt-only' } }).expect(202);
    expect((await newest(bobRm, 'inbox', 'After rotation')).preview).toContain(SECRET);
  });
});

describe('tampering', () => {
  test('a changed licence or changed content is unreadable, logged, and no 5xx', async () => {
    const sent = await newest(alice, 'sentItems', 'Shareable');
    const raw = (await bytes(alice, `/v1/items/${sent.id}/mime`)).body;
    const text = raw.toString('latin1');
    // Change what each part protects, in turn: a date inside the signed licence, the last bytes of the ciphertext.
    const parts = [...text.matchAll(/Content-Type: application\/x-pigeon-(protected|licence)[\s\S]*?\r?\n\r?\n([A-Za-z0-9+/=\r\n]+)/g)];
    expect(parts.map((p) => p[1]).sort()).toEqual(['licence', 'protected']);
    const bob = (await ctx.store.users.byUsername('bob'))!;
    for (const part of parts) {
      const der = Buffer.from(part[2]!.replace(/\s+/g, ''), 'base64');
      if (part[1] === 'licence') {
        const at = der.indexOf('"issuedAt":"20');
        expect(at).toBeGreaterThan(0);
        der[at + 14] = der[at + 14] === 0x31 ? 0x32 : 0x31; // the decade of the year: still a well-formed licence
      } else {
        der[der.length - 3] = der[der.length - 3]! ^ 0x01;
      }
      const body = der.toString('base64').replace(/.{76}/g, '$&\r\n');
      const start = part.index! + part[0].length - part[2]!.length;
      const tampered = Buffer.from(
        (text.slice(0, start) + body + '\r\n' + text.slice(start + part[2]!.length))
          .replace(/^Message-ID: <[^>]+>/im, `Message-ID: <tampered-${part[1]}@example.test>`)
          .replace(/^Subject: .*$/im, `Subject: Tampered ${part[1]}`),
        'latin1',
      );
      const imported = await postMime(root, `/admin/v1/users/${bob.id}/messages`, tampered);
      expect(imported.status).toBe(201);
      const item = await newest(bobRm, 'inbox', `Tampered ${part[1]}`);
      expect(item.protection.state).toBe('unreadable');
      expect(item.rights).toEqual([]);
      const read = await as(bobRm).get(`/v1/items/${item.id}`);
      expect(read.status).toBe(200);
      expect(JSON.stringify(read.body)).not.toContain('TOPSECRET');
    }
    expect(ctx.logLines.some((l) => l.includes('protected message unreadable'))).toBe(true);
  });
});

describe('sensitivity labels', () => {
  const CONFIDENTIAL = '0e9a3b1c-1111-4c2d-9e8f-000000000001';
  const PUBLIC = '0e9a3b1c-1111-4c2d-9e8f-000000000002';
  const SECRET_LABEL = '0e9a3b1c-1111-4c2d-9e8f-000000000003';

  beforeAll(async () => {
    const current = await as(root).get('/admin/v1/protection');
    const doc = {
      ...current.body,
      labels: [
        { id: PUBLIC, name: 'Public', priority: 0, colour: '#00AA00', tooltip: 'Anyone', protectionTemplate: null, marking: { header: null, footer: null } },
        { id: CONFIDENTIAL, name: 'Confidential', priority: 5, colour: '#FFAA00', tooltip: 'Staff only', protectionTemplate: null, marking: { header: null, footer: 'CONFIDENTIAL-FOOTER' } },
        { id: SECRET_LABEL, name: 'Secret', priority: 9, colour: '#FF0000', tooltip: 'Protected', protectionTemplate: 'do-not-forward', marking: { header: null, footer: null } },
      ],
      labelPolicy: { defaultLabel: null, mandatory: true, justifyDowngrade: true },
    };
    const put = await as(root).put('/admin/v1/protection', doc);
    expect(put.status).toBe(200);
  });

  test('apps read the catalogue', async () => {
    const res = await as(bobRm).get('/v1/protection');
    expect(res.body.labels.map((l: { name: string }) => l.name)).toEqual(['Public', 'Confidential', 'Secret']);
    expect(res.body.labelPolicy).toEqual({ defaultLabel: null, mandatory: true, justifyDowngrade: true });
  });

  test('mandatory labelling refuses an unlabelled message and changes nothing', async () => {
    const before = (await items(alice, 'sentItems')).length;
    const res = await send(alice, { to: [{ address: addr.bob }], subject: 'No label', label: null });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'labelRequired', reason: 'mandatory' });
    expect((await items(alice, 'sentItems')).length).toBe(before);
  });

  test('a label is written as msip_labels, marks the body, and shows in list items', async () => {
    const res = await send(alice, { to: [{ address: addr.bob }], subject: 'Labelled', label: CONFIDENTIAL, body: { contentType: 'text', content: 'plain words' } });
    expect(res.status).toBe(202);
    const item = await newest(bobPlain, 'inbox', 'Labelled');
    expect(item.sensitivityLabel).toEqual({ id: CONFIDENTIAL, name: 'Confidential' });
    const raw = (await bytes(bobPlain, `/v1/items/${item.id}/mime`)).body.toString('latin1').replace(/\r?\n[ \t]+/g, ' ');
    expect(raw).toMatch(new RegExp(`^msip_labels: .*MSIP_Label_${CONFIDENTIAL}_Enabled=true`, 'im'));
    const read = await as(bobPlain).get(`/v1/items/${item.id}`);
    expect(read.body.body.content).toContain('CONFIDENTIAL-FOOTER');
  });

  test('lowering the label of an answered message needs a justification', async () => {
    const original = await newest(bobPlain, 'inbox', 'Labelled');
    const bare = await send(bobPlain, { to: [{ address: addr.alice }], subject: 'Re: Labelled', inReplyTo: original.id, label: PUBLIC });
    expect(bare.status).toBe(400);
    expect(bare.body).toMatchObject({ code: 'labelRequired', reason: 'justificationRequired' });
    const justified = await send(bobPlain, { to: [{ address: addr.alice }], subject: 'Re: Labelled', inReplyTo: original.id, label: PUBLIC, labelJustification: 'Nothing confidential left in it' });
    expect(justified.status).toBe(202);
  });

  test('a label that carries a protection template protects the message', async () => {
    await send(alice, { to: [{ address: addr.bob }], subject: 'Secret by label', label: SECRET_LABEL }).expect(202);
    const item = await newest(bobRm, 'inbox', 'Secret by label');
    expect(item.protection).toMatchObject({ state: 'readable', template: { id: 'do-not-forward' } });
    expect(item.sensitivityLabel).toEqual({ id: SECRET_LABEL, name: 'Secret' });
  });

  afterAll(async () => {
    const current = await as(root).get('/admin/v1/protection');
    await as(root).put('/admin/v1/protection', { ...current.body, labelPolicy: { defaultLabel: null, mandatory: false, justifyDowngrade: false } }).expect(200);
  });
});

describe('S/MIME', () => {
  test('a client-built signed message is sent as it is, kept byte for byte, and arrives with its status', async () => {
    const pki = smimePki();
    const signed = signedMessage(pki.alice, { endings: 'crlf' });
    const raw = Buffer.concat([Buffer.from(`Message-ID: <smime-${Date.now()}@example.test>\r\nDate: ${new Date(ctx.clock.now()).toUTCString()}\r\nBcc: ${addr.carol}\r\n`), signed]);
    const res = await postMime(alice, '/v1/messages/send-mime', raw);
    expect(res.status).toBe(202);
    expect(res.body.localRecipients.sort()).toEqual([addr.bob, addr.carol].sort());
    const sent = (await bytes(alice, `/v1/items/${res.body.id}/mime`)).body;
    expect(sent.equals(raw)).toBe(true);
    const got = await newest(bobPlain, 'inbox', 'S/MIME test');
    expect(got.smime).toMatchObject({ kind: 'signed', signature: { status: 'untrusted', signer: { email: pki.alice.email } } });
    const bobsCopy = (await bytes(bobPlain, `/v1/items/${got.id}/mime`)).body.toString('latin1');
    expect(bobsCopy).not.toMatch(/^Bcc:/im);
  });

  test('a raw message from someone else, or without a Message-ID, is refused', async () => {
    const pki = smimePki();
    const signed = signedMessage(pki.alice, { endings: 'crlf' });
    const asBob = await postMime(bobPlain, '/v1/messages/send-mime', Buffer.concat([Buffer.from('Message-ID: <x1@example.test>\r\n'), signed]));
    expect(asBob.status).toBe(403);
    const noId = await postMime(alice, '/v1/messages/send-mime', signed);
    expect(noId.status).toBe(400);
  });

  test('a user publishes a certificate; colleagues find it in the directory', async () => {
    const pki = smimePki();
    const published = await as(alice).post('/v1/me/certificates', { certificate: pki.alice.cert });
    expect(published.status).toBe(201);
    const again = await as(alice).post('/v1/me/certificates', { certificate: pki.alice.cert });
    expect(again.status).toBe(400);
    const notMine = await as(bobPlain).post('/v1/me/certificates', { certificate: pki.alice.cert });
    expect(notMine.status).toBe(400);
    const found = await as(bobPlain).get(`/v1/directory/certificates?address=${encodeURIComponent(addr.alice.toUpperCase())}`);
    expect(found.status).toBe(200);
    expect(found.body.certificates).toHaveLength(1);
    expect(found.body.certificates[0].fingerprint).toBe(published.body.fingerprint);
    const removedByOther = await as(bobPlain).delete(`/v1/me/certificates/${published.body.id}`);
    expect(removedByOther.status).toBe(404);
    expect((await as(alice).delete(`/v1/me/certificates/${published.body.id}`)).status).toBe(204);
    expect((await as(bobPlain).get(`/v1/directory/certificates?address=${encodeURIComponent(addr.alice)}`)).body.certificates).toHaveLength(0);
  });
});

describe('delivery rules protect incoming mail over LMTP', () => {
  let lmtp: LmtpHandle;
  beforeAll(async () => {
    const log = createLogger({ logLevel: 'silent', logPretty: false });
    lmtp = await startLmtp({
      config: { ...ctx.config, lmtpHost: '127.0.0.1', lmtpPort: 0 },
      delivery: ctx.built.delivery,
      clock: ctx.clock,
      log,
      protectOnDelivery: ctx.built.protection.protectOnDelivery,
    });
    const current = await as(root).get('/admin/v1/protection');
    const doc = {
      ...current.body,
      deliveryRules: [{ id: 'outside-payroll', description: 'Payroll mail from outside', template: 'confidential-view-only', when: { subjectContains: ['payroll'], fromOutside: true } }],
    };
    expect((await as(root).put('/admin/v1/protection', doc)).status).toBe(200);
  });
  afterAll(() => lmtp.close(1000));

  const deliver = (subject: string, from: string) => {
    const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: lmtp.port, ignoreTLS: true });
    const raw = `From: ${from}\r\nTo: ${addr.bob}, ${addr.carol}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}-${serial++}@example.org>\r\nDate: ${new Date(ctx.clock.now()).toUTCString()}\r\n\r\nRULE-PLAINTEXT-9 ${subject}\r\n`;
    return transport.sendMail({ envelope: { from, to: [addr.bob, addr.carol] }, raw }).finally(() => transport.close());
  };

  test('a matching message is stored protected for each recipient; others are untouched', async () => {
    await deliver('Payroll for December', 'hr@outside.example');
    await deliver('Lunch menu', 'canteen@outside.example');
    const bobsPlain = await newest(bobPlain, 'inbox', 'Payroll for December');
    expect(bobsPlain.protection).toMatchObject({ state: 'capabilityRequired', template: { id: 'confidential-view-only' }, owner: 'hr@outside.example' });
    expect(JSON.stringify(bobsPlain)).not.toContain('RULE-PLAINTEXT');
    const carols = await newest(carolRm, 'inbox', 'Payroll for December');
    expect(carols.protection.state).toBe('readable');
    expect(carols.rights).toEqual(['view']);
    expect(carols.preview).toContain('RULE-PLAINTEXT-9');
    const lunch = await newest(bobPlain, 'inbox', 'Lunch menu');
    expect(lunch.protection).toBeUndefined();
    expect(lunch.preview).toContain('RULE-PLAINTEXT-9');
  });

  test('mail from inside the organisation does not match a fromOutside rule', async () => {
    await deliver('Payroll questions', addr.alice);
    expect((await newest(bobPlain, 'inbox', 'Payroll questions')).protection).toBeUndefined();
  });
});

describe('changing the rightsManagement capability', () => {
  test('makes the device resync (410), since its replica was built for the other answer; other changes do not', async () => {
    const d = await device('carol', true);
    const inbox = await folderId(d, 'inbox');
    const first = await as(d).get(`/v1/folders/${inbox}/items/sync`);
    const register = (capabilities: string[], friendlyName = "carol's phone") =>
      as(d).post('/v1/devices', { friendlyName, deviceType: 'iPhone', deviceOS: 'iOS 19.1', clientType: 'PigeonMail', clientVersion: '5.0', capabilities });
    expect((await register(['rightsManagement'], 'renamed')).status).toBe(200);
    const same = await as(d).get(`/v1/folders/${inbox}/items/sync?token=${encodeURIComponent(first.body.token)}`);
    expect(same.status).toBe(200);
    expect((await register([])).status).toBe(200);
    const after = await as(d).get(`/v1/folders/${inbox}/items/sync?token=${encodeURIComponent(same.body.token)}`);
    expect(after.status).toBe(410);
  });
});
