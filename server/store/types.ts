/**
 * The storage interface the services use. It speaks in domain records (camelCase, typed), never rows or SQL, so the
 * two backends (SQLite, embedded; PostgreSQL, for deployments that outgrow one machine) serve the same services.
 *
 * The contract is asynchronous at the unit-of-work level (server/store/unit.ts):
 * - every method of `StoreMethods` is one transaction: `await store.items.update(...)` stamps the modseq, writes the
 *   change log and commits, or does nothing;
 * - a unit that reads and then writes (check a change key, then update) is a generator run by `store.run(unit)`: one
 *   transaction around it, in which each step is `yield* tx.items.byId(...)`. SQLite runs the whole unit
 *   synchronously inside BEGIN IMMEDIATE (its steps never yield), PostgreSQL awaits each step on one connection. A
 *   unit does nothing but compute and call `tx`: no other I/O, no clock, no await, so no transaction ever waits on
 *   application work.
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

/** The region of tenants created before regions, and of a node that names none (PIGEON_REGION). */
export const DEFAULT_REGION = 'default';

export interface Tenant {
  id: string;
  name: string;
  /**
   * The region whose store holds the tenant's data (README, "Regions"): a node serves one region, and refuses a store
   * holding a tenant of another. `default` for tenants created before regions.
   */
  region: string;
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
  purgedModseq: number;
  epoch: string;
}

export interface IdempotentResult {
  requestHash: string;
  status: number;
  body: string;
  createdAt: number;
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
  createdModseq: number;
  contentModseq: number;
  createdAt: number;
  /**
   * The folder's mailbox and hierarchy state as of the same read, when the store read them with the row (SQLite's
   * `folders.byId` does): with the row's `contentModseq`, all a no-change item-sync poll needs, in one statement.
   */
  mailboxState?: { mailbox: Mailbox; hierarchyState: string };
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
  /** Normalised subject of a message that carried no thread headers (subject threading looks it up). */
  threadSubject?: string | null;
}

/** The window's sort key: newest first by receivedAt, ties broken by id. */
export interface SortKey {
  receivedAt: number;
  id: string;
}

export interface AttachmentSummary {
  id: string;
  name: string;
  contentType: string;
  size: number;
  isInline: boolean;
  contentId: string | null;
}

/** The content of an event or a contact, as `items.replace` takes it. */
export interface ItemContent {
  subject: string;
  bodyText: string | null;
  receivedAt: number;
  data: Record<string, unknown>;
  /** When given, the item's attachments become exactly these (a contact's photo). */
  attachments?: NewAttachment[];
}

/** What an app may change on an item (protocol.md §6). */
export interface ItemPatch {
  isRead?: boolean;
  isFlagged?: boolean;
  categories?: string[];
  inferenceClassification?: 'focused' | 'other';
}

/** One entry of a folder's history after a modseq, for incremental sync. */
export interface FolderChange {
  modseq: number;
  objectId: string;
  /** `item`: the item is in the folder now (created, moved in or edited); else it left the folder. */
  kind: 'item' | 'deleted' | 'movedOut';
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
  attachments: AttachmentSummary[];
  placedModseq: number;
  data: Record<string, unknown>;
  createdAt: number;
}

/** One search result: the item and its relevance (higher is better). */
export interface SearchHit {
  itemId: string;
  score: number;
}

/** A sent message that still has remote recipients to relay through the smarthost. */
export interface OutboxEntry {
  id: string;
  userId: string;
  /** The message as composed (a blob, so it survives restarts and is shared with the Sent Items copy). */
  blobId: string;
  mailFrom: string;
  /** Addresses still to relay. */
  recipients: string[];
  state: 'queued' | 'sent' | 'failed';
  attempts: number;
  nextAttemptAt: number;
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
}

export type AccessState = 'allowed' | 'blocked' | 'quarantined';
export type WipeState = 'none' | 'pending' | 'acknowledged' | 'failed';
export const DEVICE_RULE_FIELDS = ['deviceType', 'deviceModel', 'deviceOS', 'userAgent', 'clientType'] as const;
export type DeviceRuleField = (typeof DEVICE_RULE_FIELDS)[number];

/** What an app says about itself when it registers (all optional, all free text). */
export interface DeviceDescription {
  friendlyName: string | null;
  deviceType: string | null;
  deviceModel: string | null;
  deviceOS: string | null;
  clientType: string | null;
  clientVersion: string | null;
  userAgent: string | null;
  capabilities: string[];
}

export interface DeviceRecord extends DeviceDescription {
  /** The record id: a device id alone is not unique across users. */
  id: string;
  userId: string;
  deviceId: string;
  adminDecision: AccessState | null;
  wipeState: WipeState;
  wipeRequestedAt: number | null;
  wipeRequestedBy: string | null;
  wipeAcknowledgedAt: number | null;
  /**
   * Bumped by an admin "resync", a change of the device's capabilities or of its view settings: sync tokens carrying
   * an older epoch answer 410 (reason `deviceReset`, or `viewChanged` when `resetReason` says the view changed).
   */
  epoch: number;
  /** Why the epoch last moved: `viewChanged` (a soft reset) or null (a reset of the device's sync state). */
  resetReason: DeviceResetReason | null;
  /** The view the app shows (Focused Inbox, conversations), stored per device; a change is a soft reset. */
  viewSettings: ViewSettings;
  firstSyncTime: number;
  lastSyncAttemptTime: number | null;
  lastSuccessSyncTime: number | null;
  createdAt: number;
  updatedAt: number;
}

export type DeviceResetReason = 'viewChanged';

/** Per-device view settings (README, "Mailbox views"). */
export interface ViewSettings {
  focusedInbox: boolean;
  threaded: boolean;
}

export const DEFAULT_VIEW_SETTINGS: ViewSettings = { focusedInbox: true, threaded: false };

/**
 * A device as the admin inventory sorts and filters it (issue 21): the columns its sort keys, `q` and the access rules
 * read, and the owner's username — a light read of a whole tenant's devices; the page's full records are read by id.
 */
export type DeviceInventoryRow = Pick<
  DeviceRecord,
  'id' | 'userId' | 'deviceId' | 'friendlyName' | 'deviceType' | 'deviceModel' | 'deviceOS' | 'clientType' | 'userAgent' | 'adminDecision' | 'wipeState' | 'firstSyncTime' | 'lastSuccessSyncTime'
> & { username: string };

export interface DeviceFilter {
  tenantId: string;
  userId?: string;
  clientType?: string;
  deviceModel?: string;
}

/** `DeviceFilter` and `q`: a substring of the friendly name, device id, model, owner's username or address (ASCII case folded). */
export interface DeviceInventoryFilter extends DeviceFilter {
  q?: string;
}

/** The inventory's orders the store can page (server/store/inventory.ts); `dir` -1 is descending. */
export interface DeviceInventorySort {
  key: 'lastSyncTime' | 'firstSyncTime' | 'friendlyName' | 'user' | 'deviceModel' | 'clientType';
  dir: 1 | -1;
}

export interface DeviceAccessRule {
  id: string;
  tenantId: string;
  field: DeviceRuleField;
  match: 'exact' | 'prefix';
  value: string;
  accessState: AccessState;
  description: string;
  createdAt: number;
  updatedAt: number;
}

