/**
 * Sync tokens: self-contained, versioned and integrity-protected. An item token *is* the device's position — "I hold
 * every item of folder F whose sort key is ≥ L, as of modseq M, with a window of S" — so the server keeps no
 * per-device sync state: presenting a token twice is naturally safe, two devices never interfere, and a no-change
 * poll writes nothing. Tokens carry the mailbox and device epochs: a reset or a restored backup makes them 410.
 *
 * Wire form: `<version>.<base64url(JSON payload)>.<base64url(HMAC-SHA256 truncated to 128 bits)>`.
 */
import crypto from 'node:crypto';
import { ApiError, errors } from '../errors';
import type { DeviceRecord, Mailbox, SortKey } from '../store/types';

export const TOKEN_VERSION = 'p1';

interface Common {
  /** user id */
  u: string;
  /** device record id (a new partnership of the same device gets a new one) */
  d: string;
  /** the app's X-Device-Id */
  di: string;
  /** mailbox epoch */
  e: string;
  /** device epoch */
  de: number;
  /** modseq the position reflects */
  m: number;
}

export interface ItemToken extends Common {
  k: 'i';
  /** folder id */
  f: string;
  /** lower bound of the held set: sort key (receivedAt, id), inclusive */
  l: [number, string];
  /** window size (0 = no window: every item) */
  s: number;
  /** when the window was extended beyond the default (ms), 0 when it is not */
  x: number;
  /** 1 when the page that issued it had nothing more (the held set *is* the window), 0 mid-sync */
  z: 0 | 1;
  /**
   * Where the running history replay started: the device holds exactly the items placed at or before it (with keys
   * ≥ L), plus what the replay has sent. Equal to `m` except between pages of one replay: an item created after the
   * start and edited later arrives only at its later modseq, and must then still arrive as `created`.
   */
  h: number;
}

export interface HierarchyToken extends Common {
  k: 'h';
  /** cursor within modseq m: folders with (modseq, id) > (m, c) are still to send */
  c: string;
}

/**
 * A conversation-sync position (server/conversations/sync.ts): "I hold every conversation of folder F whose key
 * (latest message time, conversation id) is ≥ L, as of modseq M, with a window of S conversations".
 */
export interface ConversationToken extends Common {
  k: 'c';
  f: string;
  l: [number, string];
  s: number;
  x: number;
  z: 0 | 1;
  /** The folder's live conversation count as of M (a no-change poll answers the window without reading). */
  n: number;
}

export type SyncToken = ItemToken | HierarchyToken | ConversationToken;

/** No item has a key below this: a device holding "≥ MIN" holds the whole folder. */
export const MIN_KEY: SortKey = { receivedAt: -1, id: '' };
/** No item has a key at or above this: a device holding "≥ MAX" holds nothing. */
export const MAX_KEY: SortKey = { receivedAt: Number.MAX_SAFE_INTEGER, id: '' };

export type ResyncReason = 'tokenExpired' | 'mailboxReset' | 'deviceReset' | 'viewChanged';

export function resyncRequired(reason: ResyncReason): ApiError {
  const detail = {
    tokenExpired: 'The sync token is older than the change history kept; drop this data and sync from no token.',
    mailboxReset: 'The mailbox was reset since this token was issued; drop this data and sync from no token.',
    deviceReset: "This device's sync state was reset; drop this data and sync from no token.",
    viewChanged:
      "This device's view settings changed (a soft reset): sync again from no token, or resync keeping the cache.",
  }[reason];
  return new ApiError(410, 'resyncRequired', detail, { reason });
}

/** The 410 for a token of an older device epoch: a soft reset when the view changed, else a device reset. */
export const deviceEpochMoved = (device: Pick<DeviceRecord, 'resetReason'>): ApiError =>
  resyncRequired(device.resetReason === 'viewChanged' ? 'viewChanged' : 'deviceReset');

/**
 * Whether the mailbox can still serve the position a token claims (every kind of sync checks the same): the same
 * mailbox epoch and device epoch, not from the future (a restored backup), not below the purge horizon.
 */
export function checkPosition(token: Pick<Common, 'e' | 'de' | 'm'>, mailbox: Pick<Mailbox, 'epoch' | 'highestModseq' | 'purgedModseq'>, device: Pick<DeviceRecord, 'epoch' | 'resetReason'>): void {
  if (token.e !== mailbox.epoch) throw resyncRequired('mailboxReset');
  if (token.de !== device.epoch) throw deviceEpochMoved(device);
  // A token from the future means this store is older than the state the device saw (a restored backup).
  if (token.m > mailbox.highestModseq) throw resyncRequired('mailboxReset');
  // Below the purge horizon the tombstones that say what left may be gone.
  if (token.m < mailbox.purgedModseq) throw resyncRequired('tokenExpired');
}

