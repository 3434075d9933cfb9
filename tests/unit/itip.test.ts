/**
 * Meetings over mail: iTIP decisions (server/calendar/itip.ts) and iMIP messages (server/calendar/imip.ts), driven by
 * invitations as Outlook (Exchange), Google Calendar and Thunderbird send them (fixtures/itip/*.eml, whole MIME
 * messages), and by round trips through what Pigeon itself sends.
 */
import fs from 'node:fs';
import path from 'node:path';
import ICAL from '../../server/calendar/icalLib';
import { simpleParser } from 'mailparser';
import { parseICalendar, type ParsedCalendar } from '../../server/calendar/ical';
import { buildImipMessage, ImipError, meetingPart } from '../../server/calendar/imip';
import {
  cancelFor,
  declineCounterFor,
  ItipError,
  onCancel,
  onCounter,
  onReply,
  onRequest,
  replyFor,
  requestFor,
  summaryText,
  type StoredEvent,
} from '../../server/calendar/itip';
import type { EventData, ResponseStatus } from '../../server/calendar/model';

const FIXTURES = path.join(__dirname, '..', '..', 'fixtures', 'itip');
const BEN = 'ben@pigeon.test';
const ANNA = 'anna.schmidt@contoso.example';
const OLIVIA = 'olivia@pigeon.test';
const OUTLOOK_UID = '040000008200E00074C5B7101A82E00800000000D0F3B2A1C86ADB01000000000000000010000000A7C3E5F1B9D24E6C8F0A1B2C3D4E5F60';
const GOOGLE_UID = '7kukuqrfedlm2f9t0vr42q2ahc@google.com';
const MOZ_UID = '5d8b1f4e-2c3a-4b7d-9e6f-0a1b2c3d4e5f';
const NOW = Date.UTC(2026, 11, 11, 12, 0, 0);

const ms = (iso: string | null | undefined) => (iso ? Date.parse(iso) : NaN);

async function mailOf(name: string) {
  return simpleParser(fs.readFileSync(path.join(FIXTURES, name)));
}

async function calendarOf(name: string): Promise<ParsedCalendar> {
  const part = meetingPart((await mailOf(name)).attachments);
  if (!part) throw new Error(`${name} has no iTIP part`);
  return parseICalendar(part.text);
}

/** The VEVENTs of iCalendar text as ical.js reads them, for properties the model does not keep (COMMENT, STATUS). */
function vevents(text: string) {
  return ICAL.Component.fromString(text).getAllSubcomponents('vevent');
}

const attendee = (data: EventData, address: string) => data.attendees.find((a) => a.address === address);

/** A meeting organised in Pigeon by Olivia, Anna (Outlook) and Ben invited: 15:00–16:00 Berlin on 20 January. */
function review(overrides: Partial<EventData> = {}): StoredEvent {
  return {
    subject: 'Quarterly review',
    description: 'Numbers for Q4.',
    data: {
      uid: 'p1g30n-q-review-0001@pigeon.test',
      sequence: 1,
      start: '2027-01-20T14:00:00.000Z',
      end: '2027-01-20T15:00:00.000Z',
      timeZone: 'Europe/Berlin',
      isAllDay: false,
      location: 'Board room',
      organizer: { name: 'Olivia Novak', address: OLIVIA },
      attendees: [
        { name: 'Anna Schmidt', address: ANNA, type: 'required', status: 'needsAction', respondedAt: null },
        { name: 'Ben Okafor', address: BEN, type: 'optional', status: 'needsAction', respondedAt: null },
      ],
      reminderMinutesBeforeStart: 15,
      recurrence: null,
      exceptions: [],
      showAs: 'busy',
      isCancelled: false,
      responseStatus: 'organizer',
      lastItipStamp: null,
      ...overrides,
    },
  };
}

/**
 * A weekly series organised in Pigeon by Olivia across the spring DST change (09:30 Berlin on Mondays), one
 * occurrence removed and one moved.
 */
