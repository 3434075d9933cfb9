/**
 * The composer of background push: turns outbox entries (mailboxes that changed) into queued deliveries, one per
 * channel and collapse key, and keeps each calendar event's next reminder; and the reminder clock's firing of due
 * reminders. Message shapes and preview rules live here too, as pure functions (tests/unit/background-push.test.ts).
 *
 * ## Taking an entry and queueing its messages in one unit
 *
 * `push.takeOutbox` deletes the entries it answers, so the take and the enqueue must be one unit (a crash between
 * two would lose the push). But the policy (app protection's notification content, label rules, whether a device is
 * still reachable) is asynchronous and may not be awaited inside a unit. The composer therefore runs the WHOLE
 * composition inside one unit — take, read (user, channels, folders, items, the folders' history), compute, put or
 * delete reminders, enqueue — against a per-pass cache of policy answers (`PolicyAnswers`). Whatever answer the
 * unit needs and the cache lacks is noted; at the end of the unit a missing answer throws `NeedPolicy`, which rolls
 * the unit back (nothing taken, nothing queued), the composer asks the policy for exactly those answers outside any
 * transaction, and runs the unit again. Units are built to run more than once (server/store/unit.ts), so this is
 * the ordinary contract. The second run nearly always has everything; should the outbox keep handing it new users
 * (other writers), the last run answers what is still missing conservatively — no preview, label not allowed,
 * device treated as reachable (the drain asks again before every send) — so a pass always ends and no entry is ever
 * taken without its messages being queued in the same transaction.
 *
 * ## Reminders
 *
 * One row per event (push_reminders): the reminder of its next occurrence not yet started. A change to an event
 * recomputes it. The row also keeps the reminder that last went out (`shown`) with the end of its occurrence, as
 * it was when it fired; a change that withdraws that occurrence before it ends (moved, cancelled, deleted, other
 * reminder minutes) queues a `reminderCancel` under the reminder's own collapse key, replacing it if it is still
 * queued. When a recurring event's reminder fires, the row moves on to the next occurrence at once and the one just
 * reminded becomes its `shown`, so a change to the series while that occurrence is on cancels it too.
 */
import crypto from 'node:crypto';
import { nextOccurrence, occurrences } from '../../calendar/recurrence';
import { zonedToUtc, isIanaZone } from '../../calendar/timezones';
import type { EventData } from '../../calendar/model';
import type { Folder, Item, NewPushDelivery, PushChannelRecord, PushEventKind, PushReminderRecord, ShownReminder, SortKey, TxStore, User } from '../../store/types';
import type { PushMessage } from '../gateways/types';
import type { BackgroundPushOptions, BackgroundPushPolicy, PreviewLevel } from './types';

const MINUTE = 60_000;
const DAY = 86_400_000;
const LOWEST: SortKey = { receivedAt: Number.MIN_SAFE_INTEGER, id: '' };
/** History rows read per folder and entry (pages of CHANGES_PAGE): beyond it, a pass alerts what it read. */
const CHANGES_PAGE = 500;
const CHANGES_CAP = 5_000;
/** A reminder this late (the server was down) is not shown any more; the event's next one is scheduled. */
export const REMINDER_STALE_MS = 15 * MINUTE;
export const ALERT_TTL_SECONDS = 86_400;

/** A message as queued: a PushMessage without its id (the delivery row's id is the message's). */
export type QueuedMessage = Omit<PushMessage, 'id'>;

// ---------------------------------------------------------------------------------------------------------------
// Preview levels and message shapes (pure)
// ---------------------------------------------------------------------------------------------------------------

const RANK: Record<PreviewLevel, number> = { none: 0, senderOnly: 1, full: 2 };

/** The lower (more private) of two preview levels. */
export function lowerLevel(a: PreviewLevel, b: PreviewLevel): PreviewLevel {
  return RANK[a] <= RANK[b] ? a : b;
}

/** Whether the item is protected: rights-protected (data.protection) or S/MIME encrypted. */
export function isProtected(item: Pick<Item, 'data'>): boolean {
  const data = item.data ?? {};
  if (data.protection !== undefined && data.protection !== null) return true;
  const smime = data.smime as { kind?: unknown } | undefined;
  return typeof smime === 'object' && smime !== null && smime.kind === 'encrypted';
}

