/**
 * iCalendar in and out (server/calendar/ical.ts): invitations as Outlook, Google Calendar and Thunderbird send them
 * (fixtures/calendar/*.ics) parsed to the expected EventData, every fixture round-tripped through toICalendar,
 * the shape of what Pigeon writes (CRLF, 75-octet folding, METHOD, RSVP, VALARM, REPLY and single-occurrence
 * messages), the VTIMEZONE blocks it generates checked against the time zone database through ical.js, custom and
 * display-name zones, and the refusals.
 */
import fs from 'node:fs';
import path from 'node:path';
import ICAL from '../../server/calendar/icalLib';
import {
  CalendarInputError,
  foldEvents,
  parseICalendar,
  toICalendar,
  vtimezoneLines,
  type ParsedCalendar,
} from '../../server/calendar/ical';
import type { EventData } from '../../server/calendar/model';
import { occurrences } from '../../server/calendar/recurrence';
import { offsetAt, utcToZoned } from '../../server/calendar/timezones';

const FIXTURES = path.join(__dirname, '..', '..', 'fixtures', 'calendar');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');

const OUTLOOK_UID = '040000008200E00074C5B7101A82E00800000000D0B6C9A1F5C3DA0100000000000000001000000037A3B5E8C7D4F54A8D2C1B0E9F8A7B6C';
const GOOGLE_UID = '5k3c2ue0q0kpl8ipb4lq1k7hfb@google.com';

/** parse → fold → write → parse → fold gives the same events (and the same METHOD). */
function expectRoundTrip(parsed: ParsedCalendar, opts: { floatingZone?: string } = {}) {
  const folded = foldEvents(parsed.events);
  const text = toICalendar(folded, parsed.method ? { method: parsed.method } : {});
  const again = parseICalendar(text, opts);
  expect(again.method).toBe(parsed.method);
  expect(foldEvents(again.events)).toEqual(folded);
  return text;
}

