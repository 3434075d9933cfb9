/**
 * Mailbox views end to end (issue 19): one real server process over its SQLite file, every call over real HTTPS,
 * every message arriving over real LMTP (nodemailer's LMTP transport as the MTA). The in-process tests
 * (tests/http/mailbox-views, shared-mailboxes, conversations, resync) cover the rules and the edges; this file checks
 * that the pieces are wired together in the process an operator runs: delivery's rules (Focused Inbox, junk,
 * ignored conversations, automatic replies claimed at delivery and sent by the process's own replier), the soft
 * reset seen on a real SSE stream, the cache-keeping resync, conversation sync, and a shared mailbox reached over
 * LMTP and sent from.
 *
 * The tests run in order and share the server; each uses users of its own where counts must be exact (erin's Inbox
 * holds only the conversation test's mail).
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { startServer, type RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { readEventStream } from '../helpers/eventStream';
import { openSqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';

const DOMAIN = 'pigeon.test';
const USERS = {
  admin: { role: 'admin', name: 'Ada Admin' },
  alice: { role: 'user', name: 'Alice Adams' },
  bob: { role: 'user', name: 'Bob Brown' },
  carol: { role: 'user', name: 'Carol Clark' },
  dave: { role: 'user', name: 'Dave Dunn' },
  erin: { role: 'user', name: 'Erin Evans' },
} as const;
type UserName = keyof typeof USERS;
const passwordOf = (u: UserName) => `${u}-views-e2e-password-19`;
const emailOf = (u: UserName) => `${u}@${DOMAIN}`;
const SUPPORT = `support@${DOMAIN}`;

let server: RunningServer;
let dataDir: string;
const userIds = {} as Record<UserName, string>;

// ---------------------------------------------------------------------------------------------------------------
// HTTPS

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  body: any;
}

function request(method: string, p: string, headers: Record<string, string> = {}, body?: string, agent: https.Agent | false = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: server.port, method, path: p, headers, ca: server.cert, servername: 'localhost', agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const json = /json/.test(String(res.headers['content-type'] ?? '')) && text !== '';
        resolve({ status: res.statusCode!, headers: res.headers, text, body: json ? JSON.parse(text) : undefined });
      });
    });
    req.once('error', reject);
    req.end(body);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Session {
  user: UserName;
  headers: Record<string, string>;
  /** The user's own folders by kind. */
  folders: Record<string, string>;
  hierarchyToken: string;
}

/** One API call as `s`; a 503 (the server shedding load on this busy machine) is retried as a client would. */
async function api(s: Pick<Session, 'headers'>, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const h = { ...s.headers, ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) };
  for (let attempt = 0; ; attempt++) {
    const res = await request(method, p, h, body === undefined ? undefined : JSON.stringify(body));
    if (res.status !== 503 || attempt >= 5) return res;
    await sleep(Math.min(1000, Number(res.headers['retry-after'] ?? 1) * 1000));
  }
}

