/**
 * A mailbox's own settings (README, "Mailbox views"): automatic replies, the junk lists and the Focused Inbox sender
 * overrides. The store keeps them as one versioned JSON document per mailbox (`mailboxSettings`); this module owns
 * its shape, its validation and its defaults. A document written by an older server (a member missing) reads with
 * that member's default, so the shape can grow without a migration.
 */
import crypto from 'node:crypto';
import { z } from 'zod';

export const MAX_REPLY_CHARS = 8000;
export const MAX_LIST_ENTRIES = 1024;
export const MAX_FOCUSED_OVERRIDES = 1000;

export type ExternalAudience = 'none' | 'contactsOnly' | 'all';

export interface AutomaticReplies {
  status: 'disabled' | 'alwaysEnabled' | 'scheduled';
  /** ms since the epoch; both set when `status` is `scheduled`. */
  scheduledStart: number | null;
  scheduledEnd: number | null;
  /** Plain text sent to senders of the tenant. */
  internalReply: string;
  /** Plain text sent to senders outside it (as `externalAudience` allows). */
  externalReply: string;
  externalAudience: ExternalAudience;
}

export interface JunkSettings {
  /** Addresses (`ann@example.com`) and domains (`example.com`), lower-cased. */
  safeSenders: string[];
  blockedSenders: string[];
}

export interface FocusedOverride {
  /** The sender's address, lower-cased. */
  sender: string;
  classification: 'focused' | 'other';
}

export interface MailboxSettings {
  automaticReplies: AutomaticReplies;
  /**
   * One stretch of automatic replies: a new id whenever they are turned on, rescheduled or their texts change, so each
   * sender gets one reply per period (store `autoReplies.claim`).
   */
  autoReplyPeriod: string;
  junk: JunkSettings;
  /** Newest last; at most MAX_FOCUSED_OVERRIDES (the oldest go first). */
  focusedOverrides: FocusedOverride[];
}

export const DEFAULT_SETTINGS: MailboxSettings = Object.freeze({
  automaticReplies: { status: 'disabled', scheduledStart: null, scheduledEnd: null, internalReply: '', externalReply: '', externalAudience: 'all' },
  autoReplyPeriod: '',
  junk: { safeSenders: [], blockedSenders: [] },
  focusedOverrides: [],
}) as MailboxSettings;

const noControl = /^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F]*$/;
const replyText = z.string().max(MAX_REPLY_CHARS).regex(noControl, 'no control characters other than line breaks and tabs');

/** An address or a bare domain (a leading `@` is dropped), lower-cased. */
export const senderEntry = z
  .string()
  .trim()
  .min(3)
  .max(320)
  .transform((v) => v.toLowerCase().replace(/^@/, ''))
  .refine((v) => /^([^\s@]+@)?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$/.test(v), 'an address or a domain');

/** `PUT /v1/mailbox/settings/automatic-replies`. */
export const AutomaticRepliesInput = z
  .strictObject({
    status: z.enum(['disabled', 'alwaysEnabled', 'scheduled']),
    scheduledStart: z.iso.datetime({ offset: true }).nullable().optional(),
    scheduledEnd: z.iso.datetime({ offset: true }).nullable().optional(),
    internalReply: replyText.optional(),
    externalReply: replyText.optional(),
    externalAudience: z.enum(['none', 'contactsOnly', 'all']).optional(),
  })
  .superRefine((v, ctx) => {
    if (v.status !== 'scheduled') return;
    if (!v.scheduledStart) ctx.addIssue({ code: 'custom', path: ['scheduledStart'], message: 'required when scheduled' });
    if (!v.scheduledEnd) ctx.addIssue({ code: 'custom', path: ['scheduledEnd'], message: 'required when scheduled' });
    if (v.scheduledStart && v.scheduledEnd && Date.parse(v.scheduledEnd) <= Date.parse(v.scheduledStart)) {
      ctx.addIssue({ code: 'custom', path: ['scheduledEnd'], message: 'must be after scheduledStart' });
    }
  });

/** `PUT /v1/mailbox/settings/junk`. */
export const JunkInput = z.strictObject({
  safeSenders: z.array(senderEntry).max(MAX_LIST_ENTRIES),
  blockedSenders: z.array(senderEntry).max(MAX_LIST_ENTRIES),
});

