/**
 * Calendars (README, "Calendar and contacts"): events as items of calendar folders, created and changed through
 * the API, expanded into occurrences for the calendar view, exported as iCalendar, and meetings kept in step over
 * mail (iTIP, RFC 5546, carried by iMIP, RFC 6047):
 * - the organiser creates, changes or cancels a meeting here: Pigeon stores the event and mails a REQUEST (SEQUENCE
 *   bumped on a change attendees must see) or a CANCEL to the attendees through the send path;
 * - an attendee answers here: their copy takes the answer and a REPLY goes to the organiser;
 * - every message that arrives (LMTP, local delivery of sent mail) is looked at by `inspect` for an iTIP part, and
 *   `beforeStore` applies it to the recipient's calendar in the same transaction that stores the message: a REQUEST
 *   creates or moves a tentative event, a REPLY records the attendee's answer on the organiser's event, a CANCEL
 *   removes the event (or cancels one occurrence, so its reminder is gone too), a COUNTER is kept on the message as a
 *   proposal the organiser may decline.
 * An event's iCalendar UID is its lookup key in a folder (kept as the item's internetMessageId, `uid:<UID>`).
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock';
import { errors } from '../errors';
import type { ParsedMessage } from '../content/mime';
import type { PreparedMessage } from '../mail/delivery';
import { newId } from '../ids';
import type { Folder, Item, SortKey, Step, Store, TxStore, User } from '../store/types';
import { itemView, type ItemView } from '../views';
import type { SendService } from '../send/service';
import { uidKey, type EventData, type ResponseStatus } from './model';
import { normaliseTime, type EventInput, type Respond } from './input';
import { occurrences, RecurrenceError } from './recurrence';
import { CalendarInputError, foldEvents, parseICalendar, toICalendar, type ParsedCalendar } from './ical';
import { buildImipMessage, meetingPart } from './imip';
import { cancelFor, declineCounterFor, ItipError, onCancel, onCounter, onReply, onRequest, replyFor, requestFor, summaryText, type StoredEvent } from './itip';

export { uidKey };

/** What an invitation message carries in its item's data (`meeting`), shown in list items. */
export interface MeetingSummary {
  method: string;
  uid: string;
  /** The event this message created or changed in the recipient's calendar, if any. */
  eventId: string | null;
  /** What the message did to that calendar. */
  action: 'created' | 'updated' | 'deleted' | 'ignored' | 'proposal';
  subject: string;
  start: string | null;
  end: string | null;
  /** A COUNTER's proposed time. */
  proposal?: { attendee: string; start: string; end: string; comment: string | null };
}

export interface Occurrence {
  itemId: string;
  subject: string;
  start: string;
  end: string;
  isAllDay: boolean;
  location: string | null;
  recurrenceId: string | null;
  isException: boolean;
  showAs: string;
  responseStatus: string;
  reminderMinutesBeforeStart: number | null;
}

const MAX_VIEW_DAYS = 400;
const MAX_VIEW_OCCURRENCES = 10_000;
const PAGE = 500;
const LOW: SortKey = { receivedAt: Number.MIN_SAFE_INTEGER, id: '' };

const lower = (s: string) => s.trim().toLowerCase();

export interface CalendarDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  send: SendService;
  hostname: string;
}