/** A registered device of `user` (its own device id), with the hierarchy synced once. */
async function signIn(user: UserName, device: string): Promise<Session> {
  const deviceId = `e2e-views-${user}-${device}-${Math.random().toString(36).slice(2, 10)}`;
  const form = `grant_type=password&client_id=pigeon-app&username=${user}&password=${passwordOf(user)}&device_id=${deviceId}`;
  const token = await request('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
  expect((await api({ headers }, 'POST', '/v1/devices', { friendlyName: `${user} ${device}` })).status).toBe(201);
  const hierarchy = await api({ headers }, 'GET', '/v1/folders/sync');
  expect(hierarchy.status).toBe(200);
  const folders = Object.fromEntries(hierarchy.body.created.map((f: { kind: string; id: string }) => [f.kind, f.id]));
  return { user, headers, folders, hierarchyToken: hierarchy.body.token };
}

const tokenQuery = (token?: string) => (token ? `&token=${encodeURIComponent(token)}` : '');

/** A folder's whole window by an initial item sync (paged): the items by id and the token to poll with. */
async function syncFolder(s: Pick<Session, 'headers'>, folderId: string, headers: Record<string, string> = {}): Promise<{ items: Map<string, any>; token: string }> {
  const items = new Map<string, any>();
  let token: string | undefined;
  for (;;) {
    const res = await api(s, 'GET', `/v1/folders/${folderId}/items/sync?maxChanges=500${tokenQuery(token)}`, undefined, headers);
    expect(res.status).toBe(200);
    for (const item of res.body.created) items.set(item.id, item);
    token = res.body.token as string;
    if (!res.body.moreAvailable) return { items, token };
  }
}

/** One incremental item-sync page (every page until moreAvailable is false, merged). */
async function pollFolder(s: Pick<Session, 'headers'>, folderId: string, token: string, headers: Record<string, string> = {}) {
  const out = { created: [] as any[], updated: [] as any[], removed: [] as Array<{ id: string; reason: string }>, token };
  for (;;) {
    const res = await api(s, 'GET', `/v1/folders/${folderId}/items/sync?maxChanges=500${tokenQuery(out.token)}`, undefined, headers);
    expect(res.status).toBe(200);
    out.created.push(...res.body.created);
    out.updated.push(...res.body.updated);
    out.removed.push(...res.body.removed);
    out.token = res.body.token;
    if (!res.body.moreAvailable) return out;
  }
}

/** Probes until `ok` holds (the replier runs after the delivery's commit); answers the value. */
async function eventually<T>(what: string, probe: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(value).slice(0, 2000)}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// LMTP

let messageNo = 0;
const newMessageId = () => `<views-e2e-${++messageNo}.${Math.random().toString(36).slice(2, 10)}@mta.example>`;

interface Mail {
  from: { name: string; address: string };
  to: string;
  subject: string;
  id?: string;
  headers?: string[];
  text?: string;
}

function rawMessage(m: Mail): { id: string; raw: string } {
  const id = m.id ?? newMessageId();
  const head = [`From: ${m.from.name} <${m.from.address}>`, `To: ${m.to}`, `Subject: ${m.subject}`, `Message-ID: ${id}`, `Date: ${new Date().toUTCString()}`, 'MIME-Version: 1.0', ...(m.headers ?? [])];
  return { id, raw: [...head, 'Content-Type: text/plain; charset=utf-8', '', m.text ?? `Text of ${m.subject}.`, ''].join('\r\n') };
}

/** Delivers over LMTP to `recipients`; every one must be accepted. Answers the Message-ID. */
async function lmtp(recipients: string[], m: Mail): Promise<string> {
  const { id, raw } = rawMessage(m);
  const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: server.lmtpPort!, ignoreTLS: true });
  try {
    const info = await transport.sendMail({ envelope: { from: m.from.address, to: recipients }, raw });
    expect(info.accepted).toEqual(recipients);
  } finally {
    transport.close();
  }
  return id;
}

const person = (u: UserName) => ({ name: USERS[u].name, address: emailOf(u) });

// ---------------------------------------------------------------------------------------------------------------

let alice: Session;
let bob: Session;
let carol: Session;
let dave: Session;
let erin: Session;
let admin: Pick<Session, 'headers'>;

beforeAll(async () => {
  dataDir = tempDir('pigeon-e2e-views-');
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const users = createUserAdmin(store, systemClock);
  // The first user founds the tenant; the others join it, so they are colleagues (Focused Inbox, internal replies).
  for (const u of Object.keys(USERS) as UserName[]) {
    userIds[u] = (await users.addUser({ username: u, password: passwordOf(u), role: USERS[u].role, email: emailOf(u), displayName: USERS[u].name })).id;
  }
  await store.close();
  server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_MAIL_HOSTNAME: `mx.${DOMAIN}` });
  expect(server.lmtpPort).toEqual(expect.any(Number));
  [alice, bob, carol, dave, erin] = await Promise.all([signIn('alice', 'main'), signIn('bob', 'main'), signIn('carol', 'main'), signIn('dave', 'main'), signIn('erin', 'main')]);
  const form = `grant_type=password&client_id=pigeon-app&username=admin&password=${passwordOf('admin')}`;
  const token = await request('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  expect(token.body.scope.split(' ')).toContain('admin');
  admin = { headers: { authorization: `Bearer ${token.body.access_token}` } };
}, 60_000);