export type DeviceAccessRuleInput = Pick<DeviceAccessRule, 'field' | 'match' | 'value' | 'accessState' | 'description'>;

export interface AuditEntry {
  seq: number;
  tenantId: string;
  at: number;
  actorId: string | null;
  actorName: string;
  action: string;
  targetType: string;
  targetId: string | null;
  details: Record<string, unknown>;
}

/** What one committed transaction changed in one mailbox: the feed push is built on. */
export interface CommittedChange {
  userId: string;
  /** The mailbox's highest modseq after the commit. */
  modseq: number;
  /** Folders whose items (and so whose sync state or counts) changed. */
  folderIds: string[];
  /** A folder was created, renamed, moved or deleted. */
  hierarchyChanged: boolean;
}

/**
 * What a committed write changed among the records the hot cache keeps (server/store/cached.ts): the user row, a
 * sign-in's live head, a device record, a tenant's access rules and default. `all`: a write the store cannot
 * attribute (raw SQL through a test handle).
 */
export type Invalidation =
  | { kind: 'user'; userId: string }
  | { kind: 'signIn'; familyId: string }
  | { kind: 'device'; userId: string; deviceId: string }
  | { kind: 'tenantAccess'; tenantId: string }
  | { kind: 'all' };

export interface ConnectionPragmas {
  journalMode: string;
  synchronous: number;
  foreignKeys: number;
  busyTimeout: number;
}

/** The store's infrastructure: feeds, health and shutdown. */
export interface StoreInfra {
  /** Which backend this is (metrics, /readyz, the bench report). */
  readonly backend: 'sqlite' | 'postgres';
  /**
   * Calls `listener` after every commit that changed mailboxes, once per mailbox, never before the commit and never
   * for a rolled-back transaction. SQLite: this store's own commits (other processes' reach push through the
   * cluster bus); PostgreSQL: every node's, the others' as their notifications arrive (LISTEN/NOTIFY). Returns the
   * unsubscribe function. Listeners must not throw or write.
   */
  onCommit(listener: (changes: CommittedChange[]) => void): () => void;
  /**
   * Calls `listener` with what every write to users, refresh tokens, devices, access rules or tenant settings
   * changed: after the transaction commits (never for a rolled-back one), and at once for a write made outside a
   * transaction. SQLite: only this store's own writes, another connection's show in `dataVersion`; PostgreSQL:
   * other nodes' writes too, as their notifications arrive (and `dataVersion` moves with each). Returns the
   * unsubscribe function. Listeners must not throw or write.
   */
  onInvalidate(listener: (changes: Invalidation[]) => void): () => void;
  /**
   * A number that changes whenever another connection (another process, another node, or another store over the
   * same file) commits, and never for this store's own commits. SQLite: one cheap statement; PostgreSQL: a count of
   * the other nodes' commit notifications.
   */
  dataVersion(): Promise<number>;
  /** Rejects when the store cannot answer (readiness). */
  ping(): Promise<void>;
  /** Finishes (SQLite: checkpoints the WAL) and closes every connection. */
  close(): Promise<void>;
  /** The durability settings of every open connection (tests and /readyz check them). */
  connectionPragmas(): Promise<ConnectionPragmas[]>;
  /**
   * Runs `fn` unless `task` is running elsewhere: what must happen once across every node sharing the data (the
   * purges, the outbox relay). PostgreSQL: an advisory lock named after `task`, taken on a session of its own, held
   * while `fn` runs and released after; a node that dies loses it with its session. Answers `{ ran: false }` at once
   * when another node (or this one) holds it, or, with `wait`, waits for it. SQLite: one process per file runs these
   * jobs (server/cluster.ts names the leader), so `fn` runs; a second call for a task still running in this store is
   * `{ ran: false }` all the same. `fn`'s rejection is this call's.
   */
  exclusive<T>(task: string, fn: () => Promise<T>, options?: { wait?: boolean }): Promise<Exclusive<T>>;
}

/** What `exclusive` did: ran `fn` (and what it answered), or left it to whoever holds the task. */
export type Exclusive<T> = { ran: true; value: T } | { ran: false };

/**
 * The domain operations, written as plain signatures: the SQLite backend implements them synchronously; the store
 * offers them as promises (`Store`) and, inside a unit of work, as steps (`TxStore`, server/store/unit.ts).
 */
/** One record of the identity provider (oidc-provider's adapter contract, with times in ms). */
export interface IdentityRecord {
  model: string;
  id: string;
  payload: Record<string, unknown>;
  grantId: string | null;
  userCode: string | null;
  uid: string | null;
  expiresAt: number | null;
  consumedAt: number | null;
}

// Conditional access, device compliance and app protection (server/access/).

/**
 * A tenant's access configuration: conditional-access policies, named locations, groups, approved client apps and
 * app protection policies, as one JSON document (server/access/config.ts validates it). One document, one version:
 * a change is a compare-and-set on the version, and the evaluator compiles it once per version.
 */
export interface AccessConfigRecord {
  tenantId: string;
  version: number;
  /** The document, as JSON text (validated before it is stored). */
  doc: string;
  updatedAt: number;
}

export type ComplianceState = 'compliant' | 'noncompliant' | 'unknown';

/** What a compliance partner (an MDM) last said of one device of one user. Kept even before the app registers. */
export interface DeviceCompliance {
  tenantId: string;
  userId: string;
  deviceId: string;
  state: ComplianceState;
  reasons: string[];
  /** When the partner's statement lapses (the state reads `unknown` after it); null: until replaced. */
  expiresAt: number | null;
  /** The partner that said it. */
  partner: string;
  /** When the device last turned noncompliant (kept while it stays so): the grace period counts from here. */
  noncompliantSince: number | null;
  updatedAt: number;
}

export type SelectiveWipeState = 'none' | 'pending' | 'acknowledged';

/** An app installation's standing against its app protection policy: its check-ins and any selective wipe. */
export interface AppProtectionState {
  tenantId: string;
  userId: string;
  deviceId: string;
  /** The policy and its ETag the app last checked in against. */
  policyId: string | null;
  policyEtag: string | null;
  appVersion: string | null;
  osVersion: string | null;
  lastCheckInAt: number | null;
  /** PIN failures the app reported at its last check-in. */
  pinFailures: number;
  /** Violations the app reported (e.g. `jailbroken`), latest check-in. */
  violations: string[];
  selectiveWipe: SelectiveWipeState;
  selectiveWipeReason: string | null;
  selectiveWipeRequestedAt: number | null;
  selectiveWipeAcknowledgedAt: number | null;
  updatedAt: number;
}

export type SignInKind = 'interactive' | 'refresh' | 'password' | 'failure';

/** One sign-in (or refused sign-in, or failed password) with how each policy judged it. */
export interface SignInLogEntry {
  id: string;
  tenantId: string;
  userId: string;
  at: number;
  kind: SignInKind;
  clientId: string | null;
  deviceId: string | null;
  ip: string | null;
  /** The sign-in session it started or renewed (the grant id), when one was issued. */
  sessionId: string | null;
  /** How the user proved who they are (OIDC `amr`: pwd, otp, mfa, x509, ...); `mfa` among them satisfies MFA. */
  authMethods: string[];
  riskLevel: 'none' | 'low' | 'medium' | 'high';
  riskScore: number;
  /** The risk signals that fired, with their weights. */
  riskSignals: Array<{ signal: string; weight: number }>;
  /** Each policy's result (server/access/policies.ts PolicyResult), as stored. */
  policyResults: unknown[];
  /** allow, block, needs (an interactive control was asked for), failure (a wrong password). */
  decision: 'allow' | 'block' | 'needs' | 'failure';
  /** Why, in words, when not allowed. */
  reason: string | null;
}

