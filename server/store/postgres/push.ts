/**
 * Background push in PostgreSQL (schema/postgres/0016_background_push.sql; the SQLite store's push.ts is the
 * specification, and its row mappers are used here). Every table is mailbox data keyed by `user_id`.
 *
 * - A channel's `(kind, address)` is kept unique without a unique index (one would span distribution keys): the unit
 *   that registers takes a transaction-scoped advisory lock named after the address, then deletes another
 *   device's or user's row and refreshes or inserts this one.
 * - The outbox is written at commit by the store's transaction code (index.ts `attempt`, `PG_OUTBOX_UPSERT` below),
 *   which holds the mailbox's lock then (every change to a mailbox takes it). `takeOutbox` therefore takes the
 *   mailboxes' locks FIRST (skipping busy ones) and only then deletes their rows: the other order would deadlock
 *   with a committing writer, which waits for the outbox row while the taker's unit waits for the mailbox to read
 *   its changes. The taken mailboxes stay locked by the unit (recorded in `tx.locked`), so its reads need no more.
 * - A claim locks due rows with FOR UPDATE SKIP LOCKED in push_deliveries_due order, so concurrent drainers (the
 *   nodes' leaders) claim disjoint sets, and answers each with its channel in the same statement.
 * - Send budgets (the drain's rate limits, shared by every node) are rows of `rate_limits` (0007, the token
 *   endpoint's table) under their own limiter name: one upsert per request batch, each row locked to the unit's end.
 */
import type { PushOutboxEntry, TxStore } from '../types';
import { jsonValue } from '../rows';
import { newId } from '../../ids';
import { exclusiveLockKey } from './exclusive';
import { byOutboxAge, channelCounts, queueCounts, SEND_BUDGET_CAP, sendBudgetGrant, toPushChannel, toPushDelivery, toPushOutbox, shownColumns, toPushReminder } from '../sqlite/push';
import { json, limitParam, rowCount, rows, type Row, type Tx } from './tx';

/**
 * The commit-time outbox write, for every mailbox the transaction changed at once (unnest of user ids, first
 * modseqs − 1 and last modseqs, sorted by user id; $4 the time): only users with a channel, and shared mailboxes
 * with a full-access member who has one, widening an existing span.
 */
export const PG_OUTBOX_UPSERT = `INSERT INTO push_outbox AS o (user_id, from_modseq, to_modseq, created_at)
  SELECT x.u, x.f, x.t, $4::bigint FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS x(u, f, t)
  WHERE EXISTS (SELECT 1 FROM push_channels c WHERE c.user_id = x.u)
    OR EXISTS (SELECT 1 FROM shared_mailbox_members m WHERE m.mailbox_id = x.u AND m.full_access
               AND EXISTS (SELECT 1 FROM push_channels c WHERE c.user_id = m.member_id))
  ON CONFLICT (user_id) DO UPDATE SET from_modseq = least(o.from_modseq, excluded.from_modseq), to_modseq = greatest(o.to_modseq, excluded.to_modseq)`;

const CHANNEL_COLUMNS =
  'user_id, id, tenant_id, device_record_id, device_id, client_id, session_version, kind, address, keys, events, created_at, updated_at, last_success_at, failures';
const DELIVERY_COLUMNS = 'user_id, id, channel_id, collapse_key, message, state, attempts, not_before, lease_until, origin_at, created_at';
const REMINDER_COLUMNS = 'user_id, item_id, occurrence_start, due_at, sent_at, shown_start, shown_due_at, shown_until';

/** The `rate_limits` limiter name of background push's send budgets (the token endpoint's are others). */
export const SEND_BUDGET_LIMITER = 'background push sends';

const channelOf = (r: Row | undefined) => r && toPushChannel(r, jsonValue);
const ms = (n: number) => Math.round(n);