afterAll(async () => {
  await server?.stop();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test('1. Focused Inbox at delivery: a colleague focused, a newsletter other, a stranger focused until "always move to Other"', async () => {
  const inbox = alice.folders.inbox!;
  let { token } = await syncFolder(alice, inbox);

  const fromBob = await lmtp([emailOf('alice')], { from: person('bob'), to: emailOf('alice'), subject: 'Lunch on Thursday?' });
  const newsletter = await lmtp([emailOf('alice')], {
    from: { name: 'Shop Deals', address: 'deals@shop.example' },
    to: emailOf('alice'),
    subject: 'This week only: 40% off',
    headers: ['List-Unsubscribe: <mailto:unsubscribe@shop.example?subject=unsubscribe>', 'Precedence: bulk'],
  });
  const stranger = { name: 'Sam Stranger', address: 'sam@stranger.example' };
  const first = await lmtp([emailOf('alice')], { from: stranger, to: emailOf('alice'), subject: 'A question about your talk' });
  const second = await lmtp([emailOf('alice')], { from: stranger, to: emailOf('alice'), subject: 'Following up on my question' });

  const arrived = await pollFolder(alice, inbox, token);
  token = arrived.token;
  const byMessageId = new Map(arrived.created.map((i) => [i.internetMessageId, i]));
  expect([fromBob, newsletter, first, second].map((id) => byMessageId.get(id)?.inferenceClassification)).toEqual(['focused', 'other', 'focused', 'focused']);

  // "Always move to Other" on the newer message: the sender is remembered and the earlier message follows.
  const secondItem = byMessageId.get(second)!;
  const firstItem = byMessageId.get(first)!;
  const classified = await api(alice, 'POST', `/v1/items/${secondItem.id}/classify`, { classification: 'other', always: true });
  expect(classified.status).toBe(200);
  expect(classified.body).toMatchObject({ item: { id: secondItem.id, inferenceClassification: 'other' }, reclassified: 1, override: true });

  const changed = await pollFolder(alice, inbox, token);
  token = changed.token;
  expect(changed.created).toEqual([]);
  const updated = new Map(changed.updated.map((u) => [u.id, u]));
  expect(updated.get(firstItem.id)).toMatchObject({ inferenceClassification: 'other' });
  expect(updated.get(firstItem.id).changeKey).not.toBe(firstItem.changeKey);
  expect(updated.get(secondItem.id)).toMatchObject({ inferenceClassification: 'other' });
  expect([...updated.keys()].sort()).toEqual([firstItem.id, secondItem.id].sort());
  // Bob's message was not touched by the stranger's override.
  expect(updated.has(byMessageId.get(fromBob)!.id)).toBe(false);

  const settings = await api(alice, 'GET', '/v1/mailbox/settings');
  expect(settings.body.focusedOverrides).toContainEqual({ sender: 'sam@stranger.example', classification: 'other' });

  // The stranger's next message is Other at delivery (the address's case does not matter).
  const third = await lmtp([emailOf('alice')], { from: { name: 'Sam Stranger', address: 'Sam@Stranger.example' }, to: emailOf('alice'), subject: 'Third try' });
  const next = await pollFolder(alice, inbox, token);
  expect(next.created.map((i) => [i.internetMessageId, i.inferenceClassification])).toEqual([[third, 'other']]);
});

test('2. junk: a blocked domain lands in Junk Email (hierarchy and item sync); not junk moves it back and keeps the sender in the Inbox', async () => {
  const junkFolder = alice.folders.junkEmail!;
  const inbox = alice.folders.inbox!;
  const hierarchy = await api(alice, 'GET', `/v1/folders/sync?token=${encodeURIComponent(alice.hierarchyToken)}`);
  expect(hierarchy.status).toBe(200);
  let hierarchyToken: string = hierarchy.body.token;
  let junk = await syncFolder(alice, junkFolder);
  expect(junk.items.size).toBe(0);
  let inboxToken = (await syncFolder(alice, inbox)).token;

  const put = await api(alice, 'PUT', '/v1/mailbox/settings/junk', { safeSenders: [], blockedSenders: ['spammy.example'] });
  expect(put.status).toBe(200);
  expect(put.body.junk).toEqual({ safeSenders: [], blockedSenders: ['spammy.example'] });

  const pest = { name: 'Prize Desk', address: 'prizes@mail.spammy.example' };
  const spam = await lmtp([emailOf('alice')], { from: pest, to: emailOf('alice'), subject: 'You have won' });

  // The hierarchy shows Junk Email's new counts; its item sync has the message; the Inbox has nothing new.
  const folders = await api(alice, 'GET', `/v1/folders/sync?token=${encodeURIComponent(hierarchyToken)}`);
  expect(folders.status).toBe(200);
  hierarchyToken = folders.body.token;
  expect(folders.body.updated).toContainEqual(expect.objectContaining({ id: junkFolder, kind: 'junkEmail', totalCount: 1, unreadCount: 1 }));
  expect(folders.body.updated.some((f: { id: string }) => f.id === inbox)).toBe(false);
  const inJunk = await pollFolder(alice, junkFolder, junk.token);
  expect(inJunk.created.map((i) => [i.internetMessageId, i.folderId])).toEqual([[spam, junkFolder]]);
  const spamId = inJunk.created[0].id as string;
  const quietInbox = await pollFolder(alice, inbox, inboxToken);
  expect(quietInbox.created).toEqual([]);
  inboxToken = quietInbox.token;

  // Not junk: back to the Inbox, the sender on the safe list.
  const notJunk = await api(alice, 'POST', `/v1/items/${spamId}/report-junk`, { verdict: 'notJunk' });
  expect(notJunk.status).toBe(200);
  expect(notJunk.body).toMatchObject({ sender: 'prizes@mail.spammy.example', list: 'safeSenders', item: { id: spamId, folderId: inbox } });
  const leftJunk = await pollFolder(alice, junkFolder, inJunk.token);
  expect(leftJunk.removed).toEqual([{ id: spamId, reason: 'moved' }]);
  const backInInbox = await pollFolder(alice, inbox, inboxToken);
  expect(backInInbox.created.map((i) => i.id)).toEqual([spamId]);
  inboxToken = backInInbox.token;
  const moved = await api(alice, 'GET', `/v1/folders/sync?token=${encodeURIComponent(hierarchyToken)}`);
  expect(moved.body.updated).toContainEqual(expect.objectContaining({ id: junkFolder, totalCount: 0 }));

  // The sender's next message stays in the Inbox (the safe address beats the blocked domain); the domain's other
  // senders still go to Junk Email.
  const again = await lmtp([emailOf('alice')], { from: pest, to: emailOf('alice'), subject: 'Really, you won' });
  const other = await lmtp([emailOf('alice')], { from: { name: 'Promo', address: 'promo@spammy.example' }, to: emailOf('alice'), subject: 'Cheap watches' });
  const inboxNow = await pollFolder(alice, inbox, inboxToken);
  expect(inboxNow.created.map((i) => i.internetMessageId)).toEqual([again]);
  junk = { items: new Map(), token: leftJunk.token };
  const junkNow = await pollFolder(alice, junkFolder, junk.token);
  expect(junkNow.created.map((i) => i.internetMessageId)).toEqual([other]);
  const settings = await api(alice, 'GET', '/v1/mailbox/settings');
  expect(settings.body.junk).toEqual({ safeSenders: ['prizes@mail.spammy.example'], blockedSenders: ['spammy.example'] });
});

test('3. automatic replies: one per sender, Auto-Submitted and threaded, sent by the server process after delivery; none to a list', async () => {
  const on = await api(bob, 'PUT', '/v1/mailbox/settings/automatic-replies', {
    status: 'alwaysEnabled',
    internalReply: 'I am out until Monday; Carol covers for me. (internal)',
    externalReply: 'I am out of the office until Monday. (external)',
    externalAudience: 'all',
  });
  expect(on.status).toBe(200);
  expect(on.body.automaticReplies).toMatchObject({ status: 'alwaysEnabled', active: true });
  const aliceInboxToken = (await syncFolder(alice, alice.folders.inbox!)).token;

  const original = await lmtp([emailOf('bob')], { from: person('alice'), to: emailOf('bob'), subject: 'Budget review' });
  const followUp = await lmtp([emailOf('bob')], { from: person('alice'), to: emailOf('bob'), subject: 'Budget review, again' });
  // A list post from carol (a colleague who would otherwise get the internal reply; bob named in To, so it is not
  // a Bcc copy either): RFC 3834, no reply.
  await lmtp([emailOf('bob')], { from: person('carol'), to: `team@lists.${DOMAIN}, ${emailOf('bob')}`, subject: 'Team list: Friday drinks', headers: [`List-Id: Team <team.lists.${DOMAIN}>`] });
  // Then dave: once his reply has come, every claim made before it has been worked through.
  await lmtp([emailOf('bob')], { from: person('dave'), to: emailOf('bob'), subject: 'Printer on floor 3' });

  const isReply = (i: any) => i.from?.address === emailOf('bob') && String(i.subject).startsWith('Automatic reply:');
  await eventually('bob\'s automatic reply in dave\'s Inbox', async () => [...(await syncFolder(dave, dave.folders.inbox!)).items.values()].filter(isReply), (r) => r.length === 1);

  const replies = (await pollFolder(alice, alice.folders.inbox!, aliceInboxToken)).created.filter(isReply);
  expect(replies.map((r) => r.subject)).toEqual(['Automatic reply: Budget review']);
  const reply = replies[0];
  const mime = await api(alice, 'GET', `/v1/items/${reply.id}/mime`);
  expect(mime.status).toBe(200);
  const parsed = await simpleParser(Buffer.from(mime.text, 'utf8'));
  expect(parsed.headers.get('auto-submitted')).toBe('auto-replied');
  expect(parsed.inReplyTo).toBe(original);
  expect(parsed.inReplyTo).not.toBe(followUp);
  expect(parsed.from?.value[0]?.address).toBe(emailOf('bob'));
  expect(parsed.text).toContain('(internal)');
  expect(parsed.text).not.toContain('(external)');

  expect([...(await syncFolder(carol, carol.folders.inbox!)).items.values()].filter(isReply)).toEqual([]);
  // The process sent exactly two (alice's and dave's: its log line follows each send, so it is waited for), and no
  // copy is in bob's Sent Items.
  const sentLog = () => server.logs.filter((l) => l.msg === 'automatic reply' && l.userId === userIds.bob);
  await eventually('the replier\'s log lines', async () => sentLog().length, (n) => n >= 2, 3000);
  expect(sentLog().map((l) => l.outcome)).toEqual(['delivered', 'delivered']); // both local: delivered at once
  expect((await syncFolder(bob, bob.folders.sentItems!)).items.size).toBe(0);

  // Off again, so the later tests' mail to bob is not answered.
  expect((await api(bob, 'PUT', '/v1/mailbox/settings/automatic-replies', { status: 'disabled' })).status).toBe(200);
});

test('4. soft reset, two devices of one user: the phone gets softReset and 410 viewChanged, resyncs keeping its cache; the tablet is untouched', async () => {
  const [phone, tablet] = await Promise.all([signIn('alice', 'phone'), signIn('alice', 'tablet')]);
  const inbox = phone.folders.inbox!;
  const phoneSync = await syncFolder(phone, inbox);
  const tabletSync = await syncFolder(tablet, inbox);
  expect(phoneSync.items.size).toBeGreaterThan(5);
  expect([...tabletSync.items.keys()].sort()).toEqual([...phoneSync.items.keys()].sort());
  const conversationToken = async (s: Session) => {
    const res = await api(s, 'GET', `/v1/folders/${inbox}/conversations/sync?maxChanges=500`);
    expect([res.status, res.body.moreAvailable]).toEqual([200, false]);
    return res.body.token as string;
  };
  const [phoneConversations, tabletConversations] = [await conversationToken(phone), await conversationToken(tablet)];
  const conversationPoll = (s: Session, token: string) => api(s, 'GET', `/v1/folders/${inbox}/conversations/sync?token=${encodeURIComponent(token)}`);

  const phoneStream = readEventStream(server, phone.headers, ' (phone)');
  const tabletStream = readEventStream(server, tablet.headers, ' (tablet)');
  try {
    expect(await phoneStream.ready).toBe(200);
    expect(await tabletStream.ready).toBe(200);
    // The first block (the stream's position) says the stream is registered.
    await phoneStream.until(() => phoneStream.blocks[0], 3000, 'first block');
    await tabletStream.until(() => tabletStream.blocks[0], 3000, 'first block');

    const before = await api(phone, 'GET', '/v1/devices/current/view-settings');
    expect(before.body).toMatchObject({ focusedInbox: true, threaded: false });
    const changed = await api(phone, 'PUT', '/v1/devices/current/view-settings', { focusedInbox: true, threaded: true });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ focusedInbox: true, threaded: true, softReset: true });
    expect(changed.body.epoch).toBeGreaterThan(before.body.epoch);

    const reset = await phoneStream.until(() => phoneStream.blocks.find((b) => /^event: softReset$/m.test(b.text)), 3000, 'softReset event');
    const data = JSON.parse(/^data: (.*)$/m.exec(reset.text)![1]!);
    expect(data).toEqual({ reason: 'viewChanged', epoch: changed.body.epoch });

    // One message arrives meanwhile: the difference the resync must bring.
    const meanwhile = await lmtp([emailOf('alice')], { from: person('carol'), to: emailOf('alice'), subject: 'While your phone was resetting' });

    // The phone's held tokens are gone, with the reason.
    const staleItems = await api(phone, 'GET', `/v1/folders/${inbox}/items/sync?token=${encodeURIComponent(phoneSync.token)}`);
    expect(staleItems.status).toBe(410);
    expect(staleItems.body).toMatchObject({ code: 'resyncRequired', reason: 'viewChanged' });
    const staleHierarchy = await api(phone, 'GET', `/v1/folders/sync?token=${encodeURIComponent(phone.hierarchyToken)}`);
    expect(staleHierarchy.status).toBe(410);
    expect(staleHierarchy.body).toMatchObject({ code: 'resyncRequired', reason: 'viewChanged' });
    const staleConversations = await conversationPoll(phone, phoneConversations);
    expect(staleConversations.status).toBe(410);
    expect(staleConversations.body).toMatchObject({ code: 'resyncRequired', reason: 'viewChanged' });

    // The tablet's tokens keep working, and bring the new message as any poll would.
    const tabletPoll = await pollFolder(tablet, inbox, tabletSync.token);
    expect(tabletPoll.created.map((i) => i.internetMessageId)).toEqual([meanwhile]);
    expect((await api(tablet, 'GET', `/v1/folders/sync?token=${encodeURIComponent(tablet.hierarchyToken)}`)).status).toBe(200);
    const tabletConversationPoll = await conversationPoll(tablet, tabletConversations);
    expect(tabletConversationPoll.status).toBe(200);
    // A conversation that changed after the token comes whole in `updated`, an upsert (openapi: conversation sync),
    // even when it is new: here the new message's own conversation.
    expect(tabletConversationPoll.body.updated.map((c: any) => [c.id, c.latestItemId, c.messageCount])).toEqual([[tabletPoll.created[0].conversationId, tabletPoll.created[0].id, 1]]);
    expect((await api(tablet, 'GET', '/v1/devices/current/view-settings')).body).toMatchObject({ focusedInbox: true, threaded: false });

    // The phone resyncs with what it holds: only the difference comes back, and a token that polls.
    const held = [...phoneSync.items.values()].map((i) => ({ id: i.id as string, changeKey: i.changeKey as string }));
    const resync = await api(phone, 'POST', `/v1/folders/${inbox}/items/resync`, { held });
    expect(resync.status).toBe(200);
    expect(resync.body.created.map((i: any) => i.internetMessageId)).toEqual([meanwhile]);
    expect(resync.body.created.filter((i: any) => phoneSync.items.has(i.id))).toEqual([]);
    expect([resync.body.updated, resync.body.removed, resync.body.unchanged]).toEqual([[], [], held.length]);
    const afterResync = await api(phone, 'GET', `/v1/folders/${inbox}/items/sync?token=${encodeURIComponent(resync.body.token)}`);
    expect(afterResync.status).toBe(200);
    expect([afterResync.body.created, afterResync.body.updated, afterResync.body.removed]).toEqual([[], [], []]);
    // A fresh hierarchy sync (no token) rebuilds the phone's folder list.
    const rebuilt = await api(phone, 'GET', '/v1/folders/sync');
    expect(rebuilt.status).toBe(200);
    expect((await api(phone, 'GET', `/v1/folders/sync?token=${encodeURIComponent(rebuilt.body.token)}`)).status).toBe(200);

    // The tablet's stream never heard of the phone's reset, and its item token still polls after all this.
    await sleep(200);
    expect(tabletStream.blocks.filter((b) => /softReset/.test(b.text))).toEqual([]);
    expect((await pollFolder(tablet, inbox, tabletPoll.token)).created).toEqual([]);
  } finally {
    phoneStream.close();
    tabletStream.close();
  }
});

