/**
 * Moving a tenant between regions (server/admin/tenantMove.ts; README, "Regions"; issue 14): a tenant of region `eu`
 * on a SQLite store — users (one disabled), nested folders (one moved under a newer one, a well-known one renamed),
 * delivered mail with MIME, attachments and an inline part, flags and categories, an event and a contact, access
 * rules, a default state, a device, a sign-in and audit entries — is exported and imported into region `us` on a
 * PostgreSQL store. Everything that moves is compared field by field after mapping ids, the audit logs of both sides
 * are checked, no source id is left in any row of the target, and a moved user signs in at a us app with the same
 * password and syncs the moved mail. A damaged file, a second import and a username collision are refused without
 * writing anything. The CLI commands run once as real processes.
 *
 * Information protection moves too (format version 2): the tenant has a protection key rotated once, a protection
 * document (changed twice), a published certificate (made by openssl), two rights-protected messages (one under each
 * key, one labelled) and an S/MIME signed one (signed by openssl), and a conditional-access document naming users.
 * The two regions have different server secrets: at the target, the moved keys are sealed with its secret (not the
 * source's), both protected messages open for a rightsManagement reader, the same key is active, and the access
 * document names the new user ids. openssl decrypts a moved message with the private key the file carries. A version
 * 1 file (no protection records) still imports; a key whose retirement or private key does not fit is refused.
 *
 * Mailbox views move too (format version 3, issue 19): Anna's mailbox settings (automatic replies on, both junk lists,
 * a Focused Inbox override learned by classifying a message) arrive as they were, and a shared mailbox with two
 * members (rights differing, one membership changed later) arrives shared, its members the new users with the same
 * rights and times. Each folder's conversations are rebuilt at the target from the items, under the same ids; what
 * is documented as staying behind (an ignored conversation, an automatic-reply record) stays behind. A version 2
 * file still imports; damaged settings or memberships are refused before anything is written.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import request from 'supertest';
import { Client } from 'pg';
import { createApp } from '../../server/app';
import { loadConfig } from '../../server/config';
import { ManualClock } from '../../server/clock';
import { loadKeys } from '../../server/auth/keys';
import { createLogger } from '../../server/logger';
import { withFastLane } from '../../server/http/fastLane';
import { createUserAdmin } from '../../server/admin/users';
import { createDelivery } from '../../server/mail/delivery';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { openPostgresStore, type PostgresStore } from '../../server/store/postgres';
import type { AuditEntry, ConversationKey, Folder, Item, Store, Tenant } from '../../server/store/types';
import { exportTenant, importTenant, TenantImportFailed, TenantMoveError, TENANT_EXPORT_FORMAT } from '../../server/admin/tenantMove';
import { createProtectionService } from '../../server/protection/service';
import { createMessageInspector } from '../../server/protection/inspect';
import { createSmimeInspector } from '../../server/protection/smime';
import { createKeySealer, SealedKeyError } from '../../server/protection/keys';
import { parseProtectionDocument } from '../../server/protection/config';
import { formatMsipLabels, tenantSiteId } from '../../server/protection/labels';
import { parseUserCertificate } from '../../server/protection/certificates';
import { findProtectedParts } from '../../server/protection/wrapper';
import type { Reader } from '../../server/protection/reader';
import { parseMessage } from '../../server/content/mime';
import { compileAccessConfig } from '../../server/access/config';
import { createMailboxService } from '../../server/mailbox/service';
import { parseSettings } from '../../server/mailbox/settings';
import { newId } from '../../server/ids';
import { freshDatabase, type FreshDatabase } from '../helpers/postgres';
import { opensslWorkspace } from '../helpers/openssl';
import { tempDir, CLIENT_ID } from '../helpers/testApp';
import { ROOT } from '../helpers/server';

const DIRECTORY = { eu: 'https://eu.mail.test', us: 'https://us.mail.test' };
const REGIONS_ENV = `eu=${DIRECTORY.eu}, us=${DIRECTORY.us}`;
const T0 = Date.UTC(2026, 1, 1);
/** Small pages, so the export's range reads and the import's units each take several rounds. */
const PAGE = 7;
const LOWEST = { receivedAt: 0, id: '' };
const HIGHEST = { receivedAt: 8.64e15, id: '' };
const FIRST_CONVERSATION: ConversationKey = { latestReceivedAt: 0, conversationId: '' };
const PAST_LAST_CONVERSATION: ConversationKey = { latestReceivedAt: 8.64e15, conversationId: '' };

let dir: string;
let eu: SqliteStore;
let us: PostgresStore;
let usDatabase: FreshDatabase;
let clock: ManualClock;
let tenant: Tenant;
let otherTenant: Tenant;
/** Every id of the source tenant's records: none may appear in the target. */
const sourceIds = new Set<string>();
const names: Record<string, string> = {}; // username → source user id
let deviceRecordId: string;
let ruleIds: string[];
let importedItemId: string;
let exportFile: string;
/** Each region's server secret: eu's is its data directory's (the CLI's export reads it), us's its database's. */
let euSecret: Buffer;
let usSecret: Buffer;
const openssl = opensslWorkspace();

// Information protection of the source tenant.
const LABEL_ID = '6f1c2a4e-0b7d-4c55-9f3e-2d8a1b7c9e01';
const SECRET_OLD = 'Board minutes TOPSECRET-OLDKEY-1187';
const SECRET_NEW = 'Merger terms TOPSECRET-NEWKEY-2291';
/** A user id in the access document that names no user (deleted since): kept as it is. */
const GONE_USER = 'deleted-user-0001';
const PROTECTION_DOC = {
  templates: [{ id: 'board-only', name: 'Board only', description: 'For the board', rights: ['view', 'reply'], expiry: null }],
  labels: [{ id: LABEL_ID, name: 'Confidential', priority: 2, colour: '#cc0000', tooltip: 'Confidential', protectionTemplate: 'board-only', marking: { header: null, footer: 'Confidential' } }],
  labelPolicy: { defaultLabel: null, mandatory: false, justifyDowngrade: true },
};
/** The source's keys, oldest first (the second was made by a rotation, which retired the first). */
let sourceKeys: Array<{ id: string; certificatePem: string }>;

// Mailbox views of the source tenant.
/** The shared mailbox's user, as server/mailbox/shared.ts names one (no sign-in produces a leading `#`). */
const SHARED = '#shared:team@acme.test';
/** Anna's automatic-reply period at the source: her settings move with it. */
let annaPeriod: string;
/** A conversation Anna ignores at the source (ignored conversations stay behind). */
let ignoredConversation: string;

const silent = createLogger({ logLevel: 'silent', logPretty: false });
const smime = createSmimeInspector({ trustAnchorsPem: [] });

/** Delivery that inspects as live delivery does (protected, labelled and S/MIME mail), and the protection service. */
function protectionOver(store: Store, serverSecret: Buffer) {
  const delivery = createDelivery({
    store,
    clock,
    duplicateWindowSeconds: 3600,
    threadSubjectWindowSeconds: 7 * 86400,
    inspect: createMessageInspector({ smime, clock, warn: () => {} }),
  });
  const protection = createProtectionService({ store, clock, log: silent, serverSecret, smime, prepare: (raw) => delivery.prepare(raw) });
  return { delivery, protection };
}

/** A reader whose device registered rightsManagement. */
const capableReader = (userId: string, tenantId: string): Reader => ({ userId, tenantId, address: 'acme-anna@acme.test', capable: true });

const innerMessage = (subject: string, messageId: string, text: string, headers: string[] = []) =>
  Buffer.from(
    [
      'From: Carol <carol@partner.test>',
      'To: Anna <acme-anna@acme.test>',
      `Subject: ${subject}`,
      `Message-ID: <${messageId}>`,
      'Date: Mon, 2 Feb 2026 12:00:00 +0000',
      ...headers,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      text,
      '',
    ].join('\r\n'),
  );

/** The items of a user's inbox by subject. */
async function inboxItem(store: Store, userId: string, subject: string): Promise<Item> {
  const inbox = (await store.folders.byKind(userId, 'inbox'))!;
  const found = (await store.sync.range(userId, inbox.id, LOWEST, HIGHEST, 'asc', 1000)).find((i) => i.subject === subject);
  if (!found) throw new Error(`no item ${JSON.stringify(subject)} in the inbox of ${userId}`);
  return found;
}

/** An export file's lines, parsed. */
function readRecords(file: string) {
  const records = fs.readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
  return { header: records[0]!, body: records.slice(1, -1), trailer: records[records.length - 1]! };
}

/** Writes an export file as an exporter would: header (with `counts`), records, trailer with the counts and checksum. */
function writeRecords(file: string, header: Record<string, unknown>, body: Array<Record<string, unknown>>, counts: Record<string, number>) {
  const text = [{ ...header, counts }, ...body].map((r) => JSON.stringify(r) + '\n').join('');
  const sha256 = crypto.createHash('sha256').update(text).digest('hex');
  fs.writeFileSync(file, text + JSON.stringify({ record: 'trailer', counts, sha256 }) + '\n');
}

const password = (username: string) => `${username}-password-1`;