export interface SignInLogFilter {
  tenantId: string;
  userId?: string;
  decision?: SignInLogEntry['decision'];
  clientId?: string;
  deviceId?: string;
  /** Entries at or after this time. */
  since?: number;
  /** Entries strictly older than this (at, id) position: the next page. */
  before?: { at: number; id: string };
  limit: number;
}

/** An administrator's word on a user's risk: confirmed (treat as high) or dismissed (clear what was computed). */
export interface UserRisk {
  userId: string;
  state: 'confirmed' | 'dismissed';
  at: number;
  by: string;
}

export interface MfaEnrollment {
  userId: string;
  sealedSecret: string;
  enrolledAt: number;
  /** The time step of the last code accepted (a code is good once). */
  lastStep: number | null;
  /** Recovery codes not used yet. */
  recoveryCodesLeft: number;
}

// Information protection (server/protection/).

/**
 * One of a tenant's protection keys: an RSA key pair whose certificate protected content is encrypted for (CMS
 * EnvelopedData) and whose key signs use licences. The newest unretired key protects new content; retired keys are
 * kept so everything protected before a rotation stays readable.
 */
export interface ProtectionKeyRecord {
  id: string;
  tenantId: string;
  /** The key's self-signed X.509 certificate, PEM. */
  certificatePem: string;
  /** The PKCS#8 private key, sealed with the server secret (never stored in the clear). */
  sealedPrivateKey: string;
  createdAt: number;
  /** When a newer key replaced it; null for the active key. */
  retiredAt: number | null;
}

/** A tenant's protection document (templates, labels, label policy, partners, delivery rules) under a version. */
export interface ProtectionConfigRecord {
  tenantId: string;
  version: number;
  /** The document, as JSON text (validated before it is stored). */
  doc: string;
  updatedAt: number;
}

/** An S/MIME certificate a user published in the directory, so senders can encrypt to them. */
export interface UserCertificate {
  id: string;
  tenantId: string;
  userId: string;
  /** The address the certificate names (lower case); lookups are by it. */
  email: string;
  certificatePem: string;
  /** SHA-256 of the DER, lower-case hex: one user publishes a certificate once. */
  fingerprint: string;
  notBefore: number;
  notAfter: number;
  createdAt: number;
}

// The directory (server/directory/): a tenant's people, their directory facts and org chart, and who each user writes to.

/** What the directory says of a user besides the user row, as an administrator (or an import) set it. */
export interface DirectoryEntry {
  tenantId: string;
  userId: string;
  title: string | null;
  department: string | null;
  office: string | null;
  /** The business phone. */
  phone: string | null;
  mobile: string | null;
  /** A user of the same tenant. The manager relation never forms a cycle: the service refuses a change making one. */
  managerId: string | null;
  /** Left out of people search and of other people's org charts; `people/{id}` answers 404. */
  hiddenFromDirectory: boolean;
  updatedAt: number;
}

/** A user of the tenant with their directory entry (null: none was ever set, so no facts and not hidden). */
export interface DirectoryPerson {
  user: User;
  entry: DirectoryEntry | null;
}

/** An address a user sent mail to: how many messages and when last, and the name it was last written with. */
export interface FrequentContact {
  /** Lower case. */
  address: string;
  name: string | null;
  count: number;
  lastSentAt: number;
}

/**
 * How a person matched a search, best first: a name word (or the whole name) is the query (`exactName`), one starts
 * with it (`name`), or only the address or a part of its local part does (`email`).
 */
export type PeopleMatchKind = 'exactName' | 'name' | 'email';

/**
 * A mailbox's own settings (automatic replies, junk lists, Focused Inbox sender overrides): one JSON document per
 * mailbox, versioned for compare-and-set like the tenant documents. The document's shape is
 * server/mailbox/settings.ts's; the store keeps its text.
 */
export interface MailboxSettingsRecord {
  userId: string;
  /** 1 for the first stored document, +1 on each change. */
  version: number;
  doc: string;
  updatedAt: number;
}

/**
 * One automatic reply owed or sent: at most one per (mailbox, period, sender). `period` names one stretch of
 * automatic replies being on (server/mailbox/settings.ts makes a new one whenever they are turned on or rescheduled).
 */
export interface AutoReplyRecord {
  id: string;
  userId: string;
  period: string;
  /** The sender answered, lower-cased. */
  sender: string;
  /** The delivered message that is answered (an item id of `userId`). */
  itemId: string;
  state: 'pending' | 'sent' | 'skipped';
  createdAt: number;
  updatedAt: number;
}

/** What a member may do with a shared mailbox. */
export interface SharedMailboxRights {
  fullAccess: boolean;
  sendAs: boolean;
  sendOnBehalf: boolean;
}

export interface SharedMailboxMember extends SharedMailboxRights {
  mailboxId: string;
  memberId: string;
  createdAt: number;
  updatedAt: number;
}

/** A shared mailbox: a user row that cannot sign in (no password, `sharedMailboxes.isShared`), and its members. */
export interface SharedMailbox {
  user: User;
  createdAt: number;
}

/** A conversation's sort key within a folder: newest first by its latest message, ties broken by conversation id. */
export interface ConversationKey {
  latestReceivedAt: number;
  conversationId: string;
}

/**
 * A conversation as one folder holds it: the aggregate of the folder's messages with that conversation id (a message
 * without one is a conversation of its own, its id the item id). The store keeps these rows current by itself
 * (triggers on `items`): every change to a message stamps its conversation row with the mailbox's modseq of that
 * change. A conversation that no longer has a message in the folder stays as a tombstone (`messageCount` 0) until the
 * history horizon purges it, so sync can say it left.
 */
export interface ConversationRecord extends ConversationKey {
  userId: string;
  folderId: string;
  /** The newest message's item id (0 messages: the last one it had). */
  latestItemId: string;
  messageCount: number;
  unreadCount: number;
  flaggedCount: number;
  hasAttachments: boolean;
  /** `high` when any message is, else `normal` (low only when every message is low). */
  importance: 'low' | 'normal' | 'high';
  /** Distinct senders, newest message first, at most 10. */
  participants: EmailAddress[];
  /** The mailbox modseq of the last change to the row. */
  modseq: number;
}

/**
 * One person found by `directory.search`: a user of the tenant (with how often the caller wrote to them, if ever),
 * or an address outside the tenant's users that the caller wrote to (`external`).
 */
export type PeopleMatch =
  | { kind: 'user'; person: DirectoryPerson; match: PeopleMatchKind; frequent: FrequentContact | null }
  | { kind: 'external'; contact: FrequentContact; match: PeopleMatchKind };

/**
 * A diagnostics incident: a log bundle a device uploaded (server/diagnostics/), stored as a zip blob of the user's
 * until `expiresAt` (PIGEON_DIAGNOSTICS_RETENTION).
 */
