/**
 * Moving a tenant between regions (README, "Regions"; issue 14): an explicit export from the source region's store
 * into a file, and an import of that file into the target region's store. Both go through the public `Store` API
 * only, so either end may be SQLite or PostgreSQL.
 *
 * The file is JSON Lines, one record per line:
 *   {"record":"header", format, version, createdAt, source: {region, tenant}, counts, notMoved}
 *   {"record":"header", format, version, createdAt, source: {region, tenant}, counts, notMoved, notes}
 *   {"record":"tenantSettings", defaultDeviceAccessState}
 *   {"record":"deviceAccessRule", rule}                              (each rule)
 *   {"record":"protectionConfig", doc}                               (v2; the protection document, if any)
 *   {"record":"protectionKey", id, certificatePem, privateKeyPem, createdAt, retiredAt}
 *                                                                    (v2; each key, in the order they were made
 *                                                                    active: the active one last)
 *   {"record":"user", user, mailbox}                                 (each user, then that user's:)
 *   {"record":"sharedMailbox", userId, createdAt}                    (v3; when the user is a shared mailbox)
 *   {"record":"userCertificate", cert}                               (v2; published certificates, oldest first)
 *   {"record":"mailboxSettings", userId, doc}                        (v3; the mailbox settings document, if any)
 *   {"record":"folder", folder}                                      (parents before their children)
 *   {"record":"item", item, body, mime, attachments}                 (blobs base64; per folder, newest first)
 *   {"record":"sharedMailboxMember", mailboxId, memberId, fullAccess, sendAs, sendOnBehalf, createdAt, updatedAt}
 *                                                                    (v3; after every user: each membership, by
 *                                                                    shared mailbox)
 *   {"record":"accessConfig", doc}                                   (v2; the conditional-access document, if any)
 *   {"record":"audit", entry}                                        (the tenant's audit log, oldest first)
 *   {"record":"trailer", counts, sha256}                             (SHA-256 of every byte before this line)
 * An importer reads version 1 and 2 files too (the same records without those marked v2 or v3, as those versions
 * wrote them); a record a file's version cannot hold is refused.
 *
 * Information protection moves with the tenant (version 2), or every rights-protected message would be unreadable
 * at the target: the protection keys, private keys included, the protection document and users' published
 * certificates. At rest each server seals private keys with its own secret (protection/keys.ts), so the export
 * opens them with the source's secret and the file carries them in PEM; the import seals them with the target's.
 * That makes the file as secret as the keys, which it already had to be: it holds all the tenant's mail in the
 * clear (the header's notes say so). The conditional-access document moves with the user ids in it (group members,
 * policies' included and excluded users) mapped to the new ones.
 *
 * Mailbox views move too (version 3; issue 19): each mailbox's settings document (automatic replies, the junk lists,
 * the Focused Inbox sender overrides: server/mailbox/settings.ts) as it is, since it holds addresses and no ids (its
 * version starts at 1 at the target, like the tenant documents); which users are shared mailboxes, and their members
 * with their rights, the user ids mapped to the new ones. Conversations are not in the file: the store rebuilds each
 * folder's conversations from its items (triggers) as the items are imported, under the same conversation ids.
 *
 * What does not move (the header says so too): devices, sign-ins (refresh tokens), outbox entries, idempotency
 * records and change history; and, keyed by device or by sign-in, device compliance, app protection states, the
 * sign-in log, user risk and MFA enrolments. A device signs in again at the new region (its old tokens name the old
 * one) and syncs from scratch, as after a mailbox reset. Its view settings (Focused Inbox, conversations: per device,
 * DeviceRecord.viewSettings) stay behind with it: the new device record starts with the defaults, and an app that
 * showed another view sets it again, which costs nothing on a device that syncs from scratch anyway. Automatic-reply
 * records (who was answered in a period) are transient bookkeeping of the source's replier and stay behind: a sender
 * answered at the old region may be answered once more at the new one, and a reply still pending at the export is
 * not sent. Ignored conversations stay behind too: the store can tell whether one conversation is ignored but has
 * no list of them to read, and they are a convenience the user re-makes ("ignore" again on the next message).
 *
 * Ids are the target store's own: every tenant, user, folder, item, rule, protection key and certificate gets a new
 * one; blob ids are content hashes and conversation ids are derived from the messages, so both carry over (but a
 * message without a conversation id is a conversation of its own, named by its item id, which is new at the target).
 * Items keep their `data` as stored (a protected message's licence facts, its label, its S/MIME status):
 * `data.protection.issuer` names the tenant as the signed licence does, by its old id.
 *
 * Neither end is one snapshot: the export reads folder by folder. Move a tenant while it is quiet (after telling its
 * users, with its mail held at the MX), or changes made during the export may be missing from the file.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { z } from 'zod';
import type { Clock } from '../clock';
import { normalizeSubject } from '../content/mime';
import { newId } from '../ids';
import { compileAccessConfig } from '../access/config';
import { parseProtectionDocument } from '../protection/config';
import { createKeySealer, SealedKeyError, type KeySealer } from '../protection/keys';
import type {
  AccessState,
  AttachmentRecord,
  AuditEntry,
  DeviceAccessRule,
  Folder,
  Mailbox,
  NewItem,
  ProtectionKeyRecord,
  SharedMailboxMember,
  SortKey,
  Store,
  Tenant,
  User,
  UserCertificate,
  Item,
} from '../store/types';

export const TENANT_EXPORT_FORMAT = 'pigeon-tenant-export';
export const TENANT_EXPORT_VERSION = 3;
/** The versions an import reads: version 1 had no protection or access records, version 2 no mailbox views. */
const READABLE_VERSIONS: readonly number[] = [1, 2, TENANT_EXPORT_VERSION];

/** What the export leaves behind, and why (in the header, for whoever reads the file). */
export const NOT_MOVED = {
  records: [
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
  ],
  why:
    'devices sign in again at the new region (their tokens name the old one and are answered 421 there) and start ' +
    'a fresh sync; unsent outbox entries, idempotency records and sync history belong to the old region\'s sessions; ' +
    'compliance and app protection states are per device (the compliance partner and the app report again), the ' +
    'sign-in log and risk describe sign-ins at the old region, and MFA enrolments are not read by the export: users ' +
    'enrol again; view settings are per device (the app sets its view again); automatic-reply records only remember ' +
    'who was answered (a sender may be answered once more, a pending reply is not sent), and ignored conversations ' +
    'are ignored again by their users',
};

/** Said in the header: what the file holds, for whoever keeps it. */
export const EXPORT_NOTES = [
  'This file holds all of the tenant\'s mail in the clear and the private keys of its protection keys in PEM ' +
    '(unsealed, so that the target can seal them with its own secret): whoever has it can read every message, ' +
    'rights-protected ones included. Keep it as secret as the mailboxes, and delete it once the move is verified.',
];