function multipart(subject: string, messageId: string, attachment: Buffer, inline: Buffer, extraHeaders: string[] = []): Buffer {
  return Buffer.from(
    [
      'From: Carol <carol@partner.test>',
      'To: Anna <acme-anna@acme.test>',
      'Cc: ben@acme.test',
      `Subject: ${subject}`,
      `Message-ID: <${messageId}>`,
      ...extraHeaders,
      'Date: Mon, 2 Feb 2026 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="outer"',
      '',
      '--outer',
      'Content-Type: multipart/related; boundary="inner"',
      '',
      '--inner',
      'Content-Type: text/html; charset=utf-8',
      '',
      `<p>The plan for ${subject}, see <img src="cid:logo@acme"> and the attached budget.</p>`,
      '--inner',
      'Content-Type: image/png',
      'Content-ID: <logo@acme>',
      'Content-Disposition: inline; filename="logo.png"',
      'Content-Transfer-Encoding: base64',
      '',
      inline.toString('base64'),
      '--inner--',
      '--outer',
      'Content-Type: application/pdf; name="budget.pdf"',
      'Content-Disposition: attachment; filename="budget.pdf"',
      'Content-Transfer-Encoding: base64',
      '',
      attachment.toString('base64').replace(/.{76}/g, '$&\r\n'),
      '--outer--',
      '',
    ].join('\r\n'),
  );
}

const plain = (i: number) =>
  Buffer.from(
    [`From: sender${i}@elsewhere.test`, 'To: acme-anna@acme.test', `Subject: Note ${i}`, `Message-ID: <note-${i}@elsewhere.test>`, 'Date: Mon, 2 Feb 2026 11:00:00 +0000', 'Content-Type: text/plain; charset=utf-8', '', `Plain note number ${i} about quarterly figures`, ''].join('\r\n'),
  );

/** Builds the eu tenant through the public Store API (and the delivery path, for real MIME). */
async function buildSource(): Promise<void> {
  tenant = await eu.tenants.create('Acme', clock.now(), 'eu');
  otherTenant = await eu.tenants.create('Other', clock.now(), 'eu');
  sourceIds.add(tenant.id);
  const admin = createUserAdmin(eu, clock, { region: 'eu' });
  for (const [username, role] of [['acme-admin', 'admin'], ['acme-anna', 'user'], ['acme-ben', 'user']] as const) {
    const user = await admin.addUser({ username, password: password(username), role, displayName: `${username} display`, email: `${username}@acme.test`, tenantId: tenant.id });
    names[username] = user.id;
    sourceIds.add(user.id);
  }
  await admin.addUser({ username: 'other-olga', password: password('other-olga'), role: 'user', tenantId: otherTenant.id });
  clock.advance(1000);
  await eu.users.setDisabled(names['acme-ben']!, true, clock.now());
  const anna = names['acme-anna']!;

  // Folders: Projects/Alpha/Deep, then Projects moved under the newer Later; Archive renamed.
  const f = async (displayName: string, parentId: string | null) => (await eu.folders.create(anna, { displayName, parentId }, clock.now())).id;
  const projects = await f('Projects', null);
  const alpha = await f('Alpha', projects);
  const deep = await f('Deep', alpha);
  const later = await f('Later', null);
  await eu.folders.update(anna, projects, { parentId: later }, clock.now());
  const archive = (await eu.folders.byKind(anna, 'archive'))!;
  await eu.folders.update(anna, archive.id, { displayName: 'Old mail' }, clock.now());

  // Mail through the delivery path: attachments, an inline part, thread headers, a subject-threaded reply.
  const delivery = createDelivery({ store: eu, clock, duplicateWindowSeconds: 3600, threadSubjectWindowSeconds: 7 * 86400 });
  const deliver = async (raw: Buffer, folderId: string, receivedAt: number) =>
    (await delivery.deliver(await delivery.prepare(raw), [{ userId: anna, folderId }], { duplicates: 'live', receivedAt }))[0]!.itemId;
  const budget = crypto.randomBytes(50_000);
  const logo = crypto.randomBytes(3_000);
  const planId = await deliver(multipart('Plan', 'plan@partner.test', budget, logo), deep, T0 + 1);
  await deliver(multipart('Re: Plan', 'plan-reply@partner.test', crypto.randomBytes(2_000), logo, ['In-Reply-To: <plan@partner.test>']), deep, T0 + 2);
  await deliver(multipart('Re: Plan', 'plan-loose@partner.test', crypto.randomBytes(1_000), logo), alpha, T0 + 3);
  const inbox = (await eu.folders.byKind(anna, 'inbox'))!.id;
  const notes: string[] = [];
  for (let i = 0; i < 23; i++) notes.push(await deliver(plain(i), inbox, T0 + 100 + i));
  await eu.items.update(anna, notes[0]!, { isRead: true, isFlagged: true, categories: ['Red', 'Finance'] }, clock.now());
  await eu.items.update(anna, notes[1]!, { inferenceClassification: 'other', categories: ['Blue'] }, clock.now());
  await eu.items.move(anna, notes[2]!, later, clock.now());
  await eu.items.delete(anna, notes[3]!, clock.now());
  await eu.items.update(anna, planId, { isFlagged: true }, clock.now());
  importedItemId = planId;

  // An event and a contact.
  const calendar = (await eu.folders.byKind(anna, 'calendar'))!.id;
  const contacts = (await eu.folders.byKind(anna, 'contacts'))!.id;
  await eu.items.create(
    { userId: anna, folderId: calendar, type: 'event', receivedAt: T0 + 500, subject: 'Standup', preview: 'Daily', bodyText: 'Daily standup', data: { start: T0 + 86400_000, end: T0 + 86400_000 + 900_000, location: 'Room 1', attendees: [{ name: 'Ben', address: 'ben@acme.test' }], recurrence: { freq: 'daily' } } },
    clock.now(),
  );
  await eu.items.create(
    { userId: anna, folderId: contacts, type: 'contact', receivedAt: T0 + 501, subject: 'Carol Partner', data: { givenName: 'Carol', surname: 'Partner', emails: ['carol@partner.test'], phones: [{ type: 'mobile', number: '+1 555 0100' }] } },
    clock.now(),
  );
  // The disabled user's mail moves too.
  const benInbox = (await eu.folders.byKind(names['acme-ben']!, 'inbox'))!.id;
  for (let i = 0; i < 3; i++) await eu.items.create({ userId: names['acme-ben']!, folderId: benInbox, type: 'email', receivedAt: T0 + 600 + i, subject: `Ben ${i}`, bodyText: `for ben ${i}`, mime: plain(100 + i) }, clock.now());

  // Access rules (one updated later), the default state, a device and a sign-in (neither moves), audit entries.
  const rule1 = await eu.deviceAccess.createRule(tenant.id, { field: 'deviceModel', match: 'exact', value: 'Old phone', accessState: 'blocked', description: 'too old' }, clock.now());
  clock.advance(1000);
  const rule2 = await eu.deviceAccess.createRule(tenant.id, { field: 'clientType', match: 'prefix', value: 'beta', accessState: 'quarantined', description: '' }, clock.now());
  clock.advance(1000);
  await eu.deviceAccess.updateRule(tenant.id, rule2.id, { field: 'clientType', match: 'prefix', value: 'beta-', accessState: 'allowed', description: 'betas are fine' }, clock.now());
  ruleIds = [rule1.id, rule2.id];
  await eu.deviceAccess.setDefaultState(tenant.id, 'quarantined', clock.now());
  const device = await eu.devices.create(anna, 'anna-device-0123456789', { friendlyName: 'phone', deviceType: 'phone', deviceModel: 'phone-model-x9', deviceOS: 'os', clientType: 'pigeon', clientVersion: '1', userAgent: 'ua', capabilities: [] }, clock.now());
  deviceRecordId = device.id;
  await eu.refreshTokens.insert({ id: 'rt-acme-anna-1', familyId: 'fam-acme-anna-1', userId: anna, deviceId: device.deviceId, clientId: CLIENT_ID, scope: 'mail', tokenHash: Buffer.from('h'), createdAt: clock.now(), expiresAt: clock.now() + 1e9 });
  const audit = (action: string, targetType: string, targetId: string | null, details: Record<string, unknown>) =>
    eu.audit.append({ tenantId: tenant.id, at: clock.now(), actorId: names['acme-admin']!, actorName: 'acme-admin', action, targetType, targetId, details });
  await audit('rule.create', 'deviceAccessRule', rule1.id, { field: 'deviceModel', value: 'Old phone' });
  await audit('device.quarantine', 'device', device.id, { userId: anna, deviceId: device.deviceId });
  await audit('message.import', 'user', anna, { itemId: planId, folderId: deep, internetMessageId: 'plan@partner.test' });
  await eu.audit.append({ tenantId: otherTenant.id, at: clock.now(), actorId: null, actorName: 'system', action: 'tenant.create', targetType: 'tenant', targetId: otherTenant.id, details: {} });

  await buildProtection(anna, inbox);
  await buildMailboxViews(anna, notes[5]!, planId);

  for (const key of sourceKeys) sourceIds.add(key.id);
  for (const cert of await eu.protection.certificates(anna)) sourceIds.add(cert.id);

  for (const id of Object.values(names)) {
    for (const folder of await eu.folders.listByUser(id)) {
      sourceIds.add(folder.id);
      for (const item of await eu.sync.range(id, folder.id, LOWEST, HIGHEST, 'asc', 1000)) sourceIds.add(item.id);
    }
  }
  for (const id of [...ruleIds, deviceRecordId, 'rt-acme-anna-1', 'fam-acme-anna-1']) sourceIds.add(id);
}

/**
 * The source tenant's information protection and access document: a protection document (changed twice, so its
 * version is 2), a key rotated once with a protected message under each key (the newer one labelled), an S/MIME
 * signed message and a published certificate (both made by openssl), and an access document naming users.
 */