/** Every physical line of `text`: CRLF-terminated, at most 75 octets. */
function expectWellFormed(text: string) {
  expect(text.endsWith('\r\n')).toBe(true);
  expect(text.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
  for (const l of text.split('\r\n')) expect(Buffer.byteLength(l, 'utf8')).toBeLessThanOrEqual(75);
  expect(text).toMatch(/^BEGIN:VCALENDAR\r\n/);
  expect(text).toContain('\r\nVERSION:2.0\r\n');
  expect(text).toContain('\r\nPRODID:-//Pigeon//Pigeon Calendar//EN\r\n');
}

/** The unfolded content lines of `text`. */
const unfolded = (text: string) => text.replace(/\r\n[ \t]/g, '').split('\r\n');

describe('Outlook: weekly series with its VTIMEZONE, an EXDATE and a moved occurrence', () => {
  const parsed = parseICalendar(fixture('outlook-request-weekly.ics'));

  test('METHOD and both VEVENTs (master and RECURRENCE-ID exception) are read', () => {
    expect(parsed.method).toBe('REQUEST');
    expect(parsed.events.map((e) => [e.uid, e.recurrenceId])).toEqual([
      [OUTLOOK_UID, null],
      [OUTLOOK_UID, '2027-01-12T08:00:00.000Z'],
    ]);
  });

  test('folds to the expected EventData (Windows TZID → Europe/Berlin, Outlook X-MICROSOFT-CDO-* read)', () => {
    const [event, ...others] = foldEvents(parsed.events);
    expect(others).toEqual([]);
    expect(event!.subject).toBe('Team sync');
    expect(event!.description).toBe('Weekly sync of the platform team. Agenda in the shared notebook; bring your blockers.\n\n');
    const expected: EventData = {
      uid: OUTLOOK_UID,
      sequence: 0,
      start: '2026-12-01T08:00:00.000Z',
      end: '2026-12-01T08:30:00.000Z',
      timeZone: 'Europe/Berlin',
      isAllDay: false,
      location: 'Room Orion',
      organizer: { name: 'Greta Schäfer', address: 'greta@example.com' },
      attendees: [
        { name: 'Alice Andersen', address: 'alice@pigeon.test', type: 'required', status: 'needsAction', respondedAt: null },
        { name: 'Kim, Dave', address: 'dave.kim@example.com', type: 'optional', status: 'needsAction', respondedAt: null },
        { name: 'Room Orion', address: 'room.orion@example.com', type: 'resource', status: 'needsAction', respondedAt: null },
      ],
      reminderMinutesBeforeStart: 15,
      recurrence: {
        rrule: 'FREQ=WEEKLY;UNTIL=20270330T070000Z;INTERVAL=1;BYDAY=TU;WKST=MO',
        exdates: ['2026-12-22T08:00:00.000Z', '2026-12-29T08:00:00.000Z'],
        rdates: [],
      },
      exceptions: [
        {
          recurrenceId: '2027-01-12T08:00:00.000Z',
          start: '2027-01-13T13:00:00.000Z',
          end: '2027-01-13T13:30:00.000Z',
          subject: null,
          location: 'Room Vega',
          isCancelled: false,
        },
      ],
      // BUSYSTATUS is TENTATIVE in a request (the invitee has not answered); INTENDEDSTATUS says what is meant.
      showAs: 'busy',
      isCancelled: false,
      responseStatus: 'needsAction',
      lastItipStamp: '2026-11-24T10:15:00.000Z',
    };
    expect(event!.data).toEqual(expected);
  });

  test('round-trips, with a VTIMEZONE for Europe/Berlin Outlook can read', () => {
    const text = expectRoundTrip(parsed);
    expectWellFormed(text);
    const lines = unfolded(text);
    expect(lines).toContain('METHOD:REQUEST');
    expect(lines).toContain('TZID:Europe/Berlin');
    expect(lines).toContain('DTSTART;TZID=Europe/Berlin:20261201T090000');
    expect(lines).toContain('RECURRENCE-ID;TZID=Europe/Berlin:20270112T090000');
    expect(lines).toContain('EXDATE;TZID=Europe/Berlin:20261222T090000,20261229T090000');
    expect(lines).toContain('RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU');
    expect(lines).toContain('RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU');
    expect(lines).toContain('ATTENDEE;CN="Kim, Dave";ROLE=OPT-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:dave.kim@example.com');
    expect(lines).toContain('ATTENDEE;CN=Room Orion;CUTYPE=RESOURCE;ROLE=NON-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:room.orion@example.com');
    expect(lines).toContain('TRIGGER;RELATED=START:-PT15M');
  });

  test('the series expands to 09:00 Berlin on both sides of the March change, without the EXDATEs, moved once', () => {
    const [event] = foldEvents(parsed.events);
    const list = occurrences(event!.data, Date.parse('2026-11-01T00:00:00Z'), Date.parse('2027-06-01T00:00:00Z'));
    const local = list.map((o) => {
      const f = utcToZoned(Date.parse(o.start), 'Europe/Berlin');
      return `${f.month}/${f.day} ${f.hour}:${String(f.minute).padStart(2, '0')}`;
    });
    expect(local).toEqual([
      '12/1 9:00', '12/8 9:00', '12/15 9:00', '1/5 9:00', '1/13 14:00', '1/19 9:00', '1/26 9:00', '2/2 9:00', '2/9 9:00',
      '2/16 9:00', '2/23 9:00', '3/2 9:00', '3/9 9:00', '3/16 9:00', '3/23 9:00', '3/30 9:00',
    ]);
    expect(list.find((o) => o.isException)).toMatchObject({ recurrenceId: '2027-01-12T08:00:00.000Z', location: 'Room Vega' });
    expect(list.at(-1)!.start).toBe('2027-03-30T07:00:00.000Z'); // summer time: 09:00 is 07:00 UTC, UNTIL inclusive
  });
});

describe('Google Calendar: IANA TZID with VTIMEZONE, RRULE with COUNT, attendees with CN, a VALARM', () => {
  const parsed = parseICalendar(fixture('google-request-recurring.ics'));

  test('reads as expected (folded parameters, empty LOCATION, -P0DT0H30M0S)', () => {
    expect(parsed.method).toBe('REQUEST');
    const [event] = foldEvents(parsed.events);
    expect(event!.subject).toBe('Migration standup');
    expect(event!.description).toMatch(/^Daily-ish standup for the migration project\.\n\nJoin with Google Meet: https:\/\/meet\.google\.com\/qzx-hwpt-ked\n/);
    expect(event!.data).toEqual({
      uid: GOOGLE_UID,
      sequence: 0,
      start: '2026-10-26T14:00:00.000Z',
      end: '2026-10-26T14:30:00.000Z',
      timeZone: 'America/New_York',
      isAllDay: false,
      location: null,
      organizer: { name: 'Priya Raman', address: 'priya.raman@gmail.com' },
      attendees: [
        { name: 'Priya Raman', address: 'priya.raman@gmail.com', type: 'required', status: 'accepted', respondedAt: null },
        { name: 'alice@pigeon.test', address: 'alice@pigeon.test', type: 'required', status: 'needsAction', respondedAt: null },
        { name: 'Marco Rossi', address: 'marco.rossi@example.org', type: 'optional', status: 'tentative', respondedAt: null },
      ],
      reminderMinutesBeforeStart: 30,
      recurrence: { rrule: 'FREQ=WEEKLY;WKST=SU;COUNT=10;BYDAY=MO,WE', exdates: [], rdates: [] },
      exceptions: [],
      showAs: 'busy',
      isCancelled: false,
      responseStatus: 'needsAction',
      lastItipStamp: '2026-10-19T15:30:12.000Z',
    } satisfies EventData);
  });

  test('round-trips', () => {
    expectWellFormed(expectRoundTrip(parsed));
  });

  test('ten occurrences at 10:00 New York across the November change', () => {
    const [event] = foldEvents(parsed.events);
    const list = occurrences(event!.data, Date.parse('2026-10-01T00:00:00Z'), Date.parse('2027-01-01T00:00:00Z'));
    expect(list.map((o) => o.start)).toEqual([
      '2026-10-26T14:00:00.000Z', '2026-10-28T14:00:00.000Z', // EDT, UTC−4
      '2026-11-02T15:00:00.000Z', '2026-11-04T15:00:00.000Z', '2026-11-09T15:00:00.000Z', '2026-11-11T15:00:00.000Z', // EST
      '2026-11-16T15:00:00.000Z', '2026-11-18T15:00:00.000Z', '2026-11-23T15:00:00.000Z', '2026-11-25T15:00:00.000Z',
    ]);
  });

  test('a CANCEL of the whole series: the master with STATUS:CANCELLED and SEQUENCE 1', () => {
    const cancel = parseICalendar(fixture('google-cancel-series.ics'));
    expect(cancel.method).toBe('CANCEL');
    const [event] = foldEvents(cancel.events);
    expect(event!.data).toMatchObject({ uid: GOOGLE_UID, sequence: 1, isCancelled: true, lastItipStamp: '2026-10-30T12:05:01.000Z' });
    expect(event!.data.recurrence?.rrule).toBe('FREQ=WEEKLY;WKST=SU;COUNT=10;BYDAY=MO,WE');
    expect(event!.description).toBe('The migration moved to the new team; this standup is no longer needed.');
    expectWellFormed(expectRoundTrip(cancel));
  });
});

describe('Thunderbird: IANA zones, X-MOZ-* properties, all-day VALUE=DATE', () => {
  test('an all-day invitation is read in the zone the caller names (the owner’s), TRANSPARENT → free', () => {
    const parsed = parseICalendar(fixture('thunderbird-request-allday.ics'), { floatingZone: 'Europe/Berlin' });
    expect(parsed.method).toBe('REQUEST');
    const [event] = foldEvents(parsed.events);
    expect(event!.subject).toBe('Team offsite');
    expect(event!.data).toEqual({
      uid: '3b8e5f0c-1f5a-4a0e-9d6e-5f0f1d1c2a7b',
      sequence: 0,
      start: '2026-12-14',
      end: '2026-12-16',
      timeZone: 'Europe/Berlin',
      isAllDay: true,
      location: 'Lake house, Seestraße 4',
      organizer: { name: 'Bob Brown', address: 'bob.brown@example.org' },
      attendees: [
        { name: 'Bob Brown', address: 'bob.brown@example.org', type: 'required', status: 'accepted', respondedAt: null },
        { name: 'Alice Andersen', address: 'alice@pigeon.test', type: 'required', status: 'needsAction', respondedAt: null },
        { name: 'Erin Walsh', address: 'erin.walsh@example.org', type: 'optional', status: 'needsAction', respondedAt: null },
      ],
      reminderMinutesBeforeStart: 1440,
      recurrence: null,
      exceptions: [],
      showAs: 'free',
      isCancelled: false,
      responseStatus: 'needsAction',
      lastItipStamp: '2026-11-01T12:05:12.000Z',
    } satisfies EventData);
    const text = expectRoundTrip(parsed, { floatingZone: 'Asia/Tokyo' }); // X-PIGEON-TZID carries the zone back
    expectWellFormed(text);
    expect(unfolded(text)).toEqual(expect.arrayContaining(['DTSTART;VALUE=DATE:20261214', 'DTEND;VALUE=DATE:20261216', 'X-MICROSOFT-CDO-ALLDAYEVENT:TRUE']));
    expect(text).not.toContain('BEGIN:VTIMEZONE'); // all-day dates carry no zone
  });

  test('without a zone from the caller, all-day and floating times are read in UTC', () => {
    const [event] = foldEvents(parseICalendar(fixture('thunderbird-request-allday.ics')).events);
    expect(event!.data.timeZone).toBe('UTC');
  });

  test('an export: a timed event, a yearly all-day series and the old /mozilla.org/… TZID with EXDATE and RDATE', () => {
    const parsed = parseICalendar(fixture('thunderbird-export.ics'));
    expect(parsed.method).toBeNull();
    const events = foldEvents(parsed.events);
    expect(events.map((e) => e.subject)).toEqual(['Dentist', "Mum's birthday", 'Yoga']);
    const [dentist, birthday, yoga] = events.map((e) => e.data);
    expect(dentist).toMatchObject({
      start: '2026-12-03T07:30:00.000Z',
      end: '2026-12-03T08:15:00.000Z',
      timeZone: 'Europe/Berlin',
      location: 'Dr. Weber, Hauptstraße 12',
      reminderMinutesBeforeStart: 30,
      organizer: null,
      attendees: [],
      showAs: 'busy',
    });
    expect(birthday).toMatchObject({ start: '2027-02-18', end: '2027-02-19', isAllDay: true, showAs: 'free', recurrence: { rrule: 'FREQ=YEARLY', exdates: [], rdates: [] } });
    expect(yoga).toMatchObject({
      timeZone: 'Europe/Berlin',
      start: '2026-11-05T17:00:00.000Z',
      recurrence: { rrule: 'FREQ=WEEKLY;UNTIL=20270325T170000Z;BYDAY=TH', exdates: ['2026-12-24T17:00:00.000Z'], rdates: ['2026-12-27T17:00:00.000Z'] },
    });
    const december = occurrences(yoga!, Date.parse('2026-12-01T00:00:00Z'), Date.parse('2027-01-01T00:00:00Z')).map((o) => o.start);
    expect(december).toEqual(['2026-12-03T17:00:00.000Z', '2026-12-10T17:00:00.000Z', '2026-12-17T17:00:00.000Z', '2026-12-27T17:00:00.000Z', '2026-12-31T17:00:00.000Z']);
    expect(occurrences(birthday!, Date.parse('2030-01-01T00:00:00Z'), Date.parse('2031-01-01T00:00:00Z'))).toEqual([
      { start: '2030-02-18', end: '2030-02-19', recurrenceId: '2030-02-18', isException: false, subject: null, location: null },
    ]);
    expectWellFormed(expectRoundTrip(parsed));
  });
});

describe('iTIP replies, cancellations and counter-proposals', () => {
  test('a REPLY: the answering attendee and their PARTSTAT', () => {
    const parsed = parseICalendar(fixture('outlook-reply.ics'));
    expect(parsed.method).toBe('REPLY');
    expect(parsed.events).toHaveLength(1);
    const reply = parsed.events[0]!;
    expect(reply).toMatchObject({ uid: 'pigeon-7f3c1e9a-52d4-4b8e-9a61-0c2d5e8b4f17', sequence: 0, dtstamp: '2026-12-01T09:30:12.000Z', recurrenceId: null });
    expect(reply.data.attendees).toEqual([{ name: 'Kim, Dave', address: 'dave.kim@example.com', type: 'required', status: 'accepted', respondedAt: null }]);
    expect(reply.data.organizer).toEqual({ name: 'Alice Andersen', address: 'alice@pigeon.test' });
    expect(reply.data.start).toBe('2026-12-09T09:00:00.000Z');
    expectWellFormed(expectRoundTrip(parsed));
  });

  test('a CANCEL of one occurrence: an exception without its master, kept apart with its RECURRENCE-ID', () => {
    const parsed = parseICalendar(fixture('outlook-cancel-occurrence.ics'));
    expect(parsed.method).toBe('CANCEL');
    expect(parsed.events[0]).toMatchObject({ uid: OUTLOOK_UID, sequence: 1, recurrenceId: '2027-01-05T08:00:00.000Z' });
    expect(parsed.events[0]!.data).toMatchObject({ isCancelled: true, showAs: 'free', recurrence: null, start: '2027-01-05T08:00:00.000Z' });
    const folded = foldEvents(parsed.events);
    expect(folded).toHaveLength(1);
    expect(folded[0]!.recurrenceId).toBe('2027-01-05T08:00:00.000Z');
    const text = expectRoundTrip(parsed);
    expectWellFormed(text);
    expect(unfolded(text)).toContain('RECURRENCE-ID;TZID=Europe/Berlin:20270105T090000');
    expect(unfolded(text)).toContain('STATUS:CANCELLED');
    expect(text).not.toContain('RRULE:FREQ=WEEKLY');
  });

  test('the CANCELLED occurrence folded into its series becomes an exception with isCancelled and drops out of the view', () => {
    const request = parseICalendar(fixture('outlook-request-weekly.ics'));
    const cancel = parseICalendar(fixture('outlook-cancel-occurrence.ics'));
    const [series] = foldEvents([...request.events, ...cancel.events]);
    expect(series!.data.exceptions.map((e) => [e.recurrenceId, e.isCancelled, e.subject])).toEqual([
      ['2027-01-05T08:00:00.000Z', true, 'Canceled: Team sync'],
      ['2027-01-12T08:00:00.000Z', false, null],
    ]);
    const january = occurrences(series!.data, Date.parse('2027-01-01T00:00:00Z'), Date.parse('2027-01-10T00:00:00Z'));
    expect(january).toEqual([]);
  });

  test('a COUNTER: the proposed times', () => {
    const parsed = parseICalendar(fixture('outlook-counter.ics'));
    expect(parsed.method).toBe('COUNTER');
    const counter = parsed.events[0]!;
    expect(counter.data).toMatchObject({ start: '2026-12-10T14:00:00.000Z', end: '2026-12-10T15:00:00.000Z', timeZone: 'Europe/Berlin' });
    expect(counter.data.attendees).toEqual([{ name: 'Kim, Dave', address: 'dave.kim@example.com', type: 'required', status: 'tentative', respondedAt: null }]);
    expectWellFormed(expectRoundTrip(parsed));
  });
});

/** A meeting Pigeon organises: everything EventData can hold. */
function pigeonMeeting(): { subject: string; description: string | null; data: EventData } {
  return {
    subject: 'Quarterly review — Überblick, ☕ and a subject long enough to need folding in the output',
    description: 'Agenda:\n1. numbers; 2. plans, risks\n\\ end',
    data: {
      uid: 'pigeon-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
      sequence: 3,
      start: '2026-10-20T07:30:00.000Z',
      end: '2026-10-20T09:00:00.000Z',
      timeZone: 'Europe/Berlin',
      isAllDay: false,
      location: 'Room Orion; 4th floor, east wing',
      organizer: { name: 'Alice Andersen', address: 'alice@pigeon.test' },
      attendees: [
        { name: 'Kim, Dave', address: 'dave.kim@example.com', type: 'required', status: 'accepted', respondedAt: '2026-10-01T12:00:00.000Z' },
        { name: 'Erin "EW" Walsh', address: 'erin.walsh@example.org', type: 'optional', status: 'needsAction', respondedAt: null },
        { name: '', address: 'projector-2@pigeon.test', type: 'resource', status: 'declined', respondedAt: '2026-10-02T08:00:00.000Z' },
      ],
      reminderMinutesBeforeStart: 10,
      recurrence: {
        rrule: 'FREQ=MONTHLY;BYDAY=3TU;UNTIL=20270630T215959Z',
        exdates: ['2026-12-15T08:30:00.000Z'],
        rdates: ['2026-12-22T08:30:00.000Z'],
      },
      exceptions: [
        { recurrenceId: '2026-11-17T08:30:00.000Z', start: '2026-11-18T13:00:00.000Z', end: '2026-11-18T14:30:00.000Z', subject: 'Quarterly review (moved)', location: null, isCancelled: false },
        { recurrenceId: '2027-01-19T08:30:00.000Z', start: '2027-01-19T08:30:00.000Z', end: '2027-01-19T10:00:00.000Z', subject: null, location: null, isCancelled: true },
      ],
      showAs: 'oof',
      isCancelled: false,
      responseStatus: 'needsAction',
      lastItipStamp: '2026-10-05T10:00:00.000Z',
    },
  };
}

describe('toICalendar', () => {
  test('parse(toICalendar(x)) == x for a Pigeon meeting with every field set', () => {
    const meeting = pigeonMeeting();
    const text = toICalendar([meeting], { method: 'REQUEST', dtstamp: Date.parse('2026-10-05T10:00:00Z') });
    expectWellFormed(text);
    expect(foldEvents(parseICalendar(text).events)).toEqual([meeting]);
  });

  test('the owner-relative fields come back as the parser sets them (the caller adjusts them for the owner)', () => {
    const meeting = pigeonMeeting();
    meeting.data.responseStatus = 'organizer';
    const [back] = foldEvents(parseICalendar(toICalendar([meeting], { dtstamp: Date.parse('2026-11-11T11:11:11Z') })).events);
    expect(back!.data.responseStatus).toBe('needsAction');
    expect(back!.data.lastItipStamp).toBe('2026-11-11T11:11:11.000Z');
  });

  test('without dtstamp, DTSTAMP is the event’s lastItipStamp (so an export round-trips)', () => {
    const meeting = pigeonMeeting();
    expect(unfolded(toICalendar([meeting]))).toContain('DTSTAMP:20261005T100000Z');
  });

  test('an all-day series keeps its zone, dates and date EXDATEs', () => {
    const holiday: EventData = {
      ...pigeonMeeting().data,
      uid: 'pigeon-allday',
      start: '2026-12-24',
      end: '2026-12-27',
      timeZone: 'America/Los_Angeles',
      isAllDay: true,
      attendees: [],
      organizer: null,
      reminderMinutesBeforeStart: 0,
      recurrence: { rrule: 'FREQ=YEARLY;COUNT=5', exdates: ['2027-12-24'], rdates: [] },
      exceptions: [{ recurrenceId: '2028-12-24', start: '2028-12-23', end: '2028-12-26', subject: null, location: 'Cabin', isCancelled: false }],
      showAs: 'free',
    };
    const event = { subject: 'Holidays', description: null, data: holiday };
    const text = toICalendar([event]);
    expect(unfolded(text)).toEqual(expect.arrayContaining(['EXDATE;VALUE=DATE:20271224', 'RECURRENCE-ID;VALUE=DATE:20281224', 'X-PIGEON-TZID:America/Los_Angeles', 'TRIGGER;RELATED=START:PT0S']));
    expect(foldEvents(parseICalendar(text).events)).toEqual([event]);
  });

  test('folds at 75 octets without splitting a UTF-8 character, and unfolds to the same text', () => {
    const meeting = pigeonMeeting();
    meeting.description = 'Ünïcödé ✓ '.repeat(40);
    const text = toICalendar([meeting]);
    expectWellFormed(text);
    expect(text).toMatch(/\r\n /); // something was folded
    expect(Buffer.from(text, 'utf8').toString('utf8')).toBe(text);
    expect(parseICalendar(text).events[0]!.description).toBe(meeting.description);
  });

  test('a REPLY keeps only the answering attendee; METHOD:REPLY', () => {
    const meeting = pigeonMeeting();
    const text = toICalendar([meeting], { method: 'REPLY', onlyAttendees: ['Dave.Kim@example.com'] });
    const reply = parseICalendar(text);
    expect(reply.method).toBe('REPLY');
    expect(reply.events.every((e) => e.data.attendees.map((a) => a.address).join() === 'dave.kim@example.com')).toBe(true);
  });

  test('onlyRecurrenceId: one occurrence on its own, from its exception or from the series', () => {
    const meeting = pigeonMeeting();
    const moved = parseICalendar(toICalendar([meeting], { method: 'REQUEST', onlyRecurrenceId: '2026-11-17T08:30:00.000Z' }));
    expect(moved.events).toHaveLength(1);
    expect(moved.events[0]).toMatchObject({ recurrenceId: '2026-11-17T08:30:00.000Z', subject: 'Quarterly review (moved)' });
    expect(moved.events[0]!.data).toMatchObject({ start: '2026-11-18T13:00:00.000Z', recurrence: null });

    const cancelled = parseICalendar(toICalendar([meeting], { method: 'CANCEL', onlyRecurrenceId: '2027-02-16T08:30:00.000Z' }));
    expect(cancelled.events).toHaveLength(1);
    expect(cancelled.events[0]).toMatchObject({ recurrenceId: '2027-02-16T08:30:00.000Z', sequence: 3 });
    expect(cancelled.events[0]!.data).toMatchObject({ start: '2027-02-16T08:30:00.000Z', end: '2027-02-16T10:00:00.000Z', isCancelled: true });
  });

  test('RSVP=TRUE only for attendees who have not answered; responses as PARTSTAT', () => {
    const lines = unfolded(toICalendar([pigeonMeeting()]));
    const master = lines.slice(0, lines.indexOf('END:VEVENT'));
    const attendees = master.filter((l) => l.startsWith('ATTENDEE'));
    expect(attendees).toEqual([
      'ATTENDEE;CN="Kim, Dave";ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;X-PIGEON-RESPONDED-AT=20261001T120000Z:mailto:dave.kim@example.com',
      "ATTENDEE;CN=Erin ^'EW^' Walsh;ROLE=OPT-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:erin.walsh@example.org",
      'ATTENDEE;CUTYPE=RESOURCE;ROLE=NON-PARTICIPANT;PARTSTAT=DECLINED;X-PIGEON-RESPONDED-AT=20261002T080000Z:mailto:projector-2@pigeon.test',
    ]);
    expect(lines).toContain('X-MICROSOFT-CDO-BUSYSTATUS:OOF');
  });
});

describe('generated VTIMEZONE blocks agree with the time zone database (read back by ical.js)', () => {
  /**
   * ical.js's reading of our block against the time zone database: every 6 hours of the years checked, the zone's
   * wall clock read back through the block must give the same instant. Times within hours of a change are left
   * out: ical.js resolves an ambiguous wall clock to the later instant, RFC 5545 to the earlier.
   */
  function expectBlockMatches(zone: string, fromYear: number, toYear: number, checkToYear = toYear) {
    const text = ['BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:test', ...vtimezoneLines(zone, fromYear, toYear), 'END:VCALENDAR', ''].join('\r\n');
    const block = new ICAL.Component(ICAL.parse(text) as unknown[]).getFirstSubcomponent('vtimezone')!;
    const tz = new ICAL.Timezone({ component: block, tzid: zone });
    const mismatches: string[] = [];
    let checked = 0;
    for (let ms = Date.UTC(fromYear, 0, 1, 3); ms < Date.UTC(checkToYear + 1, 0, 1); ms += 6 * 3_600_000) {
      if (offsetAt(zone, ms - 4 * 3_600_000) !== offsetAt(zone, ms + 4 * 3_600_000)) continue;
      const local = utcToZoned(ms, zone);
      const read = ICAL.Time.fromData({ year: local.year, month: local.month, day: local.day, hour: local.hour, minute: local.minute, second: local.second, isDate: false }, tz);
      checked++;
      if (read.toUnixTime() * 1000 !== ms) mismatches.push(new Date(ms).toISOString());
    }
    expect(checked).toBeGreaterThan(1000);
    expect(mismatches).toEqual([]);
    return text;
  }

  test('Europe/Berlin: a yearly rule as Outlook writes it', () => {
    const text = expectBlockMatches('Europe/Berlin', 2026, 2028, 2035);
    expect(text).toContain('RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU');
  });

  test('America/New_York across the 2007 rule change: the old years one by one, then the rule', () => {
    const text = expectBlockMatches('America/New_York', 2004, 2009, 2012);
    expect(text).toContain('RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU');
    expect(text).toContain('RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU');
  });

  test('America/Sao_Paulo, whose summer time ended in 2019', () => {
    const text = expectBlockMatches('America/Sao_Paulo', 2017, 2021);
    expect(text).not.toContain('RRULE');
  });

  test('Australia/Sydney (southern hemisphere) and Asia/Kolkata (no changes)', () => {
    expectBlockMatches('Australia/Sydney', 2026, 2027, 2030);
    expectBlockMatches('Asia/Kolkata', 2026, 2026);
  });
});

describe('zones given by name or by their block', () => {
  const calendar = (tzid: string, blocks: string, start = '20260615T090000') =>
    [
      'BEGIN:VCALENDAR',
      'VERSION:2.0',
      'PRODID:test',
      blocks,
      'BEGIN:VEVENT',
      'UID:zone-test',
      'DTSTAMP:20260101T000000Z',
      `DTSTART;TZID="${tzid}":${start}`,
      'DURATION:PT1H',
      'RRULE:FREQ=WEEKLY',
      'SUMMARY:Zone test',
      'END:VEVENT',
      'END:VCALENDAR',
      '',
    ]
      .filter(Boolean)
      .join('\r\n');

  test('an Outlook display name maps to an IANA zone by its cities', () => {
    const [event] = parseICalendar(calendar('(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna', '')).events;
    expect(event!.data.timeZone).toBe('Europe/Amsterdam');
    expect(event!.data.start).toBe('2026-06-15T07:00:00.000Z');
    expect(event!.data.end).toBe('2026-06-15T08:00:00.000Z'); // DURATION
  });

  test('a custom zone is converted with its own block, and the event gets a zone with the same offsets', () => {
    const block = [
      'BEGIN:VTIMEZONE',
      'TZID:Our Office Time',
      'BEGIN:STANDARD',
      'DTSTART:19701025T030000',
      'RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU',
      'TZOFFSETFROM:+0200',
      'TZOFFSETTO:+0100',
      'END:STANDARD',
      'BEGIN:DAYLIGHT',
      'DTSTART:19700329T020000',
      'RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU',
      'TZOFFSETFROM:+0100',
      'TZOFFSETTO:+0200',
      'END:DAYLIGHT',
      'END:VTIMEZONE',
    ].join('\r\n');
    const [event] = parseICalendar(calendar('Our Office Time', block)).events;
    expect(event!.data.start).toBe('2026-06-15T07:00:00.000Z');
    const zone = event!.data.timeZone;
    for (const instant of ['2026-01-10T12:00:00Z', '2026-03-29T00:59:59Z', '2026-03-29T01:00:00Z', '2026-07-01T12:00:00Z', '2026-10-25T01:00:00Z']) {
      expect(utcToZoned(Date.parse(instant), zone)).toEqual(utcToZoned(Date.parse(instant), 'Europe/Berlin'));
    }
  });

  test('a custom zone no IANA zone matches: its times still convert, the event is kept in UTC', () => {
    const block = ['BEGIN:VTIMEZONE', 'TZID:Odd', 'BEGIN:STANDARD', 'DTSTART:19700101T000000', 'TZOFFSETFROM:+0123', 'TZOFFSETTO:+0123', 'END:STANDARD', 'END:VTIMEZONE'].join('\r\n');
    const [event] = parseICalendar(calendar('Odd', block)).events;
    expect(event!.data.start).toBe('2026-06-15T07:37:00.000Z');
    expect(event!.data.timeZone).toBe('UTC');
  });

  test('floating times use X-WR-TIMEZONE, or the zone the caller gives', () => {
    const text = ['BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:test', 'X-WR-TIMEZONE:Asia/Tokyo', 'BEGIN:VEVENT', 'UID:f', 'DTSTAMP:20260101T000000Z', 'DTSTART:20260615T090000', 'DTEND:20260615T100000', 'END:VEVENT', 'END:VCALENDAR', ''].join('\r\n');
    expect(parseICalendar(text).events[0]!.data).toMatchObject({ start: '2026-06-15T00:00:00.000Z', timeZone: 'Asia/Tokyo' });
    expect(parseICalendar(text, { floatingZone: 'America/Chicago' }).events[0]!.data).toMatchObject({ start: '2026-06-15T14:00:00.000Z', timeZone: 'America/Chicago' });
  });

  test('Outlook’s all-day event sent as midnight to midnight with X-MICROSOFT-CDO-ALLDAYEVENT:TRUE', () => {
    const text = [
      'BEGIN:VCALENDAR',
      'VERSION:2.0',
      'PRODID:Microsoft Exchange Server 2010',
      'BEGIN:VEVENT',
      'UID:allday-outlook',
      'DTSTAMP:20260101T000000Z',
      'DTSTART;TZID=W. Europe Standard Time:20260704T000000',
      'DTEND;TZID=W. Europe Standard Time:20260706T000000',
      'X-MICROSOFT-CDO-ALLDAYEVENT:TRUE',
      'SUMMARY:Summer party weekend',
      'END:VEVENT',
      'END:VCALENDAR',
      '',
    ].join('\r\n');
    expect(parseICalendar(text).events[0]!.data).toMatchObject({ isAllDay: true, start: '2026-07-04', end: '2026-07-06', timeZone: 'Europe/Berlin' });
  });
});

describe('refusals', () => {
  const minimal = (body: string) => `BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:test\r\n${body}END:VCALENDAR\r\n`;
  const event = (extra = '') => `BEGIN:VEVENT\r\nUID:x\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260101T100000Z\r\n${extra}END:VEVENT\r\n`;

  test('text over 1 MiB', () => {
    expect(() => parseICalendar(minimal(event(`DESCRIPTION:${'x'.repeat(1024 * 1024)}\r\n`)))).toThrow(CalendarInputError);
  });

  test('more than 1000 components', () => {
    expect(() => parseICalendar(minimal(event().repeat(1001)))).toThrow(/components/);
    expect(parseICalendar(minimal(event().repeat(999))).events).toHaveLength(999);
  });

  test('no VCALENDAR, or not iCalendar at all', () => {
    expect(() => parseICalendar('BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice\r\nEND:VCARD\r\n')).toThrow(CalendarInputError);
    expect(() => parseICalendar('hello')).toThrow(CalendarInputError);
    expect(() => parseICalendar('BEGIN:VCALENDAR\r\nthis is not a content line\r\nEND:VCALENDAR\r\n')).toThrow(CalendarInputError);
  });

  test('an RRULE the recurrence engine refuses, naming the event', () => {
    expect(() => parseICalendar(minimal(event('RRULE:FREQ=SECONDLY\r\n')))).toThrow(/event "x".*SECONDLY/);
    expect(() => parseICalendar(minimal(event('RRULE:FREQ=DAILY;COUNT=9999\r\n')))).toThrow(CalendarInputError);
  });

  test('a VEVENT without UID gets a stable one from its content', () => {
    const text = minimal('BEGIN:VEVENT\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260101T100000Z\r\nSUMMARY:No uid\r\nEND:VEVENT\r\n');
    const first = parseICalendar(text).events[0]!.uid;
    expect(first).toMatch(/^pigeon-[0-9a-f]{32}$/);
    expect(parseICalendar(text).events[0]!.uid).toBe(first);
  });
});