test('5. conversations: a thread over LMTP, its reply, markRead, and ignore sending the next message to Deleted Items', async () => {
  const inbox = erin.folders.inbox!;
  const convSync = (token?: string) => api(erin, 'GET', `/v1/folders/${inbox}/conversations/sync?maxChanges=500${tokenQuery(token)}`);
  const ann = { name: 'Ann Partner', address: 'ann@partner.example' };
  const ben = { name: 'Ben Partner', address: 'ben@partner.example' };
  const to = emailOf('erin');

  const t1 = await lmtp([to], { from: ann, to, subject: 'Contract draft' });
  const t2 = await lmtp([to], { from: ben, to, subject: 'Re: Contract draft', headers: [`In-Reply-To: ${t1}`, `References: ${t1}`] });
  const t3 = await lmtp([to], { from: ann, to, subject: 'Re: Contract draft', headers: [`In-Reply-To: ${t2}`, `References: ${t1} ${t2}`] });
  const lone = await lmtp([to], { from: { name: 'Cafe', address: 'orders@cafe.example' }, to, subject: 'Your catering order' });

  const items = await syncFolder(erin, inbox);
  const byMessageId = new Map([...items.items.values()].map((i) => [i.internetMessageId, i]));
  const threadId = byMessageId.get(t1)!.conversationId as string;
  expect([t2, t3].map((id) => byMessageId.get(id)!.conversationId)).toEqual([threadId, threadId]);
  const loneId = byMessageId.get(lone)!.conversationId as string;
  expect(loneId).not.toBe(threadId);

  const initial = await convSync();
  expect(initial.status).toBe(200);
  expect(initial.body).toMatchObject({ moreAvailable: false, updated: [], removed: [], window: { conversationsInFolder: 2 } });
  const conversations = new Map(initial.body.created.map((c: any) => [c.id, c]));
  expect([...conversations.keys()].sort()).toEqual([threadId, loneId].sort());
  expect(conversations.get(threadId)).toMatchObject({ messageCount: 3, unreadCount: 3, latestItemId: byMessageId.get(t3)!.id, subject: 'Re: Contract draft', from: ann });
  expect((conversations.get(threadId) as any).participants.map((p: any) => p.address).sort()).toEqual([ann.address, ben.address]);
  expect(conversations.get(loneId)).toMatchObject({ messageCount: 1, unreadCount: 1, subject: 'Your catering order' });
  let token: string = initial.body.token;

  // A reply arrives: the thread is updated, 3 → 4 messages, 4 unread; the other conversation is not mentioned.
  const t4 = await lmtp([to], { from: ben, to, subject: 'Re: Contract draft', headers: [`In-Reply-To: ${t3}`, `References: ${t1} ${t2} ${t3}`] });
  const afterReply = await convSync(token);
  expect(afterReply.status).toBe(200);
  expect(afterReply.body.created).toEqual([]);
  expect(afterReply.body.updated).toEqual([expect.objectContaining({ id: threadId, messageCount: 4, unreadCount: 4, from: ben })]);
  expect(afterReply.body.updated[0].changeKey).not.toBe((conversations.get(threadId) as any).changeKey);
  token = afterReply.body.token;

  const read = await api(erin, 'POST', `/v1/conversations/${encodeURIComponent(threadId)}/actions`, { action: 'markRead' });
  expect(read.status).toBe(200);
  expect(read.body.affected).toHaveLength(4);
  const afterRead = await convSync(token);
  expect(afterRead.body.updated).toEqual([expect.objectContaining({ id: threadId, messageCount: 4, unreadCount: 0 })]);
  token = afterRead.body.token;

  // Ignore: the thread goes to Deleted Items, and so does its next message.
  const deletedToken = (await syncFolder(erin, erin.folders.deletedItems!)).token;
  const ignored = await api(erin, 'POST', `/v1/conversations/${encodeURIComponent(threadId)}/actions`, { action: 'ignore' });
  expect(ignored.status).toBe(200);
  expect(ignored.body.affected).toHaveLength(4);
  const afterIgnore = await convSync(token);
  expect(afterIgnore.body.removed.map((r: any) => r.id)).toEqual([threadId]);
  token = afterIgnore.body.token;

  const t5 = await lmtp([to], { from: ann, to, subject: 'Re: Contract draft', headers: [`In-Reply-To: ${t4}`, `References: ${t1} ${t2} ${t3} ${t4}`] });
  const trash = await pollFolder(erin, erin.folders.deletedItems!, deletedToken);
  const t5Item = trash.created.find((i) => i.internetMessageId === t5);
  expect(t5Item).toMatchObject({ folderId: erin.folders.deletedItems, conversationId: threadId });
  const stillQuiet = await convSync(token);
  expect([stillQuiet.body.created, stillQuiet.body.updated, stillQuiet.body.removed]).toEqual([[], [], []]);
  const trashConversations = await api(erin, 'GET', `/v1/folders/${erin.folders.deletedItems}/conversations/sync?maxChanges=500`);
  expect(trashConversations.body.created).toEqual([expect.objectContaining({ id: threadId, messageCount: 5, unreadCount: 1, latestItemId: t5Item.id })]);
});