async function buildProtection(anna: string, inbox: string): Promise<void> {
  const { delivery, protection } = protectionOver(eu, euSecret);
  const deliver = async (raw: Buffer, receivedAt: number) =>
    (await delivery.deliver(await delivery.prepare(raw), [{ userId: anna, folderId: inbox }], { duplicates: 'live', receivedAt }))[0]!.itemId;

  await eu.protection.putConfig(tenant.id, JSON.stringify(parseProtectionDocument({ ...PROTECTION_DOC, labelPolicy: { ...PROTECTION_DOC.labelPolicy, justifyDowngrade: false } })), 0, clock.now());
  await eu.protection.putConfig(tenant.id, JSON.stringify(parseProtectionDocument(PROTECTION_DOC)), 1, clock.now());

  const grant = { template: { id: 'board-only', name: 'Board only' }, rights: ['view', 'reply'] as Array<'view' | 'reply'>, expiresAt: null };
  const protect = (inner: Buffer, messageId: string) => protection.protect({ tenantId: tenant.id, owner: 'carol@partner.test', inner, grant, recipients: [], messageId });
  const first = await protection.keyring.activeKey(tenant.id);
  await deliver(await protect(innerMessage('Board minutes', 'board@partner.test', SECRET_OLD), '<board@partner.test>'), T0 + 700);
  clock.advance(5000);
  const second = await protection.keyring.rotate(tenant.id);
  const label = formatMsipLabels({ id: LABEL_ID, name: 'Confidential' }, { siteId: tenantSiteId(tenant.id), setAt: clock.now(), method: 'Standard', actionId: crypto.randomUUID(), contentBits: 0 });
  await deliver(await protect(innerMessage('Merger terms', 'merger@partner.test', SECRET_NEW, [`msip_labels: ${label}`]), '<merger@partner.test>'), T0 + 701);
  sourceKeys = [first, second].map((k) => ({ id: k.id, certificatePem: k.certificatePem }));

  // Anna's S/MIME certificate (openssl), published; a message she signed with it.
  openssl.run([
    'req', '-x509', '-newkey', 'rsa:2048', '-noenc', '-keyout', openssl.file('anna.key'), '-out', openssl.file('anna.crt'), '-days', '30',
    '-subj', '/CN=Anna', '-addext', 'subjectAltName=email:acme-anna@acme.test', '-addext', 'extendedKeyUsage=emailProtection',
    '-addext', 'keyUsage=digitalSignature,keyEncipherment', '-addext', 'basicConstraints=critical,CA:FALSE',
  ]);
  const cert = parseUserCertificate(openssl.read('anna.crt').toString('utf8'), Date.now());
  const published = { id: newId(), tenantId: tenant.id, userId: anna, email: 'acme-anna@acme.test', certificatePem: cert.certificatePem, fingerprint: cert.fingerprint, notBefore: cert.notBefore, notAfter: cert.notAfter, createdAt: clock.now() };
  expect(await eu.protection.addCertificate(published)).toBe(true);
  openssl.write('signed-body.txt', 'Content-Type: text/plain; charset=utf-8\r\n\r\nSigned by Anna.\r\n');
  const signed = openssl.run(['smime', '-sign', '-in', openssl.file('signed-body.txt'), '-signer', openssl.file('anna.crt'), '-inkey', openssl.file('anna.key'), '-from', 'acme-anna@acme.test', '-to', 'ben@acme.test', '-subject', 'Signed note']);
  await deliver(signed, T0 + 702);

  const benId = names['acme-ben']!;
  const access = compileAccessConfig(
    {
      groups: [{ id: 'finance', name: 'Finance', members: [anna, benId, GONE_USER] }],
      policies: [
        {
          id: 'finance-mfa',
          name: 'Finance needs MFA',
          state: 'off',
          assignments: { users: { include: { users: [names['acme-admin']!], groups: ['finance'] }, exclude: { users: [benId] } } },
          outcome: { grant: { controls: ['mfa'], operator: 'and' } },
        },
      ],
      appProtectionPolicies: [],
    },
    1,
  ).config;
  await eu.access.putConfig(tenant.id, JSON.stringify(access), 0, clock.now());
}

/**
 * The source tenant's mailbox views: Anna's settings (automatic replies on, both junk lists, a Focused Inbox override
 * learned by classifying a message), what stays behind (an ignored conversation, an automatic reply owed), and a
 * shared mailbox with two members whose rights differ (one changed later, so its times differ).
 */
async function buildMailboxViews(anna: string, noteId: string, planId: string): Promise<void> {
  const mailbox = createMailboxService({ store: eu, clock });
  await mailbox.putAutomaticReplies(anna, {
    status: 'alwaysEnabled',
    internalReply: 'Out until March.',
    externalReply: 'I am away until March; Ben answers for me.',
    externalAudience: 'contactsOnly',
  });
  await mailbox.putJunk(anna, { safeSenders: ['carol@partner.test', 'partner.test'], blockedSenders: ['spam.test', 'bulk@offers.test'] });
  clock.advance(1000);
  expect((await mailbox.classify(anna, noteId, { classification: 'other', always: true })).override).toBe(true);
  annaPeriod = parseSettings((await eu.mailboxSettings.get(anna))!.doc).autoReplyPeriod;
  expect(annaPeriod).not.toBe('');
  expect(await eu.autoReplies.claim({ id: newId(), userId: anna, period: annaPeriod, sender: 'carol@partner.test', itemId: planId }, clock.now())).toBe(true);
  ignoredConversation = (await eu.items.byId(anna, planId))!.conversationId!;
  await eu.conversations.ignore(anna, ignoredConversation, clock.now());

  const now = clock.now();
  const team = await eu.run(function* (tx) {
    const user = yield* tx.users.create({ tenantId: tenant.id, username: SHARED, email: 'team@acme.test', displayName: 'Acme team', role: 'user', passwordHash: null }, now);
    yield* tx.mailboxes.create(user.id, now);
    yield* tx.sharedMailboxes.create(user.id, now);
    return user;
  });
  names[SHARED] = team.id;
  sourceIds.add(team.id);
  const member = (memberId: string, rights: { fullAccess: boolean; sendAs: boolean; sendOnBehalf: boolean }) =>
    eu.sharedMailboxes.putMember({ mailboxId: team.id, memberId, ...rights, createdAt: clock.now(), updatedAt: clock.now() });
  clock.advance(1000);
  await member(anna, { fullAccess: true, sendAs: true, sendOnBehalf: false });
  clock.advance(1000);
  await member(names['acme-admin']!, { fullAccess: true, sendAs: false, sendOnBehalf: false });
  clock.advance(1000);
  await member(names['acme-admin']!, { fullAccess: true, sendAs: false, sendOnBehalf: true });
}

/**
 * Everything of a tenant that moves, with the store's own ids replaced by paths and names: two tenants compare equal
 * when the move kept every field. Blob bytes are read back through the store.
 */
async function snapshot(store: Store, tenantId: string) {
  const users = (await store.users.list()).filter((u) => u.tenantId === tenantId);
  const out = [];
  for (const { id, tenantId: _t, sessionVersion: _v, ...user } of users) {
    const folders = await store.folders.listByUser(id);
    const byId = new Map(folders.map((f) => [f.id, f]));
    const pathOf = (f: Folder): string => (f.parentId ? `${pathOf(byId.get(f.parentId)!)}/` : '/') + f.displayName;
    const tree = [];
    // A message without a conversation id is a conversation of its own, named by its item id (new at the target):
    // such a conversation is compared by its message's subject and time.
    const conversationOf = new Map<string, string>();
    for (const f of folders) {
      for (const item of await store.sync.range(id, f.id, LOWEST, HIGHEST, 'asc', 1000)) conversationOf.set(item.id, `(the item) ${item.subject} ${item.receivedAt}`);
    }
    for (const f of folders) {
      const items = [];
      for (const { id: itemId, userId: _u, folderId: _f, modseq: _m, changeKey: _c, placedModseq: _p, createdAt: _a, ...item } of await store.sync.range(id, f.id, LOWEST, HIGHEST, 'asc', 1000)) {
        const attachments = [];
        for (const a of await store.items.attachments(id, itemId)) attachments.push({ ...a, bytes: await store.blobs.read(id, a.blobId, 0, a.size) });
        const mime = item.mimeBlobId ? await store.blobs.read(id, item.mimeBlobId, 0, (await store.blobs.size(id, item.mimeBlobId))!) : null;
        items.push({ ...item, body: await store.items.body(id, itemId), attachments, mime });
      }
      // The folder's live conversations as the store keeps them (rebuilt from the items at the target): by their
      // ids, which carry over, without the store's own ids and modseqs.
      const conversations = (await store.conversations.range(id, f.id, FIRST_CONVERSATION, PAST_LAST_CONVERSATION, 'desc', 1000)).map(
        ({ userId: _u, folderId: _f, latestItemId: _l, modseq: _m, ...conversation }) => ({
          ...conversation,
          conversationId: conversationOf.get(conversation.conversationId) ?? conversation.conversationId,
        }),
      );
      tree.push({ path: pathOf(f), kind: f.kind, totalCount: f.totalCount, unreadCount: f.unreadCount, items, conversations });
    }
    tree.sort((a, b) => a.path.localeCompare(b.path));
    const certificates = (await store.protection.certificates(id)).map(({ id: _i, tenantId: _t, userId: _u, ...cert }) => cert);
    // The settings document's text (its version and time are the store's: the target's starts at 1).
    const settings = (await store.mailboxSettings.get(id))?.doc ?? null;
    out.push({ user, folders: tree, certificates, settings });
  }
  const rules = (await store.deviceAccess.rules(tenantId)).map(({ id: _i, tenantId: _t, ...rule }) => rule);
  // Keys by what they are (their certificate) and when they were made and retired; oldest first.
  const keys = (await store.protection.keys(tenantId)).reverse().map(({ certificatePem, createdAt, retiredAt }) => ({ certificatePem, createdAt, retiredAt }));
  // The access document with each user id of the tenant written as `user:<username>`.
  const usernameOf = new Map(users.map((u) => [u.id, u.username]));
  const access = await store.access.config(tenantId);
  const accessDoc = access && JSON.parse(access.doc, (_k, v: unknown) => (typeof v === 'string' && usernameOf.has(v) ? `user:${usernameOf.get(v)}` : v));
  // Shared mailboxes and their members by username, with the rights and times.
  const sharedMailboxes = [];
  for (const shared of await store.sharedMailboxes.list(tenantId)) {
    const members = (await store.sharedMailboxes.members(shared.user.id)).map(({ mailboxId, memberId, ...rights }) => ({
      mailbox: usernameOf.get(mailboxId),
      member: usernameOf.get(memberId),
      ...rights,
    }));
    sharedMailboxes.push({ username: shared.user.username, createdAt: shared.createdAt, members });
  }
  return {
    users: out,
    rules,
    defaultState: await store.deviceAccess.defaultState(tenantId),
    protection: { doc: (await store.protection.config(tenantId))?.doc ?? null, keys },
    access: accessDoc,
    sharedMailboxes,
  };
}

