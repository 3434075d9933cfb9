/**
 * iCalendar (RFC 5545) in and out for events, as Outlook, Google Calendar and Thunderbird write and read it, with
 * the iTIP methods of RFC 5546. Parsing is ical.js's (unfolding, escaping, parameters, VTIMEZONE blocks); this
 * module maps components to EventData and back.
 *
 * Times: a TZID that names a zone we know (IANA, Windows, Outlook display names; see timezones.ts) is converted
 * with the time zone database, which is more current than the VTIMEZONE block a client sends along; a TZID we do
 * not know is converted with its block through ical.js, and the event is given the IANA zone whose offsets match
 * the block (so that its recurrence is still expanded in a real zone). Floating times are read in the zone the
 * caller names, else the calendar's X-WR-TIMEZONE, else UTC.
 *
 * Two private properties make toICalendar → parseICalendar lossless for what iCalendar cannot say itself:
 * X-PIGEON-TZID on an all-day event (the zone it was planned in; all-day dates carry none) and the
 * X-PIGEON-RESPONDED-AT parameter on an ATTENDEE (when they answered). Other clients ignore both (RFC 5545 §3.2,
 * §3.8.8.2).
 */
import { createHash } from 'node:crypto';
import ICAL from './icalLib';
import type { Attendee, AttendeeType, EventData, EventPerson, OccurrenceException, ResponseStatus, ShowAs } from './model';
import { checkRrule, RecurrenceError } from './recurrence';
import { ianaZone, isIanaZone, offsetAt, utcToZoned, zonedToUtc, zoneMatching, zoneTransitions, type WallClock, type ZoneTransition } from './timezones';

/** Unreadable iCalendar: the message is for a 400 or a log line. */
export class CalendarInputError extends Error {
  override name = 'CalendarInputError';
}

export type ItipMethod = 'PUBLISH' | 'REQUEST' | 'REPLY' | 'ADD' | 'CANCEL' | 'REFRESH' | 'COUNTER' | 'DECLINECOUNTER';
const ITIP_METHODS: readonly ItipMethod[] = ['PUBLISH', 'REQUEST', 'REPLY', 'ADD', 'CANCEL', 'REFRESH', 'COUNTER', 'DECLINECOUNTER'];

/** One VEVENT as read (a master, or an exception when recurrenceId is set). */
export interface ParsedVEvent {
  uid: string;
  sequence: number;
  dtstamp: string | null;
  recurrenceId: string | null;
  subject: string;
  description: string | null;
  /** For an exception VEVENT: its own start/end etc. (recurrence null). */
  data: EventData;
}

export interface ParsedCalendar {
  method: ItipMethod | null;
  events: ParsedVEvent[];
}

/** An event as foldEvents gives it and toICalendar takes it. `recurrenceId` is set on an occurrence that stands
 *  alone (a message about one occurrence of a series whose master it does not carry). */
export interface CalendarEvent {
  subject: string;
  description: string | null;
  data: EventData;
  recurrenceId?: string | null;
}

const MAX_BYTES = 1024 * 1024;
const MAX_COMPONENTS = 1000;
const DAY = 86_400_000;
const PRODID = '-//Pigeon//Pigeon Calendar//EN';

type Component = InstanceType<typeof ICAL.Component>;
type Property = InstanceType<typeof ICAL.Property>;
type Timezone = InstanceType<typeof ICAL.Timezone>;
type Duration = InstanceType<typeof ICAL.Duration>;

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

// ---------------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------------

/** How the times of one TZID are read. */
interface ZoneReading {
  /** Converted with the time zone database in this zone. */
  iana: string | null;
  /** Else converted with the calendar's own VTIMEZONE block. */
  custom: Timezone | null;
  /** The IANA name an event planned in it gets (the block's best match for a custom zone). */
  name: string;
}

interface ReadContext {
  calendar: Component;
  floatingZone: string;
  zones: Map<string, ZoneReading>;
}

/** A time value as read: a date, or an instant with the zone it was written in. */
type TimeValue = { kind: 'date'; date: string } | { kind: 'instant'; ms: number; zone: string };

function parseFields(value: string): WallClock {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2}))?/.exec(value);
  if (!m) throw new CalendarInputError(`"${value}" is not a date or time`);
  return {
    year: Number(m[1]),
    month: Number(m[2]),
    day: Number(m[3]),
    hour: Number(m[4] ?? 0),
    minute: Number(m[5] ?? 0),
    second: Math.min(59, Number(m[6] ?? 0)),
  };
}

function wallMs(f: WallClock): number {
  const d = new Date(0);
  d.setUTCFullYear(f.year, f.month - 1, f.day);
  d.setUTCHours(f.hour, f.minute, f.second, 0);
  return d.getTime();
}

/** The offset (ms) of a calendar-defined zone at an instant, through ical.js. */
function customOffset(zone: Timezone, ms: number): number {
  // ical.js answers offsets for local times (and an ambiguous one as the later instant); an instant's offset is
  // read from the block's expanded list of changes instead (ical.js keeps each at its UTC time).
  zone._ensureCoverage(new Date(ms).getUTCFullYear() + 1);
  const changes = zone.changes as Array<WallClock & { utcOffset: number; prevUtcOffset: number }>;
  let offset = changes[0] ? changes[0].prevUtcOffset * 1000 : 0;
  for (const change of changes) {
    if (wallMs(change) > ms) break;
    offset = change.utcOffset * 1000;
  }
  return offset;
}