export interface MoveCounts {
  users: number;
  folders: number;
  items: number;
  attachments: number;
  rules: number;
  audit: number;
  /** Version 2 on: protection keys, published certificates, documents (protection and access, at most one each). */
  protectionKeys: number;
  certificates: number;
  documents: number;
  /** Version 3 on: shared mailboxes, their memberships, mailbox settings documents (at most one per user). */
  sharedMailboxes: number;
  sharedMailboxMembers: number;
  mailboxSettings: number;
}

/** The format version each count (and so each kind of record) came with. */
const COUNTED_SINCE: Readonly<Record<keyof MoveCounts, number>> = {
  users: 1,
  folders: 1,
  items: 1,
  attachments: 1,
  rules: 1,
  audit: 1,
  protectionKeys: 2,
  certificates: 2,
  documents: 2,
  sharedMailboxes: 3,
  sharedMailboxMembers: 3,
  mailboxSettings: 3,
};
const zeroCounts = (): MoveCounts => Object.fromEntries(Object.keys(COUNTED_SINCE).map((k) => [k, 0])) as unknown as MoveCounts;
/** The counts a file of `version` carries in its header and trailer. */
const countKeysOf = (version: number): Array<keyof MoveCounts> =>
  (Object.keys(COUNTED_SINCE) as Array<keyof MoveCounts>).filter((k) => COUNTED_SINCE[k] <= version);

export interface ExportHeader {
  record: 'header';
  format: typeof TENANT_EXPORT_FORMAT;
  version: number;
  createdAt: number;
  source: { region: string; tenant: Tenant };
  counts: MoveCounts;
  notMoved: typeof NOT_MOVED;
  /** Version 2 on. */
  notes?: string[];
}

interface UserRecord {
  record: 'user';
  user: User;
  mailbox: Mailbox | null;
}
interface FolderRecord {
  record: 'folder';
  folder: Omit<Folder, 'mailboxState'>;
}
interface ItemRecord {
  record: 'item';
  item: Item;
  body: { text: string | null; html: string | null };
  /** The raw message, base64; null for items without one (events, contacts). */
  mime: string | null;
  attachments: Array<AttachmentRecord & { content: string }>;
}
/** A protection key with its private key opened (PKCS#8 PEM): sealed again with the target's secret on import. */
interface ProtectionKeyLine {
  record: 'protectionKey';
  id: string;
  certificatePem: string;
  privateKeyPem: string;
  createdAt: number;
  retiredAt: number | null;
}
/** A membership of a shared mailbox (both ids the source's users; mapped on import). */
type SharedMailboxMemberLine = { record: 'sharedMailboxMember' } & SharedMailboxMember;
type BodyRecord =
  | { record: 'tenantSettings'; defaultDeviceAccessState: AccessState }
  | { record: 'deviceAccessRule'; rule: DeviceAccessRule }
  | { record: 'protectionConfig'; doc: unknown }
  | ProtectionKeyLine
  | UserRecord
  | { record: 'sharedMailbox'; userId: string; createdAt: number }
  | { record: 'userCertificate'; cert: UserCertificate }
  | { record: 'mailboxSettings'; userId: string; doc: unknown }
  | FolderRecord
  | ItemRecord
  | SharedMailboxMemberLine
  | { record: 'accessConfig'; doc: unknown }
  | { record: 'audit'; entry: AuditEntry };
/** The records that came after version 1, with the version that added them: an older file cannot hold them. */
const RECORD_SINCE: Readonly<Partial<Record<string, number>>> = {
  protectionConfig: 2,
  protectionKey: 2,
  userCertificate: 2,
  accessConfig: 2,
  sharedMailbox: 3,
  sharedMailboxMember: 3,
  mailboxSettings: 3,
};
interface Trailer {
  record: 'trailer';
  counts: MoveCounts;
  sha256: string;
}

/** A move refused before anything was written: a bad file, a tenant or username that exists here. */
export class TenantMoveError extends Error {}

/** An import that failed after it had written: says what it created, so the operator can remove it. */
export class TenantImportFailed extends Error {
  constructor(
    readonly created: ImportCreated,
    readonly reason: unknown,
  ) {
    const users = created.users.map((u) => `${u.username} (${u.id})`).join(', ') || 'none';
    super(
      `import failed: ${(reason as Error)?.message ?? String(reason)}. It had created ` +
        (created.tenant ? `tenant ${JSON.stringify(created.tenant.name)} (${created.tenant.id})` : 'no tenant') +
        `, users: ${users}; ${created.folders} folder(s), ${created.items} item(s), ${created.rules} rule(s), ` +
        `${created.protectionKeys} protection key(s), ${created.certificates} certificate(s), ${created.documents} document(s), ` +
        `${created.sharedMailboxes} shared mailbox(es) with ${created.sharedMailboxMembers} membership(s), ` +
        `${created.mailboxSettings} mailbox settings document(s), ${created.audit} audit entries. ` +
        `Remove them (README, "Regions") before importing the file again.`,
    );
    this.name = 'TenantImportFailed';
  }
}

export interface ImportCreated {
  tenant?: Tenant;
  users: Array<{ username: string; id: string }>;
  folders: number;
  items: number;
  rules: number;
  protectionKeys: number;
  certificates: number;
  documents: number;
  sharedMailboxes: number;
  sharedMailboxMembers: number;
  mailboxSettings: number;
  audit: number;
}

export interface MoveOptions {
  clock: Clock;
  /**
   * This server's secret (auth/keys.ts `loadKeys`): the export opens the tenant's sealed protection keys with the
   * source's, the import seals them with the target's.
   */
  serverSecret: Buffer;
  /** Progress lines for the operator (the CLI writes them to stderr). */
  progress?: (line: string) => void;
  /** Items read per range read (export) and written per unit of work (import); small in tests. */
  pageSize?: number;
}

const DEFAULT_PAGE = 100;
/** An import unit also ends once its items carry this many bytes of content, so no unit holds a large mailbox. */
const IMPORT_UNIT_BYTES = 8 * 1024 * 1024;
const AUDIT_PAGE = 500;

// ---------------------------------------------------------------------------------------------------------------
// Export

/** Writes lines to a file, waiting when the stream's buffer is full, so a large mailbox streams through. */
class LineFile {
  private readonly stream: fs.WriteStream;
  private readonly hash = crypto.createHash('sha256');
  /** The stream's error (no such directory, a full disk), thrown by the next write or close. */
  private failure: Error | undefined;
  constructor(file: string) {
    this.stream = fs.createWriteStream(file, { flags: 'wx' });
    this.stream.on('error', (err) => (this.failure ??= err));
  }
  /** Writes `bytes`; `hashed: false` for the trailer, which the checksum does not cover. */
  async write(bytes: Buffer | string, hashed = true): Promise<void> {
    if (this.failure) throw this.failure;
    if (hashed) this.hash.update(bytes);
    if (!this.stream.write(bytes)) await once(this.stream, 'drain');
  }
  writeRecord(record: unknown): Promise<void> {
    return this.write(JSON.stringify(record) + '\n');
  }
  digest(): string {
    return this.hash.digest('hex');
  }
  async close(): Promise<void> {
    if (this.failure) throw this.failure;
    this.stream.end();
    await once(this.stream, 'finish');
  }
  destroy(): void {
    this.stream.destroy();
  }
}