/** Every row of every table of the us database, each value as text. */
async function usRows(): Promise<Array<{ table: string; column: string; text: string }>> {
  const client = new Client({ connectionString: usDatabase.url });
  await client.connect();
  try {
    const tables = (await client.query<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")).rows.map((t) => t.name);
    const out = [];
    for (const table of tables) {
      for (const row of (await client.query(`SELECT * FROM "${table}"`)).rows as Array<Record<string, unknown>>) {
        for (const [column, v] of Object.entries(row)) out.push({ table, column, text: Buffer.isBuffer(v) ? v.toString('latin1') : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v) });
      }
    }
    return out;
  } finally {
    await client.end();
  }
}

const allAudit = (store: Store, tenantId: string) => store.audit.list(tenantId, { limit: 1000 });

beforeAll(async () => {
  dir = tempDir('pigeon-move-');
  clock = new ManualClock(T0);
  // The eu store is the data directory's own file, so the CLI test below can run an eu node's admin CLI on it.
  fs.mkdirSync(path.join(dir, 'eu'));
  eu = openSqliteStore(path.join(dir, 'eu', 'pigeon.db'));
  usDatabase = await freshDatabase('pigeon_move_us');
  us = await openPostgresStore(usDatabase.url, { poolSize: 4, nodeId: 'move-us' });
  // As each region's server (and CLI) loads it: eu's from its data directory, us's from its database.
  euSecret = (await loadKeys({ dataDir: path.join(dir, 'eu'), signingKeyFile: '', secretFile: '' })).serverSecret;
  usSecret = (await loadKeys({ dataDir: dir, signingKeyFile: '', secretFile: '' }, us.secrets)).serverSecret;
  expect(euSecret.equals(usSecret)).toBe(false);
  await buildSource();
  exportFile = path.join(dir, 'acme.jsonl');
}, 60_000);

afterAll(async () => {
  await eu?.close();
  await us?.close();
  await usDatabase?.drop();
  fs.rmSync(dir, { recursive: true, force: true });
  openssl.dispose();
});

