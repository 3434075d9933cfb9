/**
 * Background push in SQLite (schema/sqlite/0014_background_push.sql): channels, the outbox, the delivery queue and
 * calendar reminders. The row mappers are shared with the PostgreSQL store (which reads JSONB already parsed).
 *
 * - A channel's `(kind, address)` is unique: registering it again from the same device of the same user refreshes
 *   the row in place (same id, its deliveries kept); from anywhere else, the old row is deleted (its deliveries go
 *   with it, by the foreign key) and a new one inserted.
 * - The outbox is written by the store's own transaction code at commit (index.ts `writePushOutbox`): the statement
 *   is exported here so both stay together.
 * - A claim runs under the write lock (a transaction of its own when called alone), so no two claimers share a row.
 *   A claim moves `not_before` to the lease's end, so a lapsed lease is found by the same due scan.
 * - Deliveries name their channel; `enqueue` skips one whose channel is gone (removed since the caller read it).
 *
 * Nothing here is cached by the hot cache: writes announce nothing.
 */
import type { Sql } from './devices';
import type { JsonColumn } from '../rows';
import { jsonText } from '../rows';
import { newId } from '../../ids';
import {
  PUSH_EVENT_KINDS,
  type PushChannelKind,
  type PushChannelRecord,
  type PushDeliveryRecord,
  type PushEventKind,
  type PushOutboxEntry,
  type PushReminderRecord,
  type StoreMethods,
} from '../types';

type Row = Record<string, unknown>;

/** Times as the INTEGER columns take them (a caller's backoff with jitter may be fractional). */
const ms = (n: number) => Math.round(n);
const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

export function toPushChannel(r: Row, json: JsonColumn): PushChannelRecord {
  const events = json(r.events ?? r.events_json);
  return {
    id: r.id as string,
    tenantId: r.tenant_id as string,
    userId: r.user_id as string,
    deviceRecordId: r.device_record_id as string,
    deviceId: r.device_id as string,
    clientId: r.client_id as string,
    sessionVersion: Number(r.session_version),
    kind: r.kind as PushChannelKind,
    address: r.address as string,
    keys: (json(r.keys ?? r.keys_json) ?? {}) as Record<string, string>,
    events: (Array.isArray(events) ? events : []).filter((e): e is PushEventKind => PUSH_EVENT_KINDS.includes(e as PushEventKind)),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    lastSuccessAt: num(r.last_success_at),
    failures: Number(r.failures),
  };
}

export function toPushDelivery(r: Row, json: JsonColumn): PushDeliveryRecord {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    channelId: r.channel_id as string,
    collapseKey: r.collapse_key as string,
    message: (json(r.message ?? r.message_json) ?? {}) as Record<string, unknown>,
    state: r.state as PushDeliveryRecord['state'],
    attempts: Number(r.attempts),
    notBefore: Number(r.not_before),
    leaseUntil: num(r.lease_until),
    originAt: Number(r.origin_at),
    createdAt: Number(r.created_at),
  };
}

export const toPushOutbox = (r: Row): PushOutboxEntry => ({
  userId: r.user_id as string,
  fromModseq: Number(r.from_modseq),
  toModseq: Number(r.to_modseq),
  createdAt: Number(r.created_at),
});

export const toPushReminder = (r: Row): PushReminderRecord => ({
  userId: r.user_id as string,
  itemId: r.item_id as string,
  occurrenceStart: Number(r.occurrence_start),
  dueAt: Number(r.due_at),
  sentAt: num(r.sent_at),
  shown: r.shown_start === null || r.shown_start === undefined ? null : { occurrenceStart: Number(r.shown_start), dueAt: Number(r.shown_due_at), until: Number(r.shown_until) },
});

/** The shown_start, shown_due_at and shown_until values of a reminder (all null when nothing is shown). */
export const shownColumns = (r: PushReminderRecord): [number | null, number | null, number | null] =>
  r.shown ? [r.shown.occurrenceStart, r.shown.dueAt, r.shown.until] : [null, null, null];

/** Oldest first, ties by user id: the order `takeOutbox` answers in. */
export const byOutboxAge = (a: PushOutboxEntry, b: PushOutboxEntry) => a.createdAt - b.createdAt || (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0);

