/**
 * The storage interface the services use. It speaks in domain records (camelCase, typed), never rows or SQL, so a
 * second backend (PostgreSQL, for deployments that outgrow one machine) can be added without touching a service.
 * All methods are synchronous: the SQLite backend is in-process, and a transaction must never span an `await`.
 */

export type Role = 'user' | 'admin';

export type FolderKind =
  | 'inbox'
  | 'drafts'
  | 'sentItems'
  | 'deletedItems'
  | 'junkEmail'
  | 'archive'
  | 'outbox'
  | 'calendar'
  | 'contacts'
  | 'mail';

export const WELL_KNOWN_FOLDERS: ReadonlyArray<{ kind: Exclude<FolderKind, 'mail'>; displayName: string }> = [
  { kind: 'inbox', displayName: 'Inbox' },
  { kind: 'drafts', displayName: 'Drafts' },
  { kind: 'sentItems', displayName: 'Sent Items' },
  { kind: 'deletedItems', displayName: 'Deleted Items' },
  { kind: 'junkEmail', displayName: 'Junk Email' },
  { kind: 'archive', displayName: 'Archive' },
  { kind: 'outbox', displayName: 'Outbox' },
  { kind: 'calendar', displayName: 'Calendar' },
  { kind: 'contacts', displayName: 'Contacts' },
];

export interface Tenant {
  id: string;
  name: string;
  createdAt: number;
}

export interface User {
  id: string;
  tenantId: string;
  username: string;
  email: string;
  displayName: string;
  role: Role;
  passwordHash: string | null;
  sessionVersion: number;
  disabled: boolean;
  createdAt: number;
  updatedAt: number;
}

export interface NewUser {
  tenantId: string;
  username: string;
  email: string;
  displayName: string;
  role: Role;
  passwordHash: string | null;
}

export interface RefreshTokenRecord {
  id: string;
  familyId: string;
  userId: string;
  deviceId: string | null;
  clientId: string;
  scope: string;
  tokenHash: Buffer;
  createdAt: number;
  expiresAt: number;
  rotatedAt: number | null;
  replacedBy: string | null;
  revokedAt: number | null;
  revokedReason: string | null;
}

export type NewRefreshToken = Omit<RefreshTokenRecord, 'rotatedAt' | 'replacedBy' | 'revokedAt' | 'revokedReason'>;

export interface Mailbox {
  userId: string;
  highestModseq: number;
  epoch: string;
}

export interface Folder {
  id: string;
  userId: string;
  parentId: string | null;
  displayName: string;
  kind: FolderKind;
  totalCount: number;
  unreadCount: number;
  modseq: number;
  createdAt: number;
}

export interface EmailAddress {
  name: string;
  address: string;
}

export type ItemType = 'email' | 'event' | 'contact';

export interface NewAttachment {
  name: string;
  contentType: string;
  isInline: boolean;
  contentId: string | null;
  content: Buffer;
}

export interface AttachmentRecord {
  id: string;
  blobId: string;
  name: string;
  contentType: string;
  size: number;
  isInline: boolean;
  contentId: string | null;
}

/** What a delivery, an import or a seed hands the store. */
export interface NewItem {
  userId: string;
  folderId: string;
  type: ItemType;
  receivedAt: number;
  subject: string;
  isRead?: boolean;
  isFlagged?: boolean;
  importance?: 'low' | 'normal' | 'high';
  categories?: string[];
  inferenceClassification?: 'focused' | 'other';
  from?: EmailAddress | null;
  to?: EmailAddress[];
  cc?: EmailAddress[];
  replyTo?: EmailAddress[];
  sentAt?: number | null;
  preview?: string;
  bodyText?: string | null;
  bodyHtml?: string | null;
  conversationId?: string | null;
  internetMessageId?: string | null;
  /** The raw RFC 5322 message, for email items. */
  mime?: Buffer | null;
  attachments?: NewAttachment[];
  /** Type-specific fields of events and contacts. */
  data?: Record<string, unknown>;
}

export interface Item {
  id: string;
  userId: string;
  folderId: string;
  type: ItemType;
  receivedAt: number;
  modseq: number;
  changeKey: string;
  isRead: boolean;
  isFlagged: boolean;
  importance: 'low' | 'normal' | 'high';
  categories: string[];
  inferenceClassification: 'focused' | 'other';
  subject: string;
  from: EmailAddress | null;
  to: EmailAddress[];
  cc: EmailAddress[];
  replyTo: EmailAddress[];
  sentAt: number | null;
  preview: string;
  hasAttachments: boolean;
  bodySize: number;
  conversationId: string | null;
  internetMessageId: string | null;
  mimeBlobId: string | null;
  data: Record<string, unknown>;
  createdAt: number;
}

export interface ConnectionPragmas {
  journalMode: string;
  synchronous: number;
  foreignKeys: number;
  busyTimeout: number;
}

export interface Store {
  /** Runs `fn` in one transaction (nested calls join the outer one). Never pass an async function. */
  transaction<T>(fn: () => T): T;
  /** Throws when the store cannot answer (readiness). */
  ping(): void;
  /** Checkpoints the WAL and closes every connection. */
  close(): void;
  /** The durability settings of every open connection (tests and /readyz check them). */
  connectionPragmas(): ConnectionPragmas[];

  tenants: {
    create(name: string, now: number): Tenant;
    get(id: string): Tenant | undefined;
  };

  users: {
    create(user: NewUser, now: number): User;
    byId(id: string): User | undefined;
    byUsername(username: string): User | undefined;
    list(): User[];
    count(): number;
    setPassword(id: string, passwordHash: string, now: number): void;
    /** Ends every access token issued before now (they carry the old version). */
    bumpSessionVersion(id: string, now: number): void;
  };

  refreshTokens: {
    insert(token: NewRefreshToken): void;
    byHash(hash: Buffer): RefreshTokenRecord | undefined;
    byId(id: string): RefreshTokenRecord | undefined;
    /** Marks `id` rotated into `replacedBy`; false when it was already rotated or revoked (a lost race). */
    markRotated(id: string, replacedBy: string, now: number): boolean;
    revokeFamily(familyId: string, reason: string, now: number): number;
    revokeAllForUser(userId: string, reason: string, now: number): number;
  };

  mailboxes: {
    /** Creates the user's mailbox and its well-known folders. */
    create(userId: string, now: number): Mailbox;
    get(userId: string): Mailbox | undefined;
  };

  folders: {
    listByUser(userId: string): Folder[];
    byKind(userId: string, kind: FolderKind): Folder | undefined;
  };

  items: {
    /** Stores an item (its blobs and attachments too), stamps the next modseq and logs the change. */
    create(item: NewItem, now: number): Item;
    byId(userId: string, id: string): Item | undefined;
    attachments(itemId: string): AttachmentRecord[];
  };
}