describe('export from eu (SQLite), import into us (PostgreSQL)', () => {
  let imported: Tenant;
  let sha256: string;

  test('export: a versioned JSON Lines file with a header, the records and a checksummed trailer; audited', async () => {
    clock.advance(60_000);
    const done = await exportTenant(eu, tenant.id, exportFile, { clock, serverSecret: euSecret, pageSize: PAGE });
    sha256 = done.sha256;
    expect(done.counts).toEqual({
      // The shared mailbox is a user too, with its own folders.
      users: 4,
      folders: 4 * 9 + 4,
      // Anna's 3 multipart, 22 notes, 2 protected and 1 signed; an event and a contact; Ben's 3.
      items: 3 + 22 + 3 + 2 + 3,
      // The signed message's signature part (the protected ones are stored without attachments).
      attachments: 6 + 1,
      rules: 2,
      audit: 3,
      protectionKeys: 2,
      certificates: 1,
      documents: 2,
      sharedMailboxes: 1,
      sharedMailboxMembers: 2,
      mailboxSettings: 1,
    });
    const lines = fs.readFileSync(exportFile, 'utf8').split('\n');
    expect(lines.pop()).toBe('');
    const header = JSON.parse(lines[0]!);
    expect(header).toMatchObject({ record: 'header', format: TENANT_EXPORT_FORMAT, version: 3, createdAt: T0 + 72_000, source: { region: 'eu', tenant }, counts: done.counts });
    expect(header.notMoved.records).toEqual([
      'devices',
      'signIns',
      'outbox',
      'idempotency',
      'changeHistory',
      'deviceCompliance',
      'appProtectionStates',
      'signInLog',
      'userRisk',
      'mfaEnrolments',
      'viewSettings',
      'autoReplyRecords',
      'ignoredConversations',
    ]);
    expect(header.notes.join(' ')).toMatch(/private keys .* as secret as the mailboxes/);
    const trailer = JSON.parse(lines.pop()!);
    expect(trailer).toEqual({ record: 'trailer', counts: done.counts, sha256: crypto.createHash('sha256').update(lines.map((l) => l + '\n').join('')).digest('hex') });
    const records = lines.slice(1).map((l) => JSON.parse(l) as { record: string });
    expect(records.map((r) => r.record).filter((r, i, all) => all.indexOf(r) === i)).toEqual([
      'tenantSettings',
      'deviceAccessRule',
      'protectionConfig',
      'protectionKey',
      'user',
      'sharedMailbox',
      'folder',
      'userCertificate',
      'mailboxSettings',
      'item',
      'sharedMailboxMember',
      'accessConfig',
      'audit',
    ]);
    // Mailbox views: the shared mailbox's mark right after its user, Anna's settings document as stored (addresses
    // only, no ids), the memberships after every user, with the source's ids (mapped on import).
    const kinds = records.map((r) => r.record);
    const shared = records.find((r) => r.record === 'sharedMailbox') as unknown as { userId: string; createdAt: number };
    expect(shared).toEqual({ record: 'sharedMailbox', userId: names[SHARED], createdAt: (await eu.sharedMailboxes.get(names[SHARED]!))!.createdAt });
    expect(kinds[kinds.indexOf('sharedMailbox') - 1]).toBe('user');
    const settings = records.find((r) => r.record === 'mailboxSettings') as unknown as { userId: string; doc: unknown };
    expect(settings.userId).toBe(names['acme-anna']);
    expect(JSON.stringify(settings.doc)).toBe((await eu.mailboxSettings.get(names['acme-anna']!))!.doc);
    const members = records.filter((r) => r.record === 'sharedMailboxMember');
    expect(members).toEqual(
      (await eu.sharedMailboxes.members(names[SHARED]!)).map((m) => ({ record: 'sharedMailboxMember', ...m })),
    );
    expect(members.map((m) => (m as unknown as { memberId: string }).memberId)).toEqual([names['acme-anna'], names['acme-admin']]);
    expect(kinds.lastIndexOf('user')).toBeLessThan(kinds.indexOf('sharedMailboxMember'));
    // Nothing that stays behind is in the file: no automatic-reply record, no ignored conversation, no view settings.
    for (const notMoved of ['"viewSettings"', '"period"']) expect(lines.slice(1).join('\n')).not.toContain(notMoved);
    // The keys, in the order they were made, with their private keys opened (the source stores them sealed).
    const keys = records.filter((r) => r.record === 'protectionKey') as unknown as Array<{ id: string; privateKeyPem: string; certificatePem: string; createdAt: number; retiredAt: number | null }>;
    expect(keys.map((k) => k.id)).toEqual(sourceKeys.map((k) => k.id));
    expect(keys[0]!.retiredAt).toBe(keys[1]!.createdAt);
    expect(keys[1]!.retiredAt).toBeNull();
    for (const k of keys) expect(new crypto.X509Certificate(k.certificatePem).checkPrivateKey(crypto.createPrivateKey(k.privateKeyPem))).toBe(true);
    // The document without its version (the source's is 2); the access document as stored (source ids: mapped on import).
    const protectionDoc = records.find((r) => r.record === 'protectionConfig') as unknown as { doc: unknown; version?: number };
    expect(protectionDoc.version).toBeUndefined();
    expect(JSON.stringify(protectionDoc.doc)).toBe((await eu.protection.config(tenant.id))!.doc);
    expect(JSON.stringify((records.find((r) => r.record === 'accessConfig') as unknown as { doc: unknown }).doc)).toBe((await eu.access.config(tenant.id))!.doc);
    // Only this tenant: the other tenant's user and audit are not in it, nor any device or sign-in.
    expect(lines.join('\n')).not.toContain('other-olga');
    for (const notMoved of ['rt-acme-anna-1', 'fam-acme-anna-1', 'phone-model-x9']) expect(lines.join('\n')).not.toContain(notMoved);
    const plan = records.find((r) => r.record === 'item' && (r as unknown as { item: { internetMessageId: string } }).item.internetMessageId === '<plan@partner.test>') as unknown as {
      mime: string;
      attachments: Array<{ name: string; content: string; isInline: boolean }>;
    };
    expect(plan.attachments.map((a) => [a.name, a.isInline])).toEqual([['logo.png', true], ['budget.pdf', false]]);
    expect(Buffer.from(plan.mime, 'base64').toString('latin1')).toContain('Subject: Plan');

    const [exported] = await allAudit(eu, tenant.id);
    expect(exported).toMatchObject({ action: 'tenant.exported', targetId: tenant.id, details: { region: 'eu', sha256, counts: done.counts, file: 'acme.jsonl' } });
    const euMove = { clock, serverSecret: euSecret };
    await expect(exportTenant(eu, tenant.id, exportFile, euMove)).rejects.toThrow(/exists/);
    await expect(exportTenant(eu, tenant.id, path.join(dir, 'missing', 'x.jsonl'), euMove)).rejects.toThrow(/ENOENT/);
    await expect(exportTenant(eu, 'no-such-tenant', path.join(dir, 'x.jsonl'), euMove)).rejects.toThrow(/no tenant/);
    // Another server's secret cannot open the tenant's keys: refused, and no file is left.
    await expect(exportTenant(eu, tenant.id, path.join(dir, 'wrong-secret.jsonl'), { clock, serverSecret: usSecret })).rejects.toThrow(
      /protection key \S+ cannot be opened with this server's secret/,
    );
    expect(fs.readdirSync(dir).filter((f) => f.includes('wrong-secret'))).toEqual([]);
  }, 60_000);

  test('a damaged file (one byte changed), a newer version or a cut file is refused, and nothing is written', async () => {
    const bytes = fs.readFileSync(exportFile);
    const refusals: Array<[string, Buffer, RegExp]> = [];
    const flipped = Buffer.from(bytes);
    // A byte inside the base64 of the big attachment: still valid JSON, only the checksum can tell.
    const at = bytes.indexOf('budget.pdf', bytes.length / 4) + 200;
    flipped[at] = flipped[at] === 0x41 ? 0x42 : 0x41;
    refusals.push(['flipped', flipped, /checksum mismatch/]);
    refusals.push(['newer', Buffer.from(bytes.toString('utf8').replace('"version":3', '"version":4')), /version 4 is not supported/]);
    refusals.push(['cut', bytes.subarray(0, bytes.length - 100), /cut short/]);
    // Re-checksummed files, so that only the checks of the keys and documents can tell.
    const { header, body, trailer } = readRecords(exportFile);
    const rewritten = (name: string, change: (r: Record<string, any>) => Record<string, any>, reorder = (list: Array<Record<string, any>>) => list) => {
      writeRecords(path.join(dir, `${name}.jsonl`), header, reorder(body.map((r) => change(structuredClone(r)))), trailer.counts);
      return fs.readFileSync(path.join(dir, `${name}.jsonl`));
    };
    const [oldKey, newKey] = body.filter((r) => r.record === 'protectionKey');
    // The old key retired a moment later than the new key was made: rotateKey cannot make that keyring.
    refusals.push(['late-retirement', rewritten('late-retirement', (r) => (r.id === oldKey!.id ? { ...r, retiredAt: r.retiredAt + 1 } : r)), /protection key .* retired at .* the file is damaged/]);
    refusals.push(['swapped-key', rewritten('swapped-key', (r) => (r.id === oldKey!.id ? { ...r, privateKeyPem: newKey!.privateKeyPem } : r)), /private key does not belong to its certificate/]);
    refusals.push(['bad-document', rewritten('bad-document', (r) => (r.record === 'protectionConfig' ? { ...r, doc: { ...r.doc, labels: [{ id: 'not-a-guid' }] } } : r)), /protection document in the file is not valid here \(labels\.0\.id/]);
    // The access document before Ben's user record: his id could not be mapped.
    const accessBeforeBen = (list: Array<Record<string, any>>) => {
      const access = list.find((r) => r.record === 'accessConfig')!;
      const rest = list.filter((r) => r !== access);
      const ben = rest.findIndex((r) => r.record === 'user' && r.user.username === 'acme-ben');
      return [...rest.slice(0, ben), access, ...rest.slice(ben)];
    };
    refusals.push(['user-after-access', rewritten('user-after-access', (r) => r, accessBeforeBen), /user \S+ comes after the access document/]);
    // Mailbox views: settings of the wrong shape (the target's lenient reader would drop them), memberships that the
    // target could not hold as they were, a shared mailbox's mark before its user.
    const anna = names['acme-anna']!;
    const team = names[SHARED]!;
    const settingsOf = (change: (doc: Record<string, any>) => void) => (r: Record<string, any>) => {
      if (r.record === 'mailboxSettings') change(r.doc);
      return r;
    };
    refusals.push([
      'settings-junk',
      rewritten('settings-junk', settingsOf((doc) => (doc.junk.safeSenders = 'carol@partner.test'))),
      new RegExp(`mailbox settings of user ${anna} in the file are not valid here \\(junk\\.safeSenders: `),
    ]);
    refusals.push(['settings-status', rewritten('settings-status', settingsOf((doc) => (doc.automaticReplies.status = 'sometimes'))), /mailbox settings .* not valid here \(automaticReplies\.status: /]);
    refusals.push(['settings-not-object', rewritten('settings-not-object', (r) => (r.record === 'mailboxSettings' ? { ...r, doc: '{}' } : r)), /mailbox settings .* not valid here \(\(document\): /]);
    const memberOf = (memberId: string, change: (m: Record<string, any>) => Record<string, any>) => (r: Record<string, any>) =>
      r.record === 'sharedMailboxMember' && r.memberId === memberId ? change(r) : r;
    refusals.push(['member-unknown', rewritten('member-unknown', memberOf(anna, (m) => ({ ...m, memberId: 'no-such-user' }))), /membership of user no-such-user .* names no user before it/]);
    refusals.push(['member-of-unshared', rewritten('member-of-unshared', memberOf(anna, (m) => ({ ...m, mailboxId: names['acme-ben'] }))), /comes before that mailbox is marked shared/]);
    refusals.push(['member-shared', rewritten('member-shared', memberOf(anna, (m) => ({ ...m, memberId: team, mailboxId: team }))), /a shared mailbox cannot be a member/]);
    refusals.push(['member-rights', rewritten('member-rights', memberOf(anna, (m) => ({ ...m, fullAccess: false }))), /may send without full access/]);
    refusals.push(['member-type', rewritten('member-type', memberOf(anna, (m) => ({ ...m, sendAs: 'yes' }))), /rights or times of the wrong type/]);
    refusals.push(['member-twice', rewritten('member-twice', memberOf(names['acme-admin']!, (m) => ({ ...m, memberId: anna }))), /is in the file twice/]);
    const sharedBeforeUser = (list: Array<Record<string, any>>) => {
      const mark = list.find((r) => r.record === 'sharedMailbox')!;
      const rest = list.filter((r) => r !== mark);
      return [mark, ...rest];
    };
    refusals.push(['shared-before-user', rewritten('shared-before-user', (r) => r, sharedBeforeUser), /shared mailbox \S+ comes before its user/]);
    for (const [name, content, message] of refusals) {
      const file = path.join(dir, `${name}.jsonl`);
      fs.writeFileSync(file, content);
      await expect(importTenant(us, file, 'us', { clock, serverSecret: usSecret, pageSize: PAGE })).rejects.toThrow(message);
      await expect(importTenant(us, file, 'us', { clock, serverSecret: usSecret })).rejects.toBeInstanceOf(TenantMoveError);
    }
    expect(await us.tenants.list()).toEqual([]);
    expect(await us.users.count()).toBe(0);
  });

  test('import: the tenant is recreated in us with new ids, audited', async () => {
    clock.advance(60_000);
    const lines: string[] = [];
    const done = await importTenant(us, exportFile, 'us', { clock, serverSecret: usSecret, pageSize: PAGE, progress: (l) => lines.push(l) });
    imported = done.tenant;
    expect(done).toMatchObject({ sourceRegion: 'eu', sha256 });
    expect(imported).toEqual({ id: expect.any(String), name: 'Acme', region: 'us', createdAt: tenant.createdAt });
    expect(imported.id).not.toBe(tenant.id);
    expect(await us.tenants.list()).toEqual([imported]);
    expect(lines[0]).toMatch(/^verified .*acme\.jsonl: tenant "Acme" of region eu/);
  }, 60_000);

  test('everything that moves compares equal, field by field (users, folder tree, items, bodies, blobs, rules, mailbox views)', async () => {
    const source = await snapshot(eu, tenant.id);
    const target = await snapshot(us, imported.id);
    expect(target).toEqual(source);
    // The comparison covered what it should.
    expect(source.users.map((u) => [u.user.username, u.user.role, u.user.disabled])).toEqual([
      [SHARED, 'user', false],
      ['acme-admin', 'admin', false],
      ['acme-anna', 'user', false],
      ['acme-ben', 'user', true],
    ]);
    const annaUser = source.users.find((u) => u.user.username === 'acme-anna')!;
    const anna = annaUser.folders;
    expect(anna.map((f) => f.path)).toEqual(
      expect.arrayContaining(['/Later/Projects/Alpha/Deep', '/Later/Projects/Alpha', '/Later/Projects', '/Old mail', '/Inbox', '/Calendar', '/Contacts']),
    );
    const deep = anna.find((f) => f.path === '/Later/Projects/Alpha/Deep')!;
    expect(deep.items.map((i) => [i.subject, i.attachments.length, i.isFlagged])).toEqual([['Plan', 2, true], ['Re: Plan', 2, false]]);
    expect(deep.items[0]!.attachments[1]!.bytes.length).toBe(50_000);
    expect(anna.find((f) => f.path === '/Calendar')!.items[0]).toMatchObject({ type: 'event', data: { location: 'Room 1', recurrence: { freq: 'daily' } } });
    expect(anna.find((f) => f.path === '/Inbox')!.items.find((i) => i.subject === 'Note 0')).toMatchObject({ isRead: true, isFlagged: true, categories: ['Red', 'Finance'] });
    expect(source.rules.map((r) => r.value)).toEqual(['Old phone', 'beta-']);
    expect(source.defaultState).toBe('quarantined');
    // Protected, labelled and signed mail kept its data (the licence's facts, the label, the signature status).
    const inbox = anna.find((f) => f.path === '/Inbox')!.items;
    expect(inbox.find((i) => i.subject === 'Merger terms')).toMatchObject({
      preview: expect.stringContaining('protected with rights management'),
      data: { protection: { issuer: { name: 'Acme' }, owner: 'carol@partner.test', template: { id: 'board-only' } }, label: { id: LABEL_ID, name: 'Confidential' } },
    });
    expect(inbox.find((i) => i.subject === 'Board minutes')!.data.protection).toBeDefined();
    expect(inbox.find((i) => i.subject === 'Signed note')!.data.smime).toMatchObject({ kind: 'signed' });
    // Keys (one retired when the other was made), certificates, both documents: the same.
    expect(source.protection.keys.map((k) => k.certificatePem)).toEqual(sourceKeys.map((k) => k.certificatePem));
    expect(source.protection.keys.map((k) => k.retiredAt)).toEqual([source.protection.keys[1]!.createdAt, null]);
    expect(annaUser.certificates).toEqual([expect.objectContaining({ email: 'acme-anna@acme.test', fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/) })]);
    expect(JSON.parse(source.protection.doc!).labels[0].id).toBe(LABEL_ID);
    // The access document's user ids are the new users' at the target (compared by username).
    expect(source.access).toMatchObject({
      groups: [{ id: 'finance', members: ['user:acme-anna', 'user:acme-ben', GONE_USER] }],
      policies: [{ id: 'finance-mfa', assignments: { users: { include: { users: ['user:acme-admin'], groups: ['finance'] }, exclude: { users: ['user:acme-ben'] } } } }],
    });
    // Mailbox views: Anna's settings (replies on, both junk lists, the override), the shared mailbox with both members
    // (by username at the target too: the new ids) and their own rights and times, and conversations in the folders.
    const settings = parseSettings(annaUser.settings!);
    expect(settings).toMatchObject({
      automaticReplies: { status: 'alwaysEnabled', externalAudience: 'contactsOnly', externalReply: 'I am away until March; Ben answers for me.' },
      autoReplyPeriod: annaPeriod,
      junk: { safeSenders: ['carol@partner.test', 'partner.test'], blockedSenders: ['spam.test', 'bulk@offers.test'] },
      focusedOverrides: [{ sender: 'sender5@elsewhere.test', classification: 'other' }],
    });
    expect(source.users.filter((u) => u.settings !== null).map((u) => u.user.username)).toEqual(['acme-anna']);
    const [team] = source.sharedMailboxes;
    expect(source.sharedMailboxes).toHaveLength(1);
    expect(team!.members).toEqual([
      { mailbox: SHARED, member: 'acme-anna', fullAccess: true, sendAs: true, sendOnBehalf: false, createdAt: expect.any(Number), updatedAt: expect.any(Number) },
      { mailbox: SHARED, member: 'acme-admin', fullAccess: true, sendAs: false, sendOnBehalf: true, createdAt: expect.any(Number), updatedAt: expect.any(Number) },
    ]);
    expect(team!.members[1]!.updatedAt).toBeGreaterThan(team!.members[1]!.createdAt);
    const deepConversations = anna.find((f) => f.path === '/Later/Projects/Alpha/Deep')!.conversations;
    expect(deepConversations).toEqual([expect.objectContaining({ messageCount: 2, flaggedCount: 1, hasAttachments: true, conversationId: ignoredConversation })]);
    expect(anna.find((f) => f.path === '/Inbox')!.conversations.length).toBeGreaterThan(20);
  });

  test('mailbox views at the target: settings start at version 1, memberships name the new users, conversations are rebuilt; ignored conversations and automatic-reply records stay behind', async () => {
    const newId = async (username: string) => (await us.users.byUsername(username))!.id;
    const [annaUs, adminUs, teamUs] = [await newId('acme-anna'), await newId('acme-admin'), await newId(SHARED)];
    const [euSettings, usSettings] = [await eu.mailboxSettings.get(names['acme-anna']!), await us.mailboxSettings.get(annaUs)];
    expect(euSettings!.version).toBeGreaterThan(1);
    expect(usSettings).toMatchObject({ userId: annaUs, version: 1, doc: euSettings!.doc });

    const shared = await us.sharedMailboxes.list(imported.id);
    expect(shared.map((s) => [s.user.id, s.user.email, s.user.passwordHash, s.createdAt])).toEqual([[teamUs, 'team@acme.test', null, (await eu.sharedMailboxes.get(names[SHARED]!))!.createdAt]]);
    expect((await us.sharedMailboxes.members(teamUs)).map((m) => [m.mailboxId, m.memberId, m.sendAs, m.sendOnBehalf])).toEqual([
      [teamUs, annaUs, true, false],
      [teamUs, adminUs, false, true],
    ]);
    expect((await us.sharedMailboxes.ofMember(annaUs)).map((s) => [s.mailbox.user.username, s.rights.fullAccess, s.rights.sendAs])).toEqual([[SHARED, true, true]]);
    expect(await us.sharedMailboxes.ofMember(await newId('acme-ben'))).toEqual([]);

    // The conversation is there, under its id; being ignored is not (a convenience: the user ignores it again).
    const deep = (await us.folders.listByUser(annaUs)).find((f) => f.displayName === 'Deep')!;
    expect((await us.conversations.get(annaUs, deep.id, ignoredConversation))?.messageCount).toBe(2);
    expect(await eu.conversations.isIgnored(names['acme-anna']!, ignoredConversation)).toBe(true);
    expect(await us.conversations.isIgnored(annaUs, ignoredConversation)).toBe(false);
    // Who was answered in the period stays behind: the period moved, its records did not.
    expect(await eu.autoReplies.ofPeriod(names['acme-anna']!, annaPeriod)).toHaveLength(1);
    expect(await us.autoReplies.ofPeriod(annaUs, annaPeriod)).toEqual([]);
  });

  test('protection: the moved keys are sealed with the target\'s secret, the same key is active, and both protected messages open there', async () => {
    const annaUs = (await us.users.byUsername('acme-anna'))!.id;
    const reader = capableReader(annaUs, imported.id);
    const { protection } = protectionOver(us, usSecret);
    for (const [subject, secret] of [['Board minutes', SECRET_OLD], ['Merger terms', SECRET_NEW]] as const) {
      const item = await inboxItem(us, annaUs, subject);
      const opening = await protection.open(item, reader);
      expect({ subject, state: opening.state, reason: opening.reason }).toEqual({ subject, state: 'readable', reason: null });
      expect(opening.content!.bodyText).toContain(secret);
      expect(opening.rights).toEqual(['view', 'reply']);
      // With the source's secret, the target's sealed keys open nothing.
      expect((await protectionOver(us, euSecret).protection.open(item, reader)).state).toBe('unreadable');
    }

    const keys = await us.protection.keys(imported.id);
    expect(keys).toHaveLength(2);
    for (const key of keys) {
      expect(sourceIds.has(key.id)).toBe(false);
      expect(() => createKeySealer(euSecret).open(key.sealedPrivateKey)).toThrow(SealedKeyError);
      expect(createKeySealer(usSecret).open(key.sealedPrivateKey)).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    }
    // The active key is the source's newer one: new protected mail at the target uses it, no key is made.
    expect((await protection.keyring.activeKey(imported.id)).certificatePem).toBe(sourceKeys[1]!.certificatePem);
    expect(await us.protection.keys(imported.id)).toHaveLength(2);

    // The document starts at version 1 at the target (the source's is at 2), with the same text.
    const [euDoc, usDoc] = [await eu.protection.config(tenant.id), await us.protection.config(imported.id)];
    expect([euDoc!.version, usDoc!.version]).toEqual([2, 1]);
    expect(usDoc!.doc).toBe(euDoc!.doc);
    expect((await protection.catalogue(imported.id)).labels.map((l) => l.id)).toEqual([LABEL_ID]);
    const access = (await us.access.config(imported.id))!;
    expect(access.version).toBe(1);
    const groups = JSON.parse(access.doc).groups as Array<{ members: string[] }>;
    expect(groups[0]!.members).toEqual([annaUs, (await us.users.byUsername('acme-ben'))!.id, GONE_USER]);

    // The certificate is in the directory of the target tenant under the new user id.
    const [cert] = await us.protection.certificatesByEmail(imported.id, 'acme-anna@acme.test');
    expect(cert).toMatchObject({ userId: annaUs, tenantId: imported.id });
    expect(cert!.certificatePem).toBe((await eu.protection.certificates(names['acme-anna']!))[0]!.certificatePem);
  });

  test('openssl decrypts a moved message with the private key the file carries', async () => {
    const { body } = readRecords(exportFile);
    const active = body.find((r) => r.record === 'protectionKey' && r.retiredAt === null)!;
    openssl.write('moved.key', active.privateKeyPem);
    openssl.write('moved.crt', active.certificatePem);
    const annaUs = (await us.users.byUsername('acme-anna'))!.id;
    const item = await inboxItem(us, annaUs, 'Merger terms');
    const raw = await us.blobs.read(annaUs, item.mimeBlobId!, 0, (await us.blobs.size(annaUs, item.mimeBlobId!))!);
    expect(raw.toString('latin1')).not.toContain('TOPSECRET');
    const parts = findProtectedParts((await parseMessage(raw)).attachments)!;
    openssl.write('envelope.der', parts.envelope);
    const inner = openssl.run(['cms', '-decrypt', '-inform', 'DER', '-in', openssl.file('envelope.der'), '-recip', openssl.file('moved.crt'), '-inkey', openssl.file('moved.key')]);
    expect(inner.toString('utf8')).toContain(SECRET_NEW);
  });

  test('threading carries over: later replies find the moved conversations by Message-ID and by subject', async () => {
    const anna = (await us.users.byUsername('acme-anna'))!.id;
    const source = names['acme-anna']!;
    const conversation = await eu.items.conversationByMessageIds(source, ['<plan@partner.test>']);
    expect(conversation).toEqual(expect.any(String));
    expect(await us.items.conversationByMessageIds(anna, ['<plan@partner.test>'])).toBe(conversation);
    // The thread subject (which the Store does not give back) is derived again on import, as delivery set it.
    expect(await eu.items.conversationBySubject(source, 'plan', T0, T0 + 10)).toBe(conversation);
    expect(await us.items.conversationBySubject(anna, 'plan', T0, T0 + 10)).toBe(conversation);
    expect(await us.items.conversationBySubject(anna, 'note 5', T0, T0 + 1000)).toBe(await eu.items.conversationBySubject(source, 'note 5', T0, T0 + 1000));
  });

  test('audit: source has tenant.exported; target has every entry re-appended as imported (ids mapped), then tenant.imported', async () => {
    const source = await allAudit(eu, tenant.id);
    const target = await allAudit(us, imported.id);
    expect(source.map((e) => e.action)).toEqual(['tenant.exported', 'message.import', 'device.quarantine', 'rule.create']);
    expect(target.map((e) => e.action)).toEqual(['tenant.imported', 'message.import', 'device.quarantine', 'rule.create']);
    expect(target[0]).toMatchObject({
      tenantId: imported.id,
      actorName: 'system',
      targetId: imported.id,
      details: { fromRegion: 'eu', region: 'us', sha256, counts: { users: 4, rules: 2, audit: 3, sharedMailboxes: 1, sharedMailboxMembers: 2, mailboxSettings: 1 } },
    });
    const newId = async (username: string) => (await us.users.byUsername(username))!.id;
    const byAction = (list: AuditEntry[], action: string) => list.find((e) => e.action === action)!;
    const usRules = await us.deviceAccess.rules(imported.id);
    expect(byAction(target, 'rule.create')).toMatchObject({
      at: byAction(source, 'rule.create').at,
      actorId: await newId('acme-admin'),
      actorName: 'acme-admin',
      targetId: usRules.find((r) => r.value === 'Old phone')!.id,
      details: { field: 'deviceModel', value: 'Old phone', imported: { region: 'eu', seq: byAction(source, 'rule.create').seq } },
    });
    // The device did not move: its record id is dropped, the device's own id (the app's) stays as information.
    expect(byAction(target, 'device.quarantine')).toMatchObject({ targetId: null, details: { userId: await newId('acme-anna'), deviceId: 'anna-device-0123456789' } });
    const item = byAction(target, 'message.import').details as { itemId: string; folderId: string };
    expect((await us.items.byId(await newId('acme-anna'), item.itemId))!.internetMessageId).toBe('<plan@partner.test>');
    expect((await us.folders.byId(await newId('acme-anna'), item.folderId))!.displayName).toBe('Deep');
    expect(importedItemId).not.toBe(item.itemId);
  });

  test('nothing of the source tenant\'s ids is in any row of the target store; devices and sign-ins did not move', async () => {
    const rows = await usRows();
    // One exception, by design: a protected message's data names its licence's issuer as the signed licence does,
    // by the tenant's old id (the licence travels in the message; the item's data repeats its facts unchanged).
    let licenceIssuers = 0;
    const withoutIssuer = (text: string) => {
      type Data = { protection?: { issuer?: { tenantId?: string } } };
      let data: Data | null = null;
      try {
        data = text.includes('"issuer"') ? (JSON.parse(text) as Data) : null;
      } catch {
        return text; // not JSON (a blob, say)
      }
      if (!data?.protection?.issuer || data.protection.issuer.tenantId !== tenant.id) return text;
      licenceIssuers++;
      data.protection.issuer.tenantId = '(the licence\'s)';
      return JSON.stringify(data);
    };
    const found = rows.flatMap((r) => {
      const text = withoutIssuer(r.text);
      return [...sourceIds].filter((id) => text.includes(id)).map((id) => ({ table: r.table, column: r.column, id }));
    });
    expect(found).toEqual([]);
    expect(licenceIssuers).toBe(2);
    expect(sourceIds.size).toBeGreaterThan(60);
    expect(rows.filter((r) => r.table === 'devices' || r.table === 'refresh_tokens' || r.table === 'outbox')).toEqual([]);
  });

  test('a second import, or one whose usernames are taken, is refused and writes nothing', async () => {
    const before = { tenants: await us.tenants.list(), users: await us.users.count(), audit: await allAudit(us, imported.id) };
    await expect(importTenant(us, exportFile, 'us', { clock, serverSecret: usSecret })).rejects.toThrow(/already has tenant "Acme"/);
    expect({ tenants: await us.tenants.list(), users: await us.users.count(), audit: await allAudit(us, imported.id) }).toEqual(before);
    // Back into its own store: the tenant id exists.
    await expect(importTenant(eu, exportFile, 'eu', { clock, serverSecret: euSecret })).rejects.toThrow(/already has tenant "Acme"/);
    // Another store where only a username is taken.
    const other = openSqliteStore(path.join(dir, 'other.db'));
    try {
      await createUserAdmin(other, clock).addUser({ username: 'acme-ben', password: password('x'), role: 'user' });
      const tenants = await other.tenants.list();
      await expect(importTenant(other, exportFile, 'default', { clock, serverSecret: usSecret })).rejects.toThrow(/username\(s\) already in use in this store: acme-ben/);
      expect(await other.tenants.list()).toEqual(tenants);
      expect(await other.users.count()).toBe(1);
    } finally {
      await other.close();
    }
  });

  test('an import that fails after writing says what it created', async () => {
    const target = openSqliteStore(path.join(dir, 'failing.db'));
    try {
      // The store fails (as a full disk would) at the third unit of items.
      let itemUnits = 0;
      const failing: Store = Object.create(target, {
        run: {
          value: (unit: Parameters<Store['run']>[0]) => {
            const source = unit.toString();
            if (source.includes('items.create') && ++itemUnits === 3) return Promise.reject(new Error('disk full (simulated)'));
            return target.run(unit);
          },
        },
      });
      const failed = importTenant(failing, exportFile, 'us', { clock, serverSecret: usSecret, pageSize: PAGE });
      await expect(failed).rejects.toBeInstanceOf(TenantImportFailed);
      const err = (await failed.catch((e: unknown) => e)) as TenantImportFailed;
      const [made] = await target.tenants.list();
      expect(err.message).toContain(`import failed: disk full (simulated). It had created tenant "Acme" (${made!.id}), users: ${SHARED} (`);
      expect(err.created).toMatchObject({ tenant: made, items: 2 * PAGE, rules: 2, audit: 0 });
      // Users in the file's order (by username): the shared mailbox first, with its mark (it has no items).
      expect(err.created.users.map((u) => u.username)).toEqual([SHARED, 'acme-admin', 'acme-anna']);
      expect(err.created).toMatchObject({ sharedMailboxes: 1, sharedMailboxMembers: 0, mailboxSettings: 1 });
      expect(err.message).toContain('1 shared mailbox(es) with 0 membership(s), 1 mailbox settings document(s)');
      expect((await target.users.list()).map((u) => [u.username, u.id])).toEqual(err.created.users.map((u) => [u.username, u.id]));
    } finally {
      await target.close();
    }
  });

  /**
   * The export file as a server of an older format version wrote it: without the records that came later, and with
   * the counts that version had. A second file is the same with one later record left in.
   */
  function olderFile(version: 1 | 2, laterRecord: string) {
    const { header, body, trailer } = readRecords(exportFile);
    const later = version === 1 ? [...V2_RECORDS, ...V3_RECORDS] : V3_RECORDS;
    const olderHeader: Record<string, unknown> = { ...header, version };
    if (version === 1) delete olderHeader.notes;
    const keys = version === 1 ? V1_COUNTS : [...V1_COUNTS, ...V2_COUNTS];
    const counts = Object.fromEntries(keys.map((k) => [k, trailer.counts[k] as number]));
    const file = path.join(dir, `acme-v${version}.jsonl`);
    writeRecords(file, olderHeader, body.filter((r) => !later.includes(r.record)), counts);
    const mixed = path.join(dir, `acme-v${version}-mixed.jsonl`);
    writeRecords(mixed, olderHeader, body.filter((r) => !later.includes(r.record) || r.record === laterRecord), counts);
    return { file, mixed, counts };
  }
  const V1_COUNTS = ['users', 'folders', 'items', 'attachments', 'rules', 'audit'];
  const V2_COUNTS = ['protectionKeys', 'certificates', 'documents'];
  const V2_RECORDS = ['protectionConfig', 'protectionKey', 'userCertificate', 'accessConfig'];
  const V3_RECORDS = ['sharedMailbox', 'sharedMailboxMember', 'mailboxSettings'];
  const NO_V3_COUNTS = { sharedMailboxes: 0, sharedMailboxMembers: 0, mailboxSettings: 0 };
  /** A snapshot without the mailbox views (which files before version 3 do not carry). */
  const withoutViews = (s: Awaited<ReturnType<typeof snapshot>>) => ({
    ...s,
    users: s.users.map((u) => ({ ...u, settings: null })),
    sharedMailboxes: [],
  });

  test('a version 1 file (written before protection moved) still imports; one holding a version 2 record is refused', async () => {
    const { file, mixed, counts } = olderFile(1, 'protectionKey');
    const target = openSqliteStore(path.join(dir, 'v1.db'));
    try {
      const move = { clock, serverSecret: crypto.randomBytes(32), pageSize: PAGE };
      await expect(importTenant(target, mixed, 'us', move)).rejects.toThrow(/line \d+: unknown record "protectionKey"/);
      expect(await target.tenants.list()).toEqual([]);

      const done = await importTenant(target, file, 'us', move);
      expect(done.counts).toEqual({ ...counts, protectionKeys: 0, certificates: 0, documents: 0, ...NO_V3_COUNTS });
      const made = done.tenant;
      const moved = await snapshot(target, made.id);
      const source = withoutViews(await snapshot(eu, tenant.id));
      // All but information protection, the access document and mailbox views, which a version 1 file does not carry.
      expect(moved.users.map((u) => ({ ...u, certificates: [] }))).toEqual(source.users.map((u) => ({ ...u, certificates: [] })));
      expect(moved.protection).toEqual({ doc: null, keys: [] });
      expect(moved.access).toBeUndefined();
      expect(moved.sharedMailboxes).toEqual([]);
      expect((await allAudit(target, made.id))[0]).toMatchObject({ action: 'tenant.imported', details: { format: 1 } });
    } finally {
      await target.close();
    }
  }, 60_000);

  test('a version 2 file (written before mailbox views moved) still imports; one holding a version 3 record is refused', async () => {
    const { file, mixed, counts } = olderFile(2, 'sharedMailboxMember');
    expect(Object.keys(counts)).toEqual([...V1_COUNTS, ...V2_COUNTS]);
    const target = openSqliteStore(path.join(dir, 'v2.db'));
    try {
      const targetSecret = crypto.randomBytes(32);
      const move = { clock, serverSecret: targetSecret, pageSize: PAGE };
      await expect(importTenant(target, mixed, 'us', move)).rejects.toThrow(/line \d+: unknown record "sharedMailboxMember"/);
      expect(await target.tenants.list()).toEqual([]);

      const done = await importTenant(target, file, 'us', move);
      expect(done.counts).toEqual({ ...counts, ...NO_V3_COUNTS });
      expect(done.counts).toMatchObject({ users: 4, protectionKeys: 2, certificates: 1, documents: 2 });
      const made = done.tenant;
      // Everything but the mailbox views: protection and the access document included. The shared mailbox's user
      // arrives as a plain user (a version 2 file has no mark), and no mailbox has settings.
      expect(await snapshot(target, made.id)).toEqual(withoutViews(await snapshot(eu, tenant.id)));
      expect(await target.sharedMailboxes.get((await target.users.byUsername(SHARED))!.id)).toBeUndefined();
      expect(await target.mailboxSettings.get((await target.users.byUsername('acme-anna'))!.id)).toBeUndefined();
      expect((await allAudit(target, made.id))[0]).toMatchObject({ action: 'tenant.imported', details: { format: 2 } });
    } finally {
      await target.close();
    }
  }, 60_000);

  test('a moved user signs in at a us app with the same password (quarantined until the us admin allows the device) and syncs the moved mail', async () => {
    const config = loadConfig({ PIGEON_DATA_DIR: dir, PIGEON_DEMO: 'false', PIGEON_PASSWORD_GRANT: 'true', PIGEON_REGION: 'us', PIGEON_REGIONS: REGIONS_ENV, PIGEON_ISSUER: DIRECTORY.us });
    const keys = await loadKeys(config, us.secrets);
    const built = createApp({ config, store: us, keys, clock: new ManualClock(Date.now()), log: createLogger({ logLevel: 'silent', logPretty: false }), lag: { lagMs: () => 0, stop() {} } });
    const server = http.createServer(withFastLane(built.app, built.fastLane));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const api = () => request(server);
      const signIn = async (username: string, extra: Record<string, string> = {}) =>
        api().post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: CLIENT_ID, username, password: password(username), ...extra });
      const device = 'anna-new-device-0123456789';
      const anna = await signIn('acme-anna', { device_id: device });
      expect(anna.status).toBe(200);
      expect((await signIn('acme-ben')).status).toBe(400); // disabled, as in eu
      const h = { Authorization: `Bearer ${anna.body.access_token}`, 'X-Device-Id': device };
      expect((await api().post('/v1/devices').set(h).send({ friendlyName: 'new phone' })).status).toBe(201);
      // The tenant's default state moved: a new device is quarantined until an admin allows it.
      expect((await api().get('/v1/folders/sync').set(h)).status).toBe(403);
      const admin = await signIn('acme-admin', { scope: 'mail admin' });
      expect(admin.status).toBe(200);
      const ah = { Authorization: `Bearer ${admin.body.access_token}` };
      const record = (await api().get('/admin/v1/devices').set(ah)).body.devices.find((d: { deviceId: string }) => d.deviceId === device);
      expect((await api().post(`/admin/v1/devices/${record.id}/allow`).set(ah)).status).toBe(200);

      const folders = await api().get('/v1/folders/sync').set(h);
      expect(folders.status).toBe(200);
      const deep = folders.body.created.find((f: { displayName: string }) => f.displayName === 'Deep');
      const items = await api().get(`/v1/folders/${deep.id}/items/sync`).set(h);
      expect(items.status).toBe(200);
      const plan = items.body.created.find((i: { subject: string }) => i.subject === 'Plan');
      expect(plan).toMatchObject({ isFlagged: true, hasAttachments: true });
      const mime = await api().get(`/v1/items/${plan.id}/mime`).set(h).buffer(true).parse((res, cb) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => cb(null, Buffer.concat(chunks)));
      });
      expect(mime.status).toBe(200);
      const euPlan = (await eu.items.byId(names['acme-anna']!, importedItemId))!;
      expect((mime.body as Buffer).equals(await eu.blobs.read(euPlan.userId, euPlan.mimeBlobId!, 0, (await eu.blobs.size(euPlan.userId, euPlan.mimeBlobId!))!))).toBe(true);

      // Her settings and her shared mailbox came along: the app reads them as before the move.
      const settings = await api().get('/v1/mailbox/settings').set(h);
      expect(settings.status).toBe(200);
      expect(settings.body).toMatchObject({
        version: 1,
        automaticReplies: { status: 'alwaysEnabled', active: true, externalAudience: 'contactsOnly' },
        junk: { blockedSenders: ['spam.test', 'bulk@offers.test'] },
        focusedOverrides: [{ sender: 'sender5@elsewhere.test', classification: 'other' }],
      });
      const mailboxes = await api().get('/v1/mailboxes').set(h);
      expect(mailboxes.status).toBe(200);
      expect(mailboxes.body.mailboxes.map((m: { email: string; shared: boolean; sendAs: boolean }) => [m.email, m.shared, m.sendAs])).toEqual([
        ['acme-anna@acme.test', false, true],
        ['team@acme.test', true, true],
      ]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }, 60_000);
});