test('6. a shared mailbox: mail over LMTP seen by a member, 404 for a non-member, send-as reaching bob from support@', async () => {
  const created = await api(admin, 'POST', '/admin/v1/shared-mailboxes', { email: SUPPORT, displayName: 'Support' });
  expect(created.status).toBe(201);
  const sharedId = created.body.id as string;
  const member = await api(admin, 'PUT', `/admin/v1/shared-mailboxes/${sharedId}/members/${userIds.alice}`, { fullAccess: true, sendAs: true });
  expect(member.status).toBe(200);
  expect(member.body.members).toEqual([expect.objectContaining({ userId: userIds.alice, fullAccess: true, sendAs: true, sendOnBehalf: false })]);

  const mailboxes = await api(alice, 'GET', '/v1/mailboxes');
  expect(mailboxes.body.mailboxes).toContainEqual(expect.objectContaining({ id: sharedId, email: SUPPORT, shared: true, sendAs: true }));

  const customer = { name: 'Carl Customer', address: 'carl@customer.example' };
  const asked = await lmtp([SUPPORT], { from: customer, to: SUPPORT, subject: 'Order 1001 has not arrived' });

  const inShared = { 'x-mailbox': SUPPORT };
  const hierarchy = await api(alice, 'GET', '/v1/folders/sync', undefined, inShared);
  expect(hierarchy.status).toBe(200);
  const sharedFolders = Object.fromEntries(hierarchy.body.created.map((f: { kind: string; id: string }) => [f.kind, f.id]));
  expect(sharedFolders.inbox).toEqual(expect.any(String));
  expect(sharedFolders.inbox).not.toBe(alice.folders.inbox);
  const sharedInbox = await syncFolder(alice, sharedFolders.inbox, inShared);
  expect([...sharedInbox.items.values()].map((i) => [i.internetMessageId, i.from.address])).toEqual([[asked, customer.address]]);
  // Not in alice's own Inbox, and the shared folder does not exist without the header.
  expect([...(await syncFolder(alice, alice.folders.inbox!)).items.values()].some((i) => i.internetMessageId === asked)).toBe(false);
  expect((await api(alice, 'GET', `/v1/folders/${sharedFolders.inbox}/items/sync`)).status).toBe(404);

  // bob is no member: answered exactly as for a mailbox that exists nowhere.
  const bobTries = await api(bob, 'GET', '/v1/folders/sync', undefined, inShared);
  const nowhere = await api(bob, 'GET', '/v1/folders/sync', undefined, { 'x-mailbox': `nobody@${DOMAIN}` });
  expect(bobTries.status).toBe(404);
  expect(bobTries.body.code).toBe('mailboxNotFound');
  expect([bobTries.status, bobTries.body.code, bobTries.body.detail]).toEqual([nowhere.status, nowhere.body.code, nowhere.body.detail]);
  expect((await api(bob, 'GET', `/v1/folders/${sharedFolders.inbox}/items/sync`, undefined, inShared)).status).toBe(404);

  // alice answers from support@ (send-as) to bob.
  const bobInboxToken = (await syncFolder(bob, bob.folders.inbox!)).token;
  const sent = await api(alice, 'POST', '/v1/messages/send', { to: [{ name: USERS.bob.name, address: emailOf('bob') }], subject: 'Order 1001: can you check the warehouse?', body: { contentType: 'text', content: 'The customer is waiting.' } }, inShared);
  expect(sent.status).toBe(202);
  const got = await eventually('the message from support@ in bob\'s Inbox', async () => (await pollFolder(bob, bob.folders.inbox!, bobInboxToken)).created, (c) => c.length > 0);
  expect(got.map((i) => [i.internetMessageId, i.from.address])).toEqual([[sent.body.internetMessageId, SUPPORT]]);
  const mime = await api(bob, 'GET', `/v1/items/${got[0].id}/mime`);
  const parsed = await simpleParser(Buffer.from(mime.text, 'utf8'));
  expect(parsed.from?.value[0]?.address).toBe(SUPPORT);
  expect(parsed.headers.get('sender')).toBeUndefined(); // send-as, not on behalf
  // The copy is in the shared mailbox's Sent Items, not alice's own.
  const sharedSent = await syncFolder(alice, sharedFolders.sentItems, inShared);
  expect([...sharedSent.items.values()].map((i) => i.internetMessageId)).toEqual([sent.body.internetMessageId]);
  expect([...(await syncFolder(alice, alice.folders.sentItems!)).items.values()].some((i) => i.internetMessageId === sent.body.internetMessageId)).toBe(false);
});

