/**
 * The pure parts of background push (server/push/background): preview levels and what a message may show, the
 * message shapes, token buckets and backoff, and the reminder computation (single, recurring, all-day, moved).
 */
import type { EventData } from '../../server/calendar/model';
import {
  badgeMessage,
  isProtected,
  lowerLevel,
  messageAllows,
  newMailAlert,
  newMailSummary,
  newMailText,
  nextReminder,
  planReminder,
  shownUntil,
  PolicyAnswers,
  reminderAlert,
  reminderCancel,
  reminderStillStands,
  runWithPolicy,
  NeedPolicy,
  syncMessage,
} from '../../server/push/background/compose';
import { targetOf } from '../../server/push/background/drain';
import { backoffMs, DeviceBuckets, perMinuteBucket, perSecondBucket, SharedLimits, TokenBucket } from '../../server/push/background/limits';
import { sendBudgetGrant } from '../../server/store/sqlite/push';
import type { BackgroundPushPolicy } from '../../server/push/background/types';
import type { PushReminderRecord } from '../../server/store/types';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

function event(overrides: Partial<EventData> = {}): EventData {
  return {
    uid: 'uid-1',
    sequence: 0,
    start: '2026-03-02T09:00:00.000Z',
    end: '2026-03-02T10:00:00.000Z',
    timeZone: 'UTC',
    isAllDay: false,
    location: null,
    organizer: null,
    attendees: [],
    reminderMinutesBeforeStart: 15,
    recurrence: null,
    exceptions: [],
    showAs: 'busy',
    isCancelled: false,
    responseStatus: 'organizer',
    lastItipStamp: null,
    ...overrides,
  };
}

const mail = (data: Record<string, unknown> = {}) => ({ id: 'item-1', folderId: 'inbox-1', from: { name: 'Ada Lovelace', address: 'ada@example.com' }, subject: 'Engine notes', data });

describe('preview levels', () => {
  it('takes the lower of two levels', () => {
    expect(lowerLevel('full', 'senderOnly')).toBe('senderOnly');
    expect(lowerLevel('senderOnly', 'full')).toBe('senderOnly');
    expect(lowerLevel('full', 'none')).toBe('none');
    expect(lowerLevel('none', 'senderOnly')).toBe('none');
    expect(lowerLevel('full', 'full')).toBe('full');
  });

  it('lets protected mail (rights protection or S/MIME encrypted) and a label that forbids it show nothing', () => {
    const allowAll = () => true;
    expect(messageAllows(mail(), allowAll)).toBe('full');
    expect(isProtected(mail({ protection: { owner: 'x' } }))).toBe(true);
    expect(messageAllows(mail({ protection: { owner: 'x' } }), allowAll)).toBe('none');
    expect(messageAllows(mail({ smime: { kind: 'encrypted', signature: null } }), allowAll)).toBe('none');
    expect(messageAllows(mail({ smime: { kind: 'signed', signature: null } }), allowAll)).toBe('full');
    const labels = (id: string) => id !== 'confidential';
    expect(messageAllows(mail({ label: { id: 'confidential', name: 'Confidential' } }), labels)).toBe('none');
    expect(messageAllows(mail({ label: { id: 'general', name: 'General' } }), labels)).toBe('full');
  });

  it('writes the alert text per level', () => {
    expect(newMailText('full', mail())).toEqual({ title: 'Ada Lovelace', body: 'Engine notes' });
    expect(newMailText('senderOnly', mail())).toEqual({ title: 'Ada Lovelace', body: 'New message' });
    expect(newMailText('none', mail())).toEqual({ title: 'New message', body: '' });
    expect(newMailText('full', { ...mail(), from: { name: '', address: 'ada@example.com' } })).toEqual({ title: 'ada@example.com', body: 'Engine notes' });
  });
});