function standup(overrides: Partial<EventData> = {}): StoredEvent {
  return {
    subject: 'Team standup',
    description: 'What happened, what is next, what blocks.',
    data: {
      uid: 'p1g30n-standup-0002@pigeon.test',
      sequence: 0,
      start: '2027-03-01T08:30:00.000Z',
      end: '2027-03-01T08:45:00.000Z',
      timeZone: 'Europe/Berlin',
      isAllDay: false,
      location: 'Room 7',
      organizer: { name: 'Olivia Novak', address: OLIVIA },
      attendees: [
        { name: 'Ben Okafor', address: BEN, type: 'required', status: 'needsAction', respondedAt: null },
        { name: 'Anna Schmidt', address: ANNA, type: 'optional', status: 'needsAction', respondedAt: null },
      ],
      reminderMinutesBeforeStart: 10,
      recurrence: { rrule: 'FREQ=WEEKLY;COUNT=8;BYDAY=MO', exdates: ['2027-03-15T08:30:00.000Z'], rdates: [] },
      exceptions: [
        { recurrenceId: '2027-03-08T08:30:00.000Z', start: '2027-03-08T09:30:00.000Z', end: '2027-03-08T09:45:00.000Z', subject: null, location: 'Room 9', isCancelled: false },
      ],
      showAs: 'busy',
      isCancelled: false,
      responseStatus: 'organizer',
      lastItipStamp: null,
      ...overrides,
    },
  };
}

/** Ben's copy of a meeting once he has answered it. */
function answered(event: StoredEvent, status: ResponseStatus, at: string, extra: Partial<EventData> = {}): StoredEvent {
  return {
    ...event,
    data: {
      ...event.data,
      responseStatus: status,
      showAs: status === 'accepted' ? 'busy' : status === 'tentative' ? 'tentative' : 'free',
      attendees: event.data.attendees.map((a) => (a.address === BEN ? { ...a, status, respondedAt: at } : a)),
      ...extra,
    },
  };
}

/** The organiser's copy that matches an attendee's copy (for building what the organiser sends next). */
function organisers(event: StoredEvent, changes: Partial<EventData>): StoredEvent {
  return { ...event, data: { ...event.data, responseStatus: 'organizer', showAs: 'busy', ...changes } };
}

function created(calendar: ParsedCalendar, owner = BEN): StoredEvent {
  const r = onRequest(undefined, calendar, owner);
  expect(r.action).toBe('create');
  return r.event!;
}

describe('meetingPart finds the invitation in each client layout', () => {
  test('Outlook: text/calendar; method=REQUEST in multipart/alternative, plus an application/ics attachment', async () => {
    const mail = await mailOf('outlook-request.eml');
    expect(mail.attachments.map((a) => a.contentType)).toEqual(['text/calendar', 'application/ics']);
    const part = meetingPart(mail.attachments);
    expect(part?.method).toBe('REQUEST');
    expect(part?.text).toContain(`UID:${OUTLOOK_UID}`);
    const calendar = parseICalendar(part!.text);
    expect(calendar.method).toBe('REQUEST');
    expect(new Set(calendar.events.map((e) => e.uid))).toEqual(new Set([OUTLOOK_UID]));
  });

  test('Google Calendar: multipart/mixed with the alternative and invite.ics', async () => {
    const mail = await mailOf('google-request.eml');
    expect(mail.attachments.map((a) => [a.contentType, a.filename ?? null])).toEqual([
      ['text/calendar', null],
      ['application/ics', 'invite.ics'],
    ]);
    const part = meetingPart(mail.attachments);
    expect(part?.method).toBe('REQUEST');
    expect(parseICalendar(part!.text).events.map((e) => e.uid)).toEqual([GOOGLE_UID]);
  });

  test('Thunderbird: multipart/mixed with a text/calendar part (8bit UTF-8)', async () => {
    const mail = await mailOf('thunderbird-request.eml');
    expect(mail.attachments.map((a) => a.contentType)).toEqual(['text/calendar']);
    const part = meetingPart(mail.attachments);
    expect(part?.method).toBe('REQUEST');
    const [event] = parseICalendar(part!.text).events;
    expect(event?.uid).toBe(MOZ_UID);
    expect(event?.data.organizer?.name).toBe('Élodie Bernard');
  });

  test('replies, counter-proposals and cancellations are found with their METHOD', async () => {
    for (const [name, method] of [
      ['outlook-reply.eml', 'REPLY'],
      ['outlook-counter.eml', 'COUNTER'],
      ['google-cancel-occurrence.eml', 'CANCEL'],
    ] as const) {
      expect(meetingPart((await mailOf(name)).attachments)?.method).toBe(method);
    }
  });

  test('the first calendar part with a METHOD wins; other parts, METHOD-less objects and nested METHODs do not count', () => {
    const ics = (lines: string[]) => Buffer.from(['BEGIN:VCALENDAR', 'VERSION:2.0', ...lines, 'END:VCALENDAR', ''].join('\r\n'));
    const published = ics(['BEGIN:VEVENT', 'UID:a', 'METHOD:REQUEST', 'END:VEVENT']);
    const cancel = ics(['METHOD:CANCEL', 'BEGIN:VEVENT', 'UID:b', 'END:VEVENT']);
    const reply = Buffer.concat([Buffer.from('\uFEFF'), ics(['BEGIN:VEVENT', 'UID:c', 'END:VEVENT', 'METHOD:REPLY'])]);
    expect(meetingPart([{ contentType: 'text/plain', content: cancel }])).toBeUndefined();
    expect(meetingPart([{ contentType: 'application/ics', content: published }])).toBeUndefined();
    expect(meetingPart([{ contentType: 'text/calendar', content: ics(['METHOD:SUBSCRIBE']) }])).toBeUndefined();
    expect(meetingPart([{ contentType: 'application/ics', content: published }, { contentType: 'Text/Calendar; method=CANCEL', content: cancel }])).toEqual({
      method: 'CANCEL',
      text: cancel.toString('utf8'),
    });
    expect(meetingPart([{ contentType: 'application/ics', content: reply }, { contentType: 'text/calendar', content: cancel }])?.method).toBe('REPLY');
    expect(meetingPart([])).toBeUndefined();
  });
});