export interface DiagnosticIncident {
  /** `PGN-XXXX-XXXX`, canonical (server/diagnostics/incidentId.ts). */
  id: string;
  tenantId: string;
  userId: string;
  /** The device record at upload time (the record may since have been purged; the zip keeps a copy of it). */
  deviceRecordId: string | null;
  /** The app's `X-Device-Id`. */
  deviceId: string;
  /** The stored zip, a blob of `userId`'s that this row keeps referenced. */
  blobId: string;
  /** Bytes of the stored zip. */
  size: number;
  /** Entries in the stored zip (the app's files and the server's attachments). */
  entries: number;
  /** Secrets scrubbed out of what was stored (the app's files and the server's attachments). */
  redactions: number;
  createdAt: number;
  expiresAt: number;
}


// Background push (server/push/background/): channels a device registered at a gateway, the outbox the committing
// transaction writes, the delivery queue and the calendar reminders due.

export type PushChannelKind = 'webpush' | 'apns' | 'fcm';
/** What a channel is sent; every kind by default. */
export type PushEventKind = 'sync' | 'newMail' | 'badge' | 'reminder';
export const PUSH_EVENT_KINDS: readonly PushEventKind[] = ['sync', 'newMail', 'badge', 'reminder'];

/**
 * A background push channel of one device: a Web Push subscription (endpoint and keys), an APNs device token or an
 * FCM registration token. `(kind, address)` names it at the gateway: registering the same address again (by this
 * or any other device or user) replaces the old row, so a token that moved to another account stops getting the
 * first one's mail.
 */
export interface PushChannelRecord {
  id: string;
  tenantId: string;
  userId: string;
  /** The device record (devices.id) that registered it; removing the device removes the channel. */
  deviceRecordId: string;
  /** The app's `X-Device-Id` (for logs and the admin). */
  deviceId: string;
  /** The OAuth client of the sign-in that registered it: which app protection policy decides what a notification shows. */
  clientId: string;
  /** The user's session version at registration: a sign-out everywhere (or a password reset) silences the channel. */
  sessionVersion: number;
  kind: PushChannelKind;
  /** Web Push: the endpoint URL; APNs: the device token (hex); FCM: the registration token. */
  address: string;
  /** Web Push: `{p256dh, auth}` (base64url); APNs: `{topic, environment}`; FCM: `{}`. */
  keys: Record<string, string>;
  events: PushEventKind[];
  createdAt: number;
  updatedAt: number;
  lastSuccessAt: number | null;
  /** Consecutive failed attempts (reset by a success). */
  failures: number;
}

export type NewPushChannel = Omit<PushChannelRecord, 'id' | 'createdAt' | 'updatedAt' | 'lastSuccessAt' | 'failures'>;

/**
 * A mailbox that changed since background push last looked at it: written by the committing transaction itself
 * (the store, for users that have a channel), so no change is lost to a crash between the commit and the push.
 * Changes coalesce: one row per user, spanning modseqs `(fromModseq, toModseq]`.
 */
export interface PushOutboxEntry {
  userId: string;
  /** The mailbox's modseq before the first change not yet looked at. */
  fromModseq: number;
  toModseq: number;
  /** When the first of these changes committed (ms): latency is measured from here. */
  createdAt: number;
}

/**
 * One message queued for one channel. `(channelId, collapseKey)` is unique: a newer message with the same key
 * replaces a queued one (coalescing), and a message replaced while it was being sent gets a new id, so the sender's
 * completion (which names the id it sent) leaves the newer one queued.
 */
export interface PushDeliveryRecord {
  /** Unique per message and kept across retries: the gateway's message id (apns-id), so a resend is recognisable. */
  id: string;
  userId: string;
  channelId: string;
  collapseKey: string;
  /** The PushMessage (server/push/gateways/types.ts) as JSON, without its id (the row's id is the message's). */
  message: Record<string, unknown>;
  state: 'queued' | 'sending';
  attempts: number;
  /** Not to be tried before this time (backoff, Retry-After, rate limits). */
  notBefore: number;
  /** While `sending`: until when the claim holds; after it, another drainer may claim the message again. */
  leaseUntil: number | null;
  /** The commit the message is about (ms): outbox entry's createdAt, or the reminder's due time. */
  originAt: number;
  createdAt: number;
}

export type NewPushDelivery = Pick<PushDeliveryRecord, 'id' | 'userId' | 'channelId' | 'collapseKey' | 'message' | 'notBefore' | 'originAt'>;

/** A claimed delivery with its channel (as it is now). */
export interface ClaimedPushDelivery {
  delivery: PushDeliveryRecord;
  channel: PushChannelRecord;
}

/**
 * A calendar reminder due: one per event (the next occurrence's reminder; recurring events are rescheduled after
 * each). `sentAt` set: the row's own reminder went out (the event has no later occurrence to move on to).
 */
export interface PushReminderRecord {
  userId: string;
  itemId: string;
  /** The occurrence's start (ms) and the reminder's due time (start minus the event's reminder minutes). */
  occurrenceStart: number;
  dueAt: number;
  sentAt: number | null;
  /**
   * The last reminder of the event that went out, while its occurrence has not ended: it is on the device's screen,
   * so a change that withdraws that occurrence owes a cancellation. For a recurring event this is the occurrence
   * before the row's pending one; for a sent row, the row's own.
   */
  shown: ShownReminder | null;
}

export interface ShownReminder {
  occurrenceStart: number;
  dueAt: number;
  /** When the occurrence ends (ms): after it, nothing is owed. */
  until: number;
}

export interface StoreMethods {
  tenants: {
    /** A tenant of `region` (`default` when not given). */
    create(name: string, now: number, region?: string): Tenant;
    get(id: string): Tenant | undefined;
    /** Every tenant, oldest first (a store has few). */
    list(): Tenant[];
    /** Relabels the tenant's region (`region adopt`); false when there is no such tenant. */
    setRegion(id: string, region: string): boolean;
  };

  users: {
    create(user: NewUser, now: number): User;
    byId(id: string): User | undefined;
    byUsername(username: string): User | undefined;
    /** Users whose address is `email` (case-insensitive). */
    byEmail(email: string): User[];
    list(): User[];
    count(): number;
    setPassword(id: string, passwordHash: string, now: number): void;
    /** Ends every access token issued before now (they carry the old version). */
    bumpSessionVersion(id: string, now: number): void;
    /** A disabled user's access tokens are refused at once and no grant succeeds. */
    setDisabled(id: string, disabled: boolean, now: number): void;
  };

  refreshTokens: {
    insert(token: NewRefreshToken): void;
    byHash(hash: Buffer): RefreshTokenRecord | undefined;
    byId(id: string): RefreshTokenRecord | undefined;
    /** Marks `id` rotated into `replacedBy`; false when it was already rotated or revoked (a lost race). */
    markRotated(id: string, replacedBy: string, now: number): boolean;
    revokeFamily(familyId: string, reason: string, now: number): number;
    revokeAllForUser(userId: string, reason: string, now: number): number;
    /** Every live refresh token of every sign-in that was ever bound to this device of this user. */
    revokeForDevice(userId: string, deviceId: string, reason: string, now: number): number;
    /**
     * The sign-in's current token when the sign-in is live (neither revoked nor expired), with the device it is
     * bound to; undefined when it has ended. Checked on every API call, so access tokens die with their sign-in.
     */
    liveHead(userId: string, familyId: string, now: number): { deviceId: string | null; expiresAt: number } | undefined;
    /**
     * Moves the live sign-in's expiry to `expiresAt` when that is later (a sign-in of the identity provider slides
     * with each refresh); answers whether it moved.
     */
    extend(familyId: string, expiresAt: number): boolean;
    /** The sign-in's current token (neither revoked nor rotated), expired or not: `liveHead` without the clock. */
    head(userId: string, familyId: string): { deviceId: string | null; expiresAt: number } | undefined;
  };