describe('message shapes', () => {
  it('sync: silent, collapse key sync, normal urgency, a day of TTL, the badge when asked', () => {
    expect(syncMessage()).toEqual({ type: 'sync', collapseKey: 'sync', ttlSeconds: 86400, urgency: 'normal', data: { type: 'sync' } });
    expect(syncMessage(4)).toMatchObject({ badge: 4 });
    expect(badgeMessage(2)).toEqual({ type: 'badge', collapseKey: 'badge', ttlSeconds: 86400, urgency: 'normal', data: { type: 'badge' }, badge: 2 });
  });

  it('new mail: one alert per message under mail:<id>, high urgency, only ids in data', () => {
    const alert = newMailAlert(mail(), 'full', 3);
    expect(alert).toEqual({
      type: 'newMail',
      collapseKey: 'mail:item-1',
      ttlSeconds: 86400,
      urgency: 'high',
      data: { type: 'newMail', itemId: 'item-1', folderId: 'inbox-1' },
      alert: { title: 'Ada Lovelace', body: 'Engine notes' },
      badge: 3,
    });
    const hidden = newMailAlert(mail(), 'none');
    expect(JSON.stringify(hidden)).not.toMatch(/Ada|Engine|ada@/);
    expect(newMailSummary(7, 'inbox-1')).toMatchObject({ collapseKey: 'newMail', urgency: 'high', alert: { title: '7 new messages', body: '' }, data: { type: 'newMail', folderId: 'inbox-1', count: 7 } });
  });

  it('reminder: the subject per level, TTL until the start (at least 60 s); its cancellation under the same key', () => {
    const start = Date.UTC(2026, 2, 2, 9);
    const full = reminderAlert({ id: 'ev-1', subject: 'Standup' }, 'full', start, start - 15 * MINUTE);
    expect(full).toEqual({
      type: 'reminder',
      collapseKey: 'reminder:ev-1',
      ttlSeconds: 900,
      urgency: 'high',
      data: { type: 'reminder', itemId: 'ev-1', start: '2026-03-02T09:00:00.000Z' },
      alert: { title: 'Standup', body: 'Starts at 2026-03-02T09:00:00.000Z' },
    });
    expect(reminderAlert({ id: 'ev-1', subject: 'Standup' }, 'senderOnly', start, start).alert!.title).toBe('Standup');
    expect(reminderAlert({ id: 'ev-1', subject: 'Standup' }, 'none', start, start).alert!.title).toBe('Upcoming event');
    expect(reminderAlert({ id: 'ev-1', subject: 'Standup' }, 'full', start, start + 5000).ttlSeconds).toBe(60);
    expect(reminderCancel('ev-1')).toEqual({ type: 'reminderCancel', collapseKey: 'reminder:ev-1', ttlSeconds: 86400, urgency: 'normal', data: { type: 'reminderCancel', itemId: 'ev-1' } });
  });

  it('targets each gateway from the channel', () => {
    expect(targetOf({ kind: 'webpush', address: 'https://push.example/1', keys: { p256dh: 'P', auth: 'A' } })).toEqual({ kind: 'webpush', endpoint: 'https://push.example/1', p256dh: 'P', auth: 'A' });
    expect(targetOf({ kind: 'apns', address: 'abcd', keys: { topic: 'org.pigeon', environment: 'sandbox' } })).toEqual({ kind: 'apns', token: 'abcd', topic: 'org.pigeon', environment: 'sandbox' });
    expect(targetOf({ kind: 'fcm', address: 'tok', keys: {} })).toEqual({ kind: 'fcm', token: 'tok' });
  });
});

describe('token buckets', () => {
  it('allows a burst of its size, then one token per interval, and says how long to wait', () => {
    const bucket = perMinuteBucket(3, 0);
    expect([bucket.take(0), bucket.take(0), bucket.take(0)]).toEqual([0, 0, 0]);
    expect(bucket.take(0)).toBe(20_000);
    expect(bucket.take(10_000)).toBe(10_000);
    expect(bucket.take(20_000)).toBe(0);
    expect(bucket.take(20_000)).toBeGreaterThan(0);
  });

  it('counts per second, and a token given back can be taken again', () => {
    const bucket = perSecondBucket(2, 1000);
    expect(bucket.available(1000)).toBe(2);
    bucket.take(1000);
    bucket.take(1000);
    expect(bucket.available(1000)).toBe(0);
    expect(bucket.take(1000)).toBe(500);
    bucket.giveBack();
    expect(bucket.take(1000)).toBe(0);
    expect(bucket.available(2000)).toBe(2);
    expect(new TokenBucket(5, 1, 0).available(100)).toBe(5);
  });

  it('keeps one bucket per device and forgets full ones', () => {
    const buckets = new DeviceBuckets(2);
    expect(buckets.take('a', 0)).toBe(0);
    expect(buckets.take('a', 0)).toBe(0);
    expect(buckets.take('a', 0)).toBe(30_000);
    expect(buckets.take('b', 0)).toBe(0);
    buckets.sweep(60_000);
    expect(buckets.size).toBe(0);
  });

  it("grants a shared window's sends from what was asked in it, whoever asked before", () => {
    // Limit 5: asked 3 (→ 3), then 3 more (6 asked: → 2), then 1 (7 asked: → 0).
    expect([sendBudgetGrant(3, 3, 5), sendBudgetGrant(6, 3, 5), sendBudgetGrant(7, 1, 5)]).toEqual([3, 2, 0]);
  });

  it('claims no more once the shared global window is spent, until it ends', () => {
    const limits = new SharedLimits(10, 30);
    expect(limits.open(0)).toBe(true);
    limits.spent(1000);
    expect(limits.open(999)).toBe(false);
    limits.spent(500); // an older window's answer does not shorten it
    expect(limits.open(999)).toBe(false);
    expect(limits.open(1000)).toBe(true);
  });
});