/** Every kind, zero when there is none: `countChannels`. */
export const channelCounts = (rows: Array<{ kind: string; n: unknown }>): Record<PushChannelKind, number> => {
  const counts: Record<PushChannelKind, number> = { webpush: 0, apns: 0, fcm: 0 };
  for (const r of rows) if (r.kind in counts) counts[r.kind as PushChannelKind] = Number(r.n);
  return counts;
};

export const queueCounts = (rows: Array<{ state: string; n: unknown }>): { queued: number; sending: number } => {
  const counts = { queued: 0, sending: 0 };
  for (const r of rows) if (r.state === 'queued' || r.state === 'sending') counts[r.state] = Number(r.n);
  return counts;
};

/**
 * The commit-time outbox write for one mailbox (index.ts): only when its user has a channel, or it is a shared
 * mailbox one of whose full-access members has one (two index probes, push_channels_user and the members' primary
 * key, when neither), widening an existing entry's span and keeping its first commit's time.
 */
export const SQLITE_OUTBOX_UPSERT = `INSERT INTO push_outbox (user_id, from_modseq, to_modseq, created_at)
  SELECT @user, @from, @to, @at WHERE EXISTS (SELECT 1 FROM push_channels WHERE user_id = @user)
    OR EXISTS (SELECT 1 FROM shared_mailbox_members m WHERE m.mailbox_id = @user AND m.full_access = 1
               AND EXISTS (SELECT 1 FROM push_channels c WHERE c.user_id = m.member_id))
  ON CONFLICT (user_id) DO UPDATE SET from_modseq = min(from_modseq, excluded.from_modseq), to_modseq = max(to_modseq, excluded.to_modseq)`;

/**
 * Send budgets (`takeSendBudget`) count what was ASKED in a window (`hits`), not what was granted: a request's grant
 * then follows from the count after it alone — what the window had before is `hits − want` — so PostgreSQL answers
 * it from one upsert's RETURNING, whoever else asked meanwhile. Asked beyond the limit is capped (no overflow).
 */
export const SEND_BUDGET_CAP = 1_000_000_000;
export const sendBudgetGrant = (hitsAfter: number, want: number, limit: number) => Math.max(0, Math.min(want, limit - (hitsAfter - want)));

const CHANNEL_COLUMNS =
  'id, tenant_id, user_id, device_record_id, device_id, client_id, session_version, kind, address, keys_json, events_json, created_at, updated_at, last_success_at, failures';