export function pushSteps(tx: Tx): Pick<TxStore, 'push'> {
  return {
    push: {
      *putChannel(c, now) {
        // Registrations of one address wait for each other here, so two at once cannot both insert it.
        yield* rows(tx, 'SELECT pg_advisory_xact_lock($1::bigint)', [exclusiveLockKey(`push channel ${c.kind} ${c.address}`)]);
        // Another device's or user's row of the address goes (its deliveries with it, by the foreign key).
        yield* rowCount(tx, 'DELETE FROM push_channels WHERE kind = $1 AND address = $2 AND NOT (user_id = $3 AND device_record_id = $4)', [
          c.kind,
          c.address,
          c.userId,
          c.deviceRecordId,
        ]);
        const [refreshed] = yield* rows(
          tx,
          `UPDATE push_channels SET tenant_id = $5, device_id = $6, client_id = $7, session_version = $8, keys = $9::jsonb, events = $10::jsonb,
             updated_at = $11, failures = 0
           WHERE kind = $1 AND address = $2 AND user_id = $3 AND device_record_id = $4 RETURNING ${CHANNEL_COLUMNS}`,
          [c.kind, c.address, c.userId, c.deviceRecordId, c.tenantId, c.deviceId, c.clientId, c.sessionVersion, json(c.keys ?? {}), json(c.events), now],
        );
        if (refreshed) return channelOf(refreshed)!;
        const [inserted] = yield* rows(
          tx,
          `INSERT INTO push_channels (${CHANNEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12, $12, NULL, 0)
           RETURNING ${CHANNEL_COLUMNS}`,
          [c.userId, newId(), c.tenantId, c.deviceRecordId, c.deviceId, c.clientId, c.sessionVersion, c.kind, c.address, json(c.keys ?? {}), json(c.events), now],
        );
        return channelOf(inserted)!;
      },
      *channel(userId, id) {
        const [r] = yield* rows(tx, `SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE user_id = $1 AND id = $2`, [userId, id]);
        return channelOf(r);
      },
      *channelsOfDevice(userId, deviceRecordId) {
        return (
          yield* rows(tx, `SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE user_id = $1 AND device_record_id = $2 ORDER BY created_at, id`, [
            userId,
            deviceRecordId,
          ])
        ).map((r) => toPushChannel(r, jsonValue));
      },
      *channelsOfUser(userId) {
        return (yield* rows(tx, `SELECT ${CHANNEL_COLUMNS} FROM push_channels WHERE user_id = $1 ORDER BY created_at, id`, [userId])).map((r) =>
          toPushChannel(r, jsonValue),
        );
      },
      *deleteChannel(userId, id) {
        return (yield* rowCount(tx, 'DELETE FROM push_channels WHERE user_id = $1 AND id = $2', [userId, id])) === 1;
      },
      *deleteChannelsOfDevice(userId, deviceRecordId) {
        return yield* rowCount(tx, 'DELETE FROM push_channels WHERE user_id = $1 AND device_record_id = $2', [userId, deviceRecordId]);
      },
      *noteResult(userId, id, ok, now) {
        if (ok) yield* rowCount(tx, 'UPDATE push_channels SET failures = 0, last_success_at = $3 WHERE user_id = $1 AND id = $2', [userId, id, now]);
        else yield* rowCount(tx, 'UPDATE push_channels SET failures = failures + 1 WHERE user_id = $1 AND id = $2', [userId, id]);
      },
      *countChannels() {
        return channelCounts(yield* rows<{ kind: string; n: number }>(tx, 'SELECT kind, count(*) AS n FROM push_channels GROUP BY kind'));
      },

      *takeOutbox(limit) {
        if (limit <= 0) return [];
        // The mailboxes' locks first (see the top of this file); a mailbox a writer holds is left for the next take.
        const taken: PushOutboxEntry[] = (
          yield* rows(
            tx,
            `DELETE FROM push_outbox o WHERE o.user_id IN (
               SELECT m.user_id FROM mailboxes m
               WHERE m.user_id IN (SELECT user_id FROM push_outbox ORDER BY created_at, user_id LIMIT $1)
               FOR NO KEY UPDATE OF m SKIP LOCKED)
             RETURNING o.user_id, o.from_modseq, o.to_modseq, o.created_at`,
            [limit],
          )
        ).map(toPushOutbox);
        for (const entry of taken) tx.locked.add(entry.userId);
        return taken.sort(byOutboxAge);
      },
      *outboxSize() {
        const [r] = yield* rows<{ n: number }>(tx, 'SELECT count(*) AS n FROM push_outbox');
        return Number(r!.n);
      },

      *enqueue(deliveries, now) {
        if (deliveries.length === 0) return;
        // One statement may not upsert a row twice: the last of a channel's key wins, as one after another would.
        const last = new Map(deliveries.map((d) => [`${d.userId}\n${d.channelId}\n${d.collapseKey}`, d]));
        const batch = [...last.values()].map((d) => ({
          user_id: d.userId,
          id: d.id,
          channel_id: d.channelId,
          collapse_key: d.collapseKey,
          message: d.message,
          not_before: ms(d.notBefore),
          origin_at: ms(d.originAt),
        }));
        yield* rowCount(
          tx,
          `INSERT INTO push_deliveries AS d (${DELIVERY_COLUMNS})
           SELECT x.user_id, x.id, x.channel_id, x.collapse_key, x.message, 'queued', 0, x.not_before, NULL, x.origin_at, $2::bigint
           FROM jsonb_to_recordset($1::jsonb) AS x(user_id text, id text, channel_id text, collapse_key text, message jsonb, not_before bigint, origin_at bigint)
           WHERE EXISTS (SELECT 1 FROM push_channels c WHERE c.user_id = x.user_id AND c.id = x.channel_id)
           ORDER BY x.user_id COLLATE "C", x.channel_id COLLATE "C", x.collapse_key COLLATE "C"
           ON CONFLICT (user_id, channel_id, collapse_key) DO UPDATE SET
             id = excluded.id, message = excluded.message, state = 'queued', attempts = 0, not_before = excluded.not_before,
             lease_until = NULL, origin_at = excluded.origin_at, created_at = excluded.created_at`,
          [json(batch), ms(now)],
        );
      },
      *claim(now, limit, leaseMs) {
        if (limit <= 0) return [];
        const leaseUntil = ms(now + leaseMs);
        const claimed = yield* rows(
          tx,
          `WITH due AS (
             SELECT user_id, id, not_before FROM push_deliveries WHERE not_before <= $1 ORDER BY not_before LIMIT $2 FOR UPDATE SKIP LOCKED
           ), taken AS (
             UPDATE push_deliveries d SET state = 'sending', lease_until = $3, not_before = $3, attempts = d.attempts + 1
             FROM due WHERE d.user_id = due.user_id AND d.id = due.id
             RETURNING ${DELIVERY_COLUMNS.split(', ').map((c) => `d.${c}`).join(', ')}, due.not_before AS due_at
           )
           SELECT taken.*, to_jsonb(c) AS channel FROM taken JOIN push_channels c ON c.user_id = taken.user_id AND c.id = taken.channel_id
           ORDER BY taken.due_at, taken.id`,
          [ms(now), limit, leaseUntil],
        );
        return claimed.map((r) => ({ delivery: toPushDelivery(r, jsonValue), channel: toPushChannel(r.channel as Row, jsonValue) }));
      },
      *complete(userId, id) {
        return (yield* rowCount(tx, 'DELETE FROM push_deliveries WHERE user_id = $1 AND id = $2', [userId, id])) === 1;
      },
      *release(userId, id, notBefore, deferred = false) {
        return (
          (yield* rowCount(tx, `UPDATE push_deliveries SET state = 'queued', not_before = $3, lease_until = NULL, attempts = GREATEST(attempts - $4, 0) WHERE user_id = $1 AND id = $2`, [
            userId,
            id,
            ms(notBefore),
            deferred ? 1 : 0,
          ])) === 1
        );
      },
      *takeSendBudget(requests, limit, windowMs, now) {
        if (requests.length === 0) return [];
        // Rows are locked in the order given (callers sort); a key twice in one upsert is an error, so they are summed.
        const wants = new Map<string, number>();
        for (const r of requests) wants.set(r.key, (wants.get(r.key) ?? 0) + r.want);
        const found = yield* rows(
          tx,
          `INSERT INTO rate_limits AS r (name, key, hits, reset_at)
             SELECT $1, x.k, least(x.w, $4::int), $5::bigint + $6::bigint FROM unnest($2::text[], $3::int[]) WITH ORDINALITY AS x(k, w, i) ORDER BY x.i
           ON CONFLICT (name, key) DO UPDATE SET
             hits = CASE WHEN r.reset_at <= $5::bigint THEN excluded.hits ELSE least(r.hits + excluded.hits, $4::int) END,
             reset_at = CASE WHEN r.reset_at <= $5::bigint THEN excluded.reset_at ELSE r.reset_at END
           RETURNING key, hits, reset_at`,
          [SEND_BUDGET_LIMITER, [...wants.keys()], [...wants.values()], SEND_BUDGET_CAP, ms(now), Math.max(1, ms(windowMs))],
        );
        const byKey = new Map(found.map((r) => [String(r.key), { hits: Number(r.hits), resetAt: Number(r.reset_at) }]));
        // A key asked twice shares its row's grant: the first request takes what it can, the next what is left.
        const left = new Map<string, number>();
        return requests.map(({ key, want }) => {
          const row = byKey.get(key)!;
          if (!left.has(key)) left.set(key, sendBudgetGrant(row.hits, wants.get(key)!, limit));
          const granted = Math.min(want, left.get(key)!);
          left.set(key, left.get(key)! - granted);
          return { granted, resetAt: row.resetAt };
        });
      },
      *dropDeliveriesOfDevice(userId, deviceRecordId) {
        return yield* rowCount(
          tx,
          `DELETE FROM push_deliveries WHERE user_id = $1 AND channel_id IN
             (SELECT id FROM push_channels WHERE user_id = $1 AND device_record_id = $2)`,
          [userId, deviceRecordId],
        );
      },
      *queueSize() {
        return queueCounts(yield* rows<{ state: string; n: number }>(tx, 'SELECT state, count(*) AS n FROM push_deliveries GROUP BY state'));
      },

      *putReminder(r) {
        yield* rowCount(
          tx,
          `INSERT INTO push_reminders (${REMINDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (user_id, item_id) DO UPDATE SET
             occurrence_start = excluded.occurrence_start, due_at = excluded.due_at, sent_at = excluded.sent_at,
             shown_start = excluded.shown_start, shown_due_at = excluded.shown_due_at, shown_until = excluded.shown_until`,
          [r.userId, r.itemId, ms(r.occurrenceStart), ms(r.dueAt), r.sentAt === null ? null : ms(r.sentAt), ...shownColumns(r).map((v) => (v === null ? null : ms(v)))],
        );
      },
      *reminder(userId, itemId) {
        const [r] = yield* rows(tx, `SELECT ${REMINDER_COLUMNS} FROM push_reminders WHERE user_id = $1 AND item_id = $2`, [userId, itemId]);
        return r && toPushReminder(r);
      },
      *deleteReminder(userId, itemId) {
        const [r] = yield* rows(tx, `DELETE FROM push_reminders WHERE user_id = $1 AND item_id = $2 RETURNING ${REMINDER_COLUMNS}`, [userId, itemId]);
        return r && toPushReminder(r);
      },
      *dueReminders(now, limit) {
        return (
          yield* rows(
            tx,
            `SELECT ${REMINDER_COLUMNS} FROM push_reminders WHERE sent_at IS NULL AND due_at <= $1 ORDER BY due_at, user_id, item_id LIMIT $2`,
            [ms(now), limitParam(limit)],
          )
        ).map(toPushReminder);
      },
      *markReminderSent(userId, itemId, dueAt, now, shownUntil) {
        return (
          (yield* rowCount(
            tx,
            `UPDATE push_reminders SET sent_at = $4,
               shown_start = CASE WHEN $5::bigint IS NULL THEN NULL ELSE occurrence_start END,
               shown_due_at = CASE WHEN $5::bigint IS NULL THEN NULL ELSE due_at END,
               shown_until = $5::bigint
             WHERE user_id = $1 AND item_id = $2 AND due_at = $3 AND sent_at IS NULL`,
            [userId, itemId, ms(dueAt), ms(now), shownUntil === null ? null : ms(shownUntil)],
          )) === 1
        );
      },
      *purgeReminders(startedBefore, now) {
        return yield* rowCount(
          tx,
          'DELETE FROM push_reminders WHERE sent_at IS NOT NULL AND occurrence_start < $1 AND (shown_until IS NULL OR shown_until <= $2)',
          [ms(startedBefore), ms(now)],
        );
      },
    },
  };
}