  devices: {
    byId(id: string): DeviceRecord | undefined;
    byUserAndDeviceId(userId: string, deviceId: string): DeviceRecord | undefined;
    listByUser(userId: string): DeviceRecord[];
    countByUser(userId: string): number;
    /** Devices of a tenant with their owner's username, for the admin inventory. */
    list(filter: DeviceFilter): Array<DeviceRecord & { username: string }>;
    /** `list`'s devices as DeviceInventoryRow, in no particular order (the admin inventory sorts and pages them). */
    inventoryRows(filter: DeviceFilter): DeviceInventoryRow[];
    /**
     * One page of the inventory in `sort`'s order (NULL first ascending, text keys ASCII case folded, ties by record
     * id, all reversed descending): at most `limit` rows after `after` (the last row's key as `sort` reads it, and
     * its id). server/store/inventory.ts.
     */
    inventoryPage(filter: DeviceInventoryFilter, sort: DeviceInventorySort, after: { k: string | number | null; id: string } | undefined, limit: number): DeviceInventoryRow[];
    /** How many devices `inventoryPage` pages through for `filter`. */
    inventoryCount(filter: DeviceInventoryFilter): number;
    create(userId: string, deviceId: string, description: DeviceDescription, now: number): DeviceRecord;
    updateDescription(id: string, description: DeviceDescription, now: number): void;
    setAdminDecision(id: string, decision: AccessState | null, now: number): void;
    setWipe(id: string, state: WipeState, fields: { requestedAt?: number; requestedBy?: string; acknowledgedAt?: number }, now: number): void;
    /** A reset of the device's sync state (its tokens answer 410 deviceReset); clears `resetReason`. */
    bumpEpoch(id: string, now: number): void;
    /**
     * Stores the device's view settings and, when they differ from the stored ones, bumps its epoch with
     * `resetReason = 'viewChanged'` (a soft reset) — both in one write. Answers the record as it is now, or undefined
     * when there is no such device.
     */
    setViewSettings(id: string, settings: ViewSettings, now: number): DeviceRecord | undefined;
    /** Last-seen times; callers coalesce, this only writes. */
    touch(id: string, attemptAt: number, successAt: number | null): void;
    delete(id: string): void;
    /** Devices whose last activity is before `cutoff`, except those with a wipe pending. */
    inactiveSince(cutoff: number): DeviceRecord[];
  };

  deviceAccess: {
    rules(tenantId: string): DeviceAccessRule[];
    rule(tenantId: string, id: string): DeviceAccessRule | undefined;
    createRule(tenantId: string, input: DeviceAccessRuleInput, now: number): DeviceAccessRule;
    updateRule(tenantId: string, id: string, input: DeviceAccessRuleInput, now: number): DeviceAccessRule | undefined;
    deleteRule(tenantId: string, id: string): boolean;
    defaultState(tenantId: string): AccessState;
    setDefaultState(tenantId: string, state: AccessState, now: number): void;
  };

  audit: {
    append(entry: Omit<AuditEntry, 'seq'>): AuditEntry;
    list(tenantId: string, options: { limit: number; beforeSeq?: number }): AuditEntry[];
  };

  mailboxes: {
    /** Creates the user's mailbox and its well-known folders. */
    create(userId: string, now: number): Mailbox;
    get(userId: string): Mailbox | undefined;
    /** A new epoch: every sync token of the mailbox answers 410 mailboxReset (e.g. after restoring a backup). */
    resetEpoch(userId: string): Mailbox;
    /** Deletes change-log rows (tombstones) older than `before`; returns how many went. */
    purgeHistory(before: number): number;
  };

  folders: {
    listByUser(userId: string): Folder[];
    byId(userId: string, id: string): Folder | undefined;
    byKind(userId: string, kind: FolderKind): Folder | undefined;
    create(userId: string, input: { displayName: string; parentId: string | null }, now: number): Folder;
    update(userId: string, id: string, input: { displayName?: string; parentId?: string | null }, now: number): Folder;
    /** Deletes a folder, its subfolders and their items, each leaving its tombstone. */
    delete(userId: string, id: string, now: number): { folders: number; items: number };
    /** Folders changed after the cursor (modseq, id), in that order. */
    changedSince(userId: string, after: { modseq: number; id: string }, limit: number): Folder[];
    /** Folder tombstones after a modseq, in order. */
    deletedSince(userId: string, afterModseq: number, limit: number): Array<{ modseq: number; id: string }>;
    /** Changes whenever any folder is created, renamed, moved, recounted or deleted (an opaque string). */
    hierarchyState(userId: string): string;
    /**
     * The mailbox, and whether any folder changed after the cursor (modseq, id) or was deleted after its modseq: a
     * no-change hierarchy poll in one statement. Undefined when the user has no mailbox.
     */
    hierarchyPoll(userId: string, after: { modseq: number; id: string }): { mailbox: Mailbox; changed: boolean } | undefined;
  };

  items: {
    /** Stores an item (its blobs and attachments too), stamps the next modseq and logs the change. */
    create(item: NewItem, now: number): Item;
    byId(userId: string, id: string): Item | undefined;
    byIds(userId: string, ids: string[]): Item[];
    body(userId: string, id: string): { text: string | null; html: string | null } | undefined;
    attachments(userId: string, itemId: string): AttachmentRecord[];
    /**
     * The id of an item in `folderId` that is the same message: the same Message-ID or, for a message without one,
     * the same bytes (`mimeSha256`); only items created at or after `createdSince` count.
     */
    findDuplicate(
      userId: string,
      folderId: string,
      key: { internetMessageId: string | null; mimeSha256: string },
      createdSince: number,
    ): string | undefined;
    /** The conversation of the newest of the user's items whose Message-ID is one of `messageIds`. */
    conversationByMessageIds(userId: string, messageIds: string[]): string | undefined;
    /** The conversation of the newest item with this thread subject received within [from, to]. */
    conversationBySubject(userId: string, threadSubject: string, from: number, to: number): string | undefined;
    update(userId: string, id: string, patch: ItemPatch, now: number): Item;
    /**
     * Replaces an event's or a contact's content (what its own API edits): subject, body text, sort time, data and,
     * when `attachments` is given, all its attachments. Stamps the next modseq and a new change key, logs the change
     * in its folder and re-indexes it for search, as `update` does.
     */
    replace(userId: string, id: string, content: ItemContent, now: number): Item;
    move(userId: string, id: string, folderId: string, now: number): Item;
    delete(userId: string, id: string, now: number): void;
    /**
     * The user's mail from `address` (compared case-insensitively), newest first, at most `limit`; in `folderIds`
     * only when given. An index range scan (Focused Inbox applies a sender override to existing mail with it).
     */
    fromSender(userId: string, address: string, limit: number, folderIds?: string[]): Item[];
    /** Whether one of the user's contacts has this e-mail address (case-insensitive). */
    hasContactAddress(userId: string, address: string): boolean;
  };