/** The item's sensitivity label id (data.label.id), if it has one. */
export function labelOf(item: Pick<Item, 'data'>): string | undefined {
  const label = item.data?.label as { id?: unknown } | undefined;
  return typeof label === 'object' && label !== null && typeof label.id === 'string' && label.id ? label.id : undefined;
}

/** What the message itself allows a notification to show: none for protected mail or a label that forbids it. */
export function messageAllows(item: Pick<Item, 'data'>, labelAllowsPreview: (labelId: string) => boolean): PreviewLevel {
  if (isProtected(item)) return 'none';
  const label = labelOf(item);
  if (label !== undefined && !labelAllowsPreview(label)) return 'none';
  return 'full';
}

/** A new-mail alert's text at a preview level. */
export function newMailText(level: PreviewLevel, item: Pick<Item, 'from' | 'subject'>): { title: string; body: string } {
  const sender = item.from ? item.from.name.trim() || item.from.address : '';
  if (level === 'none' || !sender) {
    if (level === 'full' && item.subject) return { title: 'New message', body: item.subject };
    return { title: 'New message', body: '' };
  }
  if (level === 'senderOnly') return { title: sender, body: 'New message' };
  return { title: sender, body: item.subject };
}

export function syncMessage(badge?: number): QueuedMessage {
  return { type: 'sync', collapseKey: 'sync', ttlSeconds: ALERT_TTL_SECONDS, urgency: 'normal', data: { type: 'sync' }, ...(badge !== undefined ? { badge } : {}) };
}

/**
 * "Sync now" for a shared mailbox the channel's user is a full-access member of: its own collapse key (it must not
 * replace the member's own sync), the mailbox in `data` (the app syncs it with X-Mailbox), and no badge (the badge
 * is the member's own Inbox).
 */
export function sharedSyncMessage(mailboxId: string): QueuedMessage {
  return { type: 'sync', collapseKey: `sync:${mailboxId}`, ttlSeconds: ALERT_TTL_SECONDS, urgency: 'normal', data: { type: 'sync', mailbox: mailboxId } };
}

export function badgeMessage(badge: number): QueuedMessage {
  return { type: 'badge', collapseKey: 'badge', ttlSeconds: ALERT_TTL_SECONDS, urgency: 'normal', data: { type: 'badge' }, badge };
}

export function newMailAlert(item: Pick<Item, 'id' | 'folderId' | 'from' | 'subject'>, level: PreviewLevel, badge?: number): QueuedMessage {
  return {
    type: 'newMail',
    collapseKey: `mail:${item.id}`,
    ttlSeconds: ALERT_TTL_SECONDS,
    urgency: 'high',
    // Never the subject, the sender or a preview: only ids.
    data: { type: 'newMail', itemId: item.id, folderId: item.folderId },
    alert: newMailText(level, item),
    ...(badge !== undefined ? { badge } : {}),
  };
}

export function newMailSummary(count: number, folderId: string, badge?: number): QueuedMessage {
  return {
    type: 'newMail',
    collapseKey: 'newMail',
    ttlSeconds: ALERT_TTL_SECONDS,
    urgency: 'high',
    data: { type: 'newMail', folderId, count },
    alert: { title: `${count} new messages`, body: '' },
    ...(badge !== undefined ? { badge } : {}),
  };
}

export function reminderAlert(item: Pick<Item, 'id' | 'subject'>, level: PreviewLevel, occurrenceStart: number, now: number): QueuedMessage {
  const start = new Date(occurrenceStart).toISOString();
  return {
    type: 'reminder',
    collapseKey: `reminder:${item.id}`,
    ttlSeconds: Math.max(60, Math.ceil((occurrenceStart - now) / 1000)),
    urgency: 'high',
    data: { type: 'reminder', itemId: item.id, start },
    alert: { title: level === 'none' || !item.subject ? 'Upcoming event' : item.subject, body: `Starts at ${start}` },
  };
}

export function reminderCancel(itemId: string): QueuedMessage {
  return { type: 'reminderCancel', collapseKey: `reminder:${itemId}`, ttlSeconds: ALERT_TTL_SECONDS, urgency: 'normal', data: { type: 'reminderCancel', itemId } };
}