export function pushRepositories(sql: Sql, transaction: <T>(fn: () => T) => T): Pick<StoreMethods, 'push'> {
  const channel = (r: Row | undefined) => r && toPushChannel(r, jsonText);
  const channelById = (id: string) => channel(sql(`SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE id = ?`).get(id) as Row | undefined);
  // One drainer per file: the send budgets' windows live here (a rolled-back unit's grants stay spent: that errs low).
  const budgets = new Map<string, { hits: number; resetAt: number }>();

  return {
    push: {
      putChannel(c, now) {
        return transaction(() => {
          const existing = sql('SELECT id, user_id, device_record_id FROM push_channels WHERE kind = ? AND address = ?').get(c.kind, c.address) as
            | { id: string; user_id: string; device_record_id: string }
            | undefined;
          const keys = JSON.stringify(c.keys ?? {});
          const events = JSON.stringify(c.events);
          if (existing && existing.user_id === c.userId && existing.device_record_id === c.deviceRecordId) {
            // A refresh by the same device: the same channel, brought up to date (the app signed in again, new keys).
            sql(
              `UPDATE push_channels SET tenant_id = ?, device_id = ?, client_id = ?, session_version = ?, keys_json = ?, events_json = ?,
                 updated_at = ?, failures = 0 WHERE id = ?`,
            ).run(c.tenantId, c.deviceId, c.clientId, c.sessionVersion, keys, events, now, existing.id);
            return channelById(existing.id)!;
          }
          // Another device's or user's (or none): the address now belongs to this one alone.
          if (existing) sql('DELETE FROM push_channels WHERE id = ?').run(existing.id);
          const id = newId();
          sql(`INSERT INTO push_channels (${CHANNEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)`).run(
            id,
            c.tenantId,
            c.userId,
            c.deviceRecordId,
            c.deviceId,
            c.clientId,
            c.sessionVersion,
            c.kind,
            c.address,
            keys,
            events,
            now,
            now,
          );
          return channelById(id)!;
        });
      },
      channel(userId, id) {
        return channel(sql(`SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE id = ? AND user_id = ?`).get(id, userId) as Row | undefined);
      },
      channelsOfDevice(userId, deviceRecordId) {
        return (
          sql(`SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE user_id = ? AND device_record_id = ? ORDER BY created_at, id`).all(
            userId,
            deviceRecordId,
          ) as Row[]
        ).map((r) => toPushChannel(r, jsonText));
      },
      channelsOfUser(userId) {
        return (sql(`SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE user_id = ? ORDER BY created_at, id`).all(userId) as Row[]).map((r) =>
          toPushChannel(r, jsonText),
        );
      },
      deleteChannel(userId, id) {
        return sql('DELETE FROM push_channels WHERE id = ? AND user_id = ?').run(id, userId).changes === 1;
      },
      deleteChannelsOfDevice(userId, deviceRecordId) {
        return sql('DELETE FROM push_channels WHERE user_id = ? AND device_record_id = ?').run(userId, deviceRecordId).changes;
      },
      noteResult(userId, id, ok, now) {
        if (ok) sql('UPDATE push_channels SET failures = 0, last_success_at = ? WHERE id = ? AND user_id = ?').run(now, id, userId);
        else sql('UPDATE push_channels SET failures = failures + 1 WHERE id = ? AND user_id = ?').run(id, userId);
      },
      countChannels() {
        return channelCounts(sql('SELECT kind, count(*) AS n FROM push_channels GROUP BY kind').all() as Array<{ kind: string; n: number }>);
      },

      takeOutbox(limit) {
        const taken = (
          sql(
            `DELETE FROM push_outbox WHERE user_id IN (SELECT user_id FROM push_outbox ORDER BY created_at, user_id LIMIT ?)
             RETURNING user_id, from_modseq, to_modseq, created_at`,
          ).all(limit) as Row[]
        ).map(toPushOutbox);
        return taken.sort(byOutboxAge);
      },
      outboxSize() {
        return (sql('SELECT count(*) AS n FROM push_outbox').get() as { n: number }).n;
      },

      enqueue(deliveries, now) {
        if (deliveries.length === 0) return;
        transaction(() => {
          const upsert = sql(
            `INSERT INTO push_deliveries (id, user_id, channel_id, collapse_key, message_json, state, attempts, not_before, lease_until, origin_at, created_at)
             SELECT @id, @user, @channel, @key, @message, 'queued', 0, @notBefore, NULL, @originAt, @now
             WHERE EXISTS (SELECT 1 FROM push_channels WHERE id = @channel AND user_id = @user)
             ON CONFLICT (channel_id, collapse_key) DO UPDATE SET
               id = excluded.id, message_json = excluded.message_json, state = 'queued', attempts = 0, not_before = excluded.not_before,
               lease_until = NULL, origin_at = excluded.origin_at, created_at = excluded.created_at`,
          );
          for (const d of deliveries) {
            upsert.run({
              id: d.id,
              user: d.userId,
              channel: d.channelId,
              key: d.collapseKey,
              message: JSON.stringify(d.message),
              notBefore: ms(d.notBefore),
              originAt: ms(d.originAt),
              now: ms(now),
            });
          }
        });
      },
      claim(now, limit, leaseMs) {
        if (limit <= 0) return [];
        return transaction(() => {
          const due = sql(
            `SELECT d.id, d.user_id, d.channel_id, d.collapse_key, d.message_json, d.state, d.attempts, d.not_before, d.lease_until,
                    d.origin_at, d.created_at
             FROM push_deliveries d WHERE d.not_before <= ? ORDER BY d.not_before LIMIT ?`,
          ).all(ms(now), limit) as Row[];
          if (due.length === 0) return [];
          const leaseUntil = ms(now + leaseMs);
          const take = sql(
            `UPDATE push_deliveries SET state = 'sending', lease_until = ?, not_before = ?, attempts = attempts + 1 WHERE id = ?`,
          );
          const channels = new Map<string, PushChannelRecord | undefined>();
          const claimed = [];
          for (const r of due) {
            const channelId = r.channel_id as string;
            if (!channels.has(channelId)) channels.set(channelId, channelById(channelId));
            const c = channels.get(channelId);
            if (!c) continue; // cannot happen (the foreign key cascades), but a delivery is never answered without its channel
            take.run(leaseUntil, leaseUntil, r.id);
            const delivery = toPushDelivery(r, jsonText);
            claimed.push({
              delivery: { ...delivery, state: 'sending' as const, attempts: delivery.attempts + 1, notBefore: leaseUntil, leaseUntil },
              channel: c,
            });
          }
          return claimed;
        });
      },
      complete(userId, id) {
        return sql('DELETE FROM push_deliveries WHERE id = ? AND user_id = ?').run(id, userId).changes === 1;
      },
      release(userId, id, notBefore, deferred = false) {
        return (
          sql(`UPDATE push_deliveries SET state = 'queued', not_before = ?, lease_until = NULL, attempts = max(attempts - ?, 0) WHERE id = ? AND user_id = ?`).run(
            ms(notBefore),
            deferred ? 1 : 0,
            id,
            userId,
          ).changes === 1
        );
      },
      takeSendBudget(requests, limit, windowMs, now) {
        if (budgets.size > 10_000) for (const [key, w] of budgets) if (w.resetAt <= now) budgets.delete(key);
        return requests.map(({ key, want }) => {
          let w = budgets.get(key);
          if (!w || w.resetAt <= now) budgets.set(key, (w = { hits: 0, resetAt: now + windowMs }));
          w.hits = Math.min(w.hits + want, SEND_BUDGET_CAP);
          return { granted: sendBudgetGrant(w.hits, want, limit), resetAt: w.resetAt };
        });
      },
      dropDeliveriesOfDevice(userId, deviceRecordId) {
        return sql(
          `DELETE FROM push_deliveries WHERE user_id = ? AND channel_id IN
             (SELECT id FROM push_channels WHERE user_id = ? AND device_record_id = ?)`,
        ).run(userId, userId, deviceRecordId).changes;
      },
      queueSize() {
        return queueCounts(sql('SELECT state, count(*) AS n FROM push_deliveries GROUP BY state').all() as Array<{ state: string; n: number }>);
      },

      putReminder(r) {
        sql(
          `INSERT INTO push_reminders (user_id, item_id, occurrence_start, due_at, sent_at, shown_start, shown_due_at, shown_until)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (user_id, item_id) DO UPDATE SET
             occurrence_start = excluded.occurrence_start, due_at = excluded.due_at, sent_at = excluded.sent_at,
             shown_start = excluded.shown_start, shown_due_at = excluded.shown_due_at, shown_until = excluded.shown_until`,
        ).run(r.userId, r.itemId, r.occurrenceStart, r.dueAt, r.sentAt, ...shownColumns(r));
      },
      reminder(userId, itemId) {
        const r = sql('SELECT * FROM push_reminders WHERE user_id = ? AND item_id = ?').get(userId, itemId) as Row | undefined;
        return r && toPushReminder(r);
      },
      deleteReminder(userId, itemId) {
        const r = sql('DELETE FROM push_reminders WHERE user_id = ? AND item_id = ? RETURNING *').get(userId, itemId) as Row | undefined;
        return r && toPushReminder(r);
      },
      dueReminders(now, limit) {
        return (
          sql('SELECT * FROM push_reminders WHERE sent_at IS NULL AND due_at <= ? ORDER BY due_at, user_id, item_id LIMIT ?').all(now, limit) as Row[]
        ).map(toPushReminder);
      },
      markReminderSent(userId, itemId, dueAt, now, shownUntil) {
        return (
          sql(
            `UPDATE push_reminders SET sent_at = ?,
               shown_start = CASE WHEN ? IS NULL THEN NULL ELSE occurrence_start END,
               shown_due_at = CASE WHEN ? IS NULL THEN NULL ELSE due_at END,
               shown_until = ?
             WHERE user_id = ? AND item_id = ? AND due_at = ? AND sent_at IS NULL`,
          ).run(now, shownUntil, shownUntil, shownUntil, userId, itemId, dueAt).changes === 1
        );
      },
      purgeReminders(startedBefore, now) {
        return sql('DELETE FROM push_reminders WHERE sent_at IS NOT NULL AND occurrence_start < ? AND (shown_until IS NULL OR shown_until <= ?)').run(
          startedBefore,
          now,
        ).changes;
      },
    },
  };
}
