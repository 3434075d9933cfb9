/**
 * Seeds the demo tenant from fixtures/demo/ (written by fixtures/generate.ts): the users of tenant.json with their
 * mailboxes, every mbox message as an email item, and the calendar/contacts JSON as event/contact items.
 *
 * Two phases, because a unit of work does nothing but compute and call the store (no other await): first everything
 * asynchronous (password hashing, MIME parsing) builds the complete list of records in memory; then one unit
 * (`store.run`) writes them all. One transaction rather than one per item because every commit is an fsync under
 * synchronous=FULL; and one rather than several batches because then a failed or interrupted seed leaves nothing
 * behind, so the caller's "seed when the store has no users" check can simply run it again.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Clock } from '../clock';
import { hashPassword } from '../identity/passwords';
import { mboxMessages } from '../content/mbox';
import { computeConversationId, parseMessage, type ParsedMessage } from '../content/mime';
import { emailFields } from '../mail/delivery';
import { classifyFocused } from '../mailbox/focused';
import { uidKey, type EventData, type ResponseStatus } from '../calendar/model';
import { WELL_KNOWN_FOLDERS, type FolderKind, type NewItem, type Role, type Step, type Store } from '../store/types';

export const DEFAULT_FIXTURES_DIR = path.resolve(__dirname, '../../fixtures/demo');

/**
 * receivedAt for a message without a usable Date header: just before the demo's base date, one minute apart in file
 * order, so the value (and the folder's sort order) is the same on every seed.
 */
const FALLBACK_BASE = Date.UTC(2026, 0, 1);
/** receivedAt of contacts, which have no date of their own (one second apart, to keep their file order). */
const CONTACTS_BASE = Date.UTC(2025, 0, 1);

export interface SeedOptions {
  clock: Clock;
  /** The region the demo tenant is created in (the node's PIGEON_REGION); `default` when not given. */
  region?: string;
  fixturesDir?: string;
  log?: (msg: string, extra?: object) => void;
}

export interface SeedResult {
  tenantId: string;
  /** username → user id */
  users: Record<string, string>;
  /** Email items created (all users, all folders). */
  messages: number;
}

interface ManifestUser {
  username: string;
  displayName: string;
  email: string;
  role: Role;
  password: string;
  /** well-known folder kind → file name in the fixtures directory */
  folders: Record<string, string>;
}

interface Manifest {
  name: string;
  users: ManifestUser[];
}

type PendingItem = Omit<NewItem, 'userId' | 'folderId'>;

export async function seedDemo(store: Store, opts: SeedOptions): Promise<SeedResult> {
  const dir = opts.fixturesDir ?? DEFAULT_FIXTURES_DIR;
  const log = opts.log ?? (() => {});
  const manifest = readManifest(dir);

  // Checked before any work: the demo is only ever seeded into an empty store, and a second run must not half-apply.
  for (const u of manifest.users) {
    if (await store.users.byUsername(u.username)) {
      throw new Error(`demo seed refused: user "${u.username}" already exists (the demo tenant is seeded only into an empty store)`);
    }
  }

  // Phase 1: everything asynchronous.
  const t0 = performance.now();
  const hashes = await Promise.all(manifest.users.map((u) => hashPassword(u.password)));
  const pending = new Map<string, { kind: FolderKind; items: PendingItem[] }[]>();
  let messages = 0;
  for (const u of manifest.users) {
    const folders: { kind: FolderKind; items: PendingItem[] }[] = [];
    for (const [kind, file] of Object.entries(u.folders) as [FolderKind, string][]) {
      const full = path.join(dir, file);
      let items: PendingItem[];
      if (kind === 'calendar') items = eventItems(readJsonArray(full), u.email);
      else if (kind === 'contacts') items = contactItems(readJsonArray(full));
      else {
        items = await emailItems(fs.readFileSync(full), file);
        messages += items.length;
      }
      folders.push({ kind, items });
    }
    classifyInbox(folders, u.email, new Set(manifest.users.map((m) => m.email.toLowerCase())));
    pending.set(u.username, folders);
  }
  const t1 = performance.now();
  log('demo seed: fixtures parsed', { messages, ms: Math.round(t1 - t0) });

  // Phase 2: one unit of work.
  const now = opts.clock.now();
  const result = await store.run(function* (tx): Step<SeedResult> {
    const tenant = yield* tx.tenants.create(manifest.name, now, opts.region);
    const users: Record<string, string> = {};
    for (const [i, u] of manifest.users.entries()) {
      const user = yield* tx.users.create(
        {
          tenantId: tenant.id,
          username: u.username,
          email: u.email,
          displayName: u.displayName,
          role: u.role,
          passwordHash: hashes[i]!,
        },
        now,
      );
      yield* tx.mailboxes.create(user.id, now);
      users[u.username] = user.id;
      for (const { kind, items } of pending.get(u.username) ?? []) {
        const folder = yield* tx.folders.byKind(user.id, kind);
        if (!folder) throw new Error(`demo seed: user ${u.username} has no ${kind} folder`);
        for (const item of items) yield* tx.items.create({ ...item, userId: user.id, folderId: folder.id }, now);
      }
    }
    return { tenantId: tenant.id, users, messages };
  });
  log('demo seed: stored', { ms: Math.round(performance.now() - t1), users: Object.keys(result.users).length, messages });
  return result;
}