export interface ExportResult {
  file: string;
  sha256: string;
  tenant: Tenant;
  counts: MoveCounts;
}

/** Folders ordered so that every parent comes before its children (a folder may be moved under a newer one). */
function parentsFirst(folders: Folder[]): Folder[] {
  const byId = new Map(folders.map((f) => [f.id, f]));
  const placed = new Set<string>();
  const ordered: Folder[] = [];
  const place = (folder: Folder, depth: number) => {
    if (placed.has(folder.id)) return;
    if (depth > folders.length) throw new TenantMoveError(`folder ${folder.id} is its own ancestor`);
    if (folder.parentId !== null) {
      const parent = byId.get(folder.parentId);
      if (!parent) throw new TenantMoveError(`folder ${folder.id}: its parent ${folder.parentId} does not exist`);
      place(parent, depth + 1);
    }
    placed.add(folder.id);
    ordered.push(folder);
  };
  for (const f of folders) place(f, 0);
  return ordered;
}

async function readBlob(store: Store, userId: string, blobId: string): Promise<Buffer> {
  const size = await store.blobs.size(userId, blobId);
  if (size === undefined) throw new TenantMoveError(`blob ${blobId} of user ${userId} is missing`);
  return store.blobs.read(userId, blobId, 0, size);
}

/** Every item of a folder, newest first, a page at a time (the sync reads: one index range scan per page). */
async function* folderItems(store: Store, userId: string, folderId: string, pageSize: number): AsyncGenerator<Item> {
  const from: SortKey = { receivedAt: Number.MIN_SAFE_INTEGER, id: '' };
  // Descending, the exclusive upper bound is simply the last key read: no "just after this id" needed.
  let to: SortKey = { receivedAt: Number.MAX_SAFE_INTEGER, id: '' };
  for (;;) {
    const page = await store.sync.range(userId, folderId, from, to, 'desc', pageSize);
    yield* page;
    if (page.length < pageSize) return;
    const last = page[page.length - 1]!;
    to = { receivedAt: last.receivedAt, id: last.id };
  }
}

/**
 * The tenant's audit log, oldest first, in pages (the store lists it newest first): a first pass notes where each
 * page starts, the second reads them backwards, so only the page boundaries are held.
 */
async function* auditOldestFirst(store: Store, tenantId: string): AsyncGenerator<AuditEntry> {
  const newest = await store.audit.list(tenantId, { limit: 1 });
  if (!newest.length) return;
  // Entries appended while this runs (e.g. by an admin) are left out: the log is read up to its newest entry now.
  const starts: number[] = [newest[0]!.seq + 1];
  for (;;) {
    const page = await store.audit.list(tenantId, { limit: AUDIT_PAGE, beforeSeq: starts[starts.length - 1] });
    if (page.length < AUDIT_PAGE) break;
    starts.push(page[page.length - 1]!.seq);
  }
  for (let i = starts.length - 1; i >= 0; i--) {
    const page = await store.audit.list(tenantId, { limit: AUDIT_PAGE, beforeSeq: starts[i] });
    for (let j = page.length - 1; j >= 0; j--) yield page[j]!;
  }
}

/**
 * The tenant's protection keys in the order `rotateKey` must insert them to leave the same keyring: it retires the
 * keys still active at the new key's createdAt, so each key is followed by the one whose creation retired it, and the
 * active key comes last. That is oldest first, except where a node's clock put a rotation's createdAt before the key
 * it retired (two nodes giving a tenant its first key at once): retirement, not creation, is the order.
 */
function rotationOrder(keys: ProtectionKeyRecord[]): ProtectionKeyRecord[] {
  const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  // Infinity - Infinity is NaN, which falls through to the next comparison like 0 does.
  return [...keys].sort((a, b) => (a.retiredAt ?? Infinity) - (b.retiredAt ?? Infinity) || a.createdAt - b.createdAt || byId(a.id, b.id));
}

/** A key's private key in PEM, opened with the source's secret. */
function openedPrivateKey(sealer: KeySealer, key: ProtectionKeyRecord): string {
  try {
    return sealer.open(key.sealedPrivateKey);
  } catch (err) {
    if (!(err instanceof SealedKeyError)) throw err;
    throw new TenantMoveError(
      `protection key ${key.id} cannot be opened with this server's secret: export on a node of the tenant's region, with ` +
        `its configuration (its PIGEON_SECRET_FILE, or its database with PostgreSQL)`,
    );
  }
}

/**
 * A mailbox settings document as the store holds it, parsed. The settings reader takes a document that is not JSON
 * for the defaults; the export refuses it instead, so that no setting is silently dropped on the way.
 */
function storedSettingsDoc(userId: string, doc: string): unknown {
  try {
    return JSON.parse(doc) as unknown;
  } catch {
    throw new TenantMoveError(`the mailbox settings of user ${userId} are not JSON: have the user (or an admin) set them again, then export`);
  }
}

/**
 * `tenant export`: writes the tenant's file (refusing to overwrite one), then appends `tenant.exported` to its audit
 * log. The records go to a side file first, so that the header can carry the exact counts; the final file is then
 * header + records + trailer, renamed into place only when complete.
 */