describe('onRequest: an invitation arrives', () => {
  test('an Outlook series becomes a tentative, unanswered event for the invitee', async () => {
    const event = created(await calendarOf('outlook-request.eml'));
    const data = event.data;
    expect(event.subject).toBe('Project sync');
    expect(data.uid).toBe(OUTLOOK_UID);
    expect(ms(data.start)).toBe(Date.UTC(2027, 0, 12, 8, 0));
    expect(ms(data.end)).toBe(Date.UTC(2027, 0, 12, 8, 30));
    expect(data.organizer).toEqual({ name: 'Anna Schmidt', address: ANNA });
    expect(data.responseStatus).toBe('needsAction');
    expect(data.showAs).toBe('tentative');
    expect(attendee(data, BEN)?.status).toBe('needsAction');
    expect(data.recurrence?.rrule).toContain('BYDAY=TU');
    expect(data.recurrence?.exdates.map(ms)).toEqual([Date.UTC(2027, 1, 2, 8, 0)]);
    expect(data.exceptions.map((e) => [ms(e.recurrenceId), ms(e.start), e.location])).toEqual([[Date.UTC(2027, 0, 26, 8, 0), Date.UTC(2027, 0, 26, 9, 0), 'Room 2.01']]);
    expect(data.reminderMinutesBeforeStart).toBe(15);
    expect(ms(data.lastItipStamp)).toBe(Date.UTC(2026, 11, 7, 9, 15));
  });

  test('Google and Thunderbird invitations are created too (organiser listed as attendee; all-day)', async () => {
    const google = created(await calendarOf('google-request.eml')).data;
    expect(google.uid).toBe(GOOGLE_UID);
    expect(google.reminderMinutesBeforeStart).toBe(30);
    expect([google.responseStatus, google.showAs]).toEqual(['needsAction', 'tentative']);
    const mozilla = created(await calendarOf('thunderbird-request.eml')).data;
    expect([mozilla.isAllDay, mozilla.start, mozilla.end]).toEqual([true, '2027-02-10', '2027-02-12']);
    expect([mozilla.responseStatus, mozilla.showAs]).toEqual(['needsAction', 'tentative']);
  });

  test('ignored for someone not invited, and for the organiser', async () => {
    const calendar = await calendarOf('outlook-request.eml');
    const stranger = onRequest(undefined, calendar, 'zoe@pigeon.test');
    expect(stranger.action).toBe('ignore');
    expect(stranger.event).toBeUndefined();
    expect(stranger.reason).toMatch(/not an attendee/);
    expect(onRequest(undefined, calendar, 'Anna.Schmidt@Contoso.example').action).toBe('ignore');
    // Addresses are compared lower-case.
    expect(onRequest(undefined, calendar, 'BEN@Pigeon.Test').action).toBe('create');
  });

  test('an update that moves the meeting (SEQUENCE+1) moves it and asks for the answer again', async () => {
    const mine = answered(created(await calendarOf('outlook-request.eml')), 'accepted', '2026-12-07T10:00:00.000Z', { reminderMinutesBeforeStart: 5 });
    const hour = 3_600_000;
    const moved = organisers(mine, {
      sequence: 1,
      start: new Date(ms(mine.data.start) + hour).toISOString(),
      end: new Date(ms(mine.data.end) + hour).toISOString(),
    });
    const r = onRequest(mine, parseICalendar(requestFor(moved, NOW)), BEN);
    expect(r.action).toBe('update');
    const data = r.event!.data;
    expect(ms(data.start)).toBe(Date.UTC(2027, 0, 12, 9, 0));
    expect(data.sequence).toBe(1);
    expect(data.responseStatus).toBe('needsAction');
    expect(data.showAs).toBe('tentative');
    expect(attendee(data, BEN)).toMatchObject({ status: 'needsAction', respondedAt: null });
    // The reminder is Ben's own choice, not the organiser's.
    expect(data.reminderMinutesBeforeStart).toBe(5);
    expect(ms(data.lastItipStamp)).toBe(NOW);
  });

  test('an update of the description only keeps the answer', async () => {
    const mine = answered(created(await calendarOf('google-request.eml')), 'accepted', '2026-12-07T10:30:00.000Z');
    const edited = { ...organisers(mine, { sequence: 1 }), description: 'Catch-up over coffee. Bring the sketches.' };
    const r = onRequest(mine, parseICalendar(requestFor(edited, NOW)), BEN);
    expect(r.action).toBe('update');
    expect(r.event!.description).toBe('Catch-up over coffee. Bring the sketches.');
    expect([r.event!.data.responseStatus, r.event!.data.showAs]).toEqual(['accepted', 'busy']);
    expect(attendee(r.event!.data, BEN)).toMatchObject({ status: 'accepted', respondedAt: '2026-12-07T10:30:00.000Z' });
  });

  test('an older SEQUENCE, or the same message again, is ignored; the same SEQUENCE with a later DTSTAMP applies', async () => {
    const calendar = await calendarOf('outlook-request.eml');
    const mine = created(calendar);
    const newer = { ...mine, data: { ...mine.data, sequence: 2 } };
    expect(onRequest(newer, calendar, BEN)).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/older/) });
    expect(onRequest(mine, calendar, BEN).action).toBe('ignore');
    const resent = parseICalendar(requestFor(organisers(mine, {}), NOW));
    expect(onRequest(mine, resent, BEN).action).toBe('update');
  });

  test('a REQUEST for one occurrence changes that exception of the stored series, and nothing without the series', () => {
    const mine = answered(created(parseICalendar(requestFor(standup(), NOW - 86_400_000))), 'accepted', '2026-12-10T08:00:00.000Z');
    const recurrenceId = '2027-03-22T08:30:00.000Z';
    const moved = organisers(mine, {
      sequence: 1,
      exceptions: [...mine.data.exceptions, { recurrenceId, start: '2027-03-22T12:00:00.000Z', end: '2027-03-22T12:15:00.000Z', subject: 'Standup (afternoon)', location: null, isCancelled: false }],
    });
    const calendar = parseICalendar(requestFor(moved, NOW, { recurrenceId }));
    expect(calendar.events.map((e) => ms(e.recurrenceId))).toEqual([ms(recurrenceId)]);
    const r = onRequest(mine, calendar, BEN);
    expect(r.action).toBe('update');
    const exception = r.event!.data.exceptions.find((e) => ms(e.recurrenceId) === ms(recurrenceId));
    expect([ms(exception?.start), exception?.subject, exception?.isCancelled]).toEqual([Date.UTC(2027, 2, 22, 12, 0), 'Standup (afternoon)', false]);
    expect(r.event!.data.exceptions).toHaveLength(2);
    expect(r.event!.data.responseStatus).toBe('accepted');
    expect(onRequest(undefined, calendar, BEN).action).toBe('ignore');
  });
});