// ---------------------------------------------------------------------------------------------------------------
// Reminders (pure)
// ---------------------------------------------------------------------------------------------------------------

function zoneOf(data: EventData): string {
  return isIanaZone(data.timeZone) ? data.timeZone : 'UTC';
}

/** The instant (ms) an occurrence's start (UTC ISO, or a date for all-day events) stands for. */
export function occurrenceInstant(data: EventData, start: string): number {
  if (data.isAllDay || /^\d{4}-\d{2}-\d{2}$/.test(start)) {
    return zonedToUtc({ year: Number(start.slice(0, 4)), month: Number(start.slice(5, 7)), day: Number(start.slice(8, 10)), hour: 0, minute: 0, second: 0 }, zoneOf(data));
  }
  return Date.parse(start);
}

/** How long an occurrence of the event lasts (the master's length). */
export function eventDurationMs(data: EventData): number {
  const start = occurrenceInstant(data, data.start);
  const end = occurrenceInstant(data, data.end);
  return Number.isFinite(start) && Number.isFinite(end) && end > start ? end - start : 0;
}

function remindable(data: EventData | undefined | null): data is EventData {
  return !!data && typeof data === 'object' && typeof data.start === 'string' && typeof data.reminderMinutesBeforeStart === 'number' && !data.isCancelled;
}

/**
 * The event's next reminder: of its next occurrence starting at or after `after` (not yet started), due
 * reminderMinutesBeforeStart before it; null when it has none (no reminder minutes, cancelled, no occurrence left,
 * or a rule that cannot be expanded).
 */
export function nextReminder(data: EventData | undefined | null, after: number): { occurrenceStart: number; dueAt: number } | null {
  if (!remindable(data)) return null;
  let next;
  try {
    next = nextOccurrence(data, after);
  } catch {
    return null;
  }
  if (!next) return null;
  const occurrenceStart = occurrenceInstant(data, next.start);
  if (!Number.isFinite(occurrenceStart)) return null;
  return { occurrenceStart, dueAt: occurrenceStart - data.reminderMinutesBeforeStart! * MINUTE };
}

/** Whether the event (as it is now) still has the occurrence a reminder was for, with the same due time. */
export function reminderStillStands(data: EventData | undefined | null, reminder: Pick<PushReminderRecord, 'occurrenceStart' | 'dueAt'>): boolean {
  if (!remindable(data)) return false;
  if (reminder.occurrenceStart - data.reminderMinutesBeforeStart! * MINUTE !== reminder.dueAt) return false;
  try {
    return occurrences(data, reminder.occurrenceStart, reminder.occurrenceStart + 1, 10).some((o) => occurrenceInstant(data, o.start) === reminder.occurrenceStart);
  } catch {
    return false;
  }
}

/** Until when a reminder that fires now for this occurrence stays on the screen: its occurrence's end. */
export function shownUntil(data: EventData, occurrenceStart: number): number {
  return occurrenceStart + Math.max(eventDurationMs(data), 1);
}

export type ReminderPlan =
  | { action: 'keep' }
  | { action: 'put'; reminder: PushReminderRecord; cancel: boolean }
  | { action: 'delete'; cancel: boolean };

const sameShown = (a: ShownReminder | null, b: ShownReminder | null) =>
  a === b || (!!a && !!b && a.occurrenceStart === b.occurrenceStart && a.dueAt === b.dueAt && a.until === b.until);

const sameRow = (a: PushReminderRecord, b: PushReminderRecord) =>
  a.occurrenceStart === b.occurrenceStart && a.dueAt === b.dueAt && a.sentAt === b.sentAt && sameShown(a.shown, b.shown);

/**
 * What a change to an event does to its reminder row: `existing` the row, `data` the event as it is now (undefined:
 * deleted, moved out of the calendar, or not an event any more).
 *
 * Two things are decided. The reminder on the screen (`existing.shown`, until its occurrence ends): when the event no
 * longer has that occurrence with that due time (moved, cancelled, deleted, other reminder minutes), a cancellation
 * is owed and it is forgotten. The next reminder: of the next occurrence not yet started; except that a sent row
 * whose own occurrence still stands and is still the next one keeps its row (it must not fire twice). A row with no
 * next reminder stays while a reminder is shown, so a later change can still cancel it.
 */
