/**
 * The store contract, background push (issue 20), the same on every backend:
 *
 * - channels: registering an address another user (or device) holds takes it over — the old row and its deliveries
 *   go; the same device registering again refreshes its row (same id); a device's removal takes its channels;
 *   results are noted; counts by kind;
 * - the delivery queue: a message replaces a queued or in-flight one of its channel with the same collapse key (the
 *   replaced id is no longer completed or released); a claim makes deliveries `sending` with a lease and answers
 *   each with its channel; two claims at once never share a delivery; a lapsed lease makes the delivery claimable
 *   again under the same id; a release puts it back for later; removing a channel removes its deliveries; a blocked
 *   device's deliveries are dropped; a delivery for a channel removed meanwhile is not queued;
 * - the outbox: a committed change to the mailbox of a user with a channel (items.create/update through the store)
 *   leaves one entry spanning (modseq before, modseq after]; two commits widen it and keep the first's time; a user
 *   without a channel gets none, a rolled-back unit writes none; entries are taken oldest first, and two takers at
 *   once never take the same entry;
 * - reminders: put, replace (a sent one too), due ones soonest first, marked sent only at the due time read (a
 *   moved reminder is not), purged once sent and started.
 *
 * The queue, the outbox and the due reminders are global: each test removes what it made (afterEach), so the next
 * one starts with an empty queue.
 */
import type { ClaimedPushDelivery, DeviceRecord, NewPushChannel, NewPushDelivery, PushChannelRecord, PushReminderRecord, Store, User } from '../../../server/store/types';
import { DAY, HOUR, MINUTE, NOW, description, eachBackend, email, highestModseq, newMailbox, newUser, recordCommits, unique } from './fixtures';

let made: { users: Set<string>; reminders: Array<[string, string]> } = { users: new Set(), reminders: [] };

function channelOf(user: User, device: DeviceRecord, fields: Partial<NewPushChannel> = {}): NewPushChannel {
  return {
    tenantId: user.tenantId,
    userId: user.id,
    deviceRecordId: device.id,
    deviceId: device.deviceId,
    clientId: 'pigeon-app',
    sessionVersion: 0,
    kind: 'webpush',
    address: `https://push.example.test/${unique('sub')}`,
    keys: { p256dh: 'BPub', auth: 'secret' },
    events: ['sync', 'newMail', 'badge', 'reminder'],
    ...fields,
  };
}

function delivery(channel: PushChannelRecord, fields: Partial<NewPushDelivery> = {}): NewPushDelivery {
  return {
    id: unique('msg'),
    userId: channel.userId,
    channelId: channel.id,
    collapseKey: 'sync',
    message: { type: 'sync', collapseKey: 'sync', ttlSeconds: 86400, urgency: 'normal', data: { type: 'sync' } },
    notBefore: NOW,
    originAt: NOW - 5,
    ...fields,
  };
}

/** A user with a mailbox and a device (and a channel on it unless `channel` is false). */
async function pushUser(store: Store, options: { channel?: boolean; tenantId?: string } = {}) {
  const mailbox = await newMailbox(store, options.tenantId ? { tenantId: options.tenantId } : {});
  made.users.add(mailbox.user.id);
  const device = await store.devices.create(mailbox.user.id, unique('device'), description(), NOW);
  const channel = options.channel === false ? undefined : await store.push.putChannel(channelOf(mailbox.user, device), NOW);
  return { ...mailbox, device, channel };
}

const ids = (claimed: ClaimedPushDelivery[]) => claimed.map((c) => c.delivery.id);