function zoneReading(ctx: ReadContext, tzid: string, around: WallClock): ZoneReading {
  const known = ctx.zones.get(tzid);
  if (known) return known;
  let reading: ZoneReading = { iana: null, custom: null, name: ctx.floatingZone };
  const iana = ianaZone(tzid);
  if (iana) {
    reading = { iana, custom: null, name: iana };
  } else {
    const block = ctx.calendar.getAllSubcomponents('vtimezone').find((c) => String(c.getFirstPropertyValue('tzid') ?? '') === tzid);
    if (block) {
      // Google and Thunderbird name the IANA zone a block was made from.
      const location = ianaZone(String(block.getFirstPropertyValue('x-lic-location') ?? ''));
      if (location) {
        reading = { iana: location, custom: null, name: location };
      } else {
        let custom: Timezone;
        try {
          custom = new ICAL.Timezone({ component: block, tzid });
        } catch (err) {
          throw new CalendarInputError(`VTIMEZONE "${tzid}" cannot be read: ${message(err)}`);
        }
        const from = wallMs({ year: around.year, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
        const to = wallMs({ year: around.year + 1, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
        const name = zoneMatching((ms) => customOffset(custom, ms), from, to) ?? 'UTC';
        reading = { iana: null, custom, name };
      }
    }
  }
  ctx.zones.set(tzid, reading);
  return reading;
}

/** Reads one raw (jCal) value of a date/date-time property, with the property's TZID. */
function readTimeValue(ctx: ReadContext, prop: Property, raw: string): TimeValue {
  if (typeof raw !== 'string') throw new CalendarInputError(`${prop.name.toUpperCase()} has no date or time`);
  if (prop.type === 'date' || /^\d{4}-\d{2}-\d{2}$/.test(raw)) return { kind: 'date', date: raw.slice(0, 10) };
  const fields = parseFields(raw);
  if (raw.endsWith('Z')) return { kind: 'instant', ms: wallMs(fields), zone: 'UTC' };
  const tzid = prop.getParameter('tzid');
  if (typeof tzid === 'string' && tzid) {
    const reading = zoneReading(ctx, tzid, fields);
    if (reading.iana) return { kind: 'instant', ms: zonedToUtc(fields, reading.iana), zone: reading.name };
    if (reading.custom) {
      const t = ICAL.Time.fromData({ ...fields, isDate: false }, reading.custom);
      return { kind: 'instant', ms: t.toUnixTime() * 1000, zone: reading.name };
    }
  }
  return { kind: 'instant', ms: zonedToUtc(fields, ctx.floatingZone), zone: ctx.floatingZone };
}

/** The raw values of a property (jCal strings; a PERIOD gives its start). */
function rawValues(prop: Property): string[] {
  const jcal = prop.toJSON() as unknown[];
  return jcal.slice(3).map((v) => (Array.isArray(v) ? String(v[0]) : String(v)));
}

function firstTime(ctx: ReadContext, component: Component, name: string): TimeValue | null {
  const prop = component.getFirstProperty(name);
  if (!prop) return null;
  const raw = rawValues(prop)[0];
  return raw === undefined ? null : readTimeValue(ctx, prop, raw);
}

function textOf(component: Component, name: string): string | null {
  const value = component.getFirstPropertyValue(name);
  if (value === null || value === undefined) return null;
  return String(value);
}

const iso = (ms: number) => new Date(ms).toISOString();

function addDays(date: string, days: number): string {
  return new Date(Date.parse(`${date}T00:00:00Z`) + days * DAY).toISOString().slice(0, 10);
}

function localDate(ms: number, zone: string): string {
  const f = utcToZoned(ms, zone);
  return `${String(f.year).padStart(4, '0')}-${String(f.month).padStart(2, '0')}-${String(f.day).padStart(2, '0')}`;
}

function isLocalMidnight(ms: number, zone: string): boolean {
  const f = utcToZoned(ms, zone);
  return f.hour === 0 && f.minute === 0 && f.second === 0;
}

/** An address as Pigeon keeps it: `mailto:` dropped, lower-cased (the EMAIL parameter for a non-mailto URI). */
function addressOf(prop: Property): string {
  const value = String(prop.getFirstValue() ?? '').trim();
  const mail = /^mailto:/i.test(value) ? value.slice(7) : value;
  if (mail.includes('@')) return mail.trim().toLowerCase();
  const email = prop.getParameter('email');
  return (typeof email === 'string' && email ? email : mail).trim().toLowerCase();
}

function param(prop: Property, name: string): string | null {
  const value = prop.getParameter(name);
  if (Array.isArray(value)) return value.length ? String(value[0]) : null;
  return typeof value === 'string' ? value : null;
}

function personOf(prop: Property): EventPerson {
  return { name: param(prop, 'cn') ?? '', address: addressOf(prop) };
}

const PARTSTAT: Record<string, ResponseStatus> = {
  'NEEDS-ACTION': 'needsAction',
  ACCEPTED: 'accepted',
  TENTATIVE: 'tentative',
  DECLINED: 'declined',
  DELEGATED: 'delegated',
};

function attendeeOf(prop: Property): Attendee {
  const cutype = (param(prop, 'cutype') ?? '').toUpperCase();
  const role = (param(prop, 'role') ?? '').toUpperCase();
  const type: AttendeeType =
    cutype === 'RESOURCE' || cutype === 'ROOM' ? 'resource' : role === 'OPT-PARTICIPANT' || role === 'NON-PARTICIPANT' ? 'optional' : 'required';
  const status = PARTSTAT[(param(prop, 'partstat') ?? '').toUpperCase()] ?? 'needsAction';
  let respondedAt: string | null = null;
  const answered = param(prop, 'x-pigeon-responded-at');
  if (answered && /^\d{8}T\d{6}Z$/.test(answered)) {
    const f = parseFields(`${answered.slice(0, 4)}-${answered.slice(4, 6)}-${answered.slice(6, 8)}T${answered.slice(9, 11)}:${answered.slice(11, 13)}:${answered.slice(13, 15)}`);
    respondedAt = iso(wallMs(f));
  }
  return { ...personOf(prop), type, status, respondedAt };
}

const BUSY_STATUS: Record<string, ShowAs> = {
  FREE: 'free',
  TENTATIVE: 'tentative',
  BUSY: 'busy',
  OOF: 'oof',
  OUTOFOFFICE: 'oof',
  WORKINGELSEWHERE: 'workingElsewhere',
};

function showAsOf(vevent: Component): ShowAs {
  for (const name of ['x-microsoft-cdo-intendedstatus', 'x-microsoft-cdo-busystatus']) {
    const value = BUSY_STATUS[(textOf(vevent, name) ?? '').trim().toUpperCase()];
    if (value) return value;
  }
  return (textOf(vevent, 'transp') ?? '').trim().toUpperCase() === 'TRANSPARENT' ? 'free' : 'busy';
}

/** Minutes before the start of the first alarm that fires at or before it (display/audio alarms first). */
function reminderOf(ctx: ReadContext, vevent: Component, startMs: number, endMs: number): number | null {
  const alarms = vevent.getAllSubcomponents('valarm');
  const visible = alarms.filter((a) => ['DISPLAY', 'AUDIO'].includes((textOf(a, 'action') ?? '').toUpperCase()));
  for (const alarm of [...visible, ...alarms.filter((a) => !visible.includes(a))]) {
    const trigger = alarm.getFirstProperty('trigger');
    if (!trigger) continue;
    let before: number | null = null;
    if (trigger.type === 'date-time') {
      const raw = rawValues(trigger)[0];
      const at = raw === undefined ? null : readTimeValue(ctx, trigger, raw);
      if (at?.kind === 'instant') before = (startMs - at.ms) / 60_000;
    } else {
      const value = trigger.getFirstValue();
      if (value instanceof ICAL.Duration) {
        const seconds = value.toSeconds();
        const related = (param(trigger, 'related') ?? 'START').toUpperCase();
        before = related === 'END' ? (endMs - startMs) / 60_000 - seconds / 60 : -seconds / 60;
      }
    }
    if (before !== null && Number.isFinite(before) && before >= 0) return Math.max(0, Math.round(before));
  }
  return null;
}

/** A UID for a VEVENT that has none (RFC 5545 requires one; a few exporters leave it out): stable for its content. */
function derivedUid(vevent: Component): string {
  return `pigeon-${createHash('sha256').update(JSON.stringify(vevent.toJSON())).digest('hex').slice(0, 32)}`;
}

/** A time value in the form of the event it belongs to: a date for an all-day event, UTC ISO otherwise. */
function asEventTime(value: TimeValue, allDay: boolean, zone: string, masterLocal: WallClock | null): string {
  if (value.kind === 'date') {
    if (allDay) return value.date;
    // A date on a timed series (EXDATE;VALUE=DATE): the occurrence that day at the series' time.
    const f = parseFields(value.date);
    const at = masterLocal ? { ...f, hour: masterLocal.hour, minute: masterLocal.minute, second: masterLocal.second } : f;
    return iso(zonedToUtc(at, zone));
  }
  return allDay ? localDate(value.ms, zone) : iso(value.ms);
}

function durationEnd(duration: Duration, start: TimeValue, zone: string): TimeValue {
  const sign = duration.isNegative ? -1 : 1;
  const days = sign * (duration.weeks * 7 + duration.days);
  const exact = sign * ((duration.hours * 60 + duration.minutes) * 60 + duration.seconds) * 1000;
  if (start.kind === 'date') return { kind: 'date', date: addDays(start.date, days || 1) };
  // Days and weeks are nominal (the same wall-clock time days later), hours and less exact (RFC 5545 §3.3.6).
  const local = utcToZoned(start.ms, zone);
  const shifted = days ? zonedToUtc({ ...local, day: local.day + days }, zone) : start.ms;
  return { kind: 'instant', ms: shifted + exact, zone: start.zone };
}

function readVEvent(ctx: ReadContext, vevent: Component): ParsedVEvent {
  const uid = (textOf(vevent, 'uid') ?? '').trim() || derivedUid(vevent);
  const sequenceValue = Number(vevent.getFirstPropertyValue('sequence') ?? 0);
  const sequence = Number.isInteger(sequenceValue) && sequenceValue >= 0 ? sequenceValue : 0;
  const dtstampValue = firstTime(ctx, vevent, 'dtstamp');
  const dtstamp = dtstampValue?.kind === 'instant' ? iso(dtstampValue.ms) : dtstampValue ? `${dtstampValue.date}T00:00:00.000Z` : null;
  const recurrenceIdValue = firstTime(ctx, vevent, 'recurrence-id');

  // DTSTART may be missing from a REPLY or CANCEL (RFC 5546): the occurrence's or the message's time stands in.
  const start: TimeValue = firstTime(ctx, vevent, 'dtstart') ??
    recurrenceIdValue ?? { kind: 'instant', ms: dtstampValue?.kind === 'instant' ? dtstampValue.ms : 0, zone: ctx.floatingZone };
  let end: TimeValue | null = firstTime(ctx, vevent, 'dtend');
  const durationValue = vevent.getFirstPropertyValue('duration');
  if (!end && durationValue instanceof ICAL.Duration) end = durationEnd(durationValue, start, start.kind === 'instant' ? zoneOf(start, ctx) : ctx.floatingZone);
  if (!end) end = start.kind === 'date' ? { kind: 'date', date: addDays(start.date, 1) } : start;

  let allDay = start.kind === 'date';
  let zone = start.kind === 'instant' ? zoneOf(start, ctx) : ctx.floatingZone;
  const pigeonZone = textOf(vevent, 'x-pigeon-tzid')?.trim();
  if (allDay && pigeonZone && isIanaZone(pigeonZone)) zone = pigeonZone;
  // Outlook may send an all-day event as midnight to midnight in its zone, flagged X-MICROSOFT-CDO-ALLDAYEVENT.
  const outlookAllDay = (textOf(vevent, 'x-microsoft-cdo-alldayevent') ?? '').trim().toUpperCase() === 'TRUE';
  if (!allDay && outlookAllDay && start.kind === 'instant' && end.kind === 'instant' && isLocalMidnight(start.ms, zone) && isLocalMidnight(end.ms, zone)) {
    allDay = true;
  }

  const startText = asEventTime(start, allDay, zone, null);
  let endText = asEventTime(end, allDay, zone, null);
  if (allDay && endText <= startText) endText = addDays(startText, 1);
  if (!allDay && Date.parse(endText) < Date.parse(startText)) endText = startText;
  const startMs = start.kind === 'instant' ? start.ms : zonedToUtc(parseFields(startText), zone);
  const endMs = end.kind === 'instant' ? end.ms : zonedToUtc(parseFields(endText), zone);
  const masterLocal = start.kind === 'instant' ? utcToZoned(start.ms, zone) : null;

  const recurrenceId = recurrenceIdValue ? asEventTime(recurrenceIdValue, allDay, zone, masterLocal) : null;

  let recurrence: EventData['recurrence'] = null;
  if (!recurrenceId) {
    const rruleProp = vevent.getFirstProperty('rrule');
    const times = (name: string) =>
      vevent.getAllProperties(name).flatMap((p) => rawValues(p).map((raw) => asEventTime(readTimeValue(ctx, p, raw), allDay, zone, masterLocal)));
    const rdates = [...new Set(times('rdate'))];
    let rrule = '';
    if (rruleProp) {
      rrule = ICAL.stringify.property(rruleProp.toJSON(), ICAL.design.icalendar, true).replace(/^RRULE(;[^:]*)?:/i, '');
      try {
        checkRrule(rrule);
      } catch (err) {
        if (err instanceof RecurrenceError) throw new CalendarInputError(`event "${uid}": ${err.message}`);
        throw err;
      }
    }
    if (rrule || rdates.length) recurrence = { rrule, exdates: [...new Set(times('exdate'))], rdates };
  }

  const organizerProp = vevent.getFirstProperty('organizer');
  const attendees: Attendee[] = [];
  for (const prop of vevent.getAllProperties('attendee')) {
    const attendee = attendeeOf(prop);
    if (attendee.address && !attendees.some((a) => a.address === attendee.address)) attendees.push(attendee);
  }
  const location = textOf(vevent, 'location');
  const description = textOf(vevent, 'description');
  const data: EventData = {
    uid,
    sequence,
    start: startText,
    end: endText,
    timeZone: zone,
    isAllDay: allDay,
    location: location ? location : null,
    organizer: organizerProp ? personOf(organizerProp) : null,
    attendees,
    reminderMinutesBeforeStart: reminderOf(ctx, vevent, startMs, endMs),
    recurrence,
    exceptions: [],
    showAs: showAsOf(vevent),
    isCancelled: (textOf(vevent, 'status') ?? '').trim().toUpperCase() === 'CANCELLED',
    responseStatus: 'needsAction',
    lastItipStamp: dtstamp,
  };
  return { uid, sequence, dtstamp, recurrenceId, subject: textOf(vevent, 'summary') ?? '', description: description ? description : null, data };
}

/** The zone an event starting at this time is planned in. */
function zoneOf(value: TimeValue & { kind: 'instant' }, ctx: ReadContext): string {
  return isIanaZone(value.zone) ? value.zone : ctx.floatingZone;
}

/** Parses iCalendar text as Outlook, Google Calendar and Thunderbird write it: METHOD, VTIMEZONE blocks (Windows
 *  TZIDs, IANA TZIDs, custom zones: times converted with the block itself through ical.js when the TZID is not a
 *  known zone), floating and UTC times, VALUE=DATE all-day events, RRULE/EXDATE/RDATE, exceptions (RECURRENCE-ID),
 *  ORGANIZER/ATTENDEE with CN, ROLE (REQ-PARTICIPANT/OPT-PARTICIPANT/NON-PARTICIPANT; CUTYPE=RESOURCE|ROOM →
 *  resource), PARTSTAT, X-MICROSOFT-CDO-BUSYSTATUS / TRANSP (showAs), VALARM (TRIGGER -PT15M → 15),
 *  STATUS:CANCELLED, X-MICROSOFT-CDO-ALLDAYEVENT, LOCATION, DESCRIPTION. Addresses lower-cased without `mailto:`.
 *  responseStatus is 'needsAction' and lastItipStamp the DTSTAMP (the caller adjusts for the owner). Refuses (throws
 *  CalendarInputError) text over 1 MiB, more than 1000 components, or no VCALENDAR.
 *  `floatingZone`: the zone floating times (and all-day events) are read in, e.g. the owner's; default: the
 *  calendar's X-WR-TIMEZONE, else UTC. */
export function parseICalendar(text: string, opts: { floatingZone?: string } = {}): ParsedCalendar {
  if (typeof text !== 'string') throw new CalendarInputError('iCalendar must be text');
  if (Buffer.byteLength(text, 'utf8') > MAX_BYTES) throw new CalendarInputError('iCalendar text is larger than 1 MiB');
  const components = text.match(/^[ \t]*BEGIN[ \t]*:/gim)?.length ?? 0;
  if (components > MAX_COMPONENTS) throw new CalendarInputError(`iCalendar text has ${components} components (at most ${MAX_COMPONENTS})`);
  if (!/^[ \t]*BEGIN[ \t]*:[ \t]*VCALENDAR[ \t]*\r?$/im.test(text)) throw new CalendarInputError('no VCALENDAR in the text');
  let jcal: unknown;
  try {
    jcal = ICAL.parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    throw new CalendarInputError(`unreadable iCalendar: ${message(err)}`);
  }
  const roots = (Array.isArray(jcal) && Array.isArray(jcal[0]) ? jcal : [jcal]) as unknown[][];
  const calendars = roots.filter((r) => Array.isArray(r) && r[0] === 'vcalendar').map((r) => new ICAL.Component(r));
  if (calendars.length === 0) throw new CalendarInputError('no VCALENDAR in the text');

  let method: ItipMethod | null = null;
  const events: ParsedVEvent[] = [];
  for (const calendar of calendars) {
    const stated = (textOf(calendar, 'method') ?? '').trim().toUpperCase();
    if (!method && (ITIP_METHODS as readonly string[]).includes(stated)) method = stated as ItipMethod;
    const wanted = opts.floatingZone && isIanaZone(opts.floatingZone) ? opts.floatingZone : null;
    const calendarZone = ianaZone(textOf(calendar, 'x-wr-timezone') ?? '');
    const ctx: ReadContext = { calendar, floatingZone: wanted ?? calendarZone ?? 'UTC', zones: new Map() };
    for (const vevent of calendar.getAllSubcomponents('vevent')) {
      try {
        events.push(readVEvent(ctx, vevent));
      } catch (err) {
        if (err instanceof CalendarInputError) throw err;
        throw new CalendarInputError(`unreadable VEVENT: ${message(err)}`);
      }
    }
  }
  return { method, events };
}

/** Which of two copies of the same component is the organiser's latest (SEQUENCE, then DTSTAMP). */
function newer(a: ParsedVEvent, b: ParsedVEvent): ParsedVEvent {
  if (a.sequence !== b.sequence) return a.sequence > b.sequence ? a : b;
  return (b.dtstamp ?? '') > (a.dtstamp ?? '') ? b : a;
}

function sameInstantKey(value: string, allDay: boolean): string {
  return allDay ? value.slice(0, 10) : String(Date.parse(value));
}

/** Master + exceptions of one UID folded into one EventData (exceptions into `exceptions`, a CANCELLED exception
 *  as isCancelled: true). Events of other UIDs are separate entries. An exception whose master is not in the list
 *  (a message about one occurrence) is an entry of its own, with `recurrenceId` set. */
export function foldEvents(events: ParsedVEvent[]): Array<{ subject: string; description: string | null; data: EventData; recurrenceId?: string }> {
  const byUid = new Map<string, ParsedVEvent[]>();
  for (const e of events) byUid.set(e.uid, [...(byUid.get(e.uid) ?? []), e]);
  const out: Array<{ subject: string; description: string | null; data: EventData; recurrenceId?: string }> = [];
  for (const group of byUid.values()) {
    const masters = group.filter((e) => !e.recurrenceId);
    if (masters.length === 0) {
      const instances = new Map<string, ParsedVEvent>();
      for (const e of group) {
        const key = sameInstantKey(e.recurrenceId!, e.data.isAllDay);
        const seen = instances.get(key);
        instances.set(key, seen ? newer(seen, e) : e);
      }
      for (const e of instances.values()) out.push({ subject: e.subject, description: e.description, data: e.data, recurrenceId: e.recurrenceId! });
      continue;
    }
    const master = masters.reduce(newer);
    const allDay = master.data.isAllDay;
    const exceptions = new Map<string, ParsedVEvent>();
    for (const e of group) {
      if (!e.recurrenceId) continue;
      const key = sameInstantKey(e.recurrenceId, allDay);
      const seen = exceptions.get(key);
      exceptions.set(key, seen ? newer(seen, e) : e);
    }
    const folded: OccurrenceException[] = [...exceptions.values()]
      .map((e) => ({
        recurrenceId: allDay ? e.recurrenceId!.slice(0, 10) : iso(Date.parse(e.recurrenceId!)),
        start: e.data.start,
        end: e.data.end,
        subject: e.subject !== master.subject ? e.subject : null,
        location: e.data.location !== master.data.location ? e.data.location : null,
        isCancelled: e.data.isCancelled,
      }))
      .sort((a, b) => (a.recurrenceId < b.recurrenceId ? -1 : a.recurrenceId > b.recurrenceId ? 1 : 0));
    out.push({ subject: master.subject, description: master.description, data: { ...master.data, exceptions: folded } });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------

type JcalParams = Record<string, string>;

/** Control characters iCalendar text cannot carry (line breaks become \n through the TEXT escaping). */
function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\r\n?/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');
}

function cleanParam(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]/g, ' ');
}

/** One content line (unfolded), escaped by ical.js: TEXT escaping, parameter quoting, RFC 6868. */
function line(name: string, params: JcalParams, type: string, ...values: string[]): string {
  const cleaned: JcalParams = {};
  for (const [k, v] of Object.entries(params)) cleaned[k] = cleanParam(v);
  const vals = type === 'text' ? values.map(clean) : values;
  return ICAL.stringify.property([name, cleaned, type, ...vals], ICAL.design.icalendar, true);
}

/** Folds a content line at 75 octets (RFC 5545 §3.1), never inside a UTF-8 sequence. */
function fold(text: string): string {
  if (Buffer.byteLength(text, 'utf8') <= 75) return text;
  const pieces: string[] = [];
  let current = '';
  let bytes = 0;
  let room = 75;
  for (const ch of text) {
    const size = Buffer.byteLength(ch, 'utf8');
    if (bytes + size > room) {
      pieces.push(current);
      current = '';
      bytes = 0;
      room = 74; // a continuation line starts with a space
    }
    current += ch;
    bytes += size;
  }
  pieces.push(current);
  return pieces.join('\r\n ');
}

const pad = (n: number, width = 2) => String(Math.abs(n)).padStart(width, '0');

/** jCal date-time text of wall-clock fields. */
function jcalLocal(f: WallClock): string {
  return `${pad(f.year, 4)}-${pad(f.month)}-${pad(f.day)}T${pad(f.hour)}:${pad(f.minute)}:${pad(f.second)}`;
}

function jcalUtc(ms: number): string {
  return `${new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19)}Z`;
}

function basicUtc(ms: number): string {
  return jcalUtc(ms).replace(/[-:]/g, '');
}

/**
 * A time property of an event: VALUE=DATE for all-day events, UTC for events planned in UTC, else the zone's wall
 * clock with its TZID (or UTC when that wall clock is ambiguous and means the later instant, which a TZID cannot say).
 */
function timeLine(name: string, value: string, data: EventData): string {
  if (data.isAllDay) return line(name, {}, 'date', value.slice(0, 10));
  const ms = Date.parse(value);
  if (data.timeZone === 'UTC' || !isIanaZone(data.timeZone)) return line(name, {}, 'date-time', jcalUtc(ms));
  const local = utcToZoned(ms, data.timeZone);
  if (zonedToUtc(local, data.timeZone) !== Math.floor(ms / 1000) * 1000) return line(name, {}, 'date-time', jcalUtc(ms));
  return line(name, { tzid: data.timeZone }, 'date-time', jcalLocal(local));
}

/** EXDATE / RDATE: one property for the values of each form. */
function timeListLines(name: string, values: string[], data: EventData): string[] {
  if (values.length === 0) return [];
  if (data.isAllDay) return [line(name, {}, 'date', ...values.map((v) => v.slice(0, 10)))];
  const zoned: string[] = [];
  const utc: string[] = [];
  for (const value of values) {
    const ms = Date.parse(value);
    if (Number.isNaN(ms)) continue;
    const local = isIanaZone(data.timeZone) && data.timeZone !== 'UTC' ? utcToZoned(ms, data.timeZone) : null;
    if (local && zonedToUtc(local, data.timeZone) === Math.floor(ms / 1000) * 1000) zoned.push(jcalLocal(local));
    else utc.push(jcalUtc(ms));
  }
  const out: string[] = [];
  if (zoned.length) out.push(line(name, { tzid: data.timeZone }, 'date-time', ...zoned));
  if (utc.length) out.push(line(name, {}, 'date-time', ...utc));
  return out;
}

const PARTSTAT_OUT: Record<ResponseStatus, string> = {
  needsAction: 'NEEDS-ACTION',
  accepted: 'ACCEPTED',
  tentative: 'TENTATIVE',
  declined: 'DECLINED',
  delegated: 'DELEGATED',
};

const BUSY_OUT: Record<ShowAs, string> = { free: 'FREE', tentative: 'TENTATIVE', busy: 'BUSY', oof: 'OOF', workingElsewhere: 'WORKINGELSEWHERE' };

function personParams(person: EventPerson): JcalParams {
  return person.name ? { cn: person.name } : {};
}

function attendeeLine(a: Attendee): string {
  const params: JcalParams = { ...personParams(a) };
  if (a.type === 'resource') {
    params.cutype = 'RESOURCE';
    params.role = 'NON-PARTICIPANT';
  } else {
    params.role = a.type === 'optional' ? 'OPT-PARTICIPANT' : 'REQ-PARTICIPANT';
  }
  params.partstat = PARTSTAT_OUT[a.status] ?? 'NEEDS-ACTION';
  if (a.status === 'needsAction') params.rsvp = 'TRUE';
  const answered = a.respondedAt ? Date.parse(a.respondedAt) : NaN;
  if (!Number.isNaN(answered)) params['x-pigeon-responded-at'] = basicUtc(answered);
  return line('attendee', params, 'cal-address', `mailto:${a.address}`);
}

interface VEventShape {
  event: CalendarEvent;
  subject: string;
  location: string | null;
  start: string;
  end: string;
  recurrenceId: string | null;
  isCancelled: boolean;
  withRecurrence: boolean;
}

function veventLines(shape: VEventShape, stamp: number | undefined, method: ItipMethod | undefined, onlyAttendees: Set<string> | null): string[] {
  const { data } = shape.event;
  // DTSTAMP: the message's time when given, else the organiser's last change this copy reflects (an export then
  // says what it holds), else now.
  const lastChange = data.lastItipStamp ? Date.parse(data.lastItipStamp) : NaN;
  const dtstamp = jcalUtc(stamp ?? (Number.isNaN(lastChange) ? Date.now() : lastChange));
  const out = ['BEGIN:VEVENT', line('uid', {}, 'text', data.uid), line('dtstamp', {}, 'date-time', dtstamp), line('sequence', {}, 'integer', String(data.sequence))];
  out.push(timeLine('dtstart', shape.start, data), timeLine('dtend', shape.end, data));
  if (shape.recurrenceId) out.push(timeLine('recurrence-id', shape.recurrenceId, data));
  if (shape.withRecurrence && data.recurrence) {
    // Written as kept (checkRrule guards what is stored); nothing that could break out of the line.
    const rrule = data.recurrence.rrule.trim();
    if (rrule && /^[A-Za-z0-9=;,+-]+$/.test(rrule)) out.push(`RRULE:${rrule}`);
    out.push(...timeListLines('exdate', data.recurrence.exdates, data), ...timeListLines('rdate', data.recurrence.rdates, data));
  }
  out.push(line('summary', {}, 'text', shape.subject));
  if (shape.event.description !== null) out.push(line('description', {}, 'text', shape.event.description));
  if (shape.location !== null) out.push(line('location', {}, 'text', shape.location));
  if (data.organizer) out.push(line('organizer', personParams(data.organizer), 'cal-address', `mailto:${data.organizer.address}`));
  for (const a of data.attendees) if (!onlyAttendees || onlyAttendees.has(a.address.toLowerCase())) out.push(attendeeLine(a));
  const cancelled = shape.isCancelled || method === 'CANCEL';
  out.push(line('status', {}, 'text', cancelled ? 'CANCELLED' : 'CONFIRMED'));
  out.push(line('transp', {}, 'text', data.showAs === 'free' ? 'TRANSPARENT' : 'OPAQUE'));
  out.push(line('x-microsoft-cdo-busystatus', {}, 'unknown', BUSY_OUT[data.showAs] ?? 'BUSY'));
  out.push(line('x-microsoft-cdo-intendedstatus', {}, 'unknown', BUSY_OUT[data.showAs] ?? 'BUSY'));
  out.push(line('x-microsoft-cdo-alldayevent', {}, 'unknown', data.isAllDay ? 'TRUE' : 'FALSE'));
  if (data.isAllDay && isIanaZone(data.timeZone)) out.push(line('x-pigeon-tzid', {}, 'unknown', data.timeZone));
  if (data.reminderMinutesBeforeStart !== null && data.reminderMinutesBeforeStart >= 0) {
    const minutes = Math.round(data.reminderMinutesBeforeStart);
    out.push(
      'BEGIN:VALARM',
      line('action', {}, 'text', 'DISPLAY'),
      line('description', {}, 'text', 'Reminder'),
      line('trigger', { related: 'START' }, 'duration', minutes === 0 ? 'PT0S' : `-PT${minutes}M`),
      'END:VALARM',
    );
  }
  out.push('END:VEVENT');
  return out;
}

function utcOffsetText(ms: number): string {
  const sign = ms < 0 ? '-' : '+';
  const total = Math.round(Math.abs(ms) / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return `${sign}${pad(h)}:${pad(m)}${s ? `:${pad(s)}` : ''}`;
}

const WEEKDAYS = ['SU', 'MO', 'TU', 'WE', 'TH', 'FR', 'SA'];

/** How a transition falls in its year, for spotting the yearly rule ("last Sunday of March, 02:00"). */
function patternOf(t: ZoneTransition) {
  const local = new Date(t.at + t.before);
  const month = local.getUTCMonth() + 1;
  const day = local.getUTCDate();
  const daysInMonth = new Date(Date.UTC(local.getUTCFullYear(), month, 0)).getUTCDate();
  const base = `${month}|${local.getUTCDay()}|${local.toISOString().slice(11, 19)}|${t.before}|${t.offset}`;
  return { nth: `${base}|${Math.ceil(day / 7)}`, last: day + 7 > daysInMonth ? `${base}|L` : null, month, weekday: local.getUTCDay(), n: Math.ceil(day / 7) };
}

function observance(kind: 'STANDARD' | 'DAYLIGHT', startLocal: WallClock, from: number, to: number, rrule?: string): string[] {
  const out = [`BEGIN:${kind}`, line('dtstart', {}, 'date-time', jcalLocal(startLocal))];
  if (rrule) out.push(`RRULE:${rrule}`);
  out.push(line('tzoffsetfrom', {}, 'utc-offset', utcOffsetText(from)), line('tzoffsetto', {}, 'utc-offset', utcOffsetText(to)), `END:${kind}`);
  return out;
}

function wallOf(ms: number): WallClock {
  const d = new Date(ms);
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), hour: d.getUTCHours(), minute: d.getUTCMinutes(), second: d.getUTCSeconds() };
}

/**
 * A VTIMEZONE for `zone` that is right from `fromYear` to `toYear` and goes on after it by the zone's yearly rule:
 * an observance for the offset at the start, each earlier transition on its own, and the rule of the last years
 * (the longest run of years whose transitions fall alike) as RRULE observances, the form Outlook writes and needs.
 */
export function vtimezoneLines(zone: string, fromYear: number, toYear: number): string[] {
  const rangeStart = wallMs({ year: fromYear, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
  const rangeEnd = wallMs({ year: toYear + 1, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
  const transitions = zoneTransitions(zone, rangeStart, rangeEnd);
  const initial = offsetAt(zone, rangeStart);
  const standard = Math.min(initial, ...transitions.map((t) => t.offset));
  const kindOf = (offset: number) => (offset > standard ? 'DAYLIGHT' : 'STANDARD');

  const byYear = new Map<number, ZoneTransition[]>();
  for (const t of transitions) {
    const year = new Date(t.at + t.before).getUTCFullYear();
    byYear.set(year, [...(byYear.get(year) ?? []), t]);
  }
  // The run of final years whose transitions follow one yearly rule (by nth weekday or by last weekday).
  const reference = (byYear.get(toYear) ?? []).map(patternOf);
  const nthHolds = reference.map(() => true);
  const lastHolds = reference.map((p) => p.last !== null);
  let ruleFrom = toYear + 1;
  if (reference.length > 0) {
    for (let year = toYear; year >= fromYear; year--) {
      const patterns = (byYear.get(year) ?? []).map(patternOf);
      if (patterns.length !== reference.length) break;
      const nth = patterns.map((p, i) => nthHolds[i]! && p.nth === reference[i]!.nth);
      const last = patterns.map((p, i) => lastHolds[i]! && p.last !== null && p.last === reference[i]!.last);
      if (!nth.every((ok, i) => ok || last[i])) break;
      nth.forEach((ok, i) => (nthHolds[i] = ok));
      last.forEach((ok, i) => (lastHolds[i] = ok));
      ruleFrom = year;
    }
  }

  const out = ['BEGIN:VTIMEZONE', line('tzid', {}, 'text', zone), line('x-lic-location', {}, 'unknown', zone)];
  out.push(...observance(kindOf(initial), wallOf(rangeStart + initial), initial, initial));
  for (const t of transitions) {
    if (new Date(t.at + t.before).getUTCFullYear() >= ruleFrom) break;
    out.push(...observance(kindOf(t.offset), wallOf(t.at + t.before), t.before, t.offset));
  }
  for (const [i, t] of (byYear.get(ruleFrom) ?? []).entries()) {
    const p = patternOf(t);
    const byDay = `${nthHolds[i] ? p.n : -1}${WEEKDAYS[p.weekday]}`;
    out.push(...observance(kindOf(t.offset), wallOf(t.at + t.before), t.before, t.offset, `FREQ=YEARLY;BYMONTH=${p.month};BYDAY=${byDay}`));
  }
  out.push('END:VTIMEZONE');
  return out;
}

/** The years an event's times span (for its VTIMEZONE): its start to its end, its exceptions, and for an open or
 *  counted series the years up to two past `now`. */
function yearsOf(data: EventData, nowYear: number): [number, number] {
  const years: number[] = [];
  const add = (value: string) => {
    const ms = Date.parse(value);
    if (!Number.isNaN(ms)) years.push(new Date(ms).getUTCFullYear());
  };
  add(data.start);
  add(data.end);
  for (const ex of data.exceptions) for (const value of [ex.start, ex.end, ex.recurrenceId]) add(value);
  for (const v of [...(data.recurrence?.exdates ?? []), ...(data.recurrence?.rdates ?? [])]) add(v);
  const rrule = data.recurrence?.rrule ?? '';
  if (rrule.trim()) {
    const until = /UNTIL=(\d{4})/i.exec(rrule);
    years.push(until ? Number(until[1]) : Math.max(nowYear + 2, Math.min(...years) + 2));
  }
  if (years.length === 0) return [nowYear, nowYear];
  const from = Math.min(...years);
  const to = Math.max(...years);
  return [Math.max(from, to - 80), to];
}

/** iCalendar text (CRLF, folded at 75 octets, VERSION:2.0, PRODID `-//Pigeon//Pigeon Calendar//EN`) for events:
 *  VTIMEZONE blocks for the zones used (generated from the time zone database for the events' years; Outlook and
 *  Thunderbird need them), each master with its exceptions as RECURRENCE-ID VEVENTs, ORGANIZER / ATTENDEE (with CN,
 *  ROLE, PARTSTAT, RSVP=TRUE for needsAction), VALARM for reminders. `method` adds METHOD (CANCEL also marks the
 *  events STATUS:CANCELLED); `onlyAttendees` (for a REPLY) keeps only those attendees; `onlyRecurrenceId` writes
 *  only that occurrence (its exception, else the occurrence as the series has it) with RECURRENCE-ID; `dtstamp`
 *  (ms) is every DTSTAMP (default: each event's lastItipStamp, else now). An event with `recurrenceId` is written as that occurrence on its own.
 *  Round-trips: parseICalendar(toICalendar(x)) gives x back. */
export function toICalendar(
  events: CalendarEvent[],
  opts: { method?: ItipMethod; onlyAttendees?: string[]; dtstamp?: number; onlyRecurrenceId?: string } = {},
): string {
  const now = opts.dtstamp ?? Date.now();
  const onlyAttendees = opts.onlyAttendees ? new Set(opts.onlyAttendees.map((a) => a.trim().toLowerCase().replace(/^mailto:/, ''))) : null;
  const shapes: VEventShape[] = [];
  for (const event of events) {
    const { data } = event;
    const master: VEventShape = {
      event,
      subject: event.subject,
      location: data.location,
      start: data.start,
      end: data.end,
      recurrenceId: event.recurrenceId ?? null,
      isCancelled: data.isCancelled,
      withRecurrence: !event.recurrenceId,
    };
    const exceptionShape = (ex: OccurrenceException): VEventShape => ({
      event,
      subject: ex.subject ?? event.subject,
      location: ex.location ?? data.location,
      start: ex.start,
      end: ex.end,
      recurrenceId: ex.recurrenceId,
      isCancelled: ex.isCancelled,
      withRecurrence: false,
    });
    if (opts.onlyRecurrenceId !== undefined && !event.recurrenceId) {
      const wanted = sameInstantKey(opts.onlyRecurrenceId, data.isAllDay);
      const ex = data.exceptions.find((e) => sameInstantKey(e.recurrenceId, data.isAllDay) === wanted);
      if (ex) {
        shapes.push(exceptionShape(ex));
      } else {
        // The occurrence as the series has it: the original start, the master's duration.
        const start = data.isAllDay ? opts.onlyRecurrenceId.slice(0, 10) : iso(Date.parse(opts.onlyRecurrenceId));
        const end = data.isAllDay
          ? addDays(start, Math.max(1, Math.round((Date.parse(`${data.end.slice(0, 10)}T00:00:00Z`) - Date.parse(`${data.start.slice(0, 10)}T00:00:00Z`)) / DAY)))
          : iso(Date.parse(start) + Math.max(0, Date.parse(data.end) - Date.parse(data.start)));
        shapes.push({ ...master, start, end, recurrenceId: start, withRecurrence: false });
      }
      continue;
    }
    shapes.push(master);
    if (!event.recurrenceId) for (const ex of data.exceptions) shapes.push(exceptionShape(ex));
  }

  const nowYear = new Date(now).getUTCFullYear();
  const zones = new Map<string, [number, number]>();
  for (const { event } of shapes) {
    const { data } = event;
    if (data.isAllDay || data.timeZone === 'UTC' || !isIanaZone(data.timeZone)) continue;
    const [from, to] = yearsOf(data, nowYear);
    const seen = zones.get(data.timeZone);
    zones.set(data.timeZone, seen ? [Math.min(seen[0], from), Math.max(seen[1], to)] : [from, to]);
  }

  const lines = ['BEGIN:VCALENDAR', line('prodid', {}, 'text', PRODID), 'VERSION:2.0', 'CALSCALE:GREGORIAN'];
  if (opts.method) lines.push(`METHOD:${opts.method}`);
  for (const [zone, [from, to]] of zones) lines.push(...vtimezoneLines(zone, from, to));
  for (const shape of shapes) lines.push(...veventLines(shape, opts.dtstamp, opts.method, onlyAttendees));
  lines.push('END:VCALENDAR');
  return `${lines.map(fold).join('\r\n')}\r\n`;
}