describe('onReply: an attendee answers the organiser', () => {
  test("Outlook's REPLY (accepted) is recorded with its DTSTAMP", async () => {
    const r = onReply(review(), await calendarOf('outlook-reply.eml'), ANNA);
    expect(r).toMatchObject({ action: 'update', attendee: ANNA, status: 'accepted' });
    expect(attendee(r.event!.data, ANNA)).toMatchObject({ status: 'accepted', respondedAt: '2026-12-08T08:12:00.000Z' });
    expect(attendee(r.event!.data, BEN)?.status).toBe('needsAction');
  });

  test.each(['accepted', 'tentative', 'declined'] as const)('replyFor(%s) → the organiser records it', (status) => {
    const bens = answered(created(parseICalendar(requestFor(review(), NOW - 3_600_000))), status, new Date(NOW).toISOString());
    const text = replyFor(bens, BEN, status, NOW, { comment: 'Noted; thanks.' });
    const calendar = parseICalendar(text);
    expect(calendar.method).toBe('REPLY');
    expect(calendar.events.flatMap((e) => e.data.attendees.map((a) => a.address))).toEqual([BEN]);
    expect(vevents(text)[0]?.getFirstPropertyValue('comment')).toBe('Noted; thanks.');
    expect(vevents(text)[0]?.getFirstSubcomponent('valarm')).toBeNull();
    const r = onReply(review(), calendar, BEN);
    expect(r).toMatchObject({ action: 'update', attendee: BEN, status });
    expect(attendee(r.event!.data, BEN)).toMatchObject({ status, respondedAt: new Date(NOW).toISOString() });
  });

  test('ignored from someone not invited, for someone else, for an older version, or older than the stored answer', async () => {
    const reply = await calendarOf('outlook-reply.eml');
    expect(onReply(review(), reply, 'mallory@evil.example')).toMatchObject({ action: 'ignore' });
    const uninvited = review({ attendees: review().data.attendees.filter((a) => a.address !== ANNA) });
    expect(onReply(uninvited, reply, ANNA)).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/not invited/) });
    expect(onReply(review({ sequence: 2 }), reply, ANNA)).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/older version/) });
    const later = review({ attendees: review().data.attendees.map((a) => (a.address === ANNA ? { ...a, status: 'declined', respondedAt: '2026-12-09T00:00:00.000Z' } : a)) });
    expect(onReply(later, reply, ANNA)).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/older than the answer/) });
    expect(onReply({ ...review(), data: { ...review().data, responseStatus: 'accepted' } }, reply, ANNA).action).toBe('ignore');
  });
});