/** The document as stored, read leniently: a member that is missing or unreadable takes its default. */
export function parseSettings(doc: string | undefined): MailboxSettings {
  if (!doc) return structuredClone(DEFAULT_SETTINGS);
  let raw: Partial<MailboxSettings>;
  try {
    raw = JSON.parse(doc) as Partial<MailboxSettings>;
  } catch {
    return structuredClone(DEFAULT_SETTINGS);
  }
  return {
    automaticReplies: { ...DEFAULT_SETTINGS.automaticReplies, ...(raw.automaticReplies ?? {}) },
    autoReplyPeriod: typeof raw.autoReplyPeriod === 'string' ? raw.autoReplyPeriod : '',
    junk: {
      safeSenders: Array.isArray(raw.junk?.safeSenders) ? raw.junk.safeSenders : [],
      blockedSenders: Array.isArray(raw.junk?.blockedSenders) ? raw.junk.blockedSenders : [],
    },
    focusedOverrides: Array.isArray(raw.focusedOverrides) ? raw.focusedOverrides : [],
  };
}

export const serializeSettings = (settings: MailboxSettings): string => JSON.stringify(settings);

/** Whether automatic replies are being sent at `now`. */
export function autoRepliesActive(a: AutomaticReplies, now: number): boolean {
  if (a.status === 'alwaysEnabled') return true;
  if (a.status !== 'scheduled' || a.scheduledStart === null || a.scheduledEnd === null) return false;
  return now >= a.scheduledStart && now < a.scheduledEnd;
}

/** The automatic replies an input asks for (members left out keep their current values). */
export function applyAutomaticReplies(current: AutomaticReplies, input: z.infer<typeof AutomaticRepliesInput>): AutomaticReplies {
  const scheduled = input.status === 'scheduled';
  return {
    status: input.status,
    scheduledStart: scheduled ? Date.parse(input.scheduledStart!) : input.scheduledStart === undefined ? current.scheduledStart : input.scheduledStart === null ? null : Date.parse(input.scheduledStart),
    scheduledEnd: scheduled ? Date.parse(input.scheduledEnd!) : input.scheduledEnd === undefined ? current.scheduledEnd : input.scheduledEnd === null ? null : Date.parse(input.scheduledEnd),
    internalReply: input.internalReply ?? current.internalReply,
    externalReply: input.externalReply ?? current.externalReply,
    externalAudience: input.externalAudience ?? current.externalAudience,
  };
}

/**
 * The period after a change from `before` to `after`: a new one when replies are turned on, rescheduled or reworded
 * (everyone may hear the news once more); the same while nothing a sender would notice changed.
 */
export function nextPeriod(before: AutomaticReplies, after: AutomaticReplies, period: string): string {
  const same =
    before.status === after.status &&
    before.scheduledStart === after.scheduledStart &&
    before.scheduledEnd === after.scheduledEnd &&
    before.internalReply === after.internalReply &&
    before.externalReply === after.externalReply;
  if (same && period) return period;
  return after.status === 'disabled' ? period : crypto.randomBytes(9).toString('base64url');
}

/** Adds or replaces the override of `sender`, keeping the newest MAX_FOCUSED_OVERRIDES. */
export function withOverride(list: FocusedOverride[], override: FocusedOverride): FocusedOverride[] {
  const next = [...list.filter((o) => o.sender !== override.sender), override];
  return next.slice(Math.max(0, next.length - MAX_FOCUSED_OVERRIDES));
}

/** Adds `sender` to one junk list and takes it off the other (report junk / not junk). */
export function withJunkEntry(junk: JunkSettings, list: 'safeSenders' | 'blockedSenders', sender: string): JunkSettings {
  const other = list === 'safeSenders' ? 'blockedSenders' : 'safeSenders';
  const add = (l: string[]) => (l.includes(sender) ? l : [...l, sender].slice(-MAX_LIST_ENTRIES));
  return { ...junk, [list]: add(junk[list]), [other]: junk[other].filter((s) => s !== sender) } as JunkSettings;
}