/** The rule headers of each demo message (Focused Inbox reads them; they are not part of the item). */
const ruleHeaders = new WeakMap<PendingItem, Record<string, string>>();

/**
 * Focused Inbox as delivery would have judged the demo's Inbox (server/mailbox/focused.ts): colleagues are the
 * tenant's users, contacts the user's demo contacts, correspondents the addresses of the user's Sent Items.
 */
function classifyInbox(folders: { kind: FolderKind; items: PendingItem[] }[], owner: string, colleagues: Set<string>): void {
  const lower = (a: { address: string }) => a.address.toLowerCase();
  const of = (kind: FolderKind) => folders.find((f) => f.kind === kind)?.items ?? [];
  const wroteTo = new Set(of('sentItems').flatMap((i) => [...(i.to ?? []), ...(i.cc ?? [])].map(lower)));
  const contacts = new Set(
    of('contacts').flatMap((c) => ((c.data?.emailAddresses ?? []) as Array<{ address?: unknown }>).flatMap((e) => (typeof e.address === 'string' ? [e.address.toLowerCase()] : []))),
  );
  for (const item of of('inbox')) {
    const from = item.from ? lower(item.from) : '';
    item.inferenceClassification = classifyFocused({
      from: item.from ?? null,
      headers: ruleHeaders.get(item) ?? {},
      subject: item.subject,
      mailboxAddress: owner,
      to: item.to ?? [],
      cc: item.cc ?? [],
      senderIsColleague: colleagues.has(from) && from !== owner.toLowerCase(),
      senderIsContact: contacts.has(from),
      userWroteToSender: wroteTo.has(from),
    }).classification;
  }
}

async function emailItems(mbox: Buffer, file: string): Promise<PendingItem[]> {
  const raws = mboxMessages(mbox);
  const items: PendingItem[] = [];
  for (const [i, raw] of raws.entries()) {
    let parsed: ParsedMessage;
    try {
      parsed = await parseMessage(raw);
    } catch (err) {
      throw new Error(`demo seed: message ${i + 1} of ${file} does not parse: ${(err as Error).message}`);
    }
    const state = demoState(raw);
    const item: PendingItem = {
      ...emailFields(raw, parsed),
      receivedAt: parsed.sentAt ?? FALLBACK_BASE - (raws.length - i) * 60_000,
      isRead: state.has('read'),
      isFlagged: state.has('flagged'),
      conversationId: computeConversationId(parsed),
    };
    ruleHeaders.set(item, parsed.headers);
    items.push(item);
  }
  return items;
}

/**
 * The fixture-only `X-Pigeon-Demo-State: read,flagged` header (absent = unread). Read from the raw header block
 * because it is seed metadata, not something parseMessage should know about.
 */
