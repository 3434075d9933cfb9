/**
 * Meetings over mail, the decisions (iTIP, RFC 5546): what an incoming REQUEST, REPLY, CANCEL or COUNTER does to
 * the recipient's copy of a meeting, and the iCalendar objects an organiser or attendee sends. Everything here is a
 * pure function of an event (as the store keeps it, EventData) and a parsed iCalendar object: no store, no clock,
 * no mail, so delivery and the API share one set of rules and tests can drive them directly.
 *
 * Addresses are compared lower-case. Which copy is newer follows RFC 5546 §2.1.5: a higher SEQUENCE wins; with the
 * same SEQUENCE, the later DTSTAMP.
 */
import ICAL from './icalLib';
import type { Attendee, EventData, OccurrenceException, ResponseStatus, ShowAs } from './model';
import { foldEvents, toICalendar, type ItipMethod, type ParsedCalendar, type ParsedVEvent } from './ical';

/** An event as the store keeps it: the item's subject and body text with its EventData. */
export interface StoredEvent {
  subject: string;
  description: string | null;
  data: EventData;
}

/** An iTIP object cannot be built from this event (no organiser, an address that is not an attendee). */
export class ItipError extends Error {
  override name = 'ItipError';
}

const lower = (address: string) => address.trim().toLowerCase();
const sameAddress = (a: string, b: string) => lower(a) === lower(b);

/** Two times of the model (UTC ISO instants, written with or without milliseconds, or dates) name the same moment. */
function sameTime(a: string, b: string): boolean {
  return a === b || (!Number.isNaN(Date.parse(a)) && Date.parse(a) === Date.parse(b));
}

function ignore(reason: string): { action: 'ignore'; reason: string } {
  return { action: 'ignore', reason };
}

/** The events of a parsed object that belong to one meeting (RFC 5546 §2.1.4: one UID per iTIP message). */
function eventsOf(calendar: ParsedCalendar, uid: string | undefined): ParsedVEvent[] {
  return uid === undefined ? [] : calendar.events.filter((e) => e.uid === uid);
}

/**
 * Whether an incoming component supersedes the copy kept (RFC 5546 §2.1.5). With equal SEQUENCE only a strictly
 * later DTSTAMP counts: the same message delivered twice (or an earlier one arriving late) changes nothing.
 */
function supersedes(incoming: { sequence: number; dtstamp: string | null }, kept: EventData): boolean {
  if (incoming.sequence !== kept.sequence) return incoming.sequence > kept.sequence;
  if (kept.lastItipStamp === null) return true;
  if (incoming.dtstamp === null) return false;
  return Date.parse(incoming.dtstamp) > Date.parse(kept.lastItipStamp);
}

/** The later of two DTSTAMPs (either may be missing). */
function laterStamp(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return Date.parse(b) > Date.parse(a) ? b : a;
}

/**
 * How the owner's calendar shows the time while they stand so: unanswered and tentative meetings as tentative, a
 * declined one as free; an accepted one as the organiser meant it, except that Outlook sends every invitation as
 * TENTATIVE (X-MICROSOFT-CDO-BUSYSTATUS; the intended BUSY is a separate property), which once accepted is busy.
 */
function showAsFor(status: ResponseStatus, organizersShowAs: ShowAs): ShowAs {
  switch (status) {
    case 'needsAction':
    case 'tentative':
      return 'tentative';
    case 'declined':
    case 'delegated':
      return 'free';
    case 'accepted':
      return organizersShowAs === 'tentative' ? 'busy' : organizersShowAs;
  }
}

/** Non-cancelled exceptions as the attendee sees them: when and where each changed occurrence takes place. */
function exceptionTimes(data: EventData): string {
  return JSON.stringify(
    data.exceptions
      .filter((e) => !e.isCancelled)
      .map((e) => [Date.parse(e.recurrenceId), Date.parse(e.start), Date.parse(e.end), e.location])
      .sort((x, y) => Number(x[0]) - Number(y[0])),
  );
}

