/**
 * Mailbox views in PostgreSQL (the SQLite store's mailboxViews.ts is the specification, and its row mappers and
 * orders are used here; schema/postgres/0013_mailbox_settings.sql). Nothing of these groups is cached: writes
 * announce nothing.
 *
 * Shared mailboxes are tenant data here: a membership row carries the mailbox's tenant, and the foreign keys hold
 * that the member is a user of that tenant (SQLite's store checks the same when it writes).
 */
import type { TxStore } from '../types';
import {
  BY_ADDRESS,
  MEMBERSHIP_COLUMNS,
  MEMBERS_ORDER,
  OLDEST_FIRST,
  SHARED_MAILBOX_COLUMNS,
  noSuchMembership,
  toAutoReply,
  toMailboxSettings,
  toMembership,
  toSharedMailbox,
  toSharedMailboxMember,
} from '../sqlite/mailboxViews';
import { limitParam, rowCount, rows, type Tx } from './tx';

/** A shared mailbox joined with its user row (the same tenant: the foreign key's). */
const SHARED_MAILBOX = `shared_mailboxes s JOIN users u ON u.tenant_id = s.tenant_id AND u.id = s.user_id`;

export function mailboxViewSteps(tx: Tx): Pick<TxStore, 'mailboxSettings' | 'autoReplies' | 'sharedMailboxes'> {
  const sharedMailboxes: TxStore['sharedMailboxes'] = {
    *create(userId, now) {
      // Again for a mailbox that is shared already: answers it as it is (the first creation's time).
      yield* rowCount(
        tx,
        `INSERT INTO shared_mailboxes (tenant_id, user_id, created_at) SELECT tenant_id, id, $2::bigint FROM users WHERE id = $1
         ON CONFLICT (tenant_id, user_id) DO NOTHING`,
        [userId, now],
      );
      const created = yield* sharedMailboxes.get(userId);
      if (!created) throw new Error(`no such user ${userId}`);
      return created;
    },
    *get(userId) {
      const [r] = yield* rows(tx, `SELECT ${SHARED_MAILBOX_COLUMNS} FROM ${SHARED_MAILBOX} WHERE s.user_id = $1`, [userId]);
      return r && toSharedMailbox(r);
    },
    *list(tenantId) {
      return (yield* rows(tx, `SELECT ${SHARED_MAILBOX_COLUMNS} FROM ${SHARED_MAILBOX} WHERE s.tenant_id = $1 ${BY_ADDRESS}`, [tenantId])).map(
        toSharedMailbox,
      );
    },
    *putMember(m) {
      // Written only when the mailbox is shared and the member is a user of its tenant; a replaced membership keeps
      // the time it was first written.
      const written = yield* rowCount(
        tx,
        `INSERT INTO shared_mailbox_members
           (tenant_id, mailbox_id, member_id, full_access, send_as, send_on_behalf, created_at, updated_at)
         SELECT s.tenant_id, s.user_id, u.id, $3::boolean, $4::boolean, $5::boolean, $6::bigint, $7::bigint
         FROM shared_mailboxes s JOIN users u ON u.tenant_id = s.tenant_id AND u.id = $2
         WHERE s.user_id = $1
         ON CONFLICT (tenant_id, mailbox_id, member_id) DO UPDATE SET full_access = excluded.full_access,
           send_as = excluded.send_as, send_on_behalf = excluded.send_on_behalf, updated_at = excluded.updated_at`,
        [m.mailboxId, m.memberId, m.fullAccess, m.sendAs, m.sendOnBehalf, m.createdAt, m.updatedAt],
      );
      if (written !== 1) throw noSuchMembership(m);
    },
    *removeMember(mailboxId, memberId) {
      return (yield* rowCount(tx, 'DELETE FROM shared_mailbox_members WHERE mailbox_id = $1 AND member_id = $2', [mailboxId, memberId])) === 1;
    },
    *member(mailboxId, memberId) {
      const [r] = yield* rows(tx, 'SELECT * FROM shared_mailbox_members WHERE mailbox_id = $1 AND member_id = $2', [mailboxId, memberId]);
      return r && toSharedMailboxMember(r);
    },
    *members(mailboxId) {
      return (yield* rows(tx, `SELECT * FROM shared_mailbox_members WHERE mailbox_id = $1 ${MEMBERS_ORDER}`, [mailboxId])).map(toSharedMailboxMember);
    },
    *ofMember(memberId) {
      return (
        yield* rows(
          tx,
          `SELECT ${SHARED_MAILBOX_COLUMNS}, ${MEMBERSHIP_COLUMNS}
           FROM shared_mailbox_members m
             JOIN shared_mailboxes s ON s.tenant_id = m.tenant_id AND s.user_id = m.mailbox_id
             JOIN users u ON u.tenant_id = s.tenant_id AND u.id = s.user_id
           WHERE m.member_id = $1 ${BY_ADDRESS}`,
          [memberId],
        )
      ).map(toMembership);
    },
  };

  return {
    mailboxSettings: {
      *get(userId) {
        const [r] = yield* rows(tx, 'SELECT * FROM mailbox_settings WHERE user_id = $1', [userId]);
        return r && toMailboxSettings(r);
      },
      *put(userId, doc, expectedVersion, now) {
        // As access.putConfig: under READ COMMITTED a concurrent writer of the row is waited for, and the version is
        // then compared with what it committed, so of two changes from one version one wins.
        const [r] =
          expectedVersion === 0
            ? yield* rows(
                tx,
                `INSERT INTO mailbox_settings (user_id, version, doc, updated_at) VALUES ($1, 1, $2, $3)
                 ON CONFLICT (user_id) DO NOTHING RETURNING *`,
                [userId, doc, now],
              )
            : yield* rows(
                tx,
                `UPDATE mailbox_settings SET version = version + 1, doc = $1, updated_at = $2
                 WHERE user_id = $3 AND version = $4 RETURNING *`,
                [doc, now, userId, expectedVersion],
              );
        return r && toMailboxSettings(r);
      },
    },

    autoReplies: {
      *claim(entry, now) {
        // Only the one-per-sender rule is absorbed: a repeated record id is a bug and still throws.
        const inserted = yield* rowCount(
          tx,
          `INSERT INTO auto_replies (user_id, id, period, sender, item_id, state, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) ON CONFLICT (user_id, period, sender) DO NOTHING`,
          [entry.userId, entry.id, entry.period, entry.sender.toLowerCase(), entry.itemId, now],
        );
        return inserted === 1;
      },
      *pending(limit) {
        return (yield* rows(tx, `SELECT * FROM auto_replies WHERE state = 'pending' ${OLDEST_FIRST} LIMIT $1`, [limitParam(limit)])).map(toAutoReply);
      },
      *finish(id, state, now) {
        return (yield* rowCount(tx, `UPDATE auto_replies SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'pending'`, [state, now, id])) === 1;
      },
      *ofPeriod(userId, period) {
        return (yield* rows(tx, `SELECT * FROM auto_replies WHERE user_id = $1 AND period = $2 ${OLDEST_FIRST}`, [userId, period])).map(toAutoReply);
      },
      *purge(before) {
        return yield* rowCount(tx, `DELETE FROM auto_replies WHERE state <> 'pending' AND updated_at < $1`, [before]);
      },
    },

    sharedMailboxes,
  };
}
