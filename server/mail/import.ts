/**
 * Importing existing mail: the admin CLI's `import` (an mbox file or a directory of .eml files) and the admin API's
 * `POST /admin/v1/users/{id}/messages` (one message). Both hand every message to the one delivery path with the
 * import rules, so an import agrees with LMTP on parsing, threading and the change log (one `created` entry per
 * stored message):
 *
 * - a message is dated by its Date header (the time it was sent, not the time of the import), so imported mail sorts
 *   where it belongs; a missing or unreadable date means "now", and a date in the future is clamped to now (it would
 *   otherwise sit above every new message in each device's window for as long as the clock takes to catch up);
 * - a duplicate of any age is acknowledged and not stored again, so an interrupted import can simply be run again:
 *   what it already stored is reported as duplicates.
 *
 * A bulk import delivers up to IMPORT_BATCH messages per transaction: every commit is an fsync, and one commit per
 * message imported about a quarter as many messages per second (bench/search.ts; figures in the README). A message
 * that cannot be parsed, is too large, or is refused by delivery fails alone; the others are stored.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Clock } from '../clock';
import { mboxMessageStream } from '../content/mbox';
import { ApiError, errors } from '../errors';
import { WELL_KNOWN_FOLDERS, type Folder, type Step, type Store, type TxStore, type User } from '../store/types';
import type { Delivery, DeliveryResult, PreparedMessage } from './delivery';

export const IMPORT_BATCH = 50;

export interface ImportTarget {
  user: User;
  folder: Folder;
}

export interface ImportCounts {
  /** Messages read from the source so far. */
  processed: number;
  stored: number;
  duplicates: number;
  failed: number;
}

export interface ImportReport {
  stored: number;
  duplicates: number;
  /** `index` counts messages of the source from 0. */
  failed: Array<{ index: number; reason: string }>;
}

export interface ImporterDeps {
  store: Store;
  clock: Clock;
  delivery: Delivery;
  /** PIGEON_MAX_MESSAGE_BYTES: larger messages are refused, as LMTP refuses them. */
  maxMessageBytes: number;
}

const FOLDER_KINDS = new Set<string>(WELL_KNOWN_FOLDERS.map((f) => f.kind));

