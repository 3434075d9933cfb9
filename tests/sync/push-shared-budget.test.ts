/**
 * Background push's rate limits hold across drainers: with PostgreSQL every node's leader drains the one queue, and
 * the per-second budget (PIGEON_PUSH_RATE_GLOBAL) and the per-device one (PIGEON_PUSH_RATE_PER_DEVICE) are windows
 * in the database that all of them take their sends from (server/push/background/limits.ts `SharedLimits`). Two
 * engines over two store handles of one database, on one injected clock, drain together; what they send in each
 * window is counted. Also the store step both backends implement (`push.takeSendBudget`).
 */
import pino from 'pino';
import { ManualClock } from '../../server/clock';
import { createBackgroundPush } from '../../server/push/background';
import type { BackgroundPush, BackgroundPushOptions } from '../../server/push/background/types';
import type { Gateway } from '../../server/push/gateways';
import { PUSH_EVENT_KINDS, type PushChannelRecord, type Store } from '../../server/store/types';
import { openTestStore, STORE_BACKENDS, type TestStore } from '../helpers/storeBackends';

const DESCRIPTION = { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] };
const allow = {
  notificationContent: async () => 'full' as const,
  labelAllowsPreview: async () => true,
  deviceReachable: async () => true,
};

const opened: TestStore[] = [];
const engines: BackgroundPush[] = [];
afterEach(async () => {
  for (const engine of engines.splice(0)) await engine.stop();
  for (const test of opened.splice(0)) await test.close();
});

describe.each(STORE_BACKENDS)('push.takeSendBudget (%s store)', (backend) => {
  it('grants at most the limit per window, in order, whoever asks; a new window after the last one ended', async () => {
    const test = await openTestStore(backend, { name: 'sendbudget' });
    opened.push(test);
    const store = test.store;
    const take = (key: string, want: number, now: number) => store.run((tx) => tx.push.takeSendBudget([{ key, want }], 5, 1000, now));
    expect(await take('global', 3, 10_000)).toEqual([{ granted: 3, resetAt: 11_000 }]);
    expect(await take('global', 3, 10_500)).toEqual([{ granted: 2, resetAt: 11_000 }]);
    expect(await take('global', 1, 10_999)).toEqual([{ granted: 0, resetAt: 11_000 }]);
    expect(await take('other', 4, 10_999)).toEqual([{ granted: 4, resetAt: 11_999 }]);
    expect(await take('global', 9, 11_000)).toEqual([{ granted: 5, resetAt: 12_000 }]);
    // Several keys in one request (and one key twice: the second gets what the first left).
    expect(await store.run((tx) => tx.push.takeSendBudget([{ key: 'a', want: 2 }, { key: 'b', want: 7 }, { key: 'b', want: 1 }], 5, 1000, 20_000))).toEqual([
      { granted: 2, resetAt: 21_000 },
      { granted: 5, resetAt: 21_000 },
      { granted: 0, resetAt: 21_000 },
    ]);
  });
});

