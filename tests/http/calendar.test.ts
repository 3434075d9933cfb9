/**
 * The calendar API in process over a real SQLite file (issue 18; README "Calendar and contacts"): events created,
 * changed and deleted through the API and seen by item sync; a meeting between two local users kept in step over
 * the mail the server sends itself (REQUEST → tentative copy, REPLY → organiser's attendee, CANCEL of an occurrence
 * and of the series → gone from the attendee's calendar view, so no reminder can fire); the calendar view across a
 * daylight-saving change; the iCalendar feed; every bad input a 400 that changes nothing.
 */
import { buildTestApp, signIn, asCaller, type TestContext } from '../helpers/testApp';
import ICAL from '../../server/calendar/icalLib';

let ctx: TestContext;
const PW = 'password-for-calendar-tests';
let serial = 0;
interface Device {
  access: string;
  deviceId: string;
}
const as = (d: Device) => asCaller(ctx, d);
let alice: Device;
let bob: Device;
const ALICE = 'alice@cal.example';
const BOB = 'bob@cal.example';

async function device(username: string): Promise<Device> {
  const deviceId = `${username}-cal-${String(++serial).padStart(4, '0')}-abcdefgh`;
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const d = { access: t.access_token, deviceId };
  expect((await as(d).post('/v1/devices', { friendlyName: `${username}'s phone`, clientType: 'PigeonMail' })).status).toBe(201);
  return d;
}

async function folder(d: Device, kind: string): Promise<string> {
  const res = await as(d).get('/v1/folders/sync');
  return (res.body.created as Array<{ id: string; kind: string }>).find((f) => f.kind === kind)!.id;
}

async function items(d: Device, kind: string): Promise<Array<Record<string, any>>> {
  const res = await as(d).get(`/v1/folders/${await folder(d, kind)}/items/sync?maxChanges=500`);
  expect(res.status).toBe(200);
  return res.body.created;
}

const view = async (d: Device, start: string, end: string) => {
  const res = await as(d).get(`/v1/calendar/view?start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`);
  expect(res.status).toBe(200);
  return res.body.occurrences as Array<Record<string, any>>;
};

beforeAll(async () => {
  ctx = await buildTestApp({ accessTokenTtl: 86_400 });
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user', email: ALICE, displayName: 'Alice' });
  await ctx.users.addUser({ username: 'bob', password: PW, role: 'user', email: BOB, displayName: 'Bob' });
  alice = await device('alice');
  bob = await device('bob');
});
afterAll(() => ctx.close());