/**
 * A change the attendee must answer again (RFC 5546 §2.1.4, "significant" changes): the time, the place or the
 * recurrence moved. An EXDATE only added is left out on purpose: an organiser who removes occurrences (Outlook and
 * Google send the removed starts as EXDATEs in the next update) asks nobody to re-confirm the rest.
 */
function significantChange(before: EventData, after: EventData): boolean {
  const rule = (d: EventData) => (d.recurrence ? JSON.stringify([d.recurrence.rrule, [...d.recurrence.rdates].map(Date.parse).sort()]) : null);
  const exdates = (d: EventData) => new Set((d.recurrence?.exdates ?? []).map(Date.parse));
  const restored = [...exdates(before)].some((t) => !exdates(after).has(t));
  return (
    !sameTime(before.start, after.start) ||
    !sameTime(before.end, after.end) ||
    before.isAllDay !== after.isAllDay ||
    (before.location ?? null) !== (after.location ?? null) ||
    rule(before) !== rule(after) ||
    restored ||
    exceptionTimes(before) !== exceptionTimes(after)
  );
}

/** The original end of the occurrence that starts at `recurrenceId`: the master's duration after it. */
function originalEnd(data: EventData, recurrenceId: string): string {
  if (data.isAllDay) {
    const days = Math.round((Date.parse(data.end) - Date.parse(data.start)) / 86_400_000);
    return new Date(Date.parse(recurrenceId) + days * 86_400_000).toISOString().slice(0, 10);
  }
  return new Date(Date.parse(recurrenceId) + (Date.parse(data.end) - Date.parse(data.start))).toISOString();
}

/** Replaces (or adds) the exception of one occurrence. */
function withException(data: EventData, exception: OccurrenceException): EventData {
  const others = data.exceptions.filter((e) => !sameTime(e.recurrenceId, exception.recurrenceId));
  return { ...data, exceptions: [...others, exception] };
}

/**
 * The data with the occurrence at `recurrenceId` cancelled. An occurrence that had no exception, or one whose
 * exception kept no real time (start = end, as a deletion through the API stores it), is written at its original
 * time: attendees' clients show the CANCEL's DTSTART/DTEND.
 */
function withCancelledOccurrence(data: EventData, recurrenceId: string): EventData {
  const current = data.exceptions.find((e) => sameTime(e.recurrenceId, recurrenceId));
  const timed = current && Date.parse(current.end) > Date.parse(current.start);
  const base: OccurrenceException = current && timed
    ? current
    : { recurrenceId, start: recurrenceId, end: originalEnd(data, recurrenceId), subject: current?.subject ?? null, location: current?.location ?? null, isCancelled: true };
  return withException(data, { ...base, isCancelled: true });
}