describe('through the real CLI', () => {
  const { PATH, HOME } = process.env;
  const cli = (env: Record<string, string>, ...argv: string[]) =>
    spawnSync('npm', ['run', '--silent', 'admin', '--', ...argv], {
      cwd: ROOT,
      env: { PATH, HOME, npm_config_update_notifier: 'false', PIGEON_REGIONS: REGIONS_ENV, ...env },
      encoding: 'utf8',
      timeout: 60_000,
    });

  test('tenant export on an eu node, tenant import on a us node (PostgreSQL); a second import exits 2', async () => {
    const euDir = path.join(dir, 'eu');
    const usDir = tempDir('pigeon-move-cli-us-');
    const database = await freshDatabase('pigeon_move_cli');
    try {
      const file = path.join(dir, 'acme-cli.jsonl');
      const exported = cli({ PIGEON_DATA_DIR: euDir, PIGEON_REGION: 'eu' }, 'tenant', 'export', '--tenant', tenant.id, '--out', file);
      expect({ status: exported.status, stderr: exported.stderr }).toEqual({ status: 0, stderr: expect.any(String) });
      expect(exported.stdout).toMatch(new RegExp(`^exported tenant Acme \\(${tenant.id}\\) of region eu to .*acme-cli\\.jsonl: 4 users, 40 folders, 33 items, 7 attachments, 2 rules, 4 audit entries; sha256 [0-9a-f]{64}\\nnot moved: devices, sign-ins`));

      const usEnv = { PIGEON_DATA_DIR: usDir, PIGEON_REGION: 'us', PIGEON_DATABASE_URL: database.url };
      const importedRun = cli(usEnv, 'tenant', 'import', '--in', file);
      expect({ status: importedRun.status, stderr: importedRun.stderr }).toEqual({ status: 0, stderr: expect.stringContaining('verified') });
      expect(importedRun.stdout).toMatch(/^imported tenant Acme \(\S+\) from region eu into region us: 4 users, 40 folders, 33 items, 7 attachments, 2 rules, 4 audit entries; sha256 [0-9a-f]{64}; audited as tenant\.imported\n$/);
      const listed = cli(usEnv, 'tenant', 'list');
      expect(listed.stdout).toMatch(/^\S+\tAcme\tus\t/);

      // Each CLI used its node's own secret: eu's opened the keys (the data directory's file), us's sealed them (its
      // database's), so a us node reads the moved protected mail.
      const check = await openPostgresStore(database.url, { poolSize: 2, nodeId: 'move-cli-check' });
      try {
        const secret = (await loadKeys({ dataDir: usDir, signingKeyFile: '', secretFile: '' }, check.secrets)).serverSecret;
        expect(secret.equals(euSecret)).toBe(false);
        const [moved] = await check.tenants.list();
        const anna = (await check.users.byUsername('acme-anna'))!.id;
        const { protection } = protectionOver(check, secret);
        const opening = await protection.open(await inboxItem(check, anna, 'Board minutes'), capableReader(anna, moved!.id));
        expect(opening.state).toBe('readable');
        expect(opening.content!.bodyText).toContain(SECRET_OLD);
      } finally {
        await check.close();
      }

      const again = cli(usEnv, 'tenant', 'import', '--in', file);
      expect(again.status).toBe(2);
      expect(again.stderr).toMatch(/^pigeon admin: refused: this store already has tenant "Acme"/m);
    } finally {
      await database.drop();
      fs.rmSync(usDir, { recursive: true, force: true });
    }
  }, 120_000);
});