describe('background push limits shared by two drainers (postgres store)', () => {
  async function setup(options: Partial<BackgroundPushOptions>, devices: number, perChannel: number) {
    const test = await openTestStore('postgres', { name: 'pushbudget' });
    opened.push(test);
    const other = await test.openAnother();
    const store = test.store;
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const tenant = await store.tenants.create('Pigeon', clock.now());
    const user = await store.users.create({ tenantId: tenant.id, username: 'ada', email: 'ada@pigeon.test', displayName: 'Ada', role: 'user', passwordHash: null }, clock.now());
    await store.mailboxes.create(user.id, clock.now());
    const channels: PushChannelRecord[] = [];
    for (let i = 0; i < devices; i++) {
      const device = await store.devices.create(user.id, `budget-phone-${i}`, DESCRIPTION, clock.now());
      channels.push(
        await store.push.putChannel(
          { tenantId: user.tenantId, userId: user.id, deviceRecordId: device.id, deviceId: device.deviceId, clientId: 'pigeon-app', sessionVersion: user.sessionVersion, kind: 'webpush', address: `https://push.example/budget-${i}`, keys: { p256dh: 'p', auth: 'a' }, events: [...PUSH_EVENT_KINDS] },
          clock.now(),
        ),
      );
    }
    let n = 0;
    for (const channel of channels) {
      for (let i = 0; i < perChannel; i++) {
        const collapseKey = `mail:${++n}`;
        await store.push.enqueue(
          [{ id: `budget-${n}`, userId: user.id, channelId: channel.id, collapseKey, message: { type: 'newMail', collapseKey, ttlSeconds: 60, urgency: 'high', data: {} }, notBefore: clock.now(), originAt: clock.now() }],
          clock.now(),
        );
      }
    }
    /** Every send: which engine, when (the injected clock), to which channel. */
    const sends: Array<{ engine: string; at: number; address: string }> = [];
    const engine = (name: string, s: Store) => {
      const gateway: Gateway = {
        kind: 'webpush',
        async send(target) {
          sends.push({ engine: name, at: clock.now(), address: target.endpoint! });
          return { status: 'sent', latencyMs: 1 };
        },
        async close() {},
      };
      const push = createBackgroundPush({ store: s, clock, log: pino({ level: 'silent' }), gateways: { webpush: gateway }, policy: allow, options });
      engines.push(push);
      return push;
    };
    return { store, clock, sends, a: engine('a', store), b: engine('b', other) };
  }

  /** Counts per key within each window of `windowMs` (the passes run at whole windows of the clock). */
  const perWindow = (sends: Array<{ at: number }>, start: number, windowMs: number) => {
    const counts = new Map<number, number>();
    for (const s of sends) counts.set(Math.floor((s.at - start) / windowMs), (counts.get(Math.floor((s.at - start) / windowMs)) ?? 0) + 1);
    return [...counts.entries()].sort((x, y) => x[0] - y[0]).map(([, count]) => count);
  };

  it('never sends more than the global per-second budget in a second, however many drainers', async () => {
    const { store, clock, sends, a, b } = await setup({ globalPerSecond: 7, perDevicePerMinute: 1000, concurrency: 4 }, 20, 3);
    const start = clock.now();
    let dropped = 0;
    for (let second = 0; second < 15 && sends.length < 60; second++) {
      const reports = await Promise.all([a.runOnce(), b.runOnce()]);
      dropped += reports[0].dropped + reports[1].dropped;
      clock.advance(1000);
    }
    expect(sends).toHaveLength(60);
    expect(dropped).toBe(0);
    const counts = perWindow(sends, start, 1000);
    // Each engine alone would send 7 a second: together, still 7 (and the budget is used, not wasted).
    for (const count of counts) expect(count).toBeLessThanOrEqual(7);
    expect(counts.slice(0, -1)).toEqual(Array(counts.length - 1).fill(7));
    expect(new Set(sends.map((s) => s.engine))).toEqual(new Set(['a', 'b']));
    expect(new Set(sends.map((s) => s.address)).size).toBe(20);
    expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });

  it('never sends one device more than its per-minute budget, however many drainers claim its messages', async () => {
    const { store, clock, sends, a, b } = await setup({ globalPerSecond: 1000, perDevicePerMinute: 3, concurrency: 4 }, 2, 8);
    const start = clock.now();
    for (let step = 0; step < 12 && sends.length < 16; step++) {
      await Promise.all([a.runOnce(), b.runOnce()]);
      clock.advance(20_000);
    }
    expect(sends).toHaveLength(16);
    for (const address of new Set(sends.map((s) => s.address))) {
      const counts = perWindow(sends.filter((s) => s.address === address), start, 60_000);
      for (const count of counts) expect(count).toBeLessThanOrEqual(3);
    }
    expect(await store.push.queueSize()).toEqual({ queued: 0, sending: 0 });
  });
});