describe('onCancel: the organiser cancels', () => {
  test("Google's CANCEL of one occurrence cancels only that occurrence", async () => {
    const mine = answered(created(await calendarOf('google-request.eml')), 'accepted', '2026-12-07T10:30:00.000Z');
    const cancel = await calendarOf('google-cancel-occurrence.eml');
    const r = onCancel(mine, cancel, 'dana.lee@gmail.example');
    expect(r.action).toBe('update');
    expect(r.event!.data.exceptions.map((e) => [ms(e.recurrenceId), e.isCancelled])).toEqual([[Date.UTC(2027, 0, 29, 13, 0), true]]);
    expect(r.event!.data.isCancelled).toBe(false);
    expect(r.event!.data.responseStatus).toBe('accepted');
    expect(r.event!.data.sequence).toBe(1);
    expect(onCancel(mine, cancel, 'mallory@evil.example')).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/not the organiser/) });
    expect(onCancel(undefined, cancel, 'dana.lee@gmail.example').action).toBe('ignore');
  });

  test('cancelFor one occurrence → that occurrence cancelled; the whole series → delete', async () => {
    const mine = answered(created(await calendarOf('outlook-request.eml')), 'accepted', '2026-12-07T10:00:00.000Z');
    const recurrenceId = '2027-02-09T08:00:00.000Z';
    const one = cancelFor(organisers(mine, { sequence: 1 }), NOW, { recurrenceId });
    expect(vevents(one).map((v) => v.getFirstPropertyValue('status'))).toEqual(['CANCELLED']);
    const r1 = onCancel(mine, parseICalendar(one), ANNA);
    expect(r1.action).toBe('update');
    expect(r1.event!.data.exceptions.filter((e) => e.isCancelled).map((e) => ms(e.recurrenceId))).toEqual([ms(recurrenceId)]);
    // The moved occurrence the series had stays as it was.
    expect(r1.event!.data.exceptions.filter((e) => !e.isCancelled)).toHaveLength(1);

    const all = cancelFor(organisers(mine, { sequence: 1 }), NOW);
    const calendar = parseICalendar(all);
    expect(calendar.method).toBe('CANCEL');
    // The UID alone cancels every occurrence (RFC 5546 §3.2.5): only the master goes out.
    expect(vevents(all).map((v) => [v.getFirstPropertyValue('recurrence-id'), v.getFirstPropertyValue('status')])).toEqual([[null, 'CANCELLED']]);
    const r2 = onCancel(mine, calendar, ANNA);
    expect(r2.action).toBe('delete');
    expect(r2.event!.data.isCancelled).toBe(true);
  });

  test('a CANCEL older than the copy kept is ignored', async () => {
    const mine = created(await calendarOf('outlook-request.eml'));
    const cancel = parseICalendar(cancelFor(organisers(mine, { sequence: 1 }), NOW));
    expect(onCancel({ ...mine, data: { ...mine.data, sequence: 3 } }, cancel, ANNA)).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/older/) });
  });
});

