/**
 * The SQLite implementation of `Store`. Rows are mapped to domain records at this edge (snake_case → camelCase);
 * statements are prepared once and cached, because preparing costs more than running most of them.
 */
import crypto from 'node:crypto';
import type { Statement } from 'better-sqlite3';
import { openDatabase, migrate, type Db, type MigrationReport } from './db';
import { newId } from '../../ids';
import { deviceRepositories } from './devices';
import {
  WELL_KNOWN_FOLDERS,
  type AttachmentRecord,
  type ConnectionPragmas,
  type Folder,
  type FolderKind,
  type Item,
  type Mailbox,
  type NewItem,
  type NewRefreshToken,
  type NewUser,
  type RefreshTokenRecord,
  type Store,
  type Tenant,
  type User,
} from '../types';

type Row = Record<string, unknown>;

/** At most `max` characters (code points), never splitting a surrogate pair. */
function truncateChars(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

export interface SqliteStore extends Store {
  readonly migrations: MigrationReport;
  /** The underlying handle, for tests that inspect the file directly (never for services). */
  readonly db: Db;
}

export function openSqliteStore(file: string): SqliteStore {
  const db = openDatabase(file);
  const migrations = migrate(db);
  const cache = new Map<string, Statement>();
  const sql = (text: string): Statement => {
    let s = cache.get(text);
    if (!s) {
      s = db.prepare(text);
      cache.set(text, s);
    }
    return s;
  };

  const toUser = (r: Row): User => ({
    id: r.id as string,
    tenantId: r.tenant_id as string,
    username: r.username as string,
    email: r.email as string,
    displayName: r.display_name as string,
    role: r.role as User['role'],
    passwordHash: (r.password_hash as string | null) ?? null,
    sessionVersion: r.session_version as number,
    disabled: r.disabled === 1,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  });

  const toRefresh = (r: Row): RefreshTokenRecord => ({
    id: r.id as string,
    familyId: r.family_id as string,
    userId: r.user_id as string,
    deviceId: (r.device_id as string | null) ?? null,
    clientId: r.client_id as string,
    scope: r.scope as string,
    tokenHash: r.token_hash as Buffer,
    createdAt: r.created_at as number,
    expiresAt: r.expires_at as number,
    rotatedAt: (r.rotated_at as number | null) ?? null,
    replacedBy: (r.replaced_by as string | null) ?? null,
    revokedAt: (r.revoked_at as number | null) ?? null,
    revokedReason: (r.revoked_reason as string | null) ?? null,
  });

  const toFolder = (r: Row): Folder => ({
    id: r.id as string,
    userId: r.user_id as string,
    parentId: (r.parent_id as string | null) ?? null,
    displayName: r.display_name as string,
    kind: r.kind as FolderKind,
    totalCount: r.total_count as number,
    unreadCount: r.unread_count as number,
    modseq: r.modseq as number,
    createdAt: r.created_at as number,
  });

  const toItem = (r: Row): Item => ({
    id: r.id as string,
    userId: r.user_id as string,
    folderId: r.folder_id as string,
    type: r.type as Item['type'],
    receivedAt: r.received_at as number,
    modseq: r.modseq as number,
    changeKey: r.change_key as string,
    isRead: r.is_read === 1,
    isFlagged: r.is_flagged === 1,
    importance: r.importance as Item['importance'],
    categories: JSON.parse(r.categories as string),
    inferenceClassification: r.inference as Item['inferenceClassification'],
    subject: r.subject as string,
    from: r.from_json ? JSON.parse(r.from_json as string) : null,
    to: JSON.parse(r.to_json as string),
    cc: JSON.parse(r.cc_json as string),
    replyTo: JSON.parse(r.reply_to_json as string),
    sentAt: (r.sent_at as number | null) ?? null,
    preview: r.preview as string,
    hasAttachments: r.has_attachments === 1,
    bodySize: r.body_size as number,
    conversationId: (r.conversation_id as string | null) ?? null,
    internetMessageId: (r.internet_message_id as string | null) ?? null,
    mimeBlobId: (r.mime_blob_id as string | null) ?? null,
    data: JSON.parse(r.data_json as string),
    createdAt: r.created_at as number,
  });

  /** Takes the mailbox's next modseq: unique and strictly increasing, in the caller's transaction. */
  const nextModseq = (userId: string): number => {
    const r = sql('UPDATE mailboxes SET highest_modseq = highest_modseq + 1 WHERE user_id = ? RETURNING highest_modseq').get(
      userId,
    ) as { highest_modseq: number } | undefined;
    if (!r) throw new Error(`no mailbox for user ${userId}`);
    return r.highest_modseq;
  };

  const putBlob = (bytes: Buffer, now: number): string => {
    const id = crypto.createHash('sha256').update(bytes).digest('hex');
    sql('INSERT INTO blobs (id, size, data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING').run(
      id,
      bytes.length,
      bytes,
      now,
    );
    return id;
  };

  const transaction = <T>(fn: () => T): T => (db.inTransaction ? fn() : db.transaction(fn)());

  const store: SqliteStore = {
    db,
    migrations,
    transaction,
    ping() {
      sql('SELECT 1').get();
    },
    close() {
      if (!db.open) return;
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.close();
    },
    connectionPragmas(): ConnectionPragmas[] {
      return [
        {
          journalMode: String(db.pragma('journal_mode', { simple: true })),
          synchronous: Number(db.pragma('synchronous', { simple: true })),
          foreignKeys: Number(db.pragma('foreign_keys', { simple: true })),
          busyTimeout: Number(db.pragma('busy_timeout', { simple: true })),
        },
      ];
    },

    tenants: {
      create(name, now) {
        const tenant: Tenant = { id: newId(), name, createdAt: now };
        sql('INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)').run(tenant.id, name, now);
        return tenant;
      },
      get(id) {
        const r = sql('SELECT * FROM tenants WHERE id = ?').get(id) as Row | undefined;
        return r && { id: r.id as string, name: r.name as string, createdAt: r.created_at as number };
      },
    },

    users: {
      create(u: NewUser, now) {
        const id = newId();
        sql(
          `INSERT INTO users (id, tenant_id, username, email, display_name, role, password_hash, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(id, u.tenantId, u.username, u.email, u.displayName, u.role, u.passwordHash, now, now);
        return store.users.byId(id)!;
      },
      byId(id) {
        const r = sql('SELECT * FROM users WHERE id = ?').get(id) as Row | undefined;
        return r && toUser(r);
      },
      byUsername(username) {
        const r = sql('SELECT * FROM users WHERE username = ?').get(username) as Row | undefined;
        return r && toUser(r);
      },
      list() {
        return (sql('SELECT * FROM users ORDER BY username').all() as Row[]).map(toUser);
      },
      count() {
        return (sql('SELECT count(*) AS n FROM users').get() as { n: number }).n;
      },
      setPassword(id, passwordHash, now) {
        sql('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?').run(passwordHash, now, id);
      },
      bumpSessionVersion(id, now) {
        sql('UPDATE users SET session_version = session_version + 1, updated_at = ? WHERE id = ?').run(now, id);
      },
    },

    refreshTokens: {
      insert(t: NewRefreshToken) {
        sql(
          `INSERT INTO refresh_tokens (id, family_id, user_id, device_id, client_id, scope, token_hash, created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(t.id, t.familyId, t.userId, t.deviceId, t.clientId, t.scope, t.tokenHash, t.createdAt, t.expiresAt);
      },
      byHash(hash) {
        const r = sql('SELECT * FROM refresh_tokens WHERE token_hash = ?').get(hash) as Row | undefined;
        return r && toRefresh(r);
      },
      byId(id) {
        const r = sql('SELECT * FROM refresh_tokens WHERE id = ?').get(id) as Row | undefined;
        return r && toRefresh(r);
      },
      markRotated(id, replacedBy, now) {
        const res = sql(
          'UPDATE refresh_tokens SET rotated_at = ?, replaced_by = ? WHERE id = ? AND rotated_at IS NULL AND revoked_at IS NULL',
        ).run(now, replacedBy, id);
        return res.changes === 1;
      },
      revokeFamily(familyId, reason, now) {
        return sql(
          'UPDATE refresh_tokens SET revoked_at = ?, revoked_reason = ? WHERE family_id = ? AND revoked_at IS NULL',
        ).run(now, reason, familyId).changes;
      },
      revokeAllForUser(userId, reason, now) {
        return sql(
          'UPDATE refresh_tokens SET revoked_at = ?, revoked_reason = ? WHERE user_id = ? AND revoked_at IS NULL',
        ).run(now, reason, userId).changes;
      },
      revokeForDevice(userId, deviceId, reason, now) {
        return sql(
          `UPDATE refresh_tokens SET revoked_at = ?, revoked_reason = ?
           WHERE user_id = ? AND device_id = ? AND revoked_at IS NULL`,
        ).run(now, reason, userId, deviceId).changes;
      },
    },

    ...deviceRepositories(sql),

    mailboxes: {
      create(userId, now) {
        return transaction(() => {
          const epoch = crypto.randomBytes(8).toString('hex');
          sql('INSERT INTO mailboxes (user_id, highest_modseq, epoch, created_at) VALUES (?, 0, ?, ?)').run(userId, epoch, now);
          for (const f of WELL_KNOWN_FOLDERS) {
            const modseq = nextModseq(userId);
            const id = newId();
            sql(
              `INSERT INTO folders (id, user_id, parent_id, display_name, kind, modseq, created_at)
               VALUES (?, ?, NULL, ?, ?, ?, ?)`,
            ).run(id, userId, f.displayName, f.kind, modseq, now);
            sql(
              `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id)
               VALUES (?, ?, ?, 'folder', ?, 'created', NULL)`,
            ).run(userId, modseq, now, id);
          }
          return store.mailboxes.get(userId)!;
        });
      },
      get(userId) {
        const r = sql('SELECT * FROM mailboxes WHERE user_id = ?').get(userId) as Row | undefined;
        return r && { userId: r.user_id as string, highestModseq: r.highest_modseq as number, epoch: r.epoch as string };
      },
    },

    folders: {
      listByUser(userId) {
        return (sql('SELECT * FROM folders WHERE user_id = ? ORDER BY created_at, id').all(userId) as Row[]).map(toFolder);
      },
      byKind(userId, kind) {
        const r = sql('SELECT * FROM folders WHERE user_id = ? AND kind = ? ORDER BY created_at LIMIT 1').get(userId, kind) as
          | Row
          | undefined;
        return r && toFolder(r);
      },
    },

    items: {
      create(item: NewItem, now) {
        return transaction(() => {
          const folder = sql('SELECT user_id FROM folders WHERE id = ?').get(item.folderId) as Row | undefined;
          if (!folder || folder.user_id !== item.userId) throw new Error('folder does not belong to the item owner');
          const modseq = nextModseq(item.userId);
          const id = newId();
          const mimeBlobId = item.mime ? putBlob(item.mime, now) : null;
          const attachments = item.attachments ?? [];
          // Only mail is ever unread: events and contacts never count towards a folder's unread badge.
          const isRead = item.type === 'email' ? (item.isRead ?? false) : true;
          const bodySize = Buffer.byteLength(item.bodyHtml ?? item.bodyText ?? '', 'utf8');
          sql(
            `INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, change_key, is_read, is_flagged,
               importance, categories, inference, subject, from_json, to_json, cc_json, reply_to_json, sent_at, preview,
               has_attachments, body_size, conversation_id, internet_message_id, mime_blob_id, body_text, body_html,
               data_json, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          ).run(
            id,
            item.userId,
            item.folderId,
            item.type,
            item.receivedAt,
            modseq,
            String(modseq),
            isRead ? 1 : 0,
            item.isFlagged ? 1 : 0,
            item.importance ?? 'normal',
            JSON.stringify(item.categories ?? []),
            item.inferenceClassification ?? 'focused',
            item.subject,
            item.from ? JSON.stringify(item.from) : null,
            JSON.stringify(item.to ?? []),
            JSON.stringify(item.cc ?? []),
            JSON.stringify(item.replyTo ?? []),
            item.sentAt ?? null,
            truncateChars(item.preview ?? '', 256),
            attachments.some((a) => !a.isInline) ? 1 : 0,
            bodySize,
            item.conversationId ?? null,
            item.internetMessageId ?? null,
            mimeBlobId,
            item.bodyText ?? null,
            item.bodyHtml ?? null,
            JSON.stringify(item.data ?? {}),
            now,
          );
          attachments.forEach((a, position) => {
            const blobId = putBlob(a.content, now);
            sql(
              `INSERT INTO attachments (id, item_id, blob_id, name, content_type, size, is_inline, content_id, position)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            ).run(`att${position + 1}`, id, blobId, a.name, a.contentType, a.content.length, a.isInline ? 1 : 0, a.contentId, position);
          });
          sql(
            `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, received_at)
             VALUES (?, ?, ?, 'item', ?, 'created', ?, ?)`,
          ).run(item.userId, modseq, now, id, item.folderId, item.receivedAt);
          // The folder's counts are part of the hierarchy: it moves with the same modseq as the change that moved them.
          sql(
            `UPDATE folders SET total_count = total_count + 1, unread_count = unread_count + ?, modseq = ? WHERE id = ?`,
          ).run(isRead ? 0 : 1, modseq, item.folderId);
          return store.items.byId(item.userId, id)!;
        });
      },
      byId(userId, id) {
        const r = sql('SELECT * FROM items WHERE id = ? AND user_id = ?').get(id, userId) as Row | undefined;
        return r && toItem(r);
      },
      attachments(itemId): AttachmentRecord[] {
        return (sql('SELECT * FROM attachments WHERE item_id = ? ORDER BY position').all(itemId) as Row[]).map((r) => ({
          id: r.id as string,
          blobId: r.blob_id as string,
          name: r.name as string,
          contentType: r.content_type as string,
          size: r.size as number,
          isInline: r.is_inline === 1,
          contentId: (r.content_id as string | null) ?? null,
        }));
      },
    },
  };
  return store;
}