/** An exception as an occurrence VEVENT describes it (subject and location only when they differ from the series). */
function exceptionFrom(occurrence: ParsedVEvent, series: StoredEvent): OccurrenceException {
  return {
    recurrenceId: occurrence.recurrenceId!,
    start: occurrence.data.start,
    end: occurrence.data.end,
    subject: occurrence.subject !== series.subject ? occurrence.subject : null,
    location: occurrence.data.location !== series.data.location ? occurrence.data.location : null,
    isCancelled: occurrence.data.isCancelled,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Incoming messages

type RequestResult = { action: 'create' | 'update' | 'ignore'; event?: StoredEvent; reason?: string };

/**
 * An attendee's view of an incoming REQUEST for `owner`: create (new UID), update (same UID, SEQUENCE ≥ stored,
 * DTSTAMP newer: an UPDATE moves the event, keeps the owner's own answer when only non-significant fields changed
 * and resets it to needsAction when time/place/recurrence changed), or ignore (older sequence, or owner not an
 * attendee). The result has responseStatus for the owner, showAs 'tentative' while needsAction. A REQUEST for one
 * occurrence (RECURRENCE-ID) updates that exception of the stored series.
 */
export function onRequest(existing: StoredEvent | undefined, request: ParsedCalendar, owner: string): RequestResult {
  const me = lower(owner);
  const events = eventsOf(request, existing?.data.uid ?? request.events[0]?.uid);
  if (events.length === 0) return ignore('the request has no event of this meeting');
  if (existing?.data.responseStatus === 'organizer') return ignore('the owner organises this meeting');
  const master = events.find((e) => e.recurrenceId === null);
  if (!master) return occurrenceRequest(existing, events, me);

  if (master.data.organizer && lower(master.data.organizer.address) === me) return ignore('the owner organises this meeting');
  const invited = master.data.attendees.find((a) => lower(a.address) === me);
  if (!invited) return ignore('the owner is not an attendee of this meeting');
  if (existing && !supersedes(master, existing.data)) return ignore('an older version of the meeting than the one kept (SEQUENCE/DTSTAMP)');

  const [folded] = foldEvents(events);
  if (!folded) return ignore('the request has no event of this meeting');
  const kept = existing?.data;
  const reset = kept !== undefined && (kept.isCancelled || significantChange(kept, folded.data));
  const status: ResponseStatus = kept === undefined ? invited.status : reset ? 'needsAction' : (kept.responseStatus as ResponseStatus);
  const keptMine = kept?.attendees.find((a) => lower(a.address) === me);
  const respondedAt = kept === undefined ? invited.respondedAt : reset ? null : (keptMine?.respondedAt ?? null);
  const data: EventData = {
    ...folded.data,
    attendees: folded.data.attendees.map((a): Attendee => (lower(a.address) === me ? { ...a, status, respondedAt } : a)),
    responseStatus: status,
    showAs: showAsFor(status, folded.data.showAs),
    // The reminder is the owner's own choice once the meeting is in their calendar; the organiser's VALARM only
    // suggests one for a new invitation.
    reminderMinutesBeforeStart: kept ? kept.reminderMinutesBeforeStart : folded.data.reminderMinutesBeforeStart,
    lastItipStamp: master.dtstamp ?? folded.data.lastItipStamp,
  };
  return { action: kept ? 'update' : 'create', event: { subject: folded.subject, description: folded.description, data } };
}

/**
 * A REQUEST that carries only occurrences (RECURRENCE-ID VEVENTs): each changes its exception of the stored series.
 * The owner's answer stays the series' (the model keeps one answer per event), and an occurrence of a series the
 * owner does not have is ignored: without its master there is nothing to attach it to.
 */
function occurrenceRequest(existing: StoredEvent | undefined, occurrences: ParsedVEvent[], me: string): RequestResult {
  if (!existing) return ignore('an occurrence of a series the owner does not have');
  if (!existing.data.recurrence) return ignore('an occurrence of an event that is not a series');
  let data = existing.data;
  for (const occurrence of occurrences) {
    if (!occurrence.data.attendees.some((a) => lower(a.address) === me)) continue;
    if (!supersedes(occurrence, existing.data)) continue;
    data = withException(data, exceptionFrom(occurrence, existing));
    data = { ...data, sequence: Math.max(data.sequence, occurrence.sequence), lastItipStamp: laterStamp(data.lastItipStamp, occurrence.dtstamp) };
  }
  if (data === existing.data) return ignore('no occurrence in the request is newer than the kept copy or addressed to the owner');
  return { action: 'update', event: { ...existing, data } };
}

/**
 * The organiser's view of a REPLY: the replying attendee's status (and respondedAt = DTSTAMP) on the organiser's
 * event; ignore a REPLY from someone not invited (no party crashers), one whose ATTENDEE is not its sender (nobody
 * answers for someone else), one that answers an older version of the meeting, or one older than the stored answer.
 * A REPLY for one occurrence only is ignored: the model keeps one answer per attendee and event, not per occurrence.
 */
export function onReply(
  organizerEvent: StoredEvent,
  reply: ParsedCalendar,
  from: string,
): { action: 'update' | 'ignore'; event?: StoredEvent; attendee?: string; status?: ResponseStatus; reason?: string } {
  const data = organizerEvent.data;
  const sender = lower(from);
  if (data.responseStatus !== 'organizer') return ignore('the owner does not organise this meeting');
  const events = eventsOf(reply, data.uid);
  if (events.length === 0) return ignore('the reply has no event of this meeting');
  const master = events.find((e) => e.recurrenceId === null);
  if (!master) return ignore('answers for single occurrences are not kept');
  const answer = master.data.attendees.find((a) => lower(a.address) === sender);
  if (!answer) return ignore('the reply does not answer for its sender');
  const invited = data.attendees.find((a) => lower(a.address) === sender);
  if (!invited) return ignore('the sender is not invited to this meeting');
  if (answer.status === 'needsAction') return ignore('the reply carries no answer');
  if (master.sequence < data.sequence) return ignore('the reply answers an older version of the meeting');
  if (master.dtstamp === null || Number.isNaN(Date.parse(master.dtstamp))) return ignore('the reply has no DTSTAMP');
  const respondedAt = new Date(Date.parse(master.dtstamp)).toISOString();
  if (invited.respondedAt !== null && Date.parse(respondedAt) <= Date.parse(invited.respondedAt)) {
    return ignore('older than the answer already recorded');
  }
  const attendees = data.attendees.map((a): Attendee => (a === invited ? { ...a, status: answer.status, respondedAt } : a));
  return { action: 'update', event: { ...organizerEvent, data: { ...data, attendees } }, attendee: lower(invited.address), status: answer.status };
}

/**
 * An attendee's view of a CANCEL: the whole series/event → delete; one occurrence → that occurrence cancelled (an
 * exception with isCancelled, so reminders for it stop); ignore when the sender is not the stored organiser or the
 * sequence is older. `delete` comes with the cancelled event too, for a caller that keeps it marked instead.
 */
export function onCancel(
  existing: StoredEvent | undefined,
  cancel: ParsedCalendar,
  from: string,
): { action: 'delete' | 'update' | 'ignore'; event?: StoredEvent; reason?: string } {
  if (!existing) return ignore('no such meeting in the calendar');
  const data = existing.data;
  if (data.responseStatus === 'organizer') return ignore('the owner organises this meeting');
  if (!data.organizer || !sameAddress(data.organizer.address, from)) return ignore('the sender is not the organiser');
  const events = eventsOf(cancel, data.uid);
  if (events.length === 0) return ignore('the cancellation has no event of this meeting');

  const master = events.find((e) => e.recurrenceId === null);
  // A cancelled "occurrence" of an event that is no series is the event itself when it names its start.
  const whole = master ?? (!data.recurrence ? events.find((e) => sameTime(e.recurrenceId!, data.start)) : undefined);
  if (whole) {
    if (!supersedes(whole, data)) return ignore('an older version of the meeting than the one kept (SEQUENCE/DTSTAMP)');
    const cancelled: EventData = { ...data, isCancelled: true, showAs: 'free', sequence: whole.sequence, lastItipStamp: whole.dtstamp ?? data.lastItipStamp };
    return { action: 'delete', event: { ...existing, data: cancelled } };
  }
  if (!data.recurrence) return ignore('an occurrence of an event that is not a series');

  let next = data;
  for (const occurrence of events) {
    if (!supersedes(occurrence, data)) continue;
    const recurrenceId = occurrence.recurrenceId!;
    const known = data.exceptions.find((e) => sameTime(e.recurrenceId, recurrenceId));
    next = withException(next, {
      ...(known ?? { recurrenceId, start: occurrence.data.start, end: occurrence.data.end, subject: null, location: null }),
      isCancelled: true,
    });
    next = { ...next, sequence: Math.max(next.sequence, occurrence.sequence), lastItipStamp: laterStamp(next.lastItipStamp, occurrence.dtstamp) };
  }
  if (next === data) return ignore('an older version of the meeting than the one kept (SEQUENCE/DTSTAMP)');
  return { action: 'update', event: { ...existing, data: next } };
}

/**
 * The organiser's view of a COUNTER: the proposed new time, for the organiser to accept (→ an updated REQUEST) or
 * decline (→ DECLINECOUNTER). Only an invited attendee proposes, and only against the current version.
 */
export function onCounter(
  organizerEvent: StoredEvent,
  counter: ParsedCalendar,
  from: string,
): { action: 'proposal' | 'ignore'; proposal?: { attendee: string; start: string; end: string; comment: string | null }; reason?: string } {
  const data = organizerEvent.data;
  const sender = lower(from);
  if (data.responseStatus !== 'organizer') return ignore('the owner does not organise this meeting');
  const events = eventsOf(counter, data.uid);
  const proposed = events.find((e) => e.recurrenceId === null) ?? events[0];
  if (!proposed) return ignore('the counter-proposal has no event of this meeting');
  if (!data.attendees.some((a) => lower(a.address) === sender)) return ignore('the sender is not invited to this meeting');
  if (proposed.sequence < data.sequence) return ignore('the proposal is for an older version of the meeting');
  return { action: 'proposal', proposal: { attendee: sender, start: proposed.data.start, end: proposed.data.end, comment: commentOf(proposed) } };
}

/** A COMMENT the parser kept (RFC 5546 lets a COUNTER carry one), else null. */
function commentOf(event: ParsedVEvent): string | null {
  const comment = (event as ParsedVEvent & { comment?: unknown }).comment;
  return typeof comment === 'string' && comment !== '' ? comment : null;
}

// ---------------------------------------------------------------------------------------------------------------
// Outgoing objects

/** COMMENT on every VEVENT of an iCalendar object (toICalendar has no comment; ical.js writes and folds it). */
function withComment(ical: string, comment: string): string {
  const calendar = ICAL.Component.fromString(ical);
  for (const vevent of calendar.getAllSubcomponents('vevent')) vevent.addPropertyWithValue('comment', comment);
  return calendar.toString() + '\r\n';
}

function requireOrganizer(event: StoredEvent): void {
  if (!event.data.organizer) throw new ItipError('This event has no organiser: it is not a meeting.');
}

function attendeeOf(event: StoredEvent, address: string): Attendee {
  const found = event.data.attendees.find((a) => sameAddress(a.address, address));
  if (!found) throw new ItipError(`${address} is not an attendee of this meeting.`);
  return found;
}

/**
 * METHOD:REQUEST with all attendees (RSVP=TRUE for those who have not answered), for the whole meeting or one
 * occurrence (its exception, else the occurrence as the series has it: toICalendar's onlyRecurrenceId).
 */
export function requestFor(event: StoredEvent, now: number, opts: { recurrenceId?: string } = {}): string {
  requireOrganizer(event);
  return toICalendar([event], { method: 'REQUEST', dtstamp: now, onlyRecurrenceId: opts.recurrenceId });
}

/**
 * METHOD:CANCEL (the whole meeting, or one occurrence), STATUS:CANCELLED. The event is given as it stands after the
 * change (the caller has bumped SEQUENCE). No VALARM: RFC 5546 §3.2.5 does not allow one in a CANCEL.
 */
export function cancelFor(event: StoredEvent, now: number, opts: { recurrenceId?: string } = {}): string {
  requireOrganizer(event);
  const quiet: EventData = { ...event.data, reminderMinutesBeforeStart: null };
  // The UID alone cancels every occurrence (RFC 5546 §3.2.5), so a whole cancellation carries the master only.
  const data = opts.recurrenceId ? withCancelledOccurrence(quiet, opts.recurrenceId) : { ...quiet, isCancelled: true, exceptions: [] };
  return toICalendar([{ ...event, data }], { method: 'CANCEL', dtstamp: now, onlyRecurrenceId: opts.recurrenceId });
}

/**
 * METHOD:REPLY from `attendee` with their answer (respondedAt now), only that attendee listed (RFC 5546 §3.2.3),
 * for the whole meeting or one occurrence; an optional COMMENT. No VALARM (not allowed in a REPLY).
 */
export function replyFor(
  event: StoredEvent,
  attendee: string,
  status: ResponseStatus,
  now: number,
  opts: { comment?: string; recurrenceId?: string } = {},
): string {
  requireOrganizer(event);
  const me = attendeeOf(event, attendee);
  const respondedAt = new Date(now).toISOString();
  const data: EventData = {
    ...event.data,
    reminderMinutesBeforeStart: null,
    responseStatus: status,
    attendees: event.data.attendees.map((a) => (a === me ? { ...a, status, respondedAt } : a)),
  };
  const ical = toICalendar([{ ...event, data }], { method: 'REPLY', onlyAttendees: [me.address], dtstamp: now, onlyRecurrenceId: opts.recurrenceId });
  return opts.comment ? withComment(ical, opts.comment) : ical;
}

/** METHOD:DECLINECOUNTER to the attendee who proposed a new time, with the organiser's reason as COMMENT. */
export function declineCounterFor(event: StoredEvent, attendee: string, now: number, reason: string): string {
  requireOrganizer(event);
  const them = attendeeOf(event, attendee);
  const data: EventData = { ...event.data, reminderMinutesBeforeStart: null };
  const ical = toICalendar([{ ...event, data }], { method: 'DECLINECOUNTER', onlyAttendees: [them.address], dtstamp: now });
  return reason ? withComment(ical, reason) : ical;
}

// ---------------------------------------------------------------------------------------------------------------
// The text a client without calendar support shows

const ANSWER_WORDS: Record<ResponseStatus, string> = {
  accepted: 'accepted',
  tentative: 'tentatively accepted',
  declined: 'declined',
  delegated: 'delegated',
  needsAction: 'not yet answered',
};

/** A zone Intl knows, so a stray zone name never stops a message going out (UTC then). */
function knownZone(zone: string): string {
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone: zone });
    return zone;
  } catch {
    return 'UTC';
  }
}