export function createImporter(deps: ImporterDeps) {
  const { store, clock, delivery } = deps;

  /**
   * The user's mail folder named by `folder`: a well-known kind (`inbox`, `archive`, ...) or a folder id; the Inbox
   * when absent. Unknown → 404 folderNotFound; calendar or contacts → 400 (only mail folders hold messages).
   */
  async function resolveTarget(user: User, folder?: string): Promise<ImportTarget> {
    const found = !folder
      ? await store.folders.byKind(user.id, 'inbox')
      : FOLDER_KINDS.has(folder)
        ? await store.folders.byKind(user.id, folder as Folder['kind'])
        : await store.folders.byId(user.id, folder);
    if (!found) throw errors.folderNotFound('No such folder for this user.');
    if (found.kind === 'calendar' || found.kind === 'contacts') {
      throw errors.invalidRequest('Messages can only be imported into mail folders.', [{ field: 'folderId', message: 'not a mail folder' }]);
    }
    return { user, folder: found };
  }

  /** Parses one message (asynchronous, no store access); refuses one over the size limit or not MIME. */
  async function prepare(raw: Buffer): Promise<PreparedMessage> {
    if (raw.length > deps.maxMessageBytes) throw errors.payloadTooLarge(deps.maxMessageBytes);
    if (raw.length === 0) throw errors.invalidRequest('The message is empty.');
    return delivery.prepare(raw);
  }

  /** Stores one prepared message with the import rules, as steps of the caller's unit of work. */
  function* deliverIn(tx: TxStore, target: ImportTarget, message: PreparedMessage, now: number): Step<DeliveryResult> {
    const sentAt = message.parsed.sentAt;
    const receivedAt = sentAt === null ? now : Math.min(sentAt, now);
    const [result] = yield* delivery.deliverIn(tx, message, [{ userId: target.user.id, folderId: target.folder.id }], { duplicates: 'import', receivedAt }, now);
    return result!;
  }

  /** Stores one prepared message with the import rules, in a transaction of its own. */
  function deliver(target: ImportTarget, message: PreparedMessage): Promise<DeliveryResult> {
    const now = clock.now();
    return store.run((tx) => deliverIn(tx, target, message, now));
  }

  /**
   * The admin API's import of one message into a user's mailbox (`folder` as for resolveTarget), stored and audited
   * in one transaction; a duplicate is acknowledged, stores nothing and is not audited. Another tenant's user is no
   * more visible to the admin than a user who does not exist.
   */
  async function importForAdmin(admin: { userId: string; tenantId: string }, userId: string, raw: Buffer, folder?: string): Promise<DeliveryResult> {
    const user = await store.users.byId(userId);
    if (!user || user.tenantId !== admin.tenantId) throw errors.notFound('No such user.');
    const target = await resolveTarget(user, folder);
    const message = await prepare(raw);
    const now = clock.now();
    return store.run(function* (tx) {
      const delivered = yield* deliverIn(tx, target, message, now);
      if (delivered.status === 'stored') {
        yield* tx.audit.append({
          tenantId: admin.tenantId,
          at: now,
          actorId: admin.userId,
          actorName: (yield* tx.users.byId(admin.userId))?.username ?? admin.userId,
          action: 'message.import',
          targetType: 'user',
          targetId: user.id,
          details: { itemId: delivered.itemId, folderId: delivered.folderId, internetMessageId: message.parsed.internetMessageId },
        });
      }
      return delivered;
    });
  }

  /**
   * Imports every message of `source` in order. Failures of single messages are reported, not thrown; a failure of
   * the store itself (disk full, say) ends the import by throwing, leaving what was committed before it in place.
   */
  async function importAll(
    target: ImportTarget,
    source: AsyncIterable<Buffer>,
    options: { onProgress?: (counts: ImportCounts) => void; batchSize?: number } = {},
  ): Promise<ImportReport> {
    const batchSize = options.batchSize ?? IMPORT_BATCH;
    const report: ImportReport = { stored: 0, duplicates: 0, failed: [] };
    let processed = 0;
    let batch: Array<{ index: number; message: PreparedMessage }> = [];

    const tally = (result: DeliveryResult) => {
      if (result.status === 'stored') report.stored++;
      else report.duplicates++;
    };
    const progress = () =>
      options.onProgress?.({ processed, stored: report.stored, duplicates: report.duplicates, failed: report.failed.length });

    const flush = async () => {
      if (batch.length === 0) return;
      const pending = batch;
      batch = [];
      const now = clock.now();
      let results: DeliveryResult[] | undefined;
      try {
        results = await store.run(function* (tx) {
          const out: DeliveryResult[] = [];
          for (const p of pending) out.push(yield* deliverIn(tx, target, p.message, now));
          return out;
        });
      } catch {
        results = undefined; // retried one by one below
      }
      if (results) results.forEach(tally);
      else {
        // The batch rolled back as a whole. Deliver its messages one by one so that only the culprit fails.
        for (const p of pending) {
          try {
            tally(await deliver(target, p.message));
          } catch (err) {
            if (!(err instanceof ApiError)) throw err;
            report.failed.push({ index: p.index, reason: err.message });
          }
        }
      }
      progress();
    };

    for await (const raw of source) {
      const index = processed++;
      try {
        batch.push({ index, message: await prepare(raw) });
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        report.failed.push({ index, reason: err.message });
      }
      if (batch.length >= batchSize) await flush();
    }
    await flush();
    progress();
    report.failed.sort((a, b) => a.index - b.index); // a batch's delivery failures are found after later parse failures
    return report;
  }

  return { resolveTarget, prepare, deliver, deliverIn, importForAdmin, importAll };
}

export type Importer = ReturnType<typeof createImporter>;

/** The messages of an mbox file, read in chunks; `onBytes` hears how far into the file the reader is (progress). */
export function mboxFileSource(file: string, onBytes?: (bytesRead: number) => void): AsyncIterable<Buffer> {
  async function* chunks(): AsyncGenerator<Buffer> {
    let read = 0;
    for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) {
      read += (chunk as Buffer).length;
      onBytes?.(read);
      yield chunk as Buffer;
    }
  }
  return mboxMessageStream(chunks());
}

/** Every `*.eml` file of a directory (not its subdirectories), in name order. */
export function emlDirectorySource(dir: string): { count: number; messages: AsyncIterable<Buffer> } {
  const files = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.toLowerCase().endsWith('.eml'))
    .map((e) => e.name)
    .sort();
  async function* messages(): AsyncGenerator<Buffer> {
    for (const name of files) yield await fs.promises.readFile(path.join(dir, name));
  }
  return { count: files.length, messages: messages() };
}