describe('COUNTER and DECLINECOUNTER', () => {
  test("Outlook's COUNTER is a proposal of a new time from an invited attendee", async () => {
    const counter = await calendarOf('outlook-counter.eml');
    const r = onCounter(review(), counter, ANNA);
    expect(r.action).toBe('proposal');
    expect(r.proposal?.attendee).toBe(ANNA);
    expect([ms(r.proposal?.start), ms(r.proposal?.end)]).toEqual([Date.UTC(2027, 0, 20, 15, 0), Date.UTC(2027, 0, 20, 16, 0)]);
    expect(onCounter(review(), counter, 'mallory@evil.example')).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/not invited/) });
    expect(onCounter(review({ sequence: 4 }), counter, ANNA)).toMatchObject({ action: 'ignore', reason: expect.stringMatching(/older version/) });
  });

  test('declineCounterFor: METHOD:DECLINECOUNTER to that attendee with the reason as COMMENT', () => {
    const text = declineCounterFor(review(), ANNA, NOW, 'The board only meets at 15:00, sorry.');
    const calendar = parseICalendar(text);
    expect(calendar.method).toBe('DECLINECOUNTER');
    expect(calendar.events).toHaveLength(1);
    expect(calendar.events[0]!.data.attendees.map((a) => a.address)).toEqual([ANNA]);
    expect(calendar.events[0]!.data.organizer?.address).toBe(OLIVIA);
    expect(ms(calendar.events[0]!.dtstamp)).toBe(NOW);
    expect(vevents(text)[0]?.getFirstPropertyValue('comment')).toBe('The board only meets at 15:00, sorry.');
    expect(/\r\nMETHOD:DECLINECOUNTER\r\n/.test(text)).toBe(true);
    expect(summaryText(review(), 'DECLINECOUNTER', { comment: 'The board only meets at 15:00, sorry.' })).toContain('The board only meets at 15:00, sorry.');
    expect(() => declineCounterFor(review(), 'mallory@evil.example', NOW, 'no')).toThrow(ItipError);
  });
});