eachBackend('push', (t, backend) => {
  beforeEach(() => {
    made = { users: new Set(), reminders: [] };
  });

  afterEach(async () => {
    const { store } = t();
    for (const userId of made.users) for (const c of await store.push.channelsOfUser(userId)) await store.push.deleteChannel(userId, c.id);
    for (const [userId, itemId] of made.reminders) await store.push.deleteReminder(userId, itemId);
    while ((await store.push.takeOutbox(100)).length > 0);
    expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  describe('channels', () => {
    test('a channel is stored whole and listed per device and per user, oldest first', async () => {
      const { store } = t();
      const { user, device, channel } = await pushUser(store);
      const otherDevice = await store.devices.create(user.id, unique('device'), description(), NOW);
      const apns = await store.push.putChannel(
        channelOf(user, otherDevice, { kind: 'apns', address: 'ab'.repeat(32), keys: { topic: 'app.pigeon', environment: 'sandbox' }, events: ['sync'] }),
        NOW + MINUTE,
      );
      expect(channel).toMatchObject({ userId: user.id, tenantId: user.tenantId, deviceRecordId: device.id, deviceId: device.deviceId, kind: 'webpush' });
      expect(channel).toMatchObject({ keys: { p256dh: 'BPub', auth: 'secret' }, events: ['sync', 'newMail', 'badge', 'reminder'] });
      expect(channel).toMatchObject({ createdAt: NOW, updatedAt: NOW, lastSuccessAt: null, failures: 0, sessionVersion: 0, clientId: 'pigeon-app' });
      expect(apns).toMatchObject({ kind: 'apns', keys: { topic: 'app.pigeon', environment: 'sandbox' }, events: ['sync'], createdAt: NOW + MINUTE });
      expect(await store.push.channel(user.id, channel!.id)).toEqual(channel);
      expect(await store.push.channelsOfUser(user.id)).toEqual([channel, apns]);
      expect(await store.push.channelsOfDevice(user.id, device.id)).toEqual([channel]);
      expect(await store.push.channelsOfDevice(user.id, otherDevice.id)).toEqual([apns]);
      const stranger = await newUser(store);
      expect(await store.push.channel(stranger.id, channel!.id)).toBeUndefined();
      expect(await store.push.deleteChannel(stranger.id, channel!.id)).toBe(false);
      expect(await store.push.channel(user.id, channel!.id)).toEqual(channel);
    });

    test('the same address from another user replaces the first user’s channel and its deliveries', async () => {
      const { store } = t();
      const first = await pushUser(store);
      const second = await pushUser(store);
      await store.push.enqueue([delivery(first.channel!)], NOW);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });

      const taken = await store.push.putChannel(channelOf(second.user, second.device, { address: first.channel!.address }), NOW + HOUR);
      expect(taken.id).not.toBe(first.channel!.id);
      expect(taken).toMatchObject({ userId: second.user.id, deviceRecordId: second.device.id, address: first.channel!.address, createdAt: NOW + HOUR });
      expect(await store.push.channel(first.user.id, first.channel!.id)).toBeUndefined();
      expect(await store.push.channelsOfUser(first.user.id)).toEqual([]);
      expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
      // Another device of the same user is another owner too.
      const laterDevice = await store.devices.create(second.user.id, unique('device'), description(), NOW);
      const moved = await store.push.putChannel(channelOf(second.user, laterDevice, { address: first.channel!.address }), NOW + 2 * HOUR);
      expect(moved.id).not.toBe(taken.id);
      expect((await store.push.channelsOfUser(second.user.id)).map((c) => c.id).sort()).toEqual([second.channel!.id, moved.id].sort());
      // The same address of another kind is another channel.
      const fcm = await store.push.putChannel(channelOf(first.user, first.device, { kind: 'fcm', address: first.channel!.address, keys: {} }), NOW);
      expect(await store.push.channel(second.user.id, moved.id)).toBeDefined();
      expect(await store.push.channel(first.user.id, fcm.id)).toBeDefined();
    });

    test('the same device registering its address again refreshes the channel in place', async () => {
      const { store } = t();
      const { user, device, channel } = await pushUser(store);
      await store.push.noteResult(user.id, channel!.id, false, NOW);
      await store.push.enqueue([delivery(channel!)], NOW);
      const refreshed = await store.push.putChannel(
        channelOf(user, device, { address: channel!.address, keys: { p256dh: 'BNew', auth: 'new' }, events: ['sync'], sessionVersion: 3 }),
        NOW + DAY,
      );
      expect(refreshed).toEqual({ ...channel, keys: { p256dh: 'BNew', auth: 'new' }, events: ['sync'], sessionVersion: 3, updatedAt: NOW + DAY, failures: 0 });
      expect(await store.push.channelsOfUser(user.id)).toEqual([refreshed]);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });
    });

    test('results are noted: a success resets failures and sets the time, a failure counts', async () => {
      const { store } = t();
      const { user, channel } = await pushUser(store);
      await store.push.noteResult(user.id, channel!.id, false, NOW + 1);
      await store.push.noteResult(user.id, channel!.id, false, NOW + 2);
      expect(await store.push.channel(user.id, channel!.id)).toMatchObject({ failures: 2, lastSuccessAt: null });
      await store.push.noteResult(user.id, channel!.id, true, NOW + 3);
      expect(await store.push.channel(user.id, channel!.id)).toMatchObject({ failures: 0, lastSuccessAt: NOW + 3, updatedAt: NOW });
    });

    test('removing a channel, a device’s channels or the device itself removes their deliveries; counts by kind', async () => {
      const { store } = t();
      const before = await store.push.countChannels();
      const { user, device, channel } = await pushUser(store);
      const second = await store.push.putChannel(channelOf(user, device, { kind: 'fcm', address: unique('fcm-token'), keys: {} }), NOW);
      const otherDevice = await store.devices.create(user.id, unique('device'), description(), NOW);
      const third = await store.push.putChannel(channelOf(user, otherDevice, { kind: 'apns', address: unique('apns'), keys: {} }), NOW);
      expect(await store.push.countChannels()).toEqual({ webpush: before.webpush + 1, fcm: before.fcm + 1, apns: before.apns + 1 });
      await store.push.enqueue([delivery(channel!), delivery(second), delivery(third), delivery(third, { collapseKey: 'badge' })], NOW);
      expect(await store.push.queueSize()).toEqual({ queued: 4, sending: 0 });

      expect(await store.push.deleteChannel(user.id, channel!.id)).toBe(true);
      expect(await store.push.deleteChannel(user.id, channel!.id)).toBe(false);
      expect(await store.push.queueSize()).toEqual({ queued: 3, sending: 0 });
      expect(await store.push.deleteChannelsOfDevice(user.id, device.id)).toBe(1);
      expect(await store.push.queueSize()).toEqual({ queued: 2, sending: 0 });
      await store.devices.delete(otherDevice.id);
      expect(await store.push.channelsOfUser(user.id)).toEqual([]);
      expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
      expect(await store.push.countChannels()).toEqual(before);
      // Queued for a channel that is gone: nothing is queued.
      await store.push.enqueue([delivery(third)], NOW);
      expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
    });
  });

  describe('the delivery queue', () => {
    test('a claim makes a due delivery sending with a lease, soonest first, and answers its channel', async () => {
      const { store } = t();
      const { user, channel } = await pushUser(store);
      const later = delivery(channel!, { collapseKey: 'mail:2', notBefore: NOW + 20 });
      const sooner = delivery(channel!, { collapseKey: 'mail:1', notBefore: NOW + 10, message: { type: 'newMail', data: { itemId: 'x' } } });
      const notYet = delivery(channel!, { collapseKey: 'mail:3', notBefore: NOW + 1000 });
      await store.push.enqueue([later, sooner, notYet], NOW);
      expect(await store.push.claim(NOW + 5, 10, 30_000)).toEqual([]);
      const claimed = await store.push.claim(NOW + 100, 10, 30_000);
      expect(ids(claimed)).toEqual([sooner.id, later.id]);
      expect(claimed[0]!.delivery).toEqual({
        id: sooner.id,
        userId: user.id,
        channelId: channel!.id,
        collapseKey: 'mail:1',
        message: { type: 'newMail', data: { itemId: 'x' } },
        state: 'sending',
        attempts: 1,
        notBefore: NOW + 100 + 30_000,
        leaseUntil: NOW + 100 + 30_000,
        originAt: NOW - 5,
        createdAt: NOW,
      });
      expect(claimed[0]!.channel).toEqual(channel);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 2 });
      expect(await store.push.claim(NOW + 200, 10, 30_000)).toEqual([]);
      expect(await store.push.complete(user.id, sooner.id)).toBe(true);
      expect(await store.push.complete(user.id, sooner.id)).toBe(false);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 1 });
      // At most `limit`.
      const more = [1, 2, 3].map((i) => delivery(channel!, { collapseKey: `k${i}`, notBefore: NOW + i }));
      await store.push.enqueue(more, NOW);
      expect(ids(await store.push.claim(NOW + 100, 2, 1000))).toEqual([more[0]!.id, more[1]!.id]);
    });

    test('a newer message replaces a queued one and an in-flight one; the replaced id is not completed or released', async () => {
      const { store } = t();
      const { user, channel } = await pushUser(store);
      const first = delivery(channel!, { notBefore: NOW + 50, originAt: NOW });
      const second = delivery(channel!, { notBefore: NOW + 10, originAt: NOW + 1, message: { n: 2 } });
      await store.push.enqueue([first], NOW);
      await store.push.enqueue([second], NOW + 1);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });
      const [claimed] = await store.push.claim(NOW + 20, 10, 30_000);
      expect(claimed!.delivery).toMatchObject({ id: second.id, message: { n: 2 }, attempts: 1, originAt: NOW + 1, createdAt: NOW + 1 });

      // In flight: replaced by a third, which is queued afresh under its own id.
      const third = delivery(channel!, { notBefore: NOW + 30, originAt: NOW + 2, message: { n: 3 } });
      await store.push.enqueue([third], NOW + 25);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });
      expect(await store.push.complete(user.id, second.id)).toBe(false);
      expect(await store.push.release(user.id, second.id, NOW + 99_999)).toBe(false);
      expect(await store.push.complete(user.id, first.id)).toBe(false);
      const [again] = await store.push.claim(NOW + 30, 10, 30_000);
      expect(again!.delivery).toMatchObject({ id: third.id, message: { n: 3 }, attempts: 1, originAt: NOW + 2, createdAt: NOW + 25 });
      // One batch with one key twice: the last wins.
      const a = delivery(channel!, { collapseKey: 'badge', message: { n: 'a' } });
      const b = delivery(channel!, { collapseKey: 'badge', message: { n: 'b' } });
      await store.push.enqueue([a, b], NOW);
      const [badge] = await store.push.claim(NOW + 40, 10, 30_000);
      expect(badge!.delivery).toMatchObject({ id: b.id, message: { n: 'b' } });
    });

    test('two claims at once never claim the same delivery', async () => {
      const { store } = t();
      const { channel } = await pushUser(store);
      const { channel: other } = await pushUser(store);
      const all = Array.from({ length: 40 }, (_, i) => delivery(i % 2 ? channel! : other!, { collapseKey: `k${i}`, notBefore: NOW + i }));
      await store.push.enqueue(all, NOW);
      const [a, b, c] = await Promise.all([store.push.claim(NOW + 100, 15, 60_000), store.push.claim(NOW + 100, 15, 60_000), store.push.claim(NOW + 100, 15, 60_000)]);
      const claimed = [...ids(a!), ...ids(b!), ...ids(c!)];
      expect(new Set(claimed).size).toBe(claimed.length);
      expect(claimed.sort()).toEqual(all.map((d) => d.id).sort());
      for (const part of [a!, b!, c!]) expect(part.length).toBeLessThanOrEqual(15);
      expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 40 });
    });

    test('a lapsed lease makes the delivery claimable again under the same id, attempts counting on', async () => {
      const { store } = t();
      const { user, channel } = await pushUser(store);
      const d = delivery(channel!);
      await store.push.enqueue([d], NOW);
      const [first] = await store.push.claim(NOW, 10, 1000);
      expect(first!.delivery).toMatchObject({ id: d.id, attempts: 1, leaseUntil: NOW + 1000 });
      expect(await store.push.claim(NOW + 999, 10, 1000)).toEqual([]);
      const [second] = await store.push.claim(NOW + 1000, 10, 1000);
      expect(second!.delivery).toMatchObject({ id: d.id, attempts: 2, state: 'sending', leaseUntil: NOW + 2000 });
      expect(await store.push.complete(user.id, d.id)).toBe(true);
    });

    test('a release puts a claimed delivery back for later (a retry), attempts kept', async () => {
      const { store } = t();
      const { user, channel } = await pushUser(store);
      const d = delivery(channel!);
      await store.push.enqueue([d], NOW);
      await store.push.claim(NOW, 10, 30_000);
      expect(await store.push.release(user.id, d.id, NOW + 5000)).toBe(true);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });
      expect(await store.push.claim(NOW + 4999, 10, 30_000)).toEqual([]);
      const [retried] = await store.push.claim(NOW + 5000, 10, 30_000);
      expect(retried!.delivery).toMatchObject({ id: d.id, attempts: 2, state: 'sending' });
      expect(await store.push.release(user.id, 'no-such-delivery', NOW)).toBe(false);
      const stranger = await newUser(store);
      expect(await store.push.release(stranger.id, d.id, NOW)).toBe(false);
      expect(await store.push.complete(stranger.id, d.id)).toBe(false);
      // A fractional time (a backoff with jitter) is taken to the millisecond.
      expect(await store.push.release(user.id, d.id, NOW + 6000.4)).toBe(true);
      expect(ids(await store.push.claim(NOW + 6000, 10, 30_000))).toEqual([d.id]);
    });

    test('a deferred release (a rate limit held it back, untried) gives the claim’s attempt back', async () => {
      const { store } = t();
      const { user, channel } = await pushUser(store);
      const d = delivery(channel!);
      await store.push.enqueue([d], NOW);
      await store.push.claim(NOW, 10, 30_000);
      expect(await store.push.release(user.id, d.id, NOW + 100, true)).toBe(true);
      const [again] = await store.push.claim(NOW + 100, 10, 30_000);
      expect(again!.delivery).toMatchObject({ id: d.id, attempts: 1 });
    });

    test('a blocked device’s deliveries are dropped, queued and in flight; other devices keep theirs', async () => {
      const { store } = t();
      const { user, device, channel } = await pushUser(store);
      const second = await store.push.putChannel(channelOf(user, device, { kind: 'fcm', address: unique('fcm'), keys: {} }), NOW);
      const otherDevice = await store.devices.create(user.id, unique('device'), description(), NOW);
      const kept = await store.push.putChannel(channelOf(user, otherDevice), NOW);
      await store.push.enqueue([delivery(channel!, { notBefore: NOW }), delivery(second, { notBefore: NOW + 500 }), delivery(kept, { notBefore: NOW + 500 })], NOW);
      await store.push.claim(NOW, 1, 30_000);
      expect(await store.push.queueSize()).toEqual({ queued: 2, sending: 1 });
      expect(await store.push.dropDeliveriesOfDevice(user.id, device.id)).toBe(2);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });
      expect((await store.push.claim(NOW + 1000, 10, 1000)).map((c) => c.channel.id)).toEqual([kept.id]);
      expect(await store.push.channelsOfDevice(user.id, device.id)).toHaveLength(2);
    });
  });

  describe('the outbox', () => {
    test('a committed change to the mailbox of a user with a channel leaves one entry spanning its modseqs', async () => {
      const { store } = t();
      const { user, inbox } = await pushUser(store);
      await store.push.takeOutbox(100);
      const h0 = await highestModseq(store, user.id);
      const started = Date.now();
      const item = await store.items.create(email(user.id, inbox.id), NOW);
      const h1 = await highestModseq(store, user.id);
      expect(h1).toBeGreaterThan(h0);
      const [entry, ...rest] = (await store.push.takeOutbox(100)).filter((e) => e.userId === user.id);
      expect(rest).toEqual([]);
      expect(entry).toEqual({ userId: user.id, fromModseq: h0, toModseq: h1, createdAt: expect.any(Number) });
      expect(entry!.createdAt).toBeGreaterThanOrEqual(started);
      expect(entry!.createdAt).toBeLessThanOrEqual(Date.now());
      expect((await store.push.takeOutbox(100)).filter((e) => e.userId === user.id)).toEqual([]);

      // Two commits (the second a unit with two changes) widen one entry and keep the first commit's time.
      const firstStarted = Date.now();
      await store.items.update(user.id, item.id, { isRead: true }, NOW);
      const firstEnded = Date.now();
      const afterFirst = await highestModseq(store, user.id);
      expect(afterFirst).toBe(h1 + 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await store.run(function* (tx) {
        yield* tx.items.update(user.id, item.id, { isFlagged: true }, NOW);
        yield* tx.items.create(email(user.id, inbox.id), NOW);
      });
      const h2 = await highestModseq(store, user.id);
      expect(h2).toBe(afterFirst + 2);
      expect(await store.push.outboxSize()).toBe(1);
      const [widened, ...others] = (await store.push.takeOutbox(100)).filter((e) => e.userId === user.id);
      expect(others).toEqual([]);
      expect(widened).toMatchObject({ userId: user.id, fromModseq: h1, toModseq: h2 });
      expect(widened!.createdAt).toBeGreaterThanOrEqual(firstStarted);
      expect(widened!.createdAt).toBeLessThanOrEqual(firstEnded);
    });

    test('no entry for a user without a channel, nor for a unit rolled back', async () => {
      const { store } = t();
      const without = await pushUser(store, { channel: false });
      const { user, inbox } = await pushUser(store);
      await store.push.takeOutbox(100);
      await store.items.create(email(without.user.id, without.inbox.id), NOW);
      expect(await store.push.outboxSize()).toBe(0);
      const failure = new Error('changed its mind');
      await expect(
        store.run(function* (tx) {
          yield* tx.items.create(email(user.id, inbox.id), NOW);
          throw failure;
        }),
      ).rejects.toBe(failure);
      expect(await store.push.outboxSize()).toBe(0);
      // One unit changing both mailboxes: an entry for the one with a channel only.
      const h0 = await highestModseq(store, user.id);
      await store.run(function* (tx) {
        yield* tx.items.create(email(without.user.id, without.inbox.id), NOW);
        yield* tx.items.create(email(user.id, inbox.id), NOW);
      });
      expect(await store.push.takeOutbox(100)).toEqual([{ userId: user.id, fromModseq: h0, toModseq: h0 + 1, createdAt: expect.any(Number) }]);
      // Removing the last channel stops the entries.
      await store.push.deleteChannelsOfDevice(user.id, (await store.push.channelsOfUser(user.id))[0]!.deviceRecordId);
      await store.items.create(email(user.id, inbox.id), NOW);
      expect(await store.push.outboxSize()).toBe(0);
    });

    test('the commit that writes the entry is still announced, here and (PostgreSQL) to the other nodes', async () => {
      const { store } = t();
      const { user, inbox } = await pushUser(store);
      const other = backend === 'postgres' ? await t().openAnother() : undefined;
      const here = recordCommits(store);
      const there = other && recordCommits(other);
      try {
        await store.items.create(email(user.id, inbox.id), NOW);
        const modseq = await highestModseq(store, user.id);
        expect(here.of(user.id)).toEqual([expect.objectContaining({ userId: user.id, modseq, folderIds: [inbox.id] })]);
        if (there) {
          for (const deadline = Date.now() + 5000; there.of(user.id).length === 0 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
          expect(there.of(user.id)).toEqual([expect.objectContaining({ userId: user.id, modseq, folderIds: [inbox.id] })]);
        }
        expect((await store.push.takeOutbox(100)).filter((e) => e.userId === user.id)).toEqual([
          { userId: user.id, fromModseq: modseq - 1, toModseq: modseq, createdAt: expect.any(Number) },
        ]);
      } finally {
        here.stop();
        there?.stop();
      }
    });

    test('entries are taken oldest first, at most limit, and two takers never take the same one', async () => {
      const { store } = t();
      const users = [];
      for (let i = 0; i < 6; i++) users.push(await pushUser(store));
      await store.push.takeOutbox(100);
      for (const u of users) {
        await store.items.create(email(u.user.id, u.inbox.id), NOW);
        await new Promise((resolve) => setTimeout(resolve, 3));
      }
      expect(await store.push.outboxSize()).toBe(6);
      const firstTwo = await store.push.takeOutbox(2);
      expect(firstTwo.map((e) => e.userId)).toEqual([users[0]!.user.id, users[1]!.user.id]);
      expect(firstTwo[0]!.createdAt).toBeLessThan(firstTwo[1]!.createdAt);
      const [a, b] = await Promise.all([store.push.takeOutbox(2), store.push.takeOutbox(2)]);
      const rest = await store.push.takeOutbox(100);
      const taken = [...a!, ...b!, ...rest].map((e) => e.userId);
      expect(new Set(taken).size).toBe(taken.length);
      expect(taken.sort()).toEqual(users.slice(2).map((u) => u.user.id).sort());
    });

    test('taking entries and queueing deliveries in one unit: a failure keeps the entry', async () => {
      const { store } = t();
      const { user, inbox, channel } = await pushUser(store);
      await store.push.takeOutbox(100);
      await store.items.create(email(user.id, inbox.id), NOW);
      const failure = new Error('composer crashed');
      await expect(
        store.run(function* (tx) {
          const entries = yield* tx.push.takeOutbox(10);
          expect(entries.map((e) => e.userId)).toEqual([user.id]);
          yield* tx.sync.changes(user.id, inbox.id, entries[0]!.fromModseq, { receivedAt: 0, id: '' }, 10);
          yield* tx.push.enqueue([delivery(channel!)], NOW);
          throw failure;
        }),
      ).rejects.toBe(failure);
      expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
      const queued = await store.run(function* (tx) {
        const entries = yield* tx.push.takeOutbox(10);
        const changes = yield* tx.sync.changes(user.id, inbox.id, entries[0]!.fromModseq, { receivedAt: 0, id: '' }, 10);
        yield* tx.push.enqueue([delivery(channel!)], NOW);
        return changes.length;
      });
      expect(queued).toBe(1);
      expect(await store.push.outboxSize()).toBe(0);
      expect(await store.push.queueSize()).toEqual({ queued: 1, sending: 0 });
    });
  });

  describe('reminders', () => {
    const remind = (userId: string, itemId: string, dueAt: number) => {
      made.reminders.push([userId, itemId]);
      return { userId, itemId, occurrenceStart: dueAt + 15 * MINUTE, dueAt, sentAt: null, shown: null } as PushReminderRecord;
    };

    test('put, replace, due soonest first, marked sent at the due time read, purged once sent and started', async () => {
      const { store } = t();
      const { user } = await pushUser(store, { channel: false });
      const T = NOW + 10 * DAY;
      const a = remind(user.id, unique('event'), T + 10);
      const b = remind(user.id, unique('event'), T);
      const c = remind(user.id, unique('event'), T + 5000);
      for (const r of [a, b, c]) await store.push.putReminder(r);
      expect(await store.push.reminder(user.id, a.itemId)).toEqual(a);
      expect(await store.push.reminder(user.id, 'no-such-event')).toBeUndefined();
      expect(await store.push.dueReminders(T - 1, 10)).toEqual([]);
      expect(await store.push.dueReminders(T + 10, 10)).toEqual([b, a]);
      expect(await store.push.dueReminders(T + 10, 1)).toEqual([b]);

      // Moved meanwhile: the sender's due time is stale.
      const moved = { ...a, dueAt: T + 20, occurrenceStart: T + 20 + 15 * MINUTE };
      await store.push.putReminder(moved);
      const until = moved.occurrenceStart + HOUR;
      expect(await store.push.markReminderSent(user.id, a.itemId, a.dueAt, T + 30, until)).toBe(false);
      expect(await store.push.markReminderSent(user.id, a.itemId, moved.dueAt, T + 30, until)).toBe(true);
      expect(await store.push.markReminderSent(user.id, a.itemId, moved.dueAt, T + 31, until)).toBe(false);
      // Marked sent, it is the one shown until its occurrence ends.
      const shown = { occurrenceStart: moved.occurrenceStart, dueAt: moved.dueAt, until };
      expect(await store.push.reminder(user.id, a.itemId)).toEqual({ ...moved, sentAt: T + 30, shown });
      expect(await store.push.markReminderSent(user.id, 'no-such-event', T, T, null)).toBe(false);
      expect(await store.push.dueReminders(T + HOUR, 10)).toEqual([b, c]);

      // A sent reminder is replaced too (the next occurrence of a recurring event), keeping the one shown.
      const next = { ...moved, occurrenceStart: T + DAY, dueAt: T + DAY - 15 * MINUTE, shown };
      await store.push.putReminder(next);
      expect(await store.push.reminder(user.id, a.itemId)).toEqual(next);
      // Sent too late to be shown: nothing is.
      await store.push.markReminderSent(user.id, b.itemId, b.dueAt, T + 40, null);
      expect((await store.push.reminder(user.id, b.itemId))!.shown).toBeNull();

      // The purge: sent reminders whose occurrence started before the cutoff.
      expect(await store.push.purgeReminders(b.occurrenceStart, T + 2 * DAY)).toBe(0);
      expect(await store.push.purgeReminders(b.occurrenceStart + 1, T + 2 * DAY)).toBe(1);
      expect(await store.push.reminder(user.id, b.itemId)).toBeUndefined();
      expect(await store.push.purgeReminders(T + 2 * DAY, T + 2 * DAY)).toBe(0); // the others are not sent

      // ... and only once the one shown has ended (a long event's reminder is owed its cancellation until then).
      const long = remind(user.id, unique('event'), T);
      await store.push.putReminder(long);
      await store.push.markReminderSent(user.id, long.itemId, long.dueAt, T, T + 3 * DAY);
      expect(await store.push.purgeReminders(T + 2 * DAY, T + 2 * DAY)).toBe(0);
      expect(await store.push.purgeReminders(T + 2 * DAY, T + 3 * DAY)).toBe(1);

      expect(await store.push.deleteReminder(user.id, c.itemId)).toEqual(c);
      expect(await store.push.deleteReminder(user.id, c.itemId)).toBeUndefined();
      expect(await store.push.dueReminders(T + 2 * DAY, 10)).toEqual([next]);
    });
  });
});
