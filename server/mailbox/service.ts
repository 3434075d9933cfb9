/**
 * Mailbox settings and the actions that teach them (README, "Mailbox views"): automatic replies, the junk lists,
 * Focused Inbox overrides ("always move to Other"), report junk / not junk. The settings are one versioned document
 * per mailbox (settings.ts); a change is a compare-and-set, retried when another change came first, and answers
 * 412 when the app's `If-Match` names an older version.
 */
import type { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import type { MailboxSettingsRecord, Step, Store, TxStore } from '../store/types';
import { itemView, type ItemView } from '../views';
import {
  applyAutomaticReplies,
  autoRepliesActive,
  nextPeriod,
  parseSettings,
  serializeSettings,
  withJunkEntry,
  withOverride,
  type AutomaticReplies,
  type AutomaticRepliesInput,
  type JunkInput,
  type MailboxSettings,
} from './settings';
import { senderKey } from './junk';

/** Most existing messages one "always" override reclassifies (the newest first). */
export const OVERRIDE_APPLY_LIMIT = 1000;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function automaticRepliesView(a: AutomaticReplies, now: number) {
  return {
    status: a.status,
    scheduledStart: iso(a.scheduledStart),
    scheduledEnd: iso(a.scheduledEnd),
    internalReply: a.internalReply,
    externalReply: a.externalReply,
    externalAudience: a.externalAudience,
    /** Whether replies are going out right now (always on, or inside the schedule). */
    active: autoRepliesActive(a, now),
  };
}

export function settingsView(settings: MailboxSettings, version: number, now: number) {
  return {
    version,
    automaticReplies: automaticRepliesView(settings.automaticReplies, now),
    junk: settings.junk,
    focusedOverrides: settings.focusedOverrides,
  };
}

const versionConflict = () => new ApiError(412, 'conflict', 'The mailbox settings changed since that version; read them again.');

export function createMailboxService(deps: { store: Store; clock: Clock; onSettingsChanged?: (userId: string, version: number) => void }) {
  const { store, clock } = deps;

  /** Reads, changes and writes the document in one unit, `ifMatch` checked against the version read. */
  function* change(tx: TxStore, userId: string, edit: (s: MailboxSettings) => MailboxSettings, ifMatch: number | undefined, now: number): Step<MailboxSettingsRecord> {
    const current = yield* tx.mailboxSettings.get(userId);
    const version = current?.version ?? 0;
    if (ifMatch !== undefined && ifMatch !== version) throw versionConflict();
    const next = edit(parseSettings(current?.doc));
    const written = yield* tx.mailboxSettings.put(userId, serializeSettings(next), version, now);
    // In one unit nothing came between the read and the write; a miss means the store's own race check fired.
    if (!written) throw versionConflict();
    return written;
  }

  async function update(userId: string, edit: (s: MailboxSettings) => MailboxSettings, ifMatch?: number): Promise<MailboxSettingsRecord> {
    const now = clock.now();
    const written = await store.run((tx) => change(tx, userId, edit, ifMatch, now));
    deps.onSettingsChanged?.(userId, written.version);
    return written;
  }

  async function read(userId: string): Promise<{ settings: MailboxSettings; version: number }> {
    const record = await store.mailboxSettings.get(userId);
    return { settings: parseSettings(record?.doc), version: record?.version ?? 0 };
  }

  return {
    read,
    async view(userId: string) {
      const { settings, version } = await read(userId);
      return settingsView(settings, version, clock.now());
    },

    async putAutomaticReplies(userId: string, input: z.infer<typeof AutomaticRepliesInput>, ifMatch?: number) {
      const written = await update(
        userId,
        (s) => {
          const next = applyAutomaticReplies(s.automaticReplies, input);
          return { ...s, automaticReplies: next, autoReplyPeriod: nextPeriod(s.automaticReplies, next, s.autoReplyPeriod) };
        },
        ifMatch,
      );
      return settingsView(parseSettings(written.doc), written.version, clock.now());
    },

    async putJunk(userId: string, input: z.infer<typeof JunkInput>, ifMatch?: number) {
      const dedupe = (l: string[]) => [...new Set(l)];
      const safe = dedupe(input.safeSenders);
      const blocked = dedupe(input.blockedSenders);
      const both = safe.filter((s) => blocked.includes(s));
      if (both.length) {
        throw errors.invalidRequest(`A sender cannot be both safe and blocked: ${both.slice(0, 5).join(', ')}.`, [{ field: 'blockedSenders', message: 'also in safeSenders' }]);
      }
      const written = await update(userId, (s) => ({ ...s, junk: { safeSenders: safe, blockedSenders: blocked } }), ifMatch);
      return settingsView(parseSettings(written.doc), written.version, clock.now());
    },

    async removeOverride(userId: string, sender: string) {
      const key = senderKey(sender);
      const written = await update(userId, (s) => {
        if (!s.focusedOverrides.some((o) => o.sender === key)) throw errors.notFound('There is no override for this sender.');
        return { ...s, focusedOverrides: s.focusedOverrides.filter((o) => o.sender !== key) };
      });
      return settingsView(parseSettings(written.doc), written.version, clock.now());
    },

    /**
     * Moves a message between Focused and Other; with `always`, remembers the choice for its sender and applies it
     * to the sender's existing mail too (newest OVERRIDE_APPLY_LIMIT messages), all in one transaction.
     */
    async classify(userId: string, itemId: string, input: { classification: 'focused' | 'other'; always: boolean }): Promise<{ item: ItemView; reclassified: number; override: boolean }> {
      const now = clock.now();
      const result = await store.run(function* (tx) {
        const item = yield* tx.items.byId(userId, itemId);
        if (!item) throw errors.itemNotFound();
        if (item.type !== 'email') throw errors.invalidRequest('Only mail is classified Focused or Other.');
        const updated = item.inferenceClassification === input.classification ? item : yield* tx.items.update(userId, itemId, { inferenceClassification: input.classification }, now);
        let reclassified = 0;
        let version: number | undefined;
        if (input.always) {
          if (!item.from) throw errors.invalidRequest('This message has no sender to remember.', [{ field: 'always', message: 'no sender' }]);
          const sender = senderKey(item.from.address);
          version = (yield* change(tx, userId, (s) => ({ ...s, focusedOverrides: withOverride(s.focusedOverrides, { sender, classification: input.classification }) }), undefined, now)).version;
          for (const other of yield* tx.items.fromSender(userId, sender, OVERRIDE_APPLY_LIMIT)) {
            if (other.id === itemId || other.inferenceClassification === input.classification) continue;
            yield* tx.items.update(userId, other.id, { inferenceClassification: input.classification }, now);
            reclassified++;
          }
        }
        return { item: itemView(updated), reclassified, version };
      });
      if (result.version !== undefined) deps.onSettingsChanged?.(userId, result.version);
      return { item: result.item, reclassified: result.reclassified, override: input.always };
    },

    /**
     * Report junk: the message goes to Junk Email and its sender onto the blocked list. Not junk: back to the Inbox
     * and its sender onto the safe list. One transaction.
     */
    async reportJunk(userId: string, itemId: string, verdict: 'junk' | 'notJunk'): Promise<{ item: ItemView; sender: string | null; list: 'blockedSenders' | 'safeSenders' }> {
      const now = clock.now();
      const list = verdict === 'junk' ? 'blockedSenders' : 'safeSenders';
      const result = await store.run(function* (tx) {
        const item = yield* tx.items.byId(userId, itemId);
        if (!item) throw errors.itemNotFound();
        if (item.type !== 'email') throw errors.invalidRequest('Only mail can be reported as junk.');
        const destination = yield* tx.folders.byKind(userId, verdict === 'junk' ? 'junkEmail' : 'inbox');
        if (!destination) throw errors.folderNotFound('The mailbox has no such well-known folder.');
        const moved = item.folderId === destination.id ? item : yield* tx.items.move(userId, itemId, destination.id, now);
        const sender = item.from ? senderKey(item.from.address) : null;
        const version = sender ? (yield* change(tx, userId, (s) => ({ ...s, junk: withJunkEntry(s.junk, list, sender) }), undefined, now)).version : undefined;
        return { item: itemView(moved), sender, version };
      });
      if (result.version !== undefined) deps.onSettingsChanged?.(userId, result.version);
      return { item: result.item, sender: result.sender, list };
    },
  };
}

export type MailboxService = ReturnType<typeof createMailboxService>;