/** The protocol's window sizes (500 / +500 / 1000); tests use small ones to reach every edge with few items. */
export interface WindowSizes {
  initial: number;
  step: number;
  max: number;
}

/**
 * The window an answer works toward from a position's size `s` extended at `x`: extended by loadMore (to at most
 * the max), trimmed back to the initial size once it has been extended for `trimAfterMs`.
 */
export function nextWindow(pos: { s: number; x: number }, loadMore: boolean, now: number, W: WindowSizes, trimAfterMs: number): { size: number; extendedAt: number } {
  if (loadMore) {
    const size = Math.min(pos.s + W.step, W.max);
    return { size, extendedAt: size > W.initial ? now : 0 };
  }
  if (pos.s > W.initial && now - pos.x >= trimAfterMs) return { size: W.initial, extendedAt: 0 };
  return { size: pos.s, extendedAt: pos.x };
}

/** Token texts whose MAC was checked (or that this process made), remembered with their payloads. */
export const CHECKED_TOKENS_REMEMBERED = 10_000;

export function createTokenCodec(serverSecret: Buffer, remembered = CHECKED_TOKENS_REMEMBERED) {
  // A key of its own, so a sync token can never be confused with any other MAC the server makes.
  const key = crypto.createHmac('sha256', serverSecret).update('pigeon sync token key').digest();
  const mac = (text: string) => crypto.createHmac('sha256', key).update(text).digest().subarray(0, 16).toString('base64url');
  // An app presents the same token on every poll until something changes, and the token a page carries is decoded
  // again at once (push records how far the device synced). A text that carried a valid MAC once always will, so
  // its payload is remembered (bounded, oldest first out) and the MAC and the JSON are not redone: a no-change poll
  // then computes no HMAC but the new token's. Who may use the token is still checked on every call.
  const checked = new Map<string, Readonly<SyncToken>>();
  const remember = (text: string, token: SyncToken) => {
    if (remembered <= 0) return;
    if (checked.size >= remembered) checked.delete(checked.keys().next().value!);
    checked.set(text, Object.freeze(token));
  };

  return {
    encode(token: SyncToken): string {
      const json = JSON.stringify(token);
      const body = `${TOKEN_VERSION}.${Buffer.from(json).toString('base64url')}`;
      const text = `${body}.${mac(body)}`;
      remember(text, JSON.parse(json) as SyncToken); // a copy: the caller's object stays the caller's
      return text;
    },

    /** Throws 400 invalidToken for anything this server did not issue, or issued for another user, device or kind. */
    decode<K extends SyncToken['k']>(
      text: string,
      kind: K,
      expect: { userId: string; deviceRecordId: string; deviceId: string; folderId?: string },
    ): Extract<SyncToken, { k: K }> {
      let token = checked.get(text) as SyncToken | undefined;
      if (!token) {
        const parts = text.split('.');
        if (parts.length !== 3 || text.length > 2048) throw errors.invalidToken();
        const [version, payload, sig] = parts as [string, string, string];
        if (version !== TOKEN_VERSION) throw errors.invalidToken('This sync token is of a version this server does not issue.');
        const expected = Buffer.from(mac(`${version}.${payload}`));
        const given = Buffer.from(sig);
        if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) throw errors.invalidToken();
        try {
          token = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as SyncToken;
        } catch {
          throw errors.invalidToken();
        }
        remember(text, token);
      }
      if (token.k !== kind) throw errors.invalidToken('This token belongs to another kind of sync.');
      if (token.u !== expect.userId || token.di !== expect.deviceId) {
        throw errors.invalidToken('This sync token was issued to another user or device.');
      }
      // The same device, but its partnership was removed (or purged) and registered anew: its old state is gone.
      if (token.d !== expect.deviceRecordId) throw resyncRequired('deviceReset');
      if ((token.k === 'i' || token.k === 'c') && token.f !== expect.folderId) throw errors.invalidToken('This sync token belongs to another folder.');
      return token as Extract<SyncToken, { k: K }>;
    },

    /** How many checked tokens are remembered (tests). */
    rememberedCount: () => checked.size,
  };
}

export type TokenCodec = ReturnType<typeof createTokenCodec>;

export function compareKeys(a: SortKey, b: SortKey): number {
  if (a.receivedAt !== b.receivedAt) return a.receivedAt < b.receivedAt ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