test('7. information only: a conversation no-change poll vs an item no-change poll over HTTPS (median of 50 each)', async () => {
  const inbox = alice.folders.inbox!;
  const itemToken = (await syncFolder(alice, inbox)).token;
  const conversations = await api(alice, 'GET', `/v1/folders/${inbox}/conversations/sync?maxChanges=500`);
  expect(conversations.status).toBe(200);
  expect(conversations.body.moreAvailable).toBe(false);
  const conversationToken: string = conversations.body.token;
  // One kept-alive connection, so the numbers are the server's work and not TLS handshakes.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const timeOne = async (p: string) => {
    const started = performance.now();
    const res = await request('GET', p, alice.headers, undefined, agent);
    const ms = performance.now() - started;
    expect(res.status).toBe(200);
    expect([res.body.created, res.body.updated, res.body.removed]).toEqual([[], [], []]);
    return ms;
  };
  const itemPath = `/v1/folders/${inbox}/items/sync?token=${encodeURIComponent(itemToken)}`;
  const conversationPath = `/v1/folders/${inbox}/conversations/sync?token=${encodeURIComponent(conversationToken)}`;
  try {
    for (let i = 0; i < 5; i++) {
      await timeOne(itemPath); // warm-up: the connection, the statements' caches
      await timeOne(conversationPath);
    }
    const items: number[] = [];
    const convs: number[] = [];
    // Interleaved, so a busy moment of the machine costs both alike.
    for (let i = 0; i < 50; i++) {
      items.push(await timeOne(itemPath));
      convs.push(await timeOne(conversationPath));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    console.log(
      [
        `No-change polls of alice's Inbox over HTTPS (one kept-alive connection, ${conversations.body.created.length} conversations, 50 each, interleaved):`,
        `  item sync:         median ${median(items).toFixed(2)} ms, min ${Math.min(...items).toFixed(2)} ms, max ${Math.max(...items).toFixed(2)} ms`,
        `  conversation sync: median ${median(convs).toFixed(2)} ms, min ${Math.min(...convs).toFixed(2)} ms, max ${Math.max(...convs).toFixed(2)} ms`,
      ].join('\n'),
    );
  } finally {
    agent.destroy();
  }
});