export async function exportTenant(store: Store, tenantId: string, file: string, options: MoveOptions): Promise<ExportResult> {
  const { clock, progress = () => {} } = options;
  const pageSize = options.pageSize ?? DEFAULT_PAGE;
  const sealer = createKeySealer(options.serverSecret);
  const tenant = await store.tenants.get(tenantId);
  if (!tenant) throw new TenantMoveError(`no tenant ${JSON.stringify(tenantId)} in this store (see tenant list)`);
  if (fs.existsSync(file)) throw new TenantMoveError(`${file} exists: choose another --out (an export never overwrites)`);
  const createdAt = clock.now();
  const suffix = crypto.randomBytes(4).toString('hex');
  const recordsFile = path.join(path.dirname(file), `.${path.basename(file)}.${suffix}.records`);
  const partialFile = path.join(path.dirname(file), `.${path.basename(file)}.${suffix}.partial`);
  const counts = zeroCounts();
  try {
    const records = new LineFile(recordsFile);
    try {
      const write = (r: BodyRecord) => records.writeRecord(r);
      await write({ record: 'tenantSettings', defaultDeviceAccessState: await store.deviceAccess.defaultState(tenantId) });
      for (const rule of await store.deviceAccess.rules(tenantId)) {
        await write({ record: 'deviceAccessRule', rule });
        counts.rules++;
      }
      const protection = await store.protection.config(tenantId);
      if (protection) {
        // The document, not its version: the target's starts at 1.
        await write({ record: 'protectionConfig', doc: JSON.parse(protection.doc) as unknown });
        counts.documents++;
      }
      for (const key of rotationOrder(await store.protection.keys(tenantId))) {
        const { id, certificatePem, createdAt, retiredAt } = key;
        await write({ record: 'protectionKey', id, certificatePem, privateKeyPem: openedPrivateKey(sealer, key), createdAt, retiredAt });
        counts.protectionKeys++;
      }
      const users = (await store.users.list()).filter((u) => u.tenantId === tenantId);
      const sharedIds = new Set<string>();
      for (const user of users) {
        await write({ record: 'user', user, mailbox: (await store.mailboxes.get(user.id)) ?? null });
        counts.users++;
        const shared = await store.sharedMailboxes.get(user.id);
        if (shared) {
          await write({ record: 'sharedMailbox', userId: user.id, createdAt: shared.createdAt });
          counts.sharedMailboxes++;
          sharedIds.add(user.id);
        }
        // The store lists them newest first; the file, oldest first.
        for (const cert of (await store.protection.certificates(user.id)).reverse()) {
          await write({ record: 'userCertificate', cert });
          counts.certificates++;
        }
        const settings = await store.mailboxSettings.get(user.id);
        if (settings) {
          // The document, not its version (the target's starts at 1); it names addresses only, so it moves as it is.
          await write({ record: 'mailboxSettings', userId: user.id, doc: storedSettingsDoc(user.id, settings.doc) });
          counts.mailboxSettings++;
        }
        const folders = parentsFirst(await store.folders.listByUser(user.id));
        for (const { mailboxState: _state, ...folder } of folders) {
          await write({ record: 'folder', folder });
          counts.folders++;
        }
        for (const folder of folders) {
          for await (const item of folderItems(store, user.id, folder.id, pageSize)) {
            const body = (await store.items.body(user.id, item.id)) ?? { text: null, html: null };
            const attachments = [];
            for (const a of await store.items.attachments(user.id, item.id)) {
              attachments.push({ ...a, content: (await readBlob(store, user.id, a.blobId)).toString('base64') });
            }
            const mime = item.mimeBlobId ? (await readBlob(store, user.id, item.mimeBlobId)).toString('base64') : null;
            await write({ record: 'item', item, body, mime, attachments });
            counts.items++;
            counts.attachments += attachments.length;
            if (counts.items % 1000 === 0) progress(`exported ${counts.items} items`);
          }
        }
        progress(`exported user ${user.username}: ${folders.length} folders (${counts.items} items so far)`);
      }
      // After every user: a membership names two of them. Only between users in the file (a shared mailbox or a user
      // created while this ran is not in it, and neither are its memberships).
      const exported = new Set(users.map((u) => u.id));
      for (const mailboxId of sharedIds) {
        for (const member of await store.sharedMailboxes.members(mailboxId)) {
          if (!exported.has(member.memberId)) continue;
          const { mailboxId: mailbox, memberId, fullAccess, sendAs, sendOnBehalf, createdAt, updatedAt } = member;
          await write({ record: 'sharedMailboxMember', mailboxId: mailbox, memberId, fullAccess, sendAs, sendOnBehalf, createdAt, updatedAt });
          counts.sharedMailboxMembers++;
        }
      }
      // After the users: the document names them, and the import maps their ids to the new ones.
      const access = await store.access.config(tenantId);
      if (access) {
        await write({ record: 'accessConfig', doc: JSON.parse(access.doc) as unknown });
        counts.documents++;
      }
      for await (const entry of auditOldestFirst(store, tenantId)) {
        await write({ record: 'audit', entry });
        counts.audit++;
      }
    } finally {
      await records.close();
    }

    const out = new LineFile(partialFile);
    let sha256: string;
    try {
      const header: ExportHeader = {
        record: 'header',
        format: TENANT_EXPORT_FORMAT,
        version: TENANT_EXPORT_VERSION,
        createdAt,
        source: { region: tenant.region, tenant },
        counts,
        notMoved: NOT_MOVED,
        notes: EXPORT_NOTES,
      };
      await out.writeRecord(header);
      for await (const chunk of fs.createReadStream(recordsFile)) await out.write(chunk as Buffer);
      sha256 = out.digest();
      const trailer: Trailer = { record: 'trailer', counts, sha256 };
      await out.write(JSON.stringify(trailer) + '\n', false);
    } catch (err) {
      out.destroy();
      throw err;
    }
    await out.close();
    fs.renameSync(partialFile, file);

    await store.audit.append({
      tenantId,
      at: clock.now(),
      actorId: null,
      actorName: 'system',
      action: 'tenant.exported',
      targetType: 'tenant',
      targetId: tenantId,
      details: { region: tenant.region, format: TENANT_EXPORT_VERSION, file: path.basename(file), sha256, counts },
    });
    return { file, sha256, tenant, counts };
  } finally {
    fs.rmSync(recordsFile, { force: true });
    fs.rmSync(partialFile, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a file

/** The file's lines as raw bytes (without the newline), so the checksum is over exactly what was written. */
async function* fileLines(file: string): AsyncGenerator<Buffer> {
  let rest: Buffer[] = [];
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      yield rest.length ? Buffer.concat([...rest, part]) : part;
      rest = [];
      start = nl + 1;
    }
    if (start < chunk.length) rest.push(chunk.subarray(start));
  }
  if (rest.length) throw new TenantMoveError('the file does not end with a complete line (was it cut short?)');
}

const NEWLINE = Buffer.from('\n');

function parseLine(line: Buffer, number: number): { record: string } & Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line.toString('utf8'));
  } catch {
    throw new TenantMoveError(`line ${number} is not JSON: the file is damaged`);
  }
  if (typeof value !== 'object' || value === null || typeof (value as { record?: unknown }).record !== 'string') {
    throw new TenantMoveError(`line ${number} is not a record: the file is damaged`);
  }
  return value as { record: string } & Record<string, unknown>;
}