export function planReminder(userId: string, itemId: string, existing: PushReminderRecord | undefined, data: EventData | undefined, now: number): ReminderPlan {
  const computed = nextReminder(data, now);
  if (!existing) {
    return computed ? { action: 'put', reminder: { userId, itemId, ...computed, sentAt: null, shown: null }, cancel: false } : { action: 'keep' };
  }
  const showing = existing.shown && now < existing.shown.until ? existing.shown : null;
  const withdrawn = !!showing && !reminderStillStands(data, showing);
  const shown = withdrawn ? null : showing;
  if (existing.sentAt !== null && !withdrawn && computed && computed.occurrenceStart <= existing.occurrenceStart) return { action: 'keep' };
  const row: PushReminderRecord | null = computed
    ? { userId, itemId, ...computed, sentAt: null, shown }
    : shown
      ? { userId, itemId, occurrenceStart: shown.occurrenceStart, dueAt: shown.dueAt, sentAt: existing.sentAt ?? now, shown }
      : null;
  if (!row) return { action: 'delete', cancel: withdrawn };
  if (!withdrawn && sameRow(existing, row)) return { action: 'keep' };
  return { action: 'put', reminder: row, cancel: withdrawn };
}

// ---------------------------------------------------------------------------------------------------------------
// Policy answers for a unit
// ---------------------------------------------------------------------------------------------------------------

/** A unit needed policy answers it did not have: it rolled back; ask, then run it again. */
export class NeedPolicy extends Error {
  override name = 'NeedPolicy';
  constructor() {
    super('policy answers needed');
  }
}

const key = (...parts: string[]) => JSON.stringify(parts);

/**
 * Policy answers for the units of one pass: looked up synchronously inside a unit, fetched asynchronously between
 * its runs. `final`: answer what is missing conservatively instead of asking (the last run).
 */
export class PolicyAnswers {
  private readonly content = new Map<string, PreviewLevel>();
  private readonly labels = new Map<string, boolean>();
  private readonly reachable = new Map<string, boolean>();
  private missingContent = new Map<string, [string, string, string]>();
  private missingLabels = new Map<string, [string, string]>();
  private missingReachable = new Map<string, [string, string, string]>();
  final = false;

  constructor(private readonly policy: BackgroundPushPolicy) {}

  /** Starts a run of a unit: forgets what the last run missed. */
  beginRun(): void {
    this.missingContent = new Map();
    this.missingLabels = new Map();
    this.missingReachable = new Map();
  }

  notificationContent(tenantId: string, userId: string, clientId: string): PreviewLevel {
    const k = key(tenantId, userId, clientId);
    const known = this.content.get(k);
    if (known !== undefined) return known;
    if (!this.final) this.missingContent.set(k, [tenantId, userId, clientId]);
    return 'none';
  }

  labelAllowsPreview(tenantId: string, labelId: string): boolean {
    const k = key(tenantId, labelId);
    const known = this.labels.get(k);
    if (known !== undefined) return known;
    if (!this.final) this.missingLabels.set(k, [tenantId, labelId]);
    return false;
  }

  deviceReachable(userId: string, tenantId: string, deviceId: string): boolean {
    const k = key(userId, tenantId, deviceId);
    const known = this.reachable.get(k);
    if (known !== undefined) return known;
    if (!this.final) this.missingReachable.set(k, [userId, tenantId, deviceId]);
    return true;
  }

  get missing(): boolean {
    return this.missingContent.size + this.missingLabels.size + this.missingReachable.size > 0;
  }