describe('backoff', () => {
  const options = { retryBaseMs: 1000, retryMaxMs: 60_000 };
  it('doubles per attempt up to the maximum, with jitter between half and all of it', () => {
    expect(backoffMs(1, options, undefined, () => 1)).toBe(1000);
    expect(backoffMs(1, options, undefined, () => 0)).toBe(500);
    expect(backoffMs(3, options, undefined, () => 1)).toBe(4000);
    expect(backoffMs(3, options, undefined, () => 0)).toBe(2000);
    expect(backoffMs(20, options, undefined, () => 1)).toBe(60_000);
    for (let i = 0; i < 50; i++) {
      const wait = backoffMs(4, options);
      expect(wait).toBeGreaterThanOrEqual(4000);
      expect(wait).toBeLessThanOrEqual(8000);
    }
  });

  it("honours a gateway's Retry-After when it is longer", () => {
    expect(backoffMs(1, options, 120_000, () => 1)).toBe(120_000);
    expect(backoffMs(5, options, 10, () => 1)).toBe(16_000);
  });
});

describe('reminders', () => {
  const start = Date.UTC(2026, 2, 2, 9);

  it('single event: start minus the reminder minutes, until it starts; none without minutes or when cancelled', () => {
    expect(nextReminder(event(), start - DAY)).toEqual({ occurrenceStart: start, dueAt: start - 15 * MINUTE });
    // Due already (created five minutes before), not started: still reminded (at once).
    expect(nextReminder(event(), start - 5 * MINUTE)).toEqual({ occurrenceStart: start, dueAt: start - 15 * MINUTE });
    expect(nextReminder(event(), start + 1)).toBeNull();
    expect(nextReminder(event({ reminderMinutesBeforeStart: null }), start - DAY)).toBeNull();
    expect(nextReminder(event({ isCancelled: true }), start - DAY)).toBeNull();
  });

  it('recurring event: the next occurrence not yet started, skipping exdates and cancelled exceptions, in the zone', () => {
    const daily = event({ start: '2026-03-02T08:00:00.000Z', end: '2026-03-02T08:30:00.000Z', timeZone: 'Europe/Berlin', recurrence: { rrule: 'FREQ=DAILY;COUNT=5', exdates: ['2026-03-03T08:00:00.000Z'], rdates: [] } });
    const first = Date.UTC(2026, 2, 2, 8);
    expect(nextReminder(daily, first - HOUR)).toEqual({ occurrenceStart: first, dueAt: first - 15 * MINUTE });
    // After the first has started: the third (the second is excluded).
    expect(nextReminder(daily, first + 1)).toEqual({ occurrenceStart: first + 2 * DAY, dueAt: first + 2 * DAY - 15 * MINUTE });
    const withException = { ...daily, exceptions: [{ recurrenceId: '2026-03-04T08:00:00.000Z', start: '2026-03-04T08:00:00.000Z', end: '2026-03-04T08:30:00.000Z', subject: null, location: null, isCancelled: true }] };
    expect(nextReminder(withException, first + 1)!.occurrenceStart).toBe(first + 3 * DAY);
    // After the last: nothing left.
    expect(nextReminder(daily, first + 4 * DAY + 1)).toBeNull();
    // Wall clock in the zone across the DST change (Berlin: 29 March 2026): 09:00 local stays 09:00 local.
    const weekly = event({ start: '2026-03-23T08:00:00.000Z', end: '2026-03-23T09:00:00.000Z', timeZone: 'Europe/Berlin', recurrence: { rrule: 'FREQ=WEEKLY', exdates: [], rdates: [] } });
    expect(nextReminder(weekly, Date.UTC(2026, 2, 24))!.occurrenceStart).toBe(Date.UTC(2026, 2, 30, 7));
  });

  it('all-day event: midnight in its zone', () => {
    const allDay = event({ start: '2026-03-05', end: '2026-03-06', isAllDay: true, timeZone: 'Europe/Berlin', reminderMinutesBeforeStart: 60 });
    const midnight = Date.UTC(2026, 2, 4, 23);
    expect(nextReminder(allDay, Date.UTC(2026, 2, 1))).toEqual({ occurrenceStart: midnight, dueAt: midnight - HOUR });
  });

  it('plans a changed event: put, keep, replace, delete, and cancel a sent reminder whose occurrence moved or went', () => {
    const now = start - DAY;
    const put = planReminder('u', 'e', undefined, event(), now);
    expect(put).toEqual({ action: 'put', cancel: false, reminder: { userId: 'u', itemId: 'e', occurrenceStart: start, dueAt: start - 15 * MINUTE, sentAt: null, shown: null } });
    const pending: PushReminderRecord = { userId: 'u', itemId: 'e', occurrenceStart: start, dueAt: start - 15 * MINUTE, sentAt: null, shown: null };
    expect(planReminder('u', 'e', pending, event(), now)).toEqual({ action: 'keep' });
    expect(planReminder('u', 'e', pending, event({ reminderMinutesBeforeStart: 30 }), now)).toMatchObject({ action: 'put', cancel: false, reminder: { dueAt: start - 30 * MINUTE } });
    expect(planReminder('u', 'e', pending, undefined, now)).toEqual({ action: 'delete', cancel: false });
    expect(planReminder('u', 'e', undefined, undefined, now)).toEqual({ action: 'keep' });

    // Sent, five minutes before the start: on the screen until the occurrence ends (an hour after its start).
    const sent = { ...pending, sentAt: start - 15 * MINUTE, shown: { occurrenceStart: start, dueAt: start - 15 * MINUTE, until: shownUntil(event(), start) } };
    expect(sent.shown.until).toBe(start + HOUR);
    const soon = start - 5 * MINUTE;
    expect(reminderStillStands(event(), sent)).toBe(true);
    expect(planReminder('u', 'e', sent, event({ location: 'Room 2' }), soon)).toEqual({ action: 'keep' });
    expect(planReminder('u', 'e', sent, undefined, soon)).toEqual({ action: 'delete', cancel: true });
    expect(planReminder('u', 'e', sent, event({ isCancelled: true }), soon)).toEqual({ action: 'delete', cancel: true });
    const moved = event({ start: '2026-03-02T11:00:00.000Z', end: '2026-03-02T12:00:00.000Z' });
    expect(planReminder('u', 'e', sent, moved, soon)).toMatchObject({ action: 'put', cancel: true, reminder: { occurrenceStart: start + 2 * HOUR, sentAt: null, shown: null } });
    // After the occurrence ended, no cancellation is owed.
    expect(planReminder('u', 'e', sent, event({ isCancelled: true }), start + 2 * HOUR)).toEqual({ action: 'delete', cancel: false });
    // Deleted event: the end recorded when the reminder fired still decides.
    expect(planReminder('u', 'e', sent, undefined, start + 30 * MINUTE)).toEqual({ action: 'delete', cancel: true });
    expect(planReminder('u', 'e', sent, undefined, start + HOUR)).toEqual({ action: 'delete', cancel: false });
    // A reminder that fired too late to be shown (shown: null) owes nothing.
    expect(planReminder('u', 'e', { ...sent, shown: null }, undefined, soon)).toEqual({ action: 'delete', cancel: false });
  });

  it("recurring event: the occurrence just reminded is cancelled when the series changes under it, while it is on", () => {
    const first = Date.UTC(2026, 2, 2, 8);
    const daily = event({ start: '2026-03-02T08:00:00.000Z', end: '2026-03-02T08:30:00.000Z', recurrence: { rrule: 'FREQ=DAILY;COUNT=3', exdates: [], rdates: [] } });
    // The first occurrence's reminder fired: the row holds the second's, and shows the first until 08:30.
    const shown = { occurrenceStart: first, dueAt: first - 15 * MINUTE, until: shownUntil(daily, first) };
    expect(shown.until).toBe(first + 30 * MINUTE);
    const row: PushReminderRecord = { userId: 'u', itemId: 'e', occurrenceStart: first + DAY, dueAt: first + DAY - 15 * MINUTE, sentAt: null, shown };
    const during = first + 10 * MINUTE;

    // A change that keeps the first occurrence (the subject, a location): nothing to do.
    expect(planReminder('u', 'e', row, { ...daily, location: 'Room 2' }, during)).toEqual({ action: 'keep' });
    // The series moved an hour later: the first occurrence is no longer there, so its reminder is cancelled.
    const later = { ...daily, start: '2026-03-02T09:00:00.000Z', end: '2026-03-02T09:30:00.000Z' };
    expect(planReminder('u', 'e', row, later, during)).toEqual({
      action: 'put',
      cancel: true,
      reminder: { userId: 'u', itemId: 'e', occurrenceStart: first + HOUR, dueAt: first + HOUR - 15 * MINUTE, sentAt: null, shown: null },
    });
    // Only the first occurrence excluded (EXDATE), or cancelled as an exception: cancelled, the next reminder stays.
    const excluded = { ...daily, recurrence: { ...daily.recurrence!, exdates: ['2026-03-02T08:00:00.000Z'] } };
    expect(planReminder('u', 'e', row, excluded, during)).toEqual({ action: 'put', cancel: true, reminder: { ...row, shown: null } });
    const cancelledException = { ...daily, exceptions: [{ recurrenceId: '2026-03-02T08:00:00.000Z', start: '2026-03-02T08:00:00.000Z', end: '2026-03-02T08:30:00.000Z', subject: null, location: null, isCancelled: true }] };
    expect(planReminder('u', 'e', row, cancelledException, during)).toMatchObject({ action: 'put', cancel: true });
    // The series deleted, or cancelled as a whole.
    expect(planReminder('u', 'e', row, undefined, during)).toEqual({ action: 'delete', cancel: true });
    expect(planReminder('u', 'e', row, { ...daily, isCancelled: true }, during)).toEqual({ action: 'delete', cancel: true });
    // After the first occurrence ended, nothing is owed; the row forgets it.
    expect(planReminder('u', 'e', row, undefined, first + 30 * MINUTE)).toEqual({ action: 'delete', cancel: false });
    expect(planReminder('u', 'e', row, { ...daily, location: 'Room 2' }, first + HOUR)).toEqual({ action: 'put', cancel: false, reminder: { ...row, shown: null } });

    // Cut to one occurrence (no next reminder) while the first is on: the row stays, as the shown one's, so that a
    // later change can still cancel it; and a change after that which withdraws it does.
    const cut = { ...daily, recurrence: { ...daily.recurrence!, rrule: 'FREQ=DAILY;COUNT=1' } };
    const kept = planReminder('u', 'e', row, cut, during);
    expect(kept).toEqual({ action: 'put', cancel: false, reminder: { userId: 'u', itemId: 'e', occurrenceStart: first, dueAt: first - 15 * MINUTE, sentAt: during, shown } });
    const keptRow = (kept as { reminder: PushReminderRecord }).reminder;
    expect(planReminder('u', 'e', keptRow, cut, during + MINUTE)).toEqual({ action: 'keep' });
    expect(planReminder('u', 'e', keptRow, undefined, during + MINUTE)).toEqual({ action: 'delete', cancel: true });
  });
});