describe('iMIP messages', () => {
  test('buildImipMessage parses back with mailparser to the same iCalendar, and meetingPart finds it', async () => {
    const event = standup();
    const ical = requestFor(event, NOW);
    const { raw, messageId } = await buildImipMessage({
      from: { name: 'Olivia Novak', address: OLIVIA },
      to: [{ name: 'Ben Okafor', address: BEN }, { name: 'Anna Schmidt', address: ANNA }],
      subject: 'Team standup',
      text: summaryText(event, 'REQUEST'),
      ical,
      method: 'REQUEST',
      hostname: 'mail.pigeon.test',
      now: NOW,
    });
    expect(messageId).toMatch(/^<[A-Za-z0-9_-]+@mail\.pigeon\.test>$/);
    const head = raw.toString('utf8', 0, raw.indexOf('\r\n\r\n'));
    expect(head).toMatch(/^Content-Type: multipart\/mixed/im);
    expect(raw.toString('utf8')).toMatch(/Content-Type: multipart\/alternative/i);
    expect(raw.toString('utf8')).toMatch(/Content-Type: text\/calendar; charset=utf-8; method=REQUEST/i);

    const mail = await simpleParser(raw);
    expect(mail.messageId).toBe(messageId);
    expect(mail.subject).toBe('Team standup');
    expect(mail.date?.getTime()).toBe(NOW);
    expect(mail.from?.value).toEqual([{ name: 'Olivia Novak', address: OLIVIA }]);
    expect((Array.isArray(mail.to) ? mail.to : [mail.to]).flatMap((t) => t!.value.map((v) => v.address))).toEqual([BEN, ANNA]);
    expect(mail.text).toContain('Olivia Novak <olivia@pigeon.test> invites you to "Team standup".');
    const part = meetingPart(mail.attachments);
    expect(part).toEqual({ method: 'REQUEST', text: ical });
    expect(parseICalendar(part!.text).events[0]?.uid).toBe(event.data.uid);
  });

  test('a METHOD parameter that contradicts the object is refused', async () => {
    const input = { from: { name: 'Olivia', address: OLIVIA }, to: [{ name: '', address: BEN }], subject: 's', text: 't', hostname: 'mail.pigeon.test', now: NOW };
    await expect(buildImipMessage({ ...input, ical: requestFor(review(), NOW), method: 'CANCEL' })).rejects.toThrow(ImipError);
  });
});

describe('round trips', () => {
  test.each([
    { kind: 'a single meeting', make: review },
    { kind: 'a series with an EXDATE and a moved occurrence, across DST', make: standup },
  ])('requestFor → parseICalendar → onRequest gives the same event ($kind)', ({ make }) => {
    const organiser = make();
    const r = onRequest(undefined, parseICalendar(requestFor(organiser, NOW)), BEN);
    expect(r.action).toBe('create');
    expect(r.event).toEqual({
      ...organiser,
      data: { ...organiser.data, responseStatus: 'needsAction', showAs: 'tentative', lastItipStamp: new Date(NOW).toISOString() },
    });
  });

  test('requestFor needs an organiser', () => {
    expect(() => requestFor(review({ organizer: null, attendees: [] }), NOW)).toThrow(ItipError);
  });
});

describe('summaryText', () => {
  test('an invitation says who, what, when (in the meeting zone), how often, where and who else', () => {
    const text = summaryText(standup(), 'REQUEST');
    expect(text).toContain('Olivia Novak <olivia@pigeon.test> invites you to "Team standup".');
    expect(text).toContain('When: Monday 1 March 2027, 09:30 – 09:45 (Europe/Berlin)');
    expect(text).toContain('Repeats: every week on Monday, 8 times');
    expect(text).toContain('Where: Room 7');
    expect(text).toContain('  Anna Schmidt <anna.schmidt@contoso.example> (optional)');
    expect(text).toContain('What happened, what is next, what blocks.');
  });

  test('a reply names the answer and the comment; an all-day cancellation shows its dates', async () => {
    const reply = summaryText(review(), 'REPLY', { attendee: BEN, status: 'declined', comment: 'On holiday.' });
    expect(reply).toContain('Ben Okafor <ben@pigeon.test> has declined "Quarterly review".');
    expect(reply).toContain('Comment: On holiday.');
    expect(reply).not.toContain('Numbers for Q4.');
    const offsite = created(await calendarOf('thunderbird-request.eml'));
    const cancel = summaryText(offsite, 'CANCEL');
    expect(cancel).toContain('has cancelled "Offsite planning"');
    expect(cancel).toContain('When: Wednesday 10 February 2027 – Thursday 11 February 2027 (all day)');
  });
});
