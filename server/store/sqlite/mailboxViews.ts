/**
 * Mailbox views in SQLite (issue 19; schema/sqlite/0011_mailbox_settings.sql): a mailbox's settings document, the
 * automatic replies owed and sent, and shared mailboxes with their members. The row mappers and orders are shared
 * with the PostgreSQL store (its booleans come back as booleans, SQLite's as 0/1).
 *
 * Nothing here is kept by the hot cache, so writes announce no invalidation: a membership change takes effect on
 * the next call because every call reads it from the store.
 */
import type { Sql } from './devices';
import { toUser } from '../rows';
import type { AutoReplyRecord, MailboxSettingsRecord, SharedMailbox, SharedMailboxMember, StoreMethods } from '../types';

type Row = Record<string, unknown>;

const flag = (v: unknown) => v === true || v === 1;

export const toMailboxSettings = (r: Row): MailboxSettingsRecord => ({
  userId: r.user_id as string,
  version: Number(r.version),
  doc: r.doc as string,
  updatedAt: Number(r.updated_at),
});

export const toAutoReply = (r: Row): AutoReplyRecord => ({
  id: r.id as string,
  userId: r.user_id as string,
  period: r.period as string,
  sender: r.sender as string,
  itemId: r.item_id as string,
  state: r.state as AutoReplyRecord['state'],
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

/**
 * The columns a shared mailbox is read with: the user row whole, and the time it became shared under a name of its
 * own (the user row has a `created_at` too).
 */
export const SHARED_MAILBOX_COLUMNS = 'u.*, s.created_at AS shared_at';

export const toSharedMailbox = (r: Row): SharedMailbox => ({ user: toUser(r), createdAt: Number(r.shared_at) });

export const toSharedMailboxMember = (r: Row): SharedMailboxMember => ({
  mailboxId: r.mailbox_id as string,
  memberId: r.member_id as string,
  fullAccess: flag(r.full_access),
  sendAs: flag(r.send_as),
  sendOnBehalf: flag(r.send_on_behalf),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

/** A membership's columns beside a shared mailbox's (`ofMember`), renamed where the user row has the same names. */
export const MEMBERSHIP_COLUMNS =
  'm.mailbox_id, m.member_id, m.full_access, m.send_as, m.send_on_behalf, m.created_at AS member_created_at, m.updated_at AS member_updated_at';

export const toMembership = (r: Row): { mailbox: SharedMailbox; rights: SharedMailboxMember } => ({
  mailbox: toSharedMailbox(r),
  rights: toSharedMailboxMember({ ...r, created_at: r.member_created_at, updated_at: r.member_updated_at }),
});

/** Oldest first; equal times by id, so both backends answer one order. */
export const OLDEST_FIRST = 'ORDER BY created_at, id';
/** Shared mailboxes by address, equal addresses by id (bytewise on both backends). */
export const BY_ADDRESS = 'ORDER BY u.email, u.id';
/** A mailbox's members in the order they were added, equal times by member id. */
export const MEMBERS_ORDER = 'ORDER BY created_at, member_id';

/** What `putMember` throws when the mailbox is not a shared mailbox or the member is no user of its tenant. */
export const noSuchMembership = (m: Pick<SharedMailboxMember, 'mailboxId' | 'memberId'>) =>
  new Error(`no shared mailbox ${m.mailboxId} with a user ${m.memberId} in its tenant`);

export function mailboxViewRepositories(sql: Sql): Pick<StoreMethods, 'mailboxSettings' | 'autoReplies' | 'sharedMailboxes'> {
  const sharedMailboxes: StoreMethods['sharedMailboxes'] = {
    create(userId, now) {
      // Again for a mailbox that is shared already: answers it as it is (the first creation's time).
      sql(
        `INSERT INTO shared_mailboxes (user_id, tenant_id, created_at) SELECT id, tenant_id, ? FROM users WHERE id = ?
         ON CONFLICT (user_id) DO NOTHING`,
      ).run(now, userId);
      const created = sharedMailboxes.get(userId);
      if (!created) throw new Error(`no such user ${userId}`);
      return created;
    },
    get(userId) {
      const r = sql(`SELECT ${SHARED_MAILBOX_COLUMNS} FROM shared_mailboxes s JOIN users u ON u.id = s.user_id WHERE s.user_id = ?`).get(
        userId,
      ) as Row | undefined;
      return r && toSharedMailbox(r);
    },
    list(tenantId) {
      return (
        sql(`SELECT ${SHARED_MAILBOX_COLUMNS} FROM shared_mailboxes s JOIN users u ON u.id = s.user_id WHERE s.tenant_id = ? ${BY_ADDRESS}`).all(
          tenantId,
        ) as Row[]
      ).map(toSharedMailbox);
    },
    putMember(m) {
      // The membership is written only when the mailbox is shared and the member is a user of its tenant (as
      // PostgreSQL's foreign keys hold it); a replaced one keeps the time it was first written.
      const written = sql(
        `INSERT INTO shared_mailbox_members (mailbox_id, member_id, full_access, send_as, send_on_behalf, created_at, updated_at)
         SELECT s.user_id, u.id, ?, ?, ?, ?, ? FROM shared_mailboxes s JOIN users u ON u.tenant_id = s.tenant_id
         WHERE s.user_id = ? AND u.id = ?
         ON CONFLICT (mailbox_id, member_id) DO UPDATE SET full_access = excluded.full_access, send_as = excluded.send_as,
           send_on_behalf = excluded.send_on_behalf, updated_at = excluded.updated_at`,
      ).run(m.fullAccess ? 1 : 0, m.sendAs ? 1 : 0, m.sendOnBehalf ? 1 : 0, m.createdAt, m.updatedAt, m.mailboxId, m.memberId);
      if (written.changes !== 1) throw noSuchMembership(m);
    },
    removeMember(mailboxId, memberId) {
      return sql('DELETE FROM shared_mailbox_members WHERE mailbox_id = ? AND member_id = ?').run(mailboxId, memberId).changes === 1;
    },
    member(mailboxId, memberId) {
      const r = sql('SELECT * FROM shared_mailbox_members WHERE mailbox_id = ? AND member_id = ?').get(mailboxId, memberId) as Row | undefined;
      return r && toSharedMailboxMember(r);
    },
    members(mailboxId) {
      return (sql(`SELECT * FROM shared_mailbox_members WHERE mailbox_id = ? ${MEMBERS_ORDER}`).all(mailboxId) as Row[]).map(toSharedMailboxMember);
    },
    ofMember(memberId) {
      return (
        sql(
          `SELECT ${SHARED_MAILBOX_COLUMNS}, ${MEMBERSHIP_COLUMNS}
           FROM shared_mailbox_members m JOIN shared_mailboxes s ON s.user_id = m.mailbox_id JOIN users u ON u.id = s.user_id
           WHERE m.member_id = ? ${BY_ADDRESS}`,
        ).all(memberId) as Row[]
      ).map(toMembership);
    },
  };

  return {
    mailboxSettings: {
      get(userId) {
        const r = sql('SELECT * FROM mailbox_settings WHERE user_id = ?').get(userId) as Row | undefined;
        return r && toMailboxSettings(r);
      },
      put(userId, doc, expectedVersion, now) {
        // Compare-and-set, as access.putConfig: the first document only where there is none, a change only of the
        // version the caller read.
        const r =
          expectedVersion === 0
            ? sql(
                `INSERT INTO mailbox_settings (user_id, version, doc, updated_at) VALUES (?, 1, ?, ?)
                 ON CONFLICT (user_id) DO NOTHING RETURNING *`,
              ).get(userId, doc, now)
            : sql(
                `UPDATE mailbox_settings SET version = version + 1, doc = ?, updated_at = ?
                 WHERE user_id = ? AND version = ? RETURNING *`,
              ).get(doc, now, userId, expectedVersion);
        return r === undefined ? undefined : toMailboxSettings(r as Row);
      },
    },

    autoReplies: {
      claim(entry, now) {
        // Only the one-per-sender rule is absorbed: a repeated record id is a bug and still throws.
        return (
          sql(
            `INSERT INTO auto_replies (id, user_id, period, sender, item_id, state, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (user_id, period, sender) DO NOTHING`,
          ).run(entry.id, entry.userId, entry.period, entry.sender.toLowerCase(), entry.itemId, now, now).changes === 1
        );
      },
      pending(limit) {
        return (sql(`SELECT * FROM auto_replies WHERE state = 'pending' ${OLDEST_FIRST} LIMIT ?`).all(limit) as Row[]).map(toAutoReply);
      },
      finish(id, state, now) {
        return sql(`UPDATE auto_replies SET state = ?, updated_at = ? WHERE id = ? AND state = 'pending'`).run(state, now, id).changes === 1;
      },
      ofPeriod(userId, period) {
        return (sql(`SELECT * FROM auto_replies WHERE user_id = ? AND period = ? ${OLDEST_FIRST}`).all(userId, period) as Row[]).map(toAutoReply);
      },
      purge(before) {
        return sql(`DELETE FROM auto_replies WHERE state <> 'pending' AND updated_at < ?`).run(before).changes;
      },
    },

    sharedMailboxes,
  };
}