describe('policy answers for a unit', () => {
  function countingPolicy() {
    const calls: string[] = [];
    const policy: BackgroundPushPolicy = {
      notificationContent: async (t, u, c) => (calls.push(`content ${u} ${c}`), c === 'locked' ? 'none' : 'full'),
      labelAllowsPreview: async (t, l) => (calls.push(`label ${l}`), l !== 'secret'),
      deviceReachable: async (u, t, d) => (calls.push(`device ${d}`), d !== 'blocked'),
    };
    return { policy, calls };
  }

  it('runs the unit again with the answers it missed, asking each question once', async () => {
    const { policy, calls } = countingPolicy();
    const answers = new PolicyAnswers(policy);
    let runs = 0;
    const result = await runWithPolicy(async (a) => {
      runs += 1;
      a.beginRun();
      const seen = [a.notificationContent('t', 'u', 'app'), a.notificationContent('t', 'u', 'locked'), a.labelAllowsPreview('t', 'secret'), a.deviceReachable('u', 't', 'blocked')];
      if (a.missing) throw new NeedPolicy();
      return seen;
    }, answers);
    expect(runs).toBe(2);
    expect(result).toEqual(['full', 'none', false, false]);
    expect(calls.sort()).toEqual(['content u app', 'content u locked', 'device blocked', 'label secret']);
  });

  it('answers conservatively on the last run when answers keep being missing', async () => {
    const { policy } = countingPolicy();
    const answers = new PolicyAnswers(policy);
    let runs = 0;
    const result = await runWithPolicy(async (a) => {
      runs += 1;
      a.beginRun();
      const seen = [a.notificationContent('t', `u${runs}`, 'app'), a.labelAllowsPreview('t', `l${runs}`), a.deviceReachable(`u${runs}`, 't', 'd')];
      if (a.missing) throw new NeedPolicy();
      return seen;
    }, answers, 3);
    expect(runs).toBe(3);
    expect(result).toEqual(['none', false, true]);
  });
});