  /**
   * The reads incremental sync is made of; each is an index range scan. They name the mailbox (`userId`, which the
   * caller has checked owns the folder): PostgreSQL's tables are keyed by it (its distribution key, see
   * schema/postgres/README.md); SQLite's folder ids are unique on their own.
   */
  sync: {
    /** The folder's history after (modseq, id) among items with sort key ≥ `lower`, in modseq order. */
    changes(userId: string, folderId: string, after: number, lower: SortKey, limit: number): FolderChange[];
    /** The sort key of the `size`-th newest item, or undefined when the folder has fewer items. */
    boundary(userId: string, folderId: string, size: number): SortKey | undefined;
    /** Items with `from` ≤ key < `to`, ascending (evictions) or descending (pull-ins). */
    range(userId: string, folderId: string, from: SortKey, to: SortKey, order: 'asc' | 'desc', limit: number): Item[];
  };

  /**
   * Content-addressed blobs (raw messages, attachments) of a mailbox, read in ranges so downloads stream. SQLite
   * keeps one copy per content for the whole file; PostgreSQL one per mailbox (its rows are keyed by the mailbox).
   */
  blobs: {
    size(userId: string, id: string): number | undefined;
    /** Bytes [start, end) of the blob. */
    read(userId: string, id: string, start: number, end: number): Buffer;
    /** Stores the bytes (once per content) and returns the blob id; only a row that references it keeps it. */
    put(userId: string, bytes: Buffer, now: number): string;
  };

  search: {
    /** Items of `userId` matching every term (the last as a prefix), best first. */
    query(userId: string, terms: string[], options: { folderId?: string; limit: number }): SearchHit[];
  };

  outbox: {
    enqueue(entry: { userId: string; blobId: string; mailFrom: string; recipients: string[] }, now: number): OutboxEntry;
    byId(id: string): OutboxEntry | undefined;
    /** Queued entries whose next attempt is due, oldest first. */
    due(now: number, limit: number): OutboxEntry[];
    /** When the next queued entry is due, if any. */
    nextDueAt(): number | undefined;
    update(
      id: string,
      fields: Partial<Pick<OutboxEntry, 'recipients' | 'state' | 'attempts' | 'nextAttemptAt' | 'lastError'>>,
      now: number,
    ): OutboxEntry;
    list(userId: string): OutboxEntry[];
    /** Deletes finished entries last updated before `before`; returns how many. */
    purge(before: number): number;
  };

  /**
   * The built-in identity provider's records (server/identity/adapter.ts): oidc-provider's models — browser sessions,
   * interactions, authorization and device codes, grants, refresh tokens — each a JSON payload under (model, id).
   */
  identityRecords: {
    upsert(record: IdentityRecord): void;
    /** The record, expired or not (the caller compares `expiresAt` with its clock). */
    find(model: string, id: string): IdentityRecord | undefined;
    findByUid(model: string, uid: string): IdentityRecord | undefined;
    findByUserCode(model: string, userCode: string): IdentityRecord | undefined;
    /** Marks a code or token used; a second use is the provider's to detect (`consumedAt` is set). */
    consume(model: string, id: string, now: number): void;
    destroy(model: string, id: string): void;
    /** Deletes every record of the grant (all models); answers how many. */
    revokeByGrantId(grantId: string): number;
    /** Deletes records that expired before `now`, at most `limit`; answers how many. */
    purgeExpired(now: number, limit: number): number;
  };

  /** TOTP multi-factor of a user (server/identity/mfa.ts seals the secret and hashes the recovery codes). */
  mfa: {
    get(userId: string): MfaEnrollment | undefined;
    /** Enrols the user (replacing an earlier enrolment and all its recovery codes). */
    enroll(userId: string, sealedSecret: string, recoveryCodeHashes: string[], now: number): void;
    /** Records that a code of time step `step` was used; false when that step or a later one was used already. */
    useStep(userId: string, step: number): boolean;
    /** Uses up a recovery code; false when the user has no such unused code. */
    useRecoveryCode(userId: string, codeHash: string, now: number): boolean;
    /** Removes the enrolment and its recovery codes ("reset MFA"); false when there was none. */
    remove(userId: string): boolean;
  };

  /** Conditional access, compliance, app protection and the sign-in log (server/access/). */
  access: {
    config(tenantId: string): AccessConfigRecord | undefined;
    /**
     * Replaces the tenant's document when its version is still `expectedVersion` (0: none stored yet); answers the
     * new record, or undefined when another change came first (the caller reads again and retries or reports 409).
     */
    putConfig(tenantId: string, doc: string, expectedVersion: number, now: number): AccessConfigRecord | undefined;
    compliance(tenantId: string, userId: string, deviceId: string): DeviceCompliance | undefined;
    /** Inserts or replaces (keyed by tenant, user, device). */
    setCompliance(record: DeviceCompliance): void;
    appState(tenantId: string, userId: string, deviceId: string): AppProtectionState | undefined;
    /** Inserts or replaces (keyed by tenant, user, device). */
    putAppState(state: AppProtectionState): void;
    /** App states with a check-in older than `before` and no selective wipe yet (the offline sweep). */
    staleAppStates(tenantId: string, before: number, limit: number): AppProtectionState[];
    logSignIn(entry: SignInLogEntry): void;
    /** Newest first. */
    signIns(filter: SignInLogFilter): SignInLogEntry[];
    /** The newest entry that started or renewed this session. */
    signInOfSession(sessionId: string): SignInLogEntry | undefined;
    /** The distinct devices, clients and addresses of the user's allowed sign-ins since `since` (risk's history; at most 1000 each). */
    signInHistory(userId: string, since: number): { deviceIds: string[]; clientIds: string[]; ips: string[] };
    /** Failed password attempts of the user since `since`. */
    failuresSince(userId: string, since: number): number;
    userRisk(userId: string): UserRisk | undefined;
    setUserRisk(risk: UserRisk): void;
    /** Deletes sign-in log entries older than `before`, at most `limit`; answers how many. */
    purgeSignIns(before: number, limit: number): number;
  };

  /** Information protection: tenant keys, the tenant's protection document, users' published certificates. */
  protection: {
    /** The tenant's keys, newest first (the first unretired one is active). */
    keys(tenantId: string): ProtectionKeyRecord[];
    /** Adds `key` as the active key and retires every other unretired key of its tenant, at `key.createdAt`. */
    rotateKey(key: ProtectionKeyRecord): void;
    config(tenantId: string): ProtectionConfigRecord | undefined;
    /** Compare-and-set on the version (0: none stored yet), as `access.putConfig`. */
    putConfig(tenantId: string, doc: string, expectedVersion: number, now: number): ProtectionConfigRecord | undefined;
    /** A user's published certificates, newest first. */
    certificates(userId: string): UserCertificate[];
    /** Certificates published for `email` (lower-cased by the caller) in the tenant, newest first. */
    certificatesByEmail(tenantId: string, email: string): UserCertificate[];
    /** Publishes a certificate; false when the user already published one with that fingerprint. */
    addCertificate(cert: UserCertificate): boolean;
    /** Withdraws one of the user's certificates; false when the user has no such certificate. */
    removeCertificate(userId: string, id: string): boolean;
  };