/** Reads the file's records in order, checking the header first and, at the end, the trailer's counts and checksum. */
async function* readExport(file: string): AsyncGenerator<{ header: ExportHeader } | { record: BodyRecord } | { trailer: Trailer; counts: MoveCounts }> {
  if (!fs.existsSync(file)) throw new TenantMoveError(`${file}: no such file`);
  const hash = crypto.createHash('sha256');
  const counts = zeroCounts();
  let header: ExportHeader | undefined;
  let pending: Buffer | undefined;
  let number = 0;
  const countOf: Partial<Record<string, keyof MoveCounts>> = {
    user: 'users',
    folder: 'folders',
    item: 'items',
    deviceAccessRule: 'rules',
    audit: 'audit',
    protectionKey: 'protectionKeys',
    userCertificate: 'certificates',
    protectionConfig: 'documents',
    accessConfig: 'documents',
    sharedMailbox: 'sharedMailboxes',
    sharedMailboxMember: 'sharedMailboxMembers',
    mailboxSettings: 'mailboxSettings',
  };
  for await (const line of fileLines(file)) {
    // The line before this one was not the trailer: it is covered by the checksum.
    if (pending) {
      number++;
      hash.update(pending).update(NEWLINE);
      const parsed = parseLine(pending, number);
      if (!header) {
        if (parsed.record !== 'header' || parsed.format !== TENANT_EXPORT_FORMAT) {
          throw new TenantMoveError(`not a Pigeon tenant export (its first line is no ${TENANT_EXPORT_FORMAT} header)`);
        }
        if (typeof parsed.version !== 'number' || !READABLE_VERSIONS.includes(parsed.version)) {
          throw new TenantMoveError(`export format version ${String(parsed.version)} is not supported (this server reads versions ${READABLE_VERSIONS.join(', ')})`);
        }
        header = parsed as unknown as ExportHeader;
        yield { header };
      } else {
        const kind = (RECORD_SINCE[parsed.record] ?? 1) > header.version ? undefined : countOf[parsed.record];
        if (kind) counts[kind]++;
        else if (parsed.record !== 'tenantSettings') throw new TenantMoveError(`line ${number}: unknown record ${JSON.stringify(parsed.record)}`);
        if (parsed.record === 'item') counts.attachments += (parsed.attachments as unknown[]).length;
        yield { record: parsed as unknown as BodyRecord };
      }
    }
    pending = line;
  }
  if (!pending || !header) throw new TenantMoveError('the file is empty or has no trailer (was it cut short?)');
  const trailer = parseLine(pending, number + 1) as unknown as Trailer;
  if (trailer.record !== 'trailer') throw new TenantMoveError('the file has no trailer (was it cut short?)');
  const sha256 = hash.digest('hex');
  if (trailer.sha256 !== sha256) throw new TenantMoveError(`checksum mismatch: the trailer says ${trailer.sha256}, the file's content is ${sha256}: the file is damaged`);
  // An older file counts fewer kinds of record (and has none of the others: they were refused above).
  const keys = countKeysOf(header.version);
  const same = (a: Partial<MoveCounts> | undefined) => keys.every((k) => a?.[k] === counts[k]);
  if (!same(trailer.counts) || !same(header.counts)) {
    const read = Object.fromEntries(keys.map((k) => [k, counts[k]]));
    throw new TenantMoveError(`the record counts (${JSON.stringify(read)}) differ from the header's and trailer's: the file is damaged`);
  }
  yield { trailer, counts };
}

export interface VerifiedExport {
  header: ExportHeader;
  sha256: string;
  /** Every kind counted (0 for the kinds a file of an older version cannot hold). */
  counts: MoveCounts;
  usernames: string[];
  /** Every string the audit records name: the items among them get their new id remembered on import. */
  auditStrings: Set<string>;
}

/** A document that this server would not accept, as a refusal naming its fields. */
function invalidDocument(what: string, err: unknown): TenantMoveError {
  const fields = (err as { extra?: { errors?: Array<{ field: string; message: string }> } })?.extra?.errors ?? [];
  const detail = fields.slice(0, 5).map((f) => `${f.field}: ${f.message}`).join('; ');
  return new TenantMoveError(`the ${what} in the file is not valid here (${detail || (err as Error)?.message || String(err)}): the file is damaged or from an incompatible version`);
}

/**
 * A mailbox settings document the target can read back as it was written (server/mailbox/settings.ts). That reader
 * is lenient by design: a member that is missing (a document of an older server) takes its default, and so does one
 * of the wrong type, which for a moved document would drop a setting without a word. So the import accepts missing
 * members and members it does not know (which the reader ignores), and refuses a member of the wrong shape.
 */
const StoredMailboxSettings = z.looseObject({
  automaticReplies: z
    .looseObject({
      status: z.enum(['disabled', 'alwaysEnabled', 'scheduled']),
      scheduledStart: z.number().nullable(),
      scheduledEnd: z.number().nullable(),
      internalReply: z.string(),
      externalReply: z.string(),
      externalAudience: z.enum(['none', 'contactsOnly', 'all']),
    })
    .partial()
    .optional(),
  autoReplyPeriod: z.string().optional(),
  junk: z.looseObject({ safeSenders: z.array(z.string()), blockedSenders: z.array(z.string()) }).partial().optional(),
  focusedOverrides: z.array(z.looseObject({ sender: z.string(), classification: z.enum(['focused', 'other']) })).optional(),
});

function checkMailboxSettings(userId: string, doc: unknown): void {
  const checked = StoredMailboxSettings.safeParse(doc);
  if (checked.success) return;
  const detail = checked.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(document)'}: ${i.message}`).join('; ');
  throw new TenantMoveError(`the mailbox settings of user ${userId} in the file are not valid here (${detail}): the file is damaged or from an incompatible version`);
}

const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * A membership the target can hold as it was: both users earlier in the file, the mailbox marked shared before it
 * and no member a shared mailbox itself, its rights and times of the right type, and sending only with full access
 * (what the admin API allows: server/mailbox/shared.ts).
 */
function checkMembership(m: SharedMailboxMemberLine, users: ReadonlySet<string>, shared: ReadonlySet<string>): void {
  const what = `the membership of user ${String(m.memberId)} in shared mailbox ${String(m.mailboxId)}`;
  if (!shared.has(m.mailboxId)) throw new TenantMoveError(`${what} comes before that mailbox is marked shared, or it is no user of the file: the file is damaged`);
  if (!users.has(m.memberId)) throw new TenantMoveError(`${what} names no user before it in the file: the file is damaged`);
  if (shared.has(m.memberId)) throw new TenantMoveError(`${what}: a shared mailbox cannot be a member: the file is damaged`);
  if (![m.fullAccess, m.sendAs, m.sendOnBehalf].every(isBoolean) || !isTime(m.createdAt) || !isTime(m.updatedAt)) {
    throw new TenantMoveError(`${what} has rights or times of the wrong type: the file is damaged`);
  }
  if (!m.fullAccess && (m.sendAs || m.sendOnBehalf)) throw new TenantMoveError(`${what} may send without full access, which this server does not allow: the file is damaged`);
}

/** A key whose private key does not open what its certificate protected is refused before anything is written. */
function checkKeyPair(key: ProtectionKeyLine): void {
  let matches = false;
  try {
    matches = new crypto.X509Certificate(key.certificatePem).checkPrivateKey(crypto.createPrivateKey(key.privateKeyPem));
  } catch {
    throw new TenantMoveError(`protection key ${key.id}: its certificate or private key cannot be read: the file is damaged`);
  }
  if (!matches) throw new TenantMoveError(`protection key ${key.id}: its private key does not belong to its certificate: the file is damaged`);
}

/**
 * The keys, inserted one after the other with rotateKey, must come out as the file says: each retired when the next
 * was made, the last one active. A file that says otherwise (damaged, or a source keyring rotateKey never makes)
 * is refused before anything is written, rather than imported with another key active.
 */
function checkRotationChain(keys: ProtectionKeyLine[]): void {
  keys.forEach((key, i) => {
    const expected = i + 1 < keys.length ? keys[i + 1]!.createdAt : null;
    if (key.retiredAt !== expected) {
      throw new TenantMoveError(
        `protection key ${key.id}: retired at ${String(key.retiredAt)}, but rotating the keys in the file's order retires it at ` +
          `${String(expected)}${expected === null ? ' (the last key is the active one)' : ' (when the next key was made)'}: the file is damaged`,
      );
    }
  });
}