/**
 * "Tuesday 12 January 2027" in `zone`, assembled from Intl's parts: the pieces are stable English, the punctuation
 * between them changes with ICU versions.
 */
function dateText(ms: number, zone: string): string {
  const parts = new Intl.DateTimeFormat('en-GB', { timeZone: zone, weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' }).formatToParts(ms);
  const part = (type: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === type)?.value ?? '';
  return `${part('weekday')} ${part('day')} ${part('month')} ${part('year')}`;
}

function timeText(ms: number, zone: string): string {
  const parts = new Intl.DateTimeFormat('en-GB', { timeZone: zone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).formatToParts(ms);
  return `${parts.find((p) => p.type === 'hour')?.value ?? ''}:${parts.find((p) => p.type === 'minute')?.value ?? ''}`;
}

/** "Tuesday 12 January 2027, 09:00 – 09:30 (Europe/Berlin)", or the dates of an all-day event (end exclusive). */
function whenText(start: string, end: string, isAllDay: boolean, zone: string): string {
  const s = Date.parse(start);
  const e = Date.parse(end);
  if (isAllDay) {
    const first = dateText(s, 'UTC');
    const last = dateText(e - 86_400_000, 'UTC');
    return first === last || e <= s ? `${first} (all day)` : `${first} – ${last} (all day)`;
  }
  const tz = knownZone(zone);
  const until = dateText(s, tz) === dateText(e, tz) ? timeText(e, tz) : `${dateText(e, tz)}, ${timeText(e, tz)}`;
  return `${dateText(s, tz)}, ${timeText(s, tz)} – ${until} (${tz})`;
}

const FREQ_WORDS: Record<string, [string, string]> = {
  DAILY: ['day', 'days'],
  WEEKLY: ['week', 'weeks'],
  MONTHLY: ['month', 'months'],
  YEARLY: ['year', 'years'],
};
const DAY_WORDS: Record<string, string> = { MO: 'Monday', TU: 'Tuesday', WE: 'Wednesday', TH: 'Thursday', FR: 'Friday', SA: 'Saturday', SU: 'Sunday' };

/** "every week on Tuesday, 12 times" from an RRULE, in words (the rule itself when it says more than that). */
function repeatText(rrule: string): string {
  const parts = new Map(rrule.split(';').map((p) => p.split('=') as [string, string]).map(([k, v]) => [k.toUpperCase(), v ?? '']));
  const freq = FREQ_WORDS[parts.get('FREQ') ?? ''];
  if (!freq) return rrule;
  const interval = Number(parts.get('INTERVAL') ?? '1') || 1;
  let out = interval === 1 ? `every ${freq[0]}` : `every ${interval} ${freq[1]}`;
  const days = (parts.get('BYDAY') ?? '').split(',').filter(Boolean);
  if (days.length && days.every((d) => DAY_WORDS[d])) out += ` on ${days.map((d) => DAY_WORDS[d]).join(', ')}`;
  else if (days.length) out += ` (${rrule})`;
  const count = parts.get('COUNT');
  const until = parts.get('UNTIL');
  if (count) out += `, ${count} times`;
  else if (until && /^\d{8}/.test(until)) out += `, until ${until.slice(0, 4)}-${until.slice(4, 6)}-${until.slice(6, 8)}`;
  return out;
}

const personText = (p: { name: string; address: string }) => (p.name && p.name !== p.address ? `${p.name} <${p.address}>` : p.address);

/** The text/plain summary of an invitation, reply or cancellation (what a client without calendar support shows). */
export function summaryText(
  event: StoredEvent,
  method: ItipMethod,
  opts: { attendee?: string; status?: ResponseStatus; comment?: string } = {},
): string {
  const data = event.data;
  const organizer = data.organizer ? personText(data.organizer) : 'The organiser';
  const who = opts.attendee ? (data.attendees.find((a) => sameAddress(a.address, opts.attendee!)) ?? { name: '', address: opts.attendee }) : undefined;
  const attendee = who ? personText(who) : 'An attendee';
  const subject = event.subject || '(no subject)';
  const headline: Record<ItipMethod, string> = {
    REQUEST: `${organizer} invites you to "${subject}".`,
    PUBLISH: `"${subject}"`,
    ADD: `${organizer} adds occurrences to "${subject}".`,
    CANCEL: `${organizer} has cancelled "${subject}".`,
    REPLY: `${attendee} has ${ANSWER_WORDS[opts.status ?? 'accepted']} "${subject}".`,
    REFRESH: `${attendee} asks for the latest version of "${subject}".`,
    COUNTER: `${attendee} proposes a new time for "${subject}".`,
    DECLINECOUNTER: `${organizer} has declined your proposed new time for "${subject}".`,
  };
  const lines = [headline[method], ''];
  if (opts.comment) lines.push(`Comment: ${opts.comment}`, '');
  lines.push(`When: ${whenText(data.start, data.end, data.isAllDay, data.timeZone)}`);
  if (data.recurrence) lines.push(`Repeats: ${repeatText(data.recurrence.rrule)}`);
  if (data.location) lines.push(`Where: ${data.location}`);
  if (data.organizer) lines.push(`Organiser: ${personText(data.organizer)}`);
  if (data.attendees.length) {
    lines.push('Attendees:');
    for (const a of data.attendees) lines.push(`  ${personText(a)}${a.type === 'optional' ? ' (optional)' : a.type === 'resource' ? ' (resource)' : ''}`);
  }
  if (method !== 'REPLY' && event.description) lines.push('', event.description);
  return lines.join('\n') + '\n';
}