  idempotency: {
    get(userId: string, key: string): IdempotentResult | undefined;
    put(userId: string, key: string, result: IdempotentResult): void;
    purge(before: number): number;
  };

  /**
   * The directory (GAL; tenant data, keyed by tenant and user). Every read names the tenant, and a user of another
   * tenant is simply not found. People search reads an index of folded name words and addresses that the store keeps
   * current by itself: every new, renamed, readdressed, moved or deleted user is queued (a trigger on `users`, so any
   * writer counts) and `search` indexes its tenant's queue before it answers.
   */
  directory: {
    /** The user's entry, if one was ever set. */
    entry(tenantId: string, userId: string): DirectoryEntry | undefined;
    /**
     * Inserts or replaces the entry. Refusing a manager of another tenant or a cycle is the caller's (`managers`
     * after the write, in the same unit); on PostgreSQL this takes the tenant's directory lock until the transaction
     * ends, so two changes of one tenant's managers are checked one after the other.
     */
    putEntry(entry: DirectoryEntry): void;
    /** The user with their entry; undefined when the tenant has no such user. */
    person(tenantId: string, userId: string): DirectoryPerson | undefined;
    /**
     * The user's managers, nearest first, up to the top (at most 64). The chain stops where it comes back to the user,
     * so when the manager relation has a cycle through the user, the user is the chain's last element. In a unit of
     * work it takes the tenant's directory lock first (PostgreSQL; see `putEntry`).
     */
    managers(tenantId: string, userId: string): DirectoryPerson[];
    /** The people whose manager is `managerId`, by display name then id; hidden ones too (the caller decides). */
    reports(tenantId: string, managerId: string): DirectoryPerson[];
    /**
     * Counts one more message from the user to each address (compared case-insensitively; repeats count once) and
     * keeps the name when one is given. A user keeps their 500 most recently written addresses.
     */
    recordSent(tenantId: string, userId: string, contacts: Array<{ address: string; name: string | null }>, now: number): void;
    /** The user's frequent contacts, most written first (count, then the latest, then address). */
    frequent(tenantId: string, userId: string): FrequentContact[];
    /**
     * People of the tenant (not hidden) whose name, a name word, their address or a part of its local part starts
     * with `text` (case- and accent-insensitive), and the caller's external frequent contacts that match the same
     * way; at most `limit`, ranked: the caller's frequent contacts first (count, then the latest), then by match kind
     * (exact name word, name prefix, address), then by folded display name, address and id. Index range scans only:
     * the cost grows with what matches, not with the tenant.
     */
    search(tenantId: string, callerId: string, text: string, limit: number): PeopleMatch[];
  };

  /** A mailbox's settings document (see MailboxSettingsRecord). */
  mailboxSettings: {
    get(userId: string): MailboxSettingsRecord | undefined;
    /** Compare-and-set on the version (0: none stored yet), as `access.putConfig`; undefined when another came first. */
    put(userId: string, doc: string, expectedVersion: number, now: number): MailboxSettingsRecord | undefined;
  };

  /** Automatic replies owed and sent (see AutoReplyRecord). */
  autoReplies: {
    /**
     * Records that `sender` is owed a reply in `period` for `itemId` (state `pending`); false, changing nothing, when
     * the sender already has a record of that period (one reply per sender per period).
     */
    claim(entry: { id: string; userId: string; period: string; sender: string; itemId: string }, now: number): boolean;
    /** Pending replies, oldest first. */
    pending(limit: number): AutoReplyRecord[];
    /** Marks a pending reply sent or skipped; false when it was not pending. */
    finish(id: string, state: 'sent' | 'skipped', now: number): boolean;
    /** The mailbox's records of a period, oldest first (tests, the admin). */
    ofPeriod(userId: string, period: string): AutoReplyRecord[];
    /** Deletes finished records updated before `before`; answers how many. */
    purge(before: number): number;
  };

  /** Shared mailboxes and their members (tenant data: every call names the mailbox's user id). */
  sharedMailboxes: {
    /** Marks an existing user (with its mailbox) as a shared mailbox. */
    create(userId: string, now: number): SharedMailbox;
    get(userId: string): SharedMailbox | undefined;
    /** The tenant's shared mailboxes, by address. */
    list(tenantId: string): SharedMailbox[];
    /** Inserts or replaces a membership. */
    putMember(member: SharedMailboxMember): void;
    removeMember(mailboxId: string, memberId: string): boolean;
    member(mailboxId: string, memberId: string): SharedMailboxMember | undefined;
    members(mailboxId: string): SharedMailboxMember[];
    /** The shared mailboxes `memberId` is a member of, with the rights, by address. */
    ofMember(memberId: string): Array<{ mailbox: SharedMailbox; rights: SharedMailboxMember }>;
  };

  /** Per-folder conversations, kept current by the store (see ConversationRecord). */
  conversations: {
    /** Rows of the folder (tombstones too) with modseq > `after`, in modseq order, at most `limit`. */
    changedSince(userId: string, folderId: string, after: number, limit: number): ConversationRecord[];
    /** The key of the `size`-th newest live conversation of the folder, or undefined when it has fewer. */
    boundary(userId: string, folderId: string, size: number): ConversationKey | undefined;
    /** Live conversations with `from` ≤ key < `to`, ascending (evictions) or descending (pull-ins). */
    range(userId: string, folderId: string, from: ConversationKey, to: ConversationKey, order: 'asc' | 'desc', limit: number): ConversationRecord[];
    /** The folder's live conversation, or undefined. */
    get(userId: string, folderId: string, conversationId: string): ConversationRecord | undefined;
    /** How many live conversations the folder has. */
    count(userId: string, folderId: string): number;
    /**
     * Ids of the user's items in the conversation (a message without a conversation id is the conversation named by
     * its item id), in `folderId` only when given; newest first, at most `limit`.
     */
    itemIds(userId: string, conversationId: string, limit: number, folderId?: string): string[];
    /** Future messages of an ignored conversation go straight to Deleted Items. */
    ignore(userId: string, conversationId: string, now: number): void;
    unignore(userId: string, conversationId: string): boolean;
    isIgnored(userId: string, conversationId: string): boolean;
    /** Deletes tombstones (messageCount 0) with modseq below `belowModseq` for the user; answers how many. */
    purgeTombstones(userId: string, belowModseq: number): number;
  };