/**
 * Reads the whole file once and checks it: the header's format and version, every line a record, users before their
 * folders, certificates, settings and shared-mailbox marks, folders before their children and items, memberships
 * after both their users and the mailbox's mark, the access document after every user, the documents and settings
 * valid here, each protection key's pair and their rotation order, the counts, and the trailer's SHA-256. Writes
 * nothing.
 */
export async function verifyExport(file: string): Promise<VerifiedExport> {
  let header: ExportHeader | undefined;
  const users = new Set<string>();
  const folders = new Set<string>();
  const usernames: string[] = [];
  const auditStrings = new Set<string>();
  const keys: ProtectionKeyLine[] = [];
  const certificates = new Set<string>();
  const documents = new Set<string>();
  const shared = new Set<string>();
  const settings = new Set<string>();
  /** The memberships read so far (`mailboxId memberId`), and every member: a shared mailbox is none of them. */
  const memberships = new Set<string>();
  const members = new Set<string>();
  for await (const part of readExport(file)) {
    if ('header' in part) header = part.header;
    else if ('trailer' in part) {
      checkRotationChain(keys);
      return { header: header!, sha256: part.trailer.sha256, counts: part.counts, usernames, auditStrings };
    } else {
      const r = part.record;
      if (r.record === 'user') {
        if (documents.has('accessConfig')) throw new TenantMoveError(`user ${r.user.id} comes after the access document, which names users: the file is damaged`);
        users.add(r.user.id);
        usernames.push(r.user.username);
      } else if (r.record === 'folder') {
        if (!users.has(r.folder.userId) || (r.folder.parentId !== null && !folders.has(r.folder.parentId))) {
          throw new TenantMoveError(`folder ${r.folder.id} comes before its user or its parent folder: the file is damaged`);
        }
        folders.add(r.folder.id);
      } else if (r.record === 'item') {
        if (!users.has(r.item.userId) || !folders.has(r.item.folderId)) throw new TenantMoveError(`item ${r.item.id} comes before its folder: the file is damaged`);
      } else if (r.record === 'audit') {
        collectStrings(r.entry, auditStrings);
      } else if (r.record === 'protectionKey') {
        checkKeyPair(r);
        keys.push(r);
      } else if (r.record === 'userCertificate') {
        if (!users.has(r.cert.userId)) throw new TenantMoveError(`certificate ${r.cert.id} comes before its user: the file is damaged`);
        const key = `${r.cert.userId} ${r.cert.fingerprint}`;
        if (certificates.has(key)) throw new TenantMoveError(`certificate ${r.cert.id} is in the file twice for one user: the file is damaged`);
        certificates.add(key);
      } else if (r.record === 'sharedMailbox') {
        if (!users.has(r.userId)) throw new TenantMoveError(`shared mailbox ${String(r.userId)} comes before its user: the file is damaged`);
        if (shared.has(r.userId)) throw new TenantMoveError(`shared mailbox ${r.userId} is in the file twice: the file is damaged`);
        if (members.has(r.userId)) throw new TenantMoveError(`shared mailbox ${r.userId} is a member of another: the file is damaged`);
        if (!isTime(r.createdAt)) throw new TenantMoveError(`shared mailbox ${r.userId} has no creation time: the file is damaged`);
        shared.add(r.userId);
      } else if (r.record === 'sharedMailboxMember') {
        checkMembership(r, users, shared);
        const key = `${r.mailboxId} ${r.memberId}`;
        if (memberships.has(key)) throw new TenantMoveError(`the membership of user ${r.memberId} in shared mailbox ${r.mailboxId} is in the file twice: the file is damaged`);
        memberships.add(key);
        members.add(r.memberId);
      } else if (r.record === 'mailboxSettings') {
        if (!users.has(r.userId)) throw new TenantMoveError(`the mailbox settings of user ${String(r.userId)} come before the user: the file is damaged`);
        if (settings.has(r.userId)) throw new TenantMoveError(`the mailbox settings of user ${r.userId} are in the file twice: the file is damaged`);
        settings.add(r.userId);
        checkMailboxSettings(r.userId, r.doc);
      } else if (r.record === 'protectionConfig' || r.record === 'accessConfig') {
        if (documents.has(r.record)) throw new TenantMoveError(`the file has two ${r.record} records: the file is damaged`);
        documents.add(r.record);
        // Checked as the target's own API would check an admin's document, so the import never stores one it
        // cannot read back (the access document's user ids change on import, not its validity).
        try {
          if (r.record === 'protectionConfig') parseProtectionDocument(r.doc);
          else compileAccessConfig(r.doc, 1);
        } catch (err) {
          throw invalidDocument(r.record === 'protectionConfig' ? 'protection document' : 'access document', err);
        }
      }
    }
  }
  throw new TenantMoveError('the file has no trailer');
}

function collectStrings(value: unknown, into: Set<string>): void {
  if (typeof value === 'string') into.add(value);
  else if (Array.isArray(value)) value.forEach((v) => collectStrings(v, into));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => collectStrings(v, into));
}

// ---------------------------------------------------------------------------------------------------------------
// Import

/** A delivered message's thread subject, as delivery would have stored it (the Store does not give it back). */
function threadSubjectOf(item: Item, mime: Buffer | null): string | null {
  if (item.type !== 'email' || !mime) return null;
  const head = mime.subarray(0, 65536).toString('latin1');
  const end = head.search(/\r?\n\r?\n/);
  // A message with thread headers was threaded by them, and delivery stored no thread subject for it.
  if (/^(references|in-reply-to)[ \t]*:/im.test(end === -1 ? head : head.slice(0, end))) return null;
  return normalizeSubject(item.subject) || null;
}