export function createCalendarService(deps: CalendarDeps) {
  const { store, clock, log } = deps;

  const storedOf = (item: Item, description: string | null): StoredEvent => ({ subject: item.subject, description, data: item.data as unknown as EventData });

  async function ownEvent(userId: string, itemId: string): Promise<Item> {
    const item = await store.items.byId(userId, itemId);
    if (!item || item.type !== 'event') throw errors.itemNotFound('No such event.');
    return item;
  }

  async function calendarFolder(userId: string, folderId: string | undefined): Promise<Folder> {
    const folder = folderId ? await store.folders.byId(userId, folderId) : await store.folders.byKind(userId, 'calendar');
    if (!folder) throw errors.folderNotFound();
    if (folder.kind !== 'calendar') throw errors.invalidRequest('Events live in calendar folders.', [{ field: 'folderId', message: 'not a calendar folder' }]);
    return folder;
  }

  /** Mails an iTIP object from `user` to `to` (their Sent Items keep it); a failure is logged, never thrown. */
  async function mail(user: User, to: Array<{ name: string; address: string }>, stored: StoredEvent, method: 'REQUEST' | 'CANCEL' | 'REPLY' | 'DECLINECOUNTER', ical: string, opts: { status?: ResponseStatus; comment?: string } = {}): Promise<boolean> {
    const recipients = to.filter((p) => lower(p.address) !== lower(user.email));
    if (recipients.length === 0) return true;
    const prefix = method === 'CANCEL' ? 'Canceled: ' : method === 'REPLY' ? `${opts.status === 'accepted' ? 'Accepted' : opts.status === 'declined' ? 'Declined' : 'Tentative'}: ` : method === 'DECLINECOUNTER' ? 'New time proposal declined: ' : '';
    try {
      const { raw } = await buildImipMessage({
        from: { name: user.displayName, address: user.email },
        to: recipients,
        subject: `${prefix}${stored.subject}`,
        text: summaryText(stored, method, { attendee: user.email, status: opts.status, comment: opts.comment }),
        ical,
        method,
        hostname: deps.hostname,
        now: clock.now(),
      });
      await deps.send.sendMime(user.id, raw, { checkLabel: false });
      return true;
    } catch (err) {
      log.error({ err, userId: user.id, method, uid: stored.data.uid }, 'meeting mail could not be sent');
      return false;
    }
  }

  async function user(userId: string): Promise<User> {
    const found = await store.users.byId(userId);
    if (!found) throw errors.notFound('No such user.');
    return found;
  }

  /** The organiser's data for an input: a new meeting, or a change of `existing` (answers kept unless it moved). */
  function dataFor(input: EventInput, organizer: User, existing: EventData | undefined): { data: EventData; significant: boolean } {
    const start = normaliseTime(input.start, input.isAllDay);
    const end = normaliseTime(input.end, input.isAllDay);
    const recurrence = input.recurrence
      ? { rrule: input.recurrence.rrule, exdates: input.recurrence.exdates.map((d) => normaliseTime(d, input.isAllDay)), rdates: input.recurrence.rdates.map((d) => normaliseTime(d, input.isAllDay)) }
      : null;
    const significant =
      !existing ||
      existing.start !== start ||
      existing.end !== end ||
      existing.isAllDay !== input.isAllDay ||
      (existing.location ?? null) !== (input.location ?? null) ||
      JSON.stringify(existing.recurrence ?? null) !== JSON.stringify(recurrence);
    const before = new Map((existing?.attendees ?? []).map((a) => [lower(a.address), a]));
    const attendees = input.attendees.map((a) => {
      const prior = before.get(lower(a.address));
      const keep = prior && !significant;
      return { name: a.name ?? prior?.name ?? '', address: lower(a.address), type: a.type, status: keep ? prior.status : ('needsAction' as ResponseStatus), respondedAt: keep ? prior.respondedAt : null };
    });
    return {
      significant,
      data: {
        uid: existing?.uid ?? `${newId()}@${deps.hostname}`,
        sequence: existing ? (existing.sequence ?? 0) + (significant || JSON.stringify(existing.attendees) !== JSON.stringify(attendees) ? 1 : 0) : 0,
        start,
        end,
        timeZone: input.timeZone,
        isAllDay: input.isAllDay,
        location: input.location ?? null,
        organizer: attendees.length ? { name: organizer.displayName, address: lower(organizer.email) } : null,
        attendees,
        reminderMinutesBeforeStart: input.reminderMinutesBeforeStart,
        recurrence,
        exceptions: existing && JSON.stringify(existing.recurrence ?? null) === JSON.stringify(recurrence) ? existing.exceptions ?? [] : [],
        showAs: input.showAs,
        isCancelled: false,
        responseStatus: 'organizer',
        lastItipStamp: null,
      },
    };
  }

  const sortTime = (data: EventData) => Date.parse(data.start);

  /** Only the organiser (or the owner of a personal event) changes an event; attendees answer instead. */
  function requireOrganizer(owner: User, data: EventData): void {
    if (data.organizer && lower(data.organizer.address) !== lower(owner.email)) {
      throw errors.forbidden('Only the organiser changes a meeting; answer it with POST /v1/calendar/events/{id}/respond.');
    }
  }

  return {
    async create(userId: string, input: EventInput): Promise<{ item: ItemView; invitationsSent: boolean }> {
      const owner = await user(userId);
      const folder = await calendarFolder(userId, input.folderId);
      const { data } = dataFor(input, owner, undefined);
      const now = clock.now();
      const item = await store.items.create(
        { userId, folderId: folder.id, type: 'event', receivedAt: sortTime(data), subject: input.subject, isRead: true, bodyText: input.body ?? null, internetMessageId: uidKey(data.uid), data: data as unknown as Record<string, unknown> },
        now,
      );
      const stored = storedOf(item, input.body ?? null);
      const sent = data.attendees.length ? await mail(owner, data.attendees, stored, 'REQUEST', requestFor(stored, now)) : true;
      return { item: itemView(item), invitationsSent: sent };
    },

    async update(userId: string, itemId: string, input: EventInput, ifMatch: string | undefined): Promise<{ item: ItemView; invitationsSent: boolean }> {
      const owner = await user(userId);
      const current = await ownEvent(userId, itemId);
      if (ifMatch !== undefined && ifMatch !== '*' && ifMatch !== current.changeKey) throw errors.conflict('The event changed since that version.');
      const existing = current.data as unknown as EventData;
      requireOrganizer(owner, existing);
      // PUT never moves an event (POST /v1/items/{id}/move does): a folderId may only name the event's own folder.
      if (input.folderId !== undefined && (await calendarFolder(userId, input.folderId)).id !== current.folderId) {
        throw errors.invalidRequest('PUT does not move an event; move it with POST /v1/items/{itemId}/move.', [{ field: 'folderId', message: 'not the event\'s folder' }]);
      }
      const { data } = dataFor(input, owner, existing);
      const now = clock.now();
      const item = await store.items.replace(userId, itemId, { subject: input.subject, bodyText: input.body ?? null, receivedAt: sortTime(data), data: data as unknown as Record<string, unknown> }, now);
      const stored = storedOf(item, input.body ?? null);
      let sent = true;
      if (data.attendees.length && data.sequence !== existing.sequence) sent = await mail(owner, data.attendees, stored, 'REQUEST', requestFor(stored, now));
      // Attendees taken off the meeting learn it is cancelled for them.
      const kept = new Set(data.attendees.map((a) => a.address));
      const removed = existing.attendees.filter((a) => !kept.has(lower(a.address)));
      if (removed.length) {
        const old = storedOf({ ...current, data: existing as unknown as Record<string, unknown> }, null);
        sent = (await mail(owner, removed, old, 'CANCEL', cancelFor({ ...old, data: { ...existing, sequence: data.sequence, attendees: removed } }, now))) && sent;
      }
      return { item: itemView(item), invitationsSent: sent };
    },

    /** Deletes an event, or cancels one occurrence of a series; an organiser's attendees are sent a CANCEL. */
    async remove(userId: string, itemId: string, opts: { occurrence?: string }): Promise<{ item?: ItemView; cancellationsSent: boolean }> {
      const owner = await user(userId);
      const current = await ownEvent(userId, itemId);
      const data = current.data as unknown as EventData;
      const organizing = !data.organizer || lower(data.organizer.address) === lower(owner.email);
      const now = clock.now();
      const body = (await store.items.body(userId, itemId))?.text ?? null;
      if (opts.occurrence !== undefined) {
        if (!data.recurrence) throw errors.invalidRequest('This event is not a series.', [{ field: 'occurrence', message: 'not a series' }]);
        const recurrenceId = normaliseTime(opts.occurrence, data.isAllDay);
        const exceptions = [...data.exceptions.filter((e) => e.recurrenceId !== recurrenceId), { recurrenceId, start: recurrenceId, end: recurrenceId, subject: null, location: null, isCancelled: true }];
        const next: EventData = { ...data, sequence: organizing ? (data.sequence ?? 0) + 1 : data.sequence ?? 0, exceptions };
        const item = await store.items.replace(userId, itemId, { subject: current.subject, bodyText: body, receivedAt: current.receivedAt, data: next as unknown as Record<string, unknown> }, now);
        const stored = storedOf(item, body);
        const sent = organizing && data.attendees.length ? await mail(owner, data.attendees, stored, 'CANCEL', cancelFor(stored, now, { recurrenceId })) : true;
        return { item: itemView(item), cancellationsSent: sent };
      }
      await store.run(function* (tx) {
        yield* tx.items.delete(userId, itemId, now);
      });
      const stored = storedOf(current, body);
      const next = { ...stored, data: { ...data, sequence: (data.sequence ?? 0) + 1 } };
      const sent = organizing && data.attendees.length ? await mail(owner, data.attendees, next, 'CANCEL', cancelFor(next, now)) : true;
      return { cancellationsSent: sent };
    },

    /** An attendee's answer: their copy takes it, and (unless asked not to) a REPLY goes to the organiser. */
    async respond(userId: string, itemId: string, r: Respond): Promise<{ item: ItemView; responseSent: boolean }> {
      const owner = await user(userId);
      const current = await ownEvent(userId, itemId);
      const data = current.data as unknown as EventData;
      if (!data.organizer || lower(data.organizer.address) === lower(owner.email)) {
        throw errors.invalidRequest('You organise this event: there is nobody to answer.', [{ field: 'response', message: 'not an invitation' }]);
      }
      const me = lower(owner.email);
      const now = clock.now();
      const stamp = new Date(now).toISOString();
      let next: EventData;
      if (r.occurrence !== undefined) {
        if (!data.recurrence) throw errors.invalidRequest('This event is not a series.', [{ field: 'occurrence', message: 'not a series' }]);
        next = { ...data }; // one occurrence's answer goes to the organiser; the series keeps its own standing here
      } else {
        next = {
          ...data,
          responseStatus: r.response,
          showAs: r.response === 'accepted' ? 'busy' : r.response === 'tentative' ? 'tentative' : 'free',
          attendees: data.attendees.map((a) => (lower(a.address) === me ? { ...a, status: r.response, respondedAt: stamp } : a)),
        };
      }
      const body = (await store.items.body(userId, itemId))?.text ?? null;
      const item = await store.items.replace(userId, itemId, { subject: current.subject, bodyText: body, receivedAt: current.receivedAt, data: next as unknown as Record<string, unknown> }, now);
      const stored = storedOf(item, body);
      const sent = r.sendResponse
        ? await mail(owner, [data.organizer], stored, 'REPLY', replyFor(stored, me, r.response, now, { comment: r.comment, recurrenceId: r.occurrence && normaliseTime(r.occurrence, data.isAllDay) }), { status: r.response, comment: r.comment })
        : true;
      return { item: itemView(item), responseSent: sent };
    },

    /** The organiser turns down an attendee's proposed new time (DECLINECOUNTER, with the reason). */
    async declineCounter(userId: string, itemId: string, attendee: string, reason: string): Promise<{ sent: boolean }> {
      const owner = await user(userId);
      const current = await ownEvent(userId, itemId);
      const data = current.data as unknown as EventData;
      requireOrganizer(owner, data);
      if (!data.attendees.some((a) => lower(a.address) === lower(attendee))) {
        throw errors.invalidRequest('That address is not an attendee of this meeting.', [{ field: 'attendee', message: 'not an attendee' }]);
      }
      const stored = storedOf(current, null);
      const person = data.attendees.find((a) => lower(a.address) === lower(attendee))!;
      return { sent: await mail(owner, [person], stored, 'DECLINECOUNTER', declineCounterFor(stored, lower(attendee), clock.now(), reason), { comment: reason }) };
    },

    /** Occurrences of the user's events in [from, to), start order (one calendar, or all of them). */
    async view(userId: string, from: number, to: number, folderId?: string): Promise<Occurrence[]> {
      if (!(to > from)) throw errors.invalidRequest('end must be after start.', [{ field: 'end', message: 'must be after start' }]);
      if (to - from > MAX_VIEW_DAYS * 86_400_000) throw errors.invalidRequest(`A view spans at most ${MAX_VIEW_DAYS} days.`, [{ field: 'end', message: 'range too long' }]);
      const folders = folderId ? [await calendarFolder(userId, folderId)] : (await store.folders.listByUser(userId)).filter((f) => f.kind === 'calendar');
      const out: Occurrence[] = [];
      for (const folder of folders) {
        // Events sort by their first start: nothing that starts after the range can occur in it.
        let lower: SortKey = LOW;
        const upper: SortKey = { receivedAt: to, id: '' };
        for (;;) {
          const page = await store.sync.range(userId, folder.id, lower, upper, 'asc', PAGE);
          for (const item of page) {
            if (item.type !== 'event') continue;
            const data = item.data as unknown as EventData;
            if (data.isCancelled) continue;
            let found: ReturnType<typeof occurrences>;
            try {
              found = occurrences(data, from, to);
            } catch (err) {
              // A stored rule ical.js cannot read (from an old import) costs that event, not the whole view.
              if (!(err instanceof RecurrenceError)) throw err;
              log.warn({ userId, itemId: item.id, reason: err.message }, 'event recurrence cannot be expanded');
              continue;
            }
            for (const o of found) {
              out.push({
                itemId: item.id,
                subject: o.subject ?? item.subject,
                start: o.start,
                end: o.end,
                isAllDay: data.isAllDay,
                location: o.location ?? data.location,
                recurrenceId: o.recurrenceId,
                isException: o.isException,
                showAs: data.showAs ?? 'busy',
                responseStatus: data.responseStatus ?? 'organizer',
                reminderMinutesBeforeStart: data.reminderMinutesBeforeStart ?? null,
              });
              if (out.length > MAX_VIEW_OCCURRENCES) throw errors.invalidRequest(`The range holds more than ${MAX_VIEW_OCCURRENCES} occurrences; ask for a shorter one.`, [{ field: 'end', message: 'too many occurrences' }]);
            }
          }
          if (page.length < PAGE) break;
          const last = page[page.length - 1]!;
          lower = { receivedAt: last.receivedAt, id: `${last.id}\u0000` };
        }
      }
      return out.sort((a, b) => Date.parse(a.start) - Date.parse(b.start) || a.itemId.localeCompare(b.itemId));
    },

    /** Every event of a calendar as one iCalendar object (the feed an app or another calendar subscribes to). */
    async feed(userId: string, folderId?: string): Promise<string> {
      const folder = await calendarFolder(userId, folderId);
      const events: Array<{ subject: string; description: string | null; data: EventData }> = [];
      let lower: SortKey = LOW;
      const upper: SortKey = { receivedAt: Number.MAX_SAFE_INTEGER, id: '\uffff' };
      for (;;) {
        const page = await store.sync.range(userId, folder.id, lower, upper, 'asc', PAGE);
        for (const item of page) {
          if (item.type !== 'event' || typeof (item.data as { uid?: unknown }).uid !== 'string') continue;
          events.push({ subject: item.subject, description: (await store.items.body(userId, item.id))?.text ?? null, data: item.data as unknown as EventData });
        }
        if (page.length < PAGE) break;
        const last = page[page.length - 1]!;
        lower = { receivedAt: last.receivedAt, id: `${last.id}\u0000` };
      }
      return toICalendar(events, { method: 'PUBLISH', dtstamp: clock.now() });
    },

    /**
     * Delivery's look at a message: an iTIP part (text/calendar with a METHOD) is parsed and kept as `meeting` for
     * `beforeStore`. An unreadable one is logged and the message is stored as ordinary mail.
     */
    async inspect(_raw: Buffer, parsed: ParsedMessage): Promise<Record<string, unknown>> {
      const part = meetingPart(parsed.attachments);
      if (!part) return {};
      try {
        return { meeting: { method: part.method, calendar: parseICalendar(part.text) } };
      } catch (err) {
        log.warn({ messageId: parsed.internetMessageId, reason: (err as Error).message }, 'meeting message with an unreadable calendar');
        return {};
      }
    },

    /**
     * Applies a message's iTIP part to the recipient's default calendar, in the transaction that stores the message;
     * answers what the message's own item keeps of it (`meeting`, a MeetingSummary).
     */
    *beforeStore(tx: TxStore, userId: string, message: PreparedMessage, now: number): Step<Record<string, unknown> | undefined> {
      const meeting = message.data?.meeting as { method: string; calendar: ParsedCalendar } | undefined;
      if (!meeting) return undefined;
      const cal = meeting.calendar;
      const first = cal.events[0];
      const owner = yield* tx.users.byId(userId);
      const calendar = yield* tx.folders.byKind(userId, 'calendar');
      if (!first || !owner || !calendar) return undefined;
      const summary: MeetingSummary = { method: meeting.method, uid: first.uid, eventId: null, action: 'ignored', subject: first.subject, start: first.data.start, end: first.data.end };
      const existingId = yield* tx.items.findDuplicate(userId, calendar.id, { internetMessageId: uidKey(first.uid), mimeSha256: '' }, 0);
      const existing = existingId ? yield* tx.items.byId(userId, existingId) : undefined;
      const stored = existing ? storedOf(existing, (yield* tx.items.body(userId, existing.id))?.text ?? null) : undefined;
      const from = lower(message.parsed.from?.address ?? '');
      const write = function* (event: StoredEvent): Step<string> {
        const content = { subject: event.subject, bodyText: event.description, receivedAt: Date.parse(event.data.start), data: event.data as unknown as Record<string, unknown> };
        if (existing) return (yield* tx.items.replace(userId, existing.id, content, now)).id;
        return (yield* tx.items.create({ userId, folderId: calendar.id, type: 'event', isRead: true, internetMessageId: uidKey(event.data.uid), ...content }, now)).id;
      };
      const ownerAddress = lower(owner.email);
      // What a message does to the calendar; run inside the try below.
      const apply = function* (): Step<void> {
        switch (meeting.method) {
          case 'REQUEST': {
            const r = onRequest(stored, cal, ownerAddress);
            if (r.event && (r.action === 'create' || r.action === 'update')) {
              summary.eventId = yield* write(r.event);
              summary.action = r.action === 'create' ? 'created' : 'updated';
            }
            break;
          }
          case 'REPLY': {
            if (!stored) break;
            const r = onReply(stored, cal, from);
            if (r.action === 'update' && r.event) {
              summary.eventId = yield* write(r.event);
              summary.action = 'updated';
            }
            break;
          }
          case 'CANCEL': {
            const r = onCancel(stored, cal, from);
            if (r.action === 'delete' && existing) {
              yield* tx.items.delete(userId, existing.id, now);
              summary.action = 'deleted';
            } else if (r.action === 'update' && r.event) {
              summary.eventId = yield* write(r.event);
              summary.action = 'updated';
            }
            break;
          }
          case 'COUNTER': {
            if (!stored) break;
            const r = onCounter(stored, cal, from);
            if (r.action === 'proposal' && r.proposal) {
              summary.eventId = existing!.id;
              summary.action = 'proposal';
              summary.proposal = r.proposal;
            }
            break;
          }
        }
      };
      try {
        yield* apply();
      } catch (err) {
        // What a message says must never fail its delivery (an MTA would retry it for days): it is kept as mail.
        if (!(err instanceof ItipError || err instanceof CalendarInputError || err instanceof RecurrenceError)) throw err;
        log.warn({ userId, uid: first.uid, method: meeting.method, reason: err.message }, 'meeting message not applied');
        summary.action = 'ignored';
      }
      return { meeting: summary };
    },

    /** Events folded from iCalendar text (import): parse errors are the caller's 400. */
    parse(text: string) {
      return foldEvents(parseICalendar(text).events);
    },
  };
}

export type CalendarService = ReturnType<typeof createCalendarService>;