  /** Background push: channels, the outbox, the delivery queue and reminders (see PushChannelRecord and the rest). */
  push: {
    /**
     * Registers a channel or refreshes it: an existing row with the same `(kind, address)` — of any user — is
     * replaced (its queued deliveries go with it). Answers the stored record.
     */
    putChannel(channel: NewPushChannel, now: number): PushChannelRecord;
    channel(userId: string, id: string): PushChannelRecord | undefined;
    /** The device's channels, oldest first. */
    channelsOfDevice(userId: string, deviceRecordId: string): PushChannelRecord[];
    /** The user's channels, oldest first. */
    channelsOfUser(userId: string): PushChannelRecord[];
    /** Deletes the channel (with its queued deliveries); false when the user has no such channel. */
    deleteChannel(userId: string, id: string): boolean;
    /** Deletes every channel of the device (with their deliveries); answers how many. */
    deleteChannelsOfDevice(userId: string, deviceRecordId: string): number;
    /** Records a send's result on the channel: a success resets `failures` and sets `lastSuccessAt`; a failure counts. */
    noteResult(userId: string, id: string, ok: boolean, now: number): void;
    /** How many channels there are (metrics), by kind. */
    countChannels(): Record<PushChannelKind, number>;

    /**
     * Takes (deletes and answers) at most `limit` outbox entries, oldest first; concurrent takers never take the
     * same entry. The caller enqueues what they mean in the same unit, so a crash loses neither.
     */
    takeOutbox(limit: number): PushOutboxEntry[];
    /** Entries waiting in the outbox (metrics, tests). */
    outboxSize(): number;

    /** Queues messages, each replacing a queued or in-flight one of its channel with the same collapse key. */
    enqueue(deliveries: NewPushDelivery[], now: number): void;
    /**
     * Claims at most `limit` deliveries due at `now` (queued, or sending with a lapsed lease), soonest first: each
     * becomes `sending` until `now + leaseMs`, attempts + 1. Concurrent claimers never claim the same delivery.
     */
    claim(now: number, limit: number, leaseMs: number): ClaimedPushDelivery[];
    /** Deletes the delivery with this id (it was sent, or is given up); false when it is gone or was replaced. */
    complete(userId: string, id: string): boolean;
    /**
     * Puts a claimed delivery back in the queue for `notBefore` (a retry); false when it is gone or was replaced.
     * `deferred`: it was not tried (a rate limit held it back), so the claim's attempt is given back.
     */
    release(userId: string, id: string, notBefore: number, deferred?: boolean): boolean;
    /** Deletes every queued delivery of the device's channels (a blocked device); answers how many. */
    dropDeliveriesOfDevice(userId: string, deviceRecordId: string): number;
    /** Deliveries by state (metrics, tests). */
    queueSize(): { queued: number; sending: number };
    /**
     * Takes sends from rate-limit windows every drainer shares (with PostgreSQL: the nodes', in `rate_limits`): per
     * key, at most `limit` sends in a window of `windowMs` that starts at the first request after the last one ended
     * (the callers' clocks). Each request asks `want` sends and is granted 0..want; answers, in order, the grants
     * and when each key's window ends. Ask for keys in a fixed order (sorted): a key's row stays locked to the unit's
     * end. SQLite: one process drains a file, so its windows are this store's own (in memory).
     */
    takeSendBudget(requests: Array<{ key: string; want: number }>, limit: number, windowMs: number, now: number): Array<{ granted: number; resetAt: number }>;

    /** Sets (or replaces) the event's pending reminder; a sent one is replaced too. */
    putReminder(reminder: PushReminderRecord): void;
    reminder(userId: string, itemId: string): PushReminderRecord | undefined;
    /** Deletes the event's reminder; answers what it was. */
    deleteReminder(userId: string, itemId: string): PushReminderRecord | undefined;
    /** Reminders not sent whose due time is at or before `now`, soonest first, at most `limit`. */
    dueReminders(now: number, limit: number): PushReminderRecord[];
    /**
     * Marks a reminder sent; false when it changed meanwhile (another due time) or is gone. `shownUntil`: the end of
     * its occurrence, recorded as the row's `shown` (null: nothing was shown, e.g. a reminder too late to show).
     */
    markReminderSent(userId: string, itemId: string, dueAt: number, now: number, shownUntil: number | null): boolean;
    /** Deletes sent reminders whose occurrence started before `startedBefore` and is not shown after `now`; how many. */
    purgeReminders(startedBefore: number, now: number): number;
  };

  /** Diagnostics incidents (mailbox data: each belongs to a user, and its zip is a blob of that user's). */
  diagnostics: {
    /** Inserts the incident; its row references `blobId` (stored in the same unit), which keeps the blob. */
    create(incident: DiagnosticIncident): DiagnosticIncident;
    /** The tenant's incident with this canonical id, or undefined (also when it is another tenant's). */
    byId(tenantId: string, id: string): DiagnosticIncident | undefined;
    /** The user's incidents, newest first, at most `limit`. */
    listByUser(userId: string, limit: number): DiagnosticIncident[];
    /** Deletes at most `limit` incidents whose expiry is at or before `now` (their blobs are released); answers how many. */
    purgeExpired(now: number, limit: number): number;
  };

  /**
   * Web-session refreshes shared by every process and node (server/web/sessions.ts): one refresh per refresh token,
   * its result kept briefly for requests still carrying the old cookie. A row past its `expiresAt` counts as absent.
   */
  webRefresh: {
    /**
     * Claims the refresh of `key`: `claimed` when the caller now holds it — there was no row, or only an expired one
     * (a lapsed lease: its holder died; or a result no longer remembered) — with a lease until `now + leaseMs`;
     * otherwise the row as it is. Of concurrent claims of one key exactly one is `claimed`.
     */
    claim(key: string, now: number, leaseMs: number): 'claimed' | WebRefreshRecord;
    /**
     * Records the held refresh's result (`''`: it failed), remembered until `expiresAt`; `successor` names the new
     * session (a hash of its refresh token) for `forget`. False when the row is gone.
     */
    complete(key: string, result: string, successor: string | null, expiresAt: number): boolean;
    read(key: string): WebRefreshRecord | undefined;
    /**
     * Signing out: the result naming `successor` becomes `''` (no session), and so does every one leading to it (a
     * row whose successor is such a row's key: an older cookie refreshed into it); answers how many rows changed.
     */
    forget(successor: string): number;
    /** Deletes the rows expired at `now`; answers how many. */
    purge(now: number): number;
  };
}

/** A web-session refresh (StoreMethods.webRefresh). */
export interface WebRefreshRecord {
  /** SHA-256 of the old refresh token, base64url. */
  key: string;
  claimedAt: number;
  /** Null while the refresh runs; the new session sealed (never a token in plain text); `''` when there is none. */
  result: string | null;
  /** The lease's end while the refresh runs, then the end of the remembered result. */
  expiresAt: number;
}

// Units of work (server/store/unit.ts says how they run).

/** A step of a unit: yields promises to wait for (never on SQLite), returns `T`. */
export type Step<T> = Generator<Promise<unknown>, T, unknown>;

/** `StoreMethods` with every method returning a step: what a unit of work is given. */
export type TxStore = {
  [G in keyof StoreMethods]: {
    [M in keyof StoreMethods[G]]: StoreMethods[G][M] extends (...args: infer A) => infer R ? (...args: A) => Step<R> : never;
  };
};

/** `StoreMethods` with every method returning a promise: each call is one transaction. */
export type AsyncMethods = {
  [G in keyof StoreMethods]: {
    [M in keyof StoreMethods[G]]: StoreMethods[G][M] extends (...args: infer A) => infer R ? (...args: A) => Promise<R> : never;
  };
};

export type Unit<T> = (tx: TxStore) => Step<T>;

export interface Store extends AsyncMethods, StoreInfra {
  /** Runs `unit` as one transaction and resolves with what it returned (rejects with what it threw, rolled back). */
  run<T>(unit: Unit<T>): Promise<T>;
}