  /** Asks the policy for everything the last run missed. */
  async fetchMissing(): Promise<void> {
    const jobs: Array<Promise<void>> = [];
    for (const [k, [t, u, c]] of this.missingContent) jobs.push(this.policy.notificationContent(t, u, c).then((v) => void this.content.set(k, v)));
    for (const [k, [t, l]] of this.missingLabels) jobs.push(this.policy.labelAllowsPreview(t, l).then((v) => void this.labels.set(k, v)));
    for (const [k, [u, t, d]] of this.missingReachable) jobs.push(this.policy.deviceReachable(u, t, d).then((v) => void this.reachable.set(k, v)));
    await Promise.all(jobs);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The units
// ---------------------------------------------------------------------------------------------------------------

export interface ComposeContext {
  now: number;
  options: Pick<BackgroundPushOptions, 'alertsPerPass'>;
  answers: PolicyAnswers;
  /** Gateway kinds this process can send through: channels of other kinds get nothing. */
  kinds: ReadonlySet<string>;
  newId?: () => string;
}

export interface ComposeResult {
  /** Outbox entries taken or reminders fired. */
  composed: number;
  queued: number;
  /** The soonest due time of a reminder put (to arm the reminder timer). */
  nextReminderAt: number | undefined;
}

/** Collects deliveries; a later message for the same channel and collapse key replaces an earlier one. */
class Batch {
  readonly deliveries = new Map<string, NewPushDelivery>();
  nextReminderAt: number | undefined;
  constructor(private readonly newId: () => string) {}
  add(channel: PushChannelRecord, message: QueuedMessage, originAt: number, notBefore: number): void {
    this.deliveries.set(key(channel.id, message.collapseKey), {
      id: this.newId(),
      userId: channel.userId,
      channelId: channel.id,
      collapseKey: message.collapseKey,
      message: message as unknown as Record<string, unknown>,
      notBefore,
      originAt,
    });
  }
  noteReminder(dueAt: number): void {
    if (this.nextReminderAt === undefined || dueAt < this.nextReminderAt) this.nextReminderAt = dueAt;
  }
}

const wants = (channel: PushChannelRecord, event: PushEventKind) => channel.events.includes(event);

/**
 * The channels of the user that may be reached now: same session version, a gateway for the kind, the device
 * reachable. The queued deliveries of unreachable devices are dropped (in the unit).
 */
function* reachableChannels(tx: TxStore, user: User, ctx: ComposeContext) {
  const all = yield* tx.push.channelsOfUser(user.id);
  const out: PushChannelRecord[] = [];
  const dropped = new Set<string>();
  for (const channel of all) {
    if (channel.sessionVersion !== user.sessionVersion || !ctx.kinds.has(channel.kind)) continue;
    if (!ctx.answers.deviceReachable(user.id, user.tenantId, channel.deviceId)) {
      if (!dropped.has(channel.deviceRecordId)) {
        dropped.add(channel.deviceRecordId);
        yield* tx.push.dropDeliveriesOfDevice(user.id, channel.deviceRecordId);
      }
      continue;
    }
    out.push(channel);
  }
  return out;
}

/** The folder's history after `after`, page by page, at most CHANGES_CAP rows. */
function* changesOf(tx: TxStore, userId: string, folderId: string, after: number) {
  const out: Array<{ modseq: number; objectId: string; kind: string }> = [];
  let cursor = after;
  while (out.length < CHANGES_CAP) {
    const page = yield* tx.sync.changes(userId, folderId, cursor, LOWEST, CHANGES_PAGE);
    out.push(...page);
    if (page.length < CHANGES_PAGE) break;
    cursor = page[page.length - 1]!.modseq;
  }
  return out;
}

/** The Inbox's new unread mail placed in (from, to], newest first. */
function* newMailIn(tx: TxStore, userId: string, inbox: Folder, from: number, to: number) {
  const changes = yield* changesOf(tx, userId, inbox.id, from);
  const ids = [...new Set(changes.filter((c) => c.kind === 'item').map((c) => c.objectId))];
  const items: Item[] = [];
  for (let i = 0; i < ids.length; i += 200) items.push(...(yield* tx.items.byIds(userId, ids.slice(i, i + 200))));
  return items
    .filter((item) => item.type === 'email' && item.folderId === inbox.id && !item.isRead && item.placedModseq > from && item.placedModseq <= to)
    .sort((a, b) => b.receivedAt - a.receivedAt || (a.id < b.id ? 1 : -1));
}

/** Events changed after `from` in the user's calendar folders: their reminders recomputed; cancellations owed. */
function* reconcileReminders(tx: TxStore, userId: string, folders: Folder[], from: number, batch: Batch, now: number) {
  const calendars = new Set(folders.filter((f) => f.kind === 'calendar').map((f) => f.id));
  const touched = new Set<string>();
  for (const folderId of calendars) for (const change of yield* changesOf(tx, userId, folderId, from)) touched.add(change.objectId);
  const cancels: string[] = [];
  for (const itemId of touched) {
    const item = yield* tx.items.byId(userId, itemId);
    const data = item && item.type === 'event' && calendars.has(item.folderId) ? (item.data as unknown as EventData) : undefined;
    const existing = yield* tx.push.reminder(userId, itemId);
    const plan = planReminder(userId, itemId, existing, data, now);
    if (plan.action === 'keep') continue;
    if (plan.action === 'put') {
      yield* tx.push.putReminder(plan.reminder);
      batch.noteReminder(plan.reminder.dueAt);
    } else if (existing) {
      yield* tx.push.deleteReminder(userId, itemId);
    }
    if (plan.cancel) cancels.push(itemId);
  }
  return cancels;
}

/**
 * A shared mailbox changed: each full-access member's reachable channels that want `sync` get a silent sync naming
 * it. Nothing else: no alerts (a team mailbox would ring every member's phone for every message), no badge, and no
 * reminders of its calendar (the mailbox has no channels of its own, so none are kept for it).
 */
function* wakeMembers(tx: TxStore, mailbox: User, originAt: number, batch: Batch, ctx: ComposeContext) {
  for (const member of yield* tx.sharedMailboxes.members(mailbox.id)) {
    if (!member.fullAccess) continue;
    const user = yield* tx.users.byId(member.memberId);
    if (!user || user.disabled || user.tenantId !== mailbox.tenantId) continue;
    for (const channel of yield* reachableChannels(tx, user, ctx)) {
      if (wants(channel, 'sync')) batch.add(channel, sharedSyncMessage(mailbox.id), originAt, ctx.now);
    }
  }
}

/**
 * One composing unit: takes at most `limit` outbox entries and queues their messages. Throws NeedPolicy (rolling
 * everything back) when it needed policy answers it does not have yet.
 */
export function composeUnit(ctx: ComposeContext, limit: number) {
  return function* (tx: TxStore): Generator<Promise<unknown>, ComposeResult, unknown> {
    ctx.answers.beginRun();
    const batch = new Batch(ctx.newId ?? (() => crypto.randomUUID()));
    const entries = yield* tx.push.takeOutbox(limit);
    for (const entry of entries) {
      const user = yield* tx.users.byId(entry.userId);
      if (!user || user.disabled) continue;
      if (yield* tx.sharedMailboxes.get(user.id)) {
        yield* wakeMembers(tx, user, entry.createdAt, batch, ctx);
        continue;
      }
      const channels = yield* reachableChannels(tx, user, ctx);
      const folders = yield* tx.folders.listByUser(user.id);
      const cancels = yield* reconcileReminders(tx, user.id, folders, entry.fromModseq, batch, ctx.now);
      if (channels.length === 0) continue;
      const inbox = folders.find((f) => f.kind === 'inbox');
      const badge = inbox?.unreadCount ?? 0;
      const mail = inbox && channels.some((c) => wants(c, 'newMail')) ? yield* newMailIn(tx, user.id, inbox, entry.fromModseq, entry.toModseq) : [];
      const allows = new Map(mail.map((item) => [item.id, messageAllows(item, (label) => ctx.answers.labelAllowsPreview(user.tenantId, label))]));
      for (const channel of channels) {
        const withBadge = wants(channel, 'badge') ? badge : undefined;
        if (wants(channel, 'sync')) batch.add(channel, syncMessage(withBadge), entry.createdAt, ctx.now);
        else if (withBadge !== undefined) batch.add(channel, badgeMessage(withBadge), entry.createdAt, ctx.now);
        if (wants(channel, 'newMail') && mail.length > 0) {
          const level = ctx.answers.notificationContent(user.tenantId, user.id, channel.clientId);
          for (const item of mail.slice(0, ctx.options.alertsPerPass)) {
            batch.add(channel, newMailAlert(item, lowerLevel(level, allows.get(item.id) ?? 'none'), withBadge), entry.createdAt, ctx.now);
          }
          if (mail.length > ctx.options.alertsPerPass) batch.add(channel, newMailSummary(mail.length, inbox!.id, withBadge), entry.createdAt, ctx.now);
        }
        if (wants(channel, 'reminder')) for (const itemId of cancels) batch.add(channel, reminderCancel(itemId), entry.createdAt, ctx.now);
      }
    }
    if (ctx.answers.missing) throw new NeedPolicy();
    const deliveries = [...batch.deliveries.values()];
    if (deliveries.length > 0) yield* tx.push.enqueue(deliveries, ctx.now);
    return { composed: entries.length, queued: deliveries.length, nextReminderAt: batch.nextReminderAt };
  };
}

/**
 * One unit of the reminder clock: the reminders due at `now` (at most `limit`) queued for the user's channels that
 * want reminders, marked sent, and each recurring event's next occurrence scheduled.
 */
export function fireRemindersUnit(ctx: ComposeContext, limit: number) {
  return function* (tx: TxStore): Generator<Promise<unknown>, ComposeResult, unknown> {
    ctx.answers.beginRun();
    const batch = new Batch(ctx.newId ?? (() => crypto.randomUUID()));
    const due = yield* tx.push.dueReminders(ctx.now, limit);
    const users = new Map<string, { user: User | undefined; channels: PushChannelRecord[] }>();
    for (const reminder of due) {
      const item = yield* tx.items.byId(reminder.userId, reminder.itemId);
      const folder = item ? yield* tx.folders.byId(reminder.userId, item.folderId) : undefined;
      if (!item || item.type !== 'event' || folder?.kind !== 'calendar') {
        yield* tx.push.deleteReminder(reminder.userId, reminder.itemId);
        continue;
      }
      let owner = users.get(reminder.userId);
      if (!owner) {
        const user = yield* tx.users.byId(reminder.userId);
        owner = { user, channels: user && !user.disabled ? yield* reachableChannels(tx, user, ctx) : [] };
        users.set(reminder.userId, owner);
      }
      const user = owner.user;
      const data = item.data as unknown as EventData;
      const shows = !!user && ctx.now < reminder.occurrenceStart + REMINDER_STALE_MS;
      if (shows) {
        const allows = messageAllows(item, (label) => ctx.answers.labelAllowsPreview(user.tenantId, label));
        for (const channel of owner.channels) {
          if (!wants(channel, 'reminder')) continue;
          const level = lowerLevel(ctx.answers.notificationContent(user.tenantId, user.id, channel.clientId), allows);
          batch.add(channel, reminderAlert(item, level, reminder.occurrenceStart, ctx.now), reminder.dueAt, ctx.now);
        }
      }
      const until = shows && remindable(data) ? shownUntil(data, reminder.occurrenceStart) : null;
      yield* tx.push.markReminderSent(reminder.userId, reminder.itemId, reminder.dueAt, ctx.now, until);
      if (data?.recurrence) {
        const next = nextReminder(data, Math.max(reminder.occurrenceStart + 1, ctx.now));
        if (next && next.occurrenceStart > reminder.occurrenceStart) {
          // The row moves on; the occurrence just reminded stays as `shown` until it ends (a change may cancel it).
          const shown = until === null ? null : { occurrenceStart: reminder.occurrenceStart, dueAt: reminder.dueAt, until };
          yield* tx.push.putReminder({ userId: reminder.userId, itemId: reminder.itemId, ...next, sentAt: null, shown });
          batch.noteReminder(next.dueAt);
        }
      }
    }
    if (ctx.answers.missing) throw new NeedPolicy();
    const deliveries = [...batch.deliveries.values()];
    if (deliveries.length > 0) yield* tx.push.enqueue(deliveries, ctx.now);
    return { composed: due.length, queued: deliveries.length, nextReminderAt: batch.nextReminderAt };
  };
}

/** Runs a unit built by `build` with policy answers fetched between runs (see the file's comment). */
export async function runWithPolicy<T>(run: (answers: PolicyAnswers) => Promise<T>, answers: PolicyAnswers, maxRuns = 4): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    answers.final = attempt >= maxRuns;
    try {
      return await run(answers);
    } catch (err) {
      if (!(err instanceof NeedPolicy) || answers.final) throw err;
      await answers.fetchMissing();
    }
  }
}
