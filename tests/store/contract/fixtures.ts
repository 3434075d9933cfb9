/**
 * Fixtures for the store contract tests: records made through the public `Store` API only, with names no other
 * test uses (the tests of a file share one store), and recorders for the store's two feeds.
 */
import crypto from 'node:crypto';
import type {
  CommittedChange,
  DeviceDescription,
  Folder,
  Invalidation,
  NewItem,
  NewRefreshToken,
  NewUser,
  SortKey,
  Store,
  Tenant,
  User,
} from '../../../server/store/types';
import { STORE_BACKENDS, openTestStore, type StoreBackend, type TestStore } from '../../helpers/storeBackends';

export const NOW = Date.UTC(2026, 0, 1);
export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Below and above every item's sort key: `sync.range(LOWEST, HIGHEST)` is the whole folder. */
export const LOWEST: SortKey = { receivedAt: 0, id: '' };
export const HIGHEST: SortKey = { receivedAt: 8.64e15, id: '' };

/** A lower-case name no other test uses. */
export const unique = (prefix: string) => `${prefix}-${crypto.randomBytes(5).toString('hex')}`;

/**
 * `describe.each(STORE_BACKENDS)` with one store per backend for the block's tests, opened before them and closed
 * (its data deleted) after. `-t sqlite` or `-t postgres` runs one backend.
 */
export function eachBackend(name: string, body: (t: () => TestStore, backend: StoreBackend) => void): void {
  describe.each(STORE_BACKENDS)(`%s store: ${name}`, (backend) => {
    let opened: TestStore | undefined;
    beforeAll(async () => {
      opened = await openTestStore(backend, { name: name.toLowerCase().replace(/[^a-z0-9]+/g, '_').slice(0, 24) });
    });
    afterAll(async () => {
      await opened?.close();
    });
    body(() => {
      if (!opened) throw new Error(`the ${backend} store did not open (see the error of beforeAll)`);
      return opened;
    }, backend);
  });
}

export function newTenant(store: Store, now = NOW): Promise<Tenant> {
  return store.tenants.create(unique('tenant'), now);
}

export async function newUser(store: Store, fields: Partial<NewUser> = {}, now = NOW): Promise<User> {
  const tenantId = fields.tenantId ?? (await newTenant(store)).id;
  const username = fields.username ?? unique('user');
  return store.users.create(
    { tenantId, username, email: `${username}@example.test`, displayName: `User ${username}`, role: 'user', passwordHash: null, ...fields },
    now,
  );
}

export interface MailboxFixture {
  user: User;
  inbox: Folder;
  archive: Folder;
}

/** A user with a mailbox (and so its well-known folders). */
export async function newMailbox(store: Store, fields: Partial<NewUser> = {}, now = NOW): Promise<MailboxFixture> {
  const user = await newUser(store, fields, now);
  await store.mailboxes.create(user.id, now);
  const inbox = await store.folders.byKind(user.id, 'inbox');
  const archive = await store.folders.byKind(user.id, 'archive');
  if (!inbox || !archive) throw new Error('mailboxes.create made no inbox or archive');
  return { user, inbox, archive };
}

/** An unread email in `folderId`, received at `NOW` unless `fields` say otherwise. */
export function email(userId: string, folderId: string, fields: Partial<NewItem> = {}): NewItem {
  return { userId, folderId, type: 'email', receivedAt: NOW, subject: unique('subject'), ...fields };
}

export function token(userId: string, fields: Partial<NewRefreshToken> = {}): NewRefreshToken {
  return {
    id: unique('rt'),
    familyId: unique('family'),
    userId,
    deviceId: null,
    clientId: 'pigeon-app',
    scope: 'mail',
    tokenHash: crypto.randomBytes(32),
    createdAt: NOW,
    expiresAt: NOW + DAY,
    ...fields,
  };
}

export function description(fields: Partial<DeviceDescription> = {}): DeviceDescription {
  return {
    friendlyName: null,
    deviceType: null,
    deviceModel: null,
    deviceOS: null,
    clientType: null,
    clientVersion: null,
    userAgent: null,
    capabilities: [],
    ...fields,
  };
}

/** The folder without the optional mailbox state a backend may read with it (compare folders with this). */
export function folderRecord(folder: Folder | undefined): Omit<Folder, 'mailboxState'> | undefined {
  if (!folder) return undefined;
  const { mailboxState: _state, ...record } = folder;
  return record;
}

export async function highestModseq(store: Store, userId: string): Promise<number> {
  const mailbox = await store.mailboxes.get(userId);
  if (!mailbox) throw new Error(`no mailbox for ${userId}`);
  return mailbox.highestModseq;
}

/** What `onCommit` announced since `record` was called, until `stop()`. */
export function recordCommits(store: Store) {
  const changes: CommittedChange[] = [];
  const stop = store.onCommit((c) => changes.push(...c));
  return { changes, stop, of: (userId: string) => changes.filter((c) => c.userId === userId) };
}

/** What `onInvalidate` announced since `record` was called, until `stop()`; `distinct()` without repeats. */
export function recordInvalidations(store: Store) {
  const changes: Invalidation[] = [];
  const stop = store.onInvalidate((c) => changes.push(...c));
  const distinct = () => [...new Map(changes.map((c) => [JSON.stringify(c), c])).values()];
  return { changes, stop, distinct };
}

/** The rejection of `promise`, failing the test when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

export const sha256 = (bytes: Buffer) => crypto.createHash('sha256').update(bytes).digest('hex');

/** Sorted copy, for comparing lists whose order the contract does not fix. */
export const sorted = <T>(list: T[], key: (x: T) => string) => [...list].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));

/**
 * Asserts that two byte strings are equal. Buffer.equals rather than toEqual, which compares large buffers byte by
 * byte through its generic deep equality (seconds for a few hundred KiB); a failure names the first difference.
 */
export function expectBytes(actual: Buffer, expected: Buffer): void {
  if (Buffer.isBuffer(actual) && actual.equals(expected)) return;
  let at = 0;
  while (at < Math.min(actual.length, expected.length) && actual[at] === expected[at]) at++;
  expect({ length: actual.length, firstDifferenceAt: at }).toEqual({ length: expected.length, firstDifferenceAt: expected.length });
}

/**
 * Asserts that `promise` rejects (with anything carrying a message). Not `rejects.toThrow()`: jest loads a native
 * module's JavaScript once per test file but the addon once per process, so a SQLite error can come from another
 * file's realm, where it is no `Error` to jest.
 */
export async function expectRefusal(promise: Promise<unknown>): Promise<void> {
  await expect(promise).rejects.toHaveProperty('message');
}