describe('events through the API', () => {
  test('create, read by sync, replace with If-Match, delete', async () => {
    const created = await as(alice).post('/v1/calendar/events', {
      subject: 'Dentist',
      start: '2027-02-03T10:00:00+01:00',
      end: '2027-02-03T10:30:00+01:00',
      timeZone: 'Europe/Berlin',
      reminderMinutesBeforeStart: 60,
    });
    expect(created.status).toBe(201);
    const id = created.body.item.id;
    const synced = (await items(alice, 'calendar')).find((i) => i.id === id)!;
    expect(synced).toMatchObject({ subject: 'Dentist', start: '2027-02-03T09:00:00.000Z', timeZone: 'Europe/Berlin', reminderMinutesBeforeStart: 60 });
    const stale = await as(alice).put(`/v1/calendar/events/${id}`, { subject: 'Dentist (moved)', start: '2027-02-04T10:00:00+01:00', end: '2027-02-04T10:30:00+01:00', timeZone: 'Europe/Berlin' }).set('If-Match', '"not-it"');
    expect(stale.status).toBe(412);
    const moved = await as(alice).put(`/v1/calendar/events/${id}`, { subject: 'Dentist (moved)', start: '2027-02-04T10:00:00+01:00', end: '2027-02-04T10:30:00+01:00', timeZone: 'Europe/Berlin' }).set('If-Match', `"${synced.changeKey}"`);
    expect(moved.status).toBe(200);
    expect(moved.body.item.start).toBe('2027-02-04T09:00:00.000Z');
    expect((await as(alice).delete(`/v1/calendar/events/${id}`)).status).toBe(200);
    expect((await items(alice, 'calendar')).some((i) => i.id === id)).toBe(false);
  });

  test('bad input is a 400 naming the field, and stores nothing', async () => {
    const before = (await items(alice, 'calendar')).length;
    for (const [body, field] of [
      [{ subject: 'x', start: '2027-02-03T10:00:00Z', end: '2027-02-03T09:00:00Z', timeZone: 'Europe/Berlin' }, 'end'],
      [{ subject: 'x', start: '2027-02-03T10:00:00Z', end: '2027-02-03T11:00:00Z', timeZone: 'Mars/Olympus' }, 'timeZone'],
      [{ subject: 'x', start: 'tomorrow', end: '2027-02-03T11:00:00Z', timeZone: 'UTC' }, 'start'],
      [{ subject: 'x', start: '2027-02-03T10:00:00Z', end: '2027-02-03T11:00:00Z', timeZone: 'UTC', recurrence: { rrule: 'FREQ=SOMETIMES' } }, 'recurrence.rrule'],
      [{ subject: 'x', start: '2027-02-03', end: '2027-02-04T00:00:00Z', timeZone: 'UTC', isAllDay: true }, 'end'],
    ] as const) {
      const res = await as(alice).post('/v1/calendar/events', body);
      expect(res.status).toBe(400);
      expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    expect((await items(alice, 'calendar')).length).toBe(before);
  });

  test("another user's event is not found", async () => {
    const created = await as(alice).post('/v1/calendar/events', { subject: 'Private', start: '2027-02-05T10:00:00Z', end: '2027-02-05T11:00:00Z', timeZone: 'UTC' });
    const id = created.body.item.id;
    for (const res of [
      await as(bob).put(`/v1/calendar/events/${id}`, { subject: 'Mine', start: '2027-02-05T10:00:00Z', end: '2027-02-05T11:00:00Z', timeZone: 'UTC' }),
      await as(bob).delete(`/v1/calendar/events/${id}`),
      await as(bob).post(`/v1/calendar/events/${id}/respond`, { response: 'accepted' }),
    ]) {
      expect(res.status).toBe(404);
    }
  });
});

describe('a meeting between two users', () => {
  let aliceEvent: string;
  let bobEvent: string;

  test('the invitation reaches bob: a message in his Inbox and a tentative event in his calendar', async () => {
    const created = await as(alice).post('/v1/calendar/events', {
      subject: 'Budget 2027',
      start: '2027-03-08T09:00:00+01:00',
      end: '2027-03-08T10:00:00+01:00',
      timeZone: 'Europe/Berlin',
      attendees: [{ name: 'Bob', address: BOB }],
      recurrence: { rrule: 'FREQ=WEEKLY;COUNT=6' },
    });
    expect(created.status).toBe(201);
    expect(created.body.invitationsSent).toBe(true);
    aliceEvent = created.body.item.id;
    const invitation = (await items(bob, 'inbox')).find((i) => i.subject === 'Budget 2027')!;
    expect(invitation.meeting).toMatchObject({ method: 'REQUEST', action: 'created' });
    bobEvent = invitation.meeting.eventId;
    const copy = (await items(bob, 'calendar')).find((i) => i.id === bobEvent)!;
    expect(copy).toMatchObject({ subject: 'Budget 2027', responseStatus: 'needsAction', showAs: 'tentative', uid: created.body.item.uid });
    expect(copy.organizer.address).toBe(ALICE);
  });

  test("bob accepts; alice's event records it", async () => {
    const res = await as(bob).post(`/v1/calendar/events/${bobEvent}/respond`, { response: 'accepted', comment: 'See you' });
    expect(res.status).toBe(200);
    expect(res.body.item.responseStatus).toBe('accepted');
    const mine = (await items(alice, 'calendar')).find((i) => i.id === aliceEvent)!;
    expect(mine.attendees).toEqual([expect.objectContaining({ address: BOB, status: 'accepted' })]);
  });

  test("alice cancels one occurrence: it leaves bob's calendar view, the others stay", async () => {
    const before = await view(bob, '2027-03-01T00:00:00Z', '2027-05-01T00:00:00Z');
    expect(before.filter((o) => o.itemId === bobEvent)).toHaveLength(6);
    const res = await as(alice).delete(`/v1/calendar/events/${aliceEvent}?occurrence=${encodeURIComponent('2027-03-15T08:00:00Z')}`);
    expect(res.status).toBe(200);
    const after = (await view(bob, '2027-03-01T00:00:00Z', '2027-05-01T00:00:00Z')).filter((o) => o.itemId === bobEvent);
    expect(after).toHaveLength(5);
    expect(after.map((o) => o.start)).not.toContain('2027-03-15T08:00:00.000Z');
  });

  test('the view keeps 09:00 Berlin across the change to summer time', async () => {
    const starts = (await view(alice, '2027-03-01T00:00:00Z', '2027-05-01T00:00:00Z')).filter((o) => o.itemId === aliceEvent).map((o) => o.start);
    // Berlin is UTC+1 until 28 March 2027, UTC+2 after.
    expect(starts).toEqual(['2027-03-08T08:00:00.000Z', '2027-03-22T08:00:00.000Z', '2027-03-29T07:00:00.000Z', '2027-04-05T07:00:00.000Z', '2027-04-12T07:00:00.000Z']);
  });

  test('the feed is iCalendar with the meeting', async () => {
    const res = await as(alice).get('/v1/calendar/feed.ics').buffer(true).parse((r, done) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => done(null, Buffer.concat(chunks)));
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/calendar/);
    const cal = new ICAL.Component(ICAL.parse((res.body as Buffer).toString('utf8')));
    const uids = cal.getAllSubcomponents('vevent').map((v) => v.getFirstPropertyValue('uid'));
    const mine = (await items(alice, 'calendar')).find((i) => i.id === aliceEvent)!;
    expect(uids).toContain(mine.uid);
  });

  test("alice cancels the series: bob's event is gone, so is every occurrence", async () => {
    const res = await as(alice).delete(`/v1/calendar/events/${aliceEvent}`);
    expect(res.status).toBe(200);
    expect(res.body.cancellationsSent).toBe(true);
    expect((await items(bob, 'calendar')).some((i) => i.id === bobEvent)).toBe(false);
    expect((await view(bob, '2027-03-01T00:00:00Z', '2027-05-01T00:00:00Z')).some((o) => o.itemId === bobEvent)).toBe(false);
    // Two cancellations reached bob: the occurrence's (his event updated) and the series' (his event deleted).
    const cancellations = (await items(bob, 'inbox')).filter((i) => i.subject === 'Canceled: Budget 2027');
    expect(cancellations.map((i) => `${i.meeting.method} ${i.meeting.action}`).sort()).toEqual(['CANCEL deleted', 'CANCEL updated']);
  });
});