function newItemOf(r: ItemRecord, userId: string, folderId: string): NewItem {
  const { item } = r;
  const mime = r.mime === null ? null : Buffer.from(r.mime, 'base64');
  return {
    userId,
    folderId,
    type: item.type,
    receivedAt: item.receivedAt,
    subject: item.subject,
    isRead: item.isRead,
    isFlagged: item.isFlagged,
    importance: item.importance,
    categories: item.categories,
    inferenceClassification: item.inferenceClassification,
    from: item.from,
    to: item.to,
    cc: item.cc,
    replyTo: item.replyTo,
    sentAt: item.sentAt,
    preview: item.preview,
    bodyText: r.body.text,
    bodyHtml: r.body.html,
    conversationId: item.conversationId,
    internetMessageId: item.internetMessageId,
    mime,
    attachments: r.attachments.map((a) => ({
      name: a.name,
      contentType: a.contentType,
      isInline: a.isInline,
      contentId: a.contentId,
      content: Buffer.from(a.content, 'base64'),
    })),
    data: item.data,
    threadSubject: threadSubjectOf(item, mime),
  };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The access document with the user ids in it mapped to the target's: group members and the users a policy
 * includes or excludes (access/config.ts, access/policies.ts; app protection policies name groups only, and group,
 * policy and location ids are the document's own). An id that names no moved user (one deleted since it was
 * entered) is kept as it is: it names nobody here either, and dropping it could leave a policy that includes
 * nobody, which the document does not allow. Everything else is copied untouched, in its order.
 */
export function remapAccessUsers(doc: unknown, userIds: ReadonlyMap<string, string>): unknown {
  if (!isObject(doc)) return doc;
  const ids = (list: unknown) => (Array.isArray(list) ? list.map((id: unknown) => (typeof id === 'string' ? (userIds.get(id) ?? id) : id)) : list);
  const subjects = (s: unknown) => (isObject(s) && 'users' in s ? { ...s, users: ids(s.users) } : s);
  const out: Record<string, unknown> = { ...doc };
  if (Array.isArray(doc.groups)) out.groups = doc.groups.map((g: unknown) => (isObject(g) && 'members' in g ? { ...g, members: ids(g.members) } : g));
  if (Array.isArray(doc.policies)) {
    out.policies = doc.policies.map((p: unknown) => {
      if (!isObject(p) || !isObject(p.assignments) || !isObject(p.assignments.users)) return p;
      const users = p.assignments.users;
      const mapped: Record<string, unknown> = { ...users, include: subjects(users.include) };
      if ('exclude' in users) mapped.exclude = subjects(users.exclude);
      return { ...p, assignments: { ...p.assignments, users: mapped } };
    });
  }
  return out;
}

export interface ImportResult {
  tenant: Tenant;
  sourceRegion: string;
  sha256: string;
  counts: MoveCounts;
}

/**
 * `tenant import`: verifies the file (verifyExport), refuses a tenant or username that exists in this store, then
 * recreates the tenant in `region` in bounded units of work: the tenant with its settings and rules, each user with
 * their mailbox (then its shared-mailbox mark and its settings document), each folder, items a page at a time, each
 * membership of a shared mailbox, the audit log a page at a time (each entry re-appended with `details.imported`),
 * and finally `tenant.imported`. A failure after the first write is a TenantImportFailed naming
 * what was created. Resuming a failed import is not supported: remove what it created and import again.
 */
export async function importTenant(store: Store, file: string, region: string, options: MoveOptions): Promise<ImportResult> {
  const { clock, progress = () => {} } = options;
  const pageSize = options.pageSize ?? DEFAULT_PAGE;
  const sealer = createKeySealer(options.serverSecret);
  const verified = await verifyExport(file);
  const source = verified.header.source;
  progress(`verified ${file}: tenant ${JSON.stringify(source.tenant.name)} of region ${source.region}, ${JSON.stringify(verified.counts)}`);

  const existing = (await store.tenants.list()).find((t) => t.id === source.tenant.id || t.name === source.tenant.name);
  if (existing) {
    throw new TenantMoveError(`refused: this store already has tenant ${JSON.stringify(existing.name)} (${existing.id}, region ${existing.region})`);
  }
  const taken: string[] = [];
  for (const username of verified.usernames) if (await store.users.byUsername(username)) taken.push(username);
  if (taken.length) throw new TenantMoveError(`refused: username(s) already in use in this store: ${taken.join(', ')}`);

  const created: ImportCreated = {
    users: [],
    folders: 0,
    items: 0,
    rules: 0,
    protectionKeys: 0,
    certificates: 0,
    documents: 0,
    sharedMailboxes: 0,
    sharedMailboxMembers: 0,
    mailboxSettings: 0,
    audit: 0,
  };
  // Old id → new id. Items only when an audit entry names them (a mailbox's item ids are not held).
  const ids = new Map<string, string>();
  // Users only: the access document's ids are mapped with this, never with another kind's.
  const userIds = new Map<string, string>();
  /** The keys read and not yet written (they come one after the other, and are written in one unit). */
  let keys: ProtectionKeyLine[] = [];
  /** Every key's retirement in the file, by certificate: what the target's keyring must show at the end. */
  const keyRetirement = new Map<string, number | null>();
  const mappedFolders = new Set<string>();
  let tenantId = '';
  let batch: Array<{ sourceId: string; item: NewItem }> = [];
  let batchBytes = 0;
  let audit: Array<Omit<AuditEntry, 'seq'>> = [];

  const flushItems = async () => {
    if (!batch.length) return;
    const units = batch;
    batch = [];
    batchBytes = 0;
    const now = clock.now();
    const newIds = await store.run(function* (tx) {
      const out: string[] = [];
      for (const u of units) out.push((yield* tx.items.create(u.item, now)).id);
      return out;
    });
    units.forEach((u, i) => verified.auditStrings.has(u.sourceId) && ids.set(u.sourceId, newIds[i]!));
    created.items += units.length;
    if (Math.floor(created.items / 1000) > Math.floor((created.items - units.length) / 1000)) progress(`imported ${created.items} items`);
  };
  /**
   * Inserts the keys in the file's order with rotateKey, which retires the active key at the new one's createdAt:
   * the file lists them so that this leaves each retired when it was and the same key active (verifyExport checked
   * it; the keyring is compared with the file once everything is written). Sealed with this server's secret.
   */
  const flushKeys = async () => {
    if (!keys.length) return;
    const records: ProtectionKeyRecord[] = keys.map((k) => ({
      id: newId(),
      tenantId,
      certificatePem: k.certificatePem,
      sealedPrivateKey: sealer.seal(k.privateKeyPem),
      createdAt: k.createdAt,
      retiredAt: null,
    }));
    keys = [];
    await store.run(function* (tx) {
      for (const record of records) yield* tx.protection.rotateKey(record);
    });
    created.protectionKeys += records.length;
  };
  const checkKeyring = async () => {
    const stored = await store.protection.keys(tenantId);
    const wrong = stored.filter((k) => !keyRetirement.has(k.certificatePem) || keyRetirement.get(k.certificatePem) !== k.retiredAt);
    if (stored.length !== keyRetirement.size || wrong.length) {
      throw new TenantMoveError(`the imported protection keys are not retired as the file says (${wrong.map((k) => k.id).join(', ') || 'a key is missing'})`);
    }
  };
  const flushAudit = async () => {
    if (!audit.length) return;
    const entries = audit;
    audit = [];
    await store.run(function* (tx) {
      for (const e of entries) yield* tx.audit.append(e);
    });
    created.audit += entries.length;
  };
  /** An audit value with every moved record's id replaced by its new one. */
  const mapIds = (value: unknown): unknown => {
    if (typeof value === 'string') return ids.get(value) ?? value;
    if (Array.isArray(value)) return value.map(mapIds);
    if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapIds(v)]));
    return value;
  };

  try {
    let sha256 = '';
    for await (const part of readExport(file)) {
      if ('header' in part) {
        const { tenant } = part.header.source;
        const made = await store.tenants.create(tenant.name, tenant.createdAt, region);
        created.tenant = made;
        tenantId = made.id;
        ids.set(tenant.id, made.id);
        continue;
      }
      if ('trailer' in part) {
        sha256 = part.trailer.sha256;
        break;
      }
      const r = part.record;
      if (r.record !== 'item') await flushItems();
      if (r.record !== 'audit') await flushAudit();
      if (r.record !== 'protectionKey') await flushKeys();
      switch (r.record) {
        case 'tenantSettings':
          await store.deviceAccess.setDefaultState(tenantId, r.defaultDeviceAccessState, clock.now());
          break;
        case 'deviceAccessRule': {
          const { rule } = r;
          const input = { field: rule.field, match: rule.match, value: rule.value, accessState: rule.accessState, description: rule.description };
          const made = await store.run(function* (tx) {
            const made = yield* tx.deviceAccess.createRule(tenantId, input, rule.createdAt);
            if (rule.updatedAt !== rule.createdAt) yield* tx.deviceAccess.updateRule(tenantId, made.id, input, rule.updatedAt);
            return made;
          });
          ids.set(rule.id, made.id);
          created.rules++;
          break;
        }
        case 'user': {
          const { user } = r;
          const now = clock.now();
          const made = await store.run(function* (tx) {
            // Checked again here: a user of that name may have been added since the check above.
            if (yield* tx.users.byUsername(user.username)) throw new TenantMoveError(`username ${user.username} is already in use in this store`);
            const made = yield* tx.users.create(
              { tenantId, username: user.username, email: user.email, displayName: user.displayName, role: user.role, passwordHash: user.passwordHash },
              user.createdAt,
            );
            // Also carries the source's last-changed time over.
            yield* tx.users.setDisabled(made.id, user.disabled, user.updatedAt);
            yield* tx.mailboxes.create(made.id, now);
            return made;
          });
          ids.set(user.id, made.id);
          userIds.set(user.id, made.id);
          created.users.push({ username: made.username, id: made.id });
          break;
        }
        case 'protectionConfig': {
          // Version 1 of the target's document (the source's version counted the source's changes).
          const put = await store.protection.putConfig(tenantId, JSON.stringify(r.doc), 0, clock.now());
          if (!put) throw new TenantMoveError('the new tenant has a protection document already');
          created.documents++;
          break;
        }
        case 'protectionKey':
          keys.push(r);
          keyRetirement.set(r.certificatePem, r.retiredAt);
          break;
        case 'userCertificate': {
          const { cert } = r;
          const added = await store.protection.addCertificate({ ...cert, id: newId(), tenantId, userId: userIds.get(cert.userId)! });
          if (!added) throw new TenantMoveError(`certificate ${cert.id} of user ${cert.userId} is already published for that user`);
          created.certificates++;
          break;
        }
        case 'sharedMailbox': {
          // Marked with its creation time at the source (the user record carried the user's own).
          const made = await store.sharedMailboxes.create(userIds.get(r.userId)!, r.createdAt);
          if (made.createdAt !== r.createdAt) throw new TenantMoveError(`the new user of shared mailbox ${r.userId} was shared already`);
          created.sharedMailboxes++;
          break;
        }
        case 'sharedMailboxMember': {
          const { fullAccess, sendAs, sendOnBehalf, createdAt, updatedAt } = r;
          const mailboxId = userIds.get(r.mailboxId)!;
          const memberId = userIds.get(r.memberId)!;
          await store.sharedMailboxes.putMember({ mailboxId, memberId, fullAccess, sendAs, sendOnBehalf, createdAt, updatedAt });
          created.sharedMailboxMembers++;
          break;
        }
        case 'mailboxSettings': {
          // Version 1 of the target's document, as for the tenant documents; its text as the source stored it.
          const put = await store.mailboxSettings.put(userIds.get(r.userId)!, JSON.stringify(r.doc), 0, clock.now());
          if (!put) throw new TenantMoveError(`the new mailbox of user ${r.userId} has settings already`);
          created.mailboxSettings++;
          break;
        }
        case 'accessConfig': {
          const doc = remapAccessUsers(r.doc, userIds);
          try {
            compileAccessConfig(doc, 1);
          } catch (err) {
            throw invalidDocument('access document (its user ids mapped)', err);
          }
          const put = await store.access.putConfig(tenantId, JSON.stringify(doc), 0, clock.now());
          if (!put) throw new TenantMoveError('the new tenant has an access document already');
          created.documents++;
          break;
        }
        case 'folder': {
          const { folder } = r;
          const userId = ids.get(folder.userId)!;
          const parentId = folder.parentId === null ? null : ids.get(folder.parentId)!;
          const now = clock.now();
          const targetId = await store.run(function* (tx) {
            if (folder.kind === 'mail') return (yield* tx.folders.create(userId, { displayName: folder.displayName, parentId }, now)).id;
            // A well-known folder: the new mailbox has it already; carry over a rename or a move.
            const target = yield* tx.folders.byKind(userId, folder.kind);
            if (!target) throw new TenantMoveError(`the new mailbox has no ${folder.kind} folder`);
            if (target.displayName !== folder.displayName || target.parentId !== parentId) {
              yield* tx.folders.update(userId, target.id, { displayName: folder.displayName, parentId }, now);
            }
            return target.id;
          });
          if (mappedFolders.has(targetId)) throw new TenantMoveError(`two folders of kind ${folder.kind} for user ${folder.userId}`);
          mappedFolders.add(targetId);
          ids.set(folder.id, targetId);
          created.folders++;
          break;
        }
        case 'item': {
          const item = newItemOf(r, ids.get(r.item.userId)!, ids.get(r.item.folderId)!);
          batch.push({ sourceId: r.item.id, item });
          batchBytes += (item.mime?.length ?? 0) + (item.attachments ?? []).reduce((n, a) => n + a.content.length, 0);
          if (batch.length >= pageSize || batchBytes >= IMPORT_UNIT_BYTES) await flushItems();
          break;
        }
        case 'audit': {
          const { entry } = r;
          // Ids of records that did not move (devices, deleted records) name nothing here: dropped, not carried.
          const mapped = (id: string | null) => (id === null ? null : (ids.get(id) ?? null));
          audit.push({
            tenantId,
            at: entry.at,
            actorId: mapped(entry.actorId),
            actorName: entry.actorName,
            action: entry.action,
            targetType: entry.targetType,
            targetId: mapped(entry.targetId),
            details: { ...(mapIds(entry.details) as Record<string, unknown>), imported: { region: source.region, seq: entry.seq } },
          });
          if (audit.length >= AUDIT_PAGE) await flushAudit();
          break;
        }
      }
    }
    await flushItems();
    await flushAudit();
    await flushKeys();
    await checkKeyring();
    if (sha256 !== verified.sha256) throw new TenantMoveError('the file changed while it was being imported');
    const tenant = created.tenant!;
    await store.audit.append({
      tenantId,
      at: clock.now(),
      actorId: null,
      actorName: 'system',
      action: 'tenant.imported',
      targetType: 'tenant',
      targetId: tenantId,
      details: { fromRegion: source.region, region, format: verified.header.version, exportedAt: verified.header.createdAt, sha256, counts: verified.counts },
    });
    return { tenant, sourceRegion: source.region, sha256, counts: verified.counts };
  } catch (err) {
    if (!created.tenant) throw err;
    throw new TenantImportFailed(created, err);
  }
}