export function demoState(raw: Buffer): Set<string> {
  const text = raw.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const head = (end < 0 ? text : text.slice(0, end)).replace(/\r?\n[ \t]+/g, ' ');
  const m = /^X-Pigeon-Demo-State:[ \t]*(.*)$/im.exec(head);
  return new Set(
    (m?.[1] ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
}

/** The demo's answers (`response`) as the model's attendee status (server/calendar/model.ts). */
const DEMO_STATUS: Record<string, ResponseStatus> = { none: 'needsAction', accepted: 'accepted', tentative: 'tentative', declined: 'declined' };

/**
 * The demo calendar as EventData: each entry's fields, its attendees in the model's shape, a UID derived from the
 * owner and the entry (the same on every seed), and the owner's own standing read from their attendee entry.
 */
function eventItems(events: Record<string, unknown>[], owner: string): PendingItem[] {
  return events.map(({ subject, attendees, ...rest }, i) => {
    const start = typeof rest.start === 'string' ? Date.parse(rest.start) : NaN;
    if (typeof subject !== 'string' || Number.isNaN(start)) throw new Error(`demo seed: calendar entry ${i + 1} needs a subject and an ISO start`);
    const people = (Array.isArray(attendees) ? attendees : []) as Array<{ name: string; address: string; response?: string }>;
    const mine = people.find((a) => a.address.toLowerCase() === owner.toLowerCase());
    const organizer = rest.organizer as { address?: string } | null | undefined;
    const data: EventData = {
      uid: `${crypto.createHash('sha256').update(`${owner}\u0000${i}\u0000${subject}`).digest('hex').slice(0, 32)}@demo.pigeon.test`,
      sequence: 0,
      start: rest.start as string,
      end: rest.end as string,
      timeZone: (rest.timeZone as string) ?? 'UTC',
      isAllDay: rest.isAllDay === true,
      location: (rest.location as string | null) ?? null,
      organizer: (rest.organizer as EventData['organizer']) ?? null,
      attendees: people.map((a) => ({ name: a.name, address: a.address.toLowerCase(), type: 'required', status: DEMO_STATUS[a.response ?? 'none'] ?? 'needsAction', respondedAt: null })),
      reminderMinutesBeforeStart: 15,
      recurrence: null,
      exceptions: [],
      showAs: mine?.response === 'tentative' ? 'tentative' : mine?.response === 'declined' ? 'free' : 'busy',
      isCancelled: rest.isCancelled === true,
      responseStatus: !organizer || organizer.address?.toLowerCase() === owner.toLowerCase() ? 'organizer' : (DEMO_STATUS[mine?.response ?? 'none'] ?? 'needsAction'),
      lastItipStamp: null,
    };
    // Events and contacts are not "unread": left unread they would give Calendar and Contacts an unread count.
    return { type: 'event', receivedAt: start, subject, isRead: true, internetMessageId: uidKey(data.uid), data: data as unknown as Record<string, unknown> };
  });
}

function contactItems(contacts: Record<string, unknown>[]): PendingItem[] {
  return contacts.map(({ displayName, ...data }, i) => {
    if (typeof displayName !== 'string') throw new Error(`demo seed: contact ${i + 1} needs a displayName`);
    return { type: 'contact', receivedAt: CONTACTS_BASE + i * 1000, subject: displayName, isRead: true, data };
  });
}

function readJsonArray(file: string): Record<string, unknown>[] {
  const value: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))) {
    throw new Error(`demo seed: ${path.basename(file)} must be a JSON array of objects`);
  }
  return value as Record<string, unknown>[];
}

/** tenant.json, checked enough that a broken fixture fails with a message that names the problem. */
function readManifest(dir: string): Manifest {
  const file = path.join(dir, 'tenant.json');
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<Manifest> | null;
  const bad = (why: string): Error => new Error(`demo seed: ${file}: ${why}`);
  if (!raw || typeof raw.name !== 'string' || !Array.isArray(raw.users)) throw bad('needs "name" and "users"');
  const kinds = new Set<string>(WELL_KNOWN_FOLDERS.map((f) => f.kind));
  for (const u of raw.users) {
    for (const key of ['username', 'displayName', 'email', 'password'] as const) {
      if (typeof u[key] !== 'string' || u[key] === '') throw bad(`a user lacks "${key}"`);
    }
    if (u.role !== 'admin' && u.role !== 'user') throw bad(`user ${u.username}: role must be "admin" or "user"`);
    u.folders ??= {};
    for (const [kind, name] of Object.entries(u.folders)) {
      if (!kinds.has(kind)) throw bad(`user ${u.username}: "${kind}" is not a well-known folder`);
      const wantJson = kind === 'calendar' || kind === 'contacts';
      if (typeof name !== 'string' || !name.endsWith(wantJson ? '.json' : '.mbox') || path.basename(name) !== name) {
        throw bad(`user ${u.username}: folder ${kind} needs a ${wantJson ? '.json' : '.mbox'} file name in the same directory`);
      }
    }
  }
  return raw as Manifest;
}
