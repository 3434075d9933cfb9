/**
 * The store contract, devices: device records, the tenant's access rules and default, and the audit log.
 */
import { DEFAULT_VIEW_SETTINGS, type DeviceAccessRuleInput } from '../../../server/store/types';
import { withHotCache } from '../../../server/store/cached';
import { DAY, NOW, description, eachBackend, expectRefusal, newTenant, newUser, recordInvalidations, unique } from './fixtures';

eachBackend('devices', (t) => {
  test('create answers the whole record with its defaults; byId and byUserAndDeviceId read it', async () => {
    const { store } = t();
    const user = await newUser(store);
    const desc = description({ friendlyName: 'Phone', deviceType: 'phone', deviceModel: 'Pixel 9', deviceOS: 'Android 16', clientType: 'pigeon', clientVersion: '1.2', userAgent: 'Pigeon/1.2', capabilities: ['push', 'wipe'] });
    const device = await store.devices.create(user.id, 'device-1', desc, NOW + 3);
    expect(device).toEqual({
      id: expect.any(String),
      userId: user.id,
      deviceId: 'device-1',
      ...desc,
      adminDecision: null,
      wipeState: 'none',
      wipeRequestedAt: null,
      wipeRequestedBy: null,
      wipeAcknowledgedAt: null,
      epoch: 0,
      resetReason: null,
      viewSettings: DEFAULT_VIEW_SETTINGS,
      firstSyncTime: NOW + 3,
      lastSyncAttemptTime: NOW + 3,
      lastSuccessSyncTime: null,
      createdAt: NOW + 3,
      updatedAt: NOW + 3,
    });
    expect(await store.devices.byId(device.id)).toEqual(device);
    expect(await store.devices.byUserAndDeviceId(user.id, 'device-1')).toEqual(device);
    expect(await store.devices.byId('no-such-device')).toBeUndefined();
  });

  test('a device id is unique per user, not across users', async () => {
    const { store } = t();
    const alice = await newUser(store);
    const bob = await newUser(store);
    const mine = await store.devices.create(alice.id, 'same-id', description(), NOW);
    expect(await store.devices.byUserAndDeviceId(bob.id, 'same-id')).toBeUndefined();
    const theirs = await store.devices.create(bob.id, 'same-id', description(), NOW);
    expect(theirs.id).not.toBe(mine.id);
    await expectRefusal(store.devices.create(alice.id, 'same-id', description(), NOW));
    expect(await store.devices.countByUser(alice.id)).toBe(1);
  });

  test('listByUser is ordered by first sync; countByUser counts; delete removes', async () => {
    const { store } = t();
    const user = await newUser(store);
    const other = await newUser(store);
    const later = await store.devices.create(user.id, 'later', description(), NOW + 20);
    const earlier = await store.devices.create(user.id, 'earlier', description(), NOW + 10);
    await store.devices.create(other.id, 'theirs', description(), NOW);
    expect((await store.devices.listByUser(user.id)).map((d) => d.deviceId)).toEqual(['earlier', 'later']);
    expect(await store.devices.countByUser(user.id)).toBe(2);
    await store.devices.delete(earlier.id);
    expect(await store.devices.byId(earlier.id)).toBeUndefined();
    expect(await store.devices.listByUser(user.id)).toEqual([later]);
    expect(await store.devices.countByUser(user.id)).toBe(1);
    expect(await store.devices.countByUser(other.id)).toBe(1);
  });

  test('list answers a tenant\'s devices with their owner\'s username, filtered, by username then first sync', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const tag = unique('t');
    const zoe = await newUser(store, { tenantId: tenant.id, username: `zoe-${tag}` });
    const amy = await newUser(store, { tenantId: tenant.id, username: `amy-${tag}` });
    const outsider = await newUser(store);
    await store.devices.create(zoe.id, 'z1', description({ clientType: 'pigeon', deviceModel: 'A' }), NOW + 1);
    await store.devices.create(amy.id, 'a2', description({ clientType: 'other', deviceModel: 'B' }), NOW + 3);
    await store.devices.create(amy.id, 'a1', description({ clientType: 'pigeon', deviceModel: 'B' }), NOW + 2);
    await store.devices.create(outsider.id, 'o1', description({ clientType: 'pigeon' }), NOW);
    const names = (list: Array<{ username: string; deviceId: string }>) => list.map((d) => `${d.username.split('-')[0]}/${d.deviceId}`);
    const all = await store.devices.list({ tenantId: tenant.id });
    expect(names(all)).toEqual(['amy/a1', 'amy/a2', 'zoe/z1']);
    expect(all[0]).toEqual({ ...(await store.devices.byUserAndDeviceId(amy.id, 'a1')), username: amy.username });
    expect(names(await store.devices.list({ tenantId: tenant.id, userId: zoe.id }))).toEqual(['zoe/z1']);
    expect(names(await store.devices.list({ tenantId: tenant.id, clientType: 'pigeon' }))).toEqual(['amy/a1', 'zoe/z1']);
    expect(names(await store.devices.list({ tenantId: tenant.id, deviceModel: 'B', clientType: 'other' }))).toEqual(['amy/a2']);
    expect(await store.devices.list({ tenantId: tenant.id, userId: outsider.id })).toEqual([]);
  });

  test("inventoryRows answers list's devices as their sort and filter columns (issue 21: the inventory's paging)", async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const tag = unique('inv');
    const zoe = await newUser(store, { tenantId: tenant.id, username: `zoe-${tag}` });
    const amy = await newUser(store, { tenantId: tenant.id, username: `amy-${tag}` });
    const outsider = await newUser(store);
    const z1 = await store.devices.create(zoe.id, 'z1', description({ friendlyName: 'Zed', deviceType: 'phone', deviceOS: 'iOS', userAgent: 'UA', clientType: 'pigeon', deviceModel: 'A' }), NOW);
    await store.devices.touch(z1.id, NOW + 5, NOW + 4);
    await store.devices.setAdminDecision(z1.id, 'blocked', NOW + 6);
    await store.devices.setWipe(z1.id, 'pending', { requestedAt: NOW + 7, requestedBy: 'admin' }, NOW + 7);
    await store.devices.create(amy.id, 'a1', description({ clientType: 'other', deviceModel: 'B' }), NOW + 1);
    await store.devices.create(outsider.id, 'o1', description({ clientType: 'pigeon' }), NOW);
    const byId = (rows: Array<{ deviceId: string }>) => rows.map((r) => r.deviceId).sort();
    const rows = await store.devices.inventoryRows({ tenantId: tenant.id });
    expect(byId(rows)).toEqual(['a1', 'z1']);
    const full = (await store.devices.list({ tenantId: tenant.id })).find((d) => d.deviceId === 'z1')!;
    expect(rows.find((r) => r.deviceId === 'z1')).toEqual({
      id: full.id,
      userId: zoe.id,
      deviceId: 'z1',
      friendlyName: 'Zed',
      deviceType: 'phone',
      deviceModel: 'A',
      deviceOS: 'iOS',
      clientType: 'pigeon',
      userAgent: 'UA',
      adminDecision: 'blocked',
      wipeState: 'pending',
      firstSyncTime: NOW,
      lastSuccessSyncTime: NOW + 4,
      username: zoe.username,
    });
    expect(rows.find((r) => r.deviceId === 'a1')).toMatchObject({ friendlyName: null, adminDecision: null, wipeState: 'none', lastSuccessSyncTime: null, username: amy.username });
    expect(byId(await store.devices.inventoryRows({ tenantId: tenant.id, userId: amy.id }))).toEqual(['a1']);
    expect(byId(await store.devices.inventoryRows({ tenantId: tenant.id, clientType: 'pigeon' }))).toEqual(['z1']);
    expect(byId(await store.devices.inventoryRows({ tenantId: tenant.id, deviceModel: 'B', clientType: 'other' }))).toEqual(['a1']);
    expect(await store.devices.inventoryRows({ tenantId: tenant.id, userId: outsider.id })).toEqual([]);
  });

  test('updateDescription replaces the description; setAdminDecision sets and clears the decision', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'd', description({ friendlyName: 'Old', deviceModel: 'M1', capabilities: ['a'] }), NOW);
    const next = description({ friendlyName: 'New', deviceOS: 'iOS 26', capabilities: ['b', 'c'] });
    await store.devices.updateDescription(device.id, next, NOW + 5);
    expect(await store.devices.byId(device.id)).toEqual({ ...device, ...next, deviceModel: null, updatedAt: NOW + 5 });
    await store.devices.setAdminDecision(device.id, 'blocked', NOW + 6);
    expect(await store.devices.byId(device.id)).toMatchObject({ adminDecision: 'blocked', updatedAt: NOW + 6 });
    await store.devices.setAdminDecision(device.id, null, NOW + 7);
    expect(await store.devices.byId(device.id)).toMatchObject({ adminDecision: null, updatedAt: NOW + 7 });
  });

  test('setWipe sets the state and only the times it is given, keeping the others', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'd', description(), NOW);
    await store.devices.setWipe(device.id, 'pending', { requestedAt: NOW + 1, requestedBy: 'admin-1' }, NOW + 1);
    expect(await store.devices.byId(device.id)).toMatchObject({ wipeState: 'pending', wipeRequestedAt: NOW + 1, wipeRequestedBy: 'admin-1', wipeAcknowledgedAt: null, updatedAt: NOW + 1 });
    await store.devices.setWipe(device.id, 'acknowledged', { acknowledgedAt: NOW + 2 }, NOW + 2);
    expect(await store.devices.byId(device.id)).toMatchObject({ wipeState: 'acknowledged', wipeRequestedAt: NOW + 1, wipeRequestedBy: 'admin-1', wipeAcknowledgedAt: NOW + 2 });
    await store.devices.setWipe(device.id, 'none', {}, NOW + 3);
    expect(await store.devices.byId(device.id)).toMatchObject({ wipeState: 'none', wipeRequestedAt: NOW + 1, wipeAcknowledgedAt: NOW + 2, updatedAt: NOW + 3 });
  });

  test('bumpEpoch counts up; touch sets the last-seen times, keeping the last success when given none', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'd', description(), NOW);
    await store.devices.bumpEpoch(device.id, NOW + 1);
    await store.devices.bumpEpoch(device.id, NOW + 2);
    expect(await store.devices.byId(device.id)).toMatchObject({ epoch: 2, updatedAt: NOW + 2 });
    await store.devices.touch(device.id, NOW + 10, NOW + 11);
    expect(await store.devices.byId(device.id)).toMatchObject({ lastSyncAttemptTime: NOW + 10, lastSuccessSyncTime: NOW + 11 });
    await store.devices.touch(device.id, NOW + 20, null);
    expect(await store.devices.byId(device.id)).toEqual({
      ...device,
      epoch: 2,
      lastSyncAttemptTime: NOW + 20,
      lastSuccessSyncTime: NOW + 11,
      updatedAt: NOW + 2, // last-seen times are not an update of the record
    });
  });

  test('setViewSettings stores the settings; a real change bumps the epoch with resetReason viewChanged, in one write', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'd', description(), NOW);
    const other = await store.devices.create(user.id, 'other', description(), NOW);
    expect(device.viewSettings).toEqual({ focusedInbox: true, threaded: false });

    const changed = await store.devices.setViewSettings(device.id, { focusedInbox: true, threaded: true }, NOW + 5);
    expect(changed).toEqual({ ...device, viewSettings: { focusedInbox: true, threaded: true }, epoch: 1, resetReason: 'viewChanged', updatedAt: NOW + 5 });
    expect(await store.devices.byId(device.id)).toEqual(changed);

    // The same settings again: stored as they are, no reset, the record untouched.
    expect(await store.devices.setViewSettings(device.id, { focusedInbox: true, threaded: true }, NOW + 6)).toEqual(changed);
    // Either member alone is a change.
    expect(await store.devices.setViewSettings(device.id, { focusedInbox: false, threaded: true }, NOW + 7)).toMatchObject({
      viewSettings: { focusedInbox: false, threaded: true },
      epoch: 2,
      resetReason: 'viewChanged',
      updatedAt: NOW + 7,
    });
    // Only members of ViewSettings are stored.
    const extra = { focusedInbox: false, threaded: false, colour: 'blue' } as unknown as { focusedInbox: boolean; threaded: boolean };
    expect((await store.devices.setViewSettings(device.id, extra, NOW + 8))!.viewSettings).toEqual({ focusedInbox: false, threaded: false });
    expect(await store.devices.byId(device.id)).toMatchObject({ epoch: 3, viewSettings: { focusedInbox: false, threaded: false } });

    // Another device of the user is untouched; an unknown id answers undefined.
    expect(await store.devices.byId(other.id)).toEqual(other);
    expect(await store.devices.setViewSettings('no-such-device', { focusedInbox: false, threaded: true }, NOW + 9)).toBeUndefined();
  });

  test('bumpEpoch clears resetReason (a reset of the sync state), keeping the view settings', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'd', description(), NOW);
    await store.devices.setViewSettings(device.id, { focusedInbox: false, threaded: false }, NOW + 1);
    await store.devices.bumpEpoch(device.id, NOW + 2);
    expect(await store.devices.byId(device.id)).toMatchObject({ epoch: 2, resetReason: null, viewSettings: { focusedInbox: false, threaded: false }, updatedAt: NOW + 2 });
    await store.devices.setViewSettings(device.id, { focusedInbox: true, threaded: false }, NOW + 3);
    expect(await store.devices.byId(device.id)).toMatchObject({ epoch: 3, resetReason: 'viewChanged' });
  });

  test('setViewSettings announces the device to onInvalidate, so the hot cache reads it afresh', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'cached', description(), NOW);
    const cached = withHotCache(store);
    try {
      expect((await cached.devices.byUserAndDeviceId(user.id, 'cached'))!.viewSettings).toEqual(DEFAULT_VIEW_SETTINGS);
      const heard = recordInvalidations(store);
      await store.devices.setViewSettings(device.id, { focusedInbox: false, threaded: true }, NOW + 1);
      heard.stop();
      expect(heard.distinct()).toContainEqual({ kind: 'device', userId: user.id, deviceId: 'cached' });
      cached.hotCache.beginRequest();
      const after = await cached.devices.byUserAndDeviceId(user.id, 'cached');
      expect(after).toMatchObject({ epoch: 1, resetReason: 'viewChanged', viewSettings: { focusedInbox: false, threaded: true } });
      expect(Object.isFrozen(after!.viewSettings)).toBe(true);
    } finally {
      // Not cached.close(): it would close the shared store too.
      cached.hotCache.clear();
    }
  });

  test('inactiveSince answers devices last active before the cutoff, except those with a wipe pending', async () => {
    const { store } = t();
    const user = await newUser(store);
    const old = NOW - 30 * DAY;
    const idle = await store.devices.create(user.id, 'idle', description(), old);
    await store.devices.create(user.id, 'fresh', description(), NOW);
    const wiping = await store.devices.create(user.id, 'wiping', description(), old);
    await store.devices.setWipe(wiping.id, 'pending', { requestedAt: old, requestedBy: 'admin' }, old);
    const seenLately = await store.devices.create(user.id, 'seen-lately', description(), old);
    await store.devices.touch(seenLately.id, NOW, null);
    const inactive = (await store.devices.inactiveSince(NOW - DAY)).filter((d) => d.userId === user.id);
    expect(inactive).toEqual([await store.devices.byId(idle.id)]);
    expect((await store.devices.inactiveSince(NOW + 1)).filter((d) => d.userId === user.id).map((d) => d.deviceId).sort()).toEqual(['fresh', 'idle', 'seen-lately']);
  });
});

eachBackend('device access rules', (t) => {
  const rule = (fields: Partial<DeviceAccessRuleInput> = {}): DeviceAccessRuleInput => ({
    field: 'deviceModel',
    match: 'prefix',
    value: 'Pixel',
    accessState: 'blocked',
    description: 'no phones',
    ...fields,
  });

  test('the default state is allowed until set; setting it again replaces it; tenants are separate', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const other = await newTenant(store);
    expect(await store.deviceAccess.defaultState(tenant.id)).toBe('allowed');
    await store.deviceAccess.setDefaultState(tenant.id, 'quarantined', NOW);
    expect(await store.deviceAccess.defaultState(tenant.id)).toBe('quarantined');
    await store.deviceAccess.setDefaultState(tenant.id, 'blocked', NOW + 1);
    expect(await store.deviceAccess.defaultState(tenant.id)).toBe('blocked');
    expect(await store.deviceAccess.defaultState(other.id)).toBe('allowed');
  });

  test('createRule answers the rule; rule and rules read it within its tenant only, oldest first', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const other = await newTenant(store);
    const second = await store.deviceAccess.createRule(tenant.id, rule({ value: 'iPhone', field: 'deviceType', match: 'exact' }), NOW + 2);
    const first = await store.deviceAccess.createRule(tenant.id, rule(), NOW + 1);
    expect(first).toEqual({ id: expect.any(String), tenantId: tenant.id, ...rule(), createdAt: NOW + 1, updatedAt: NOW + 1 });
    await store.deviceAccess.createRule(other.id, rule({ value: 'theirs' }), NOW);
    expect(await store.deviceAccess.rule(tenant.id, first.id)).toEqual(first);
    expect(await store.deviceAccess.rule(other.id, first.id)).toBeUndefined();
    expect(await store.deviceAccess.rules(tenant.id)).toEqual([first, second]);
  });

  test('updateRule changes a rule of its tenant and answers it; undefined for another tenant\'s or none', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const other = await newTenant(store);
    const created = await store.deviceAccess.createRule(tenant.id, rule(), NOW);
    const changed = rule({ field: 'userAgent', match: 'exact', value: 'Bad/1.0', accessState: 'quarantined', description: 'review' });
    expect(await store.deviceAccess.updateRule(tenant.id, created.id, changed, NOW + 9)).toEqual({ ...created, ...changed, updatedAt: NOW + 9 });
    expect(await store.deviceAccess.updateRule(other.id, created.id, rule(), NOW + 10)).toBeUndefined();
    expect(await store.deviceAccess.updateRule(tenant.id, 'no-such-rule', rule(), NOW + 10)).toBeUndefined();
    expect(await store.deviceAccess.rule(tenant.id, created.id)).toEqual({ ...created, ...changed, updatedAt: NOW + 9 });
  });

  test('deleteRule deletes a rule of its tenant once, and says whether it did', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const other = await newTenant(store);
    const created = await store.deviceAccess.createRule(tenant.id, rule(), NOW);
    expect(await store.deviceAccess.deleteRule(other.id, created.id)).toBe(false);
    expect(await store.deviceAccess.rule(tenant.id, created.id)).toEqual(created);
    expect(await store.deviceAccess.deleteRule(tenant.id, created.id)).toBe(true);
    expect(await store.deviceAccess.deleteRule(tenant.id, created.id)).toBe(false);
    expect(await store.deviceAccess.rules(tenant.id)).toEqual([]);
  });
});

eachBackend('audit log', (t) => {
  test('append answers the entry with a rising sequence number; details keep their structure', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const entry = { tenantId: tenant.id, at: NOW, actorId: 'admin-1', actorName: 'Admin', action: 'device.block', targetType: 'device', targetId: 'd-1', details: { reason: 'lost', rules: [1, 2], nested: { ok: true, none: null } } };
    const first = await store.audit.append(entry);
    expect(first).toEqual({ ...entry, seq: expect.any(Number) });
    const second = await store.audit.append({ ...entry, actorId: null, actorName: 'pigeon', targetId: null, details: {}, at: NOW + 1 });
    expect(second.seq).toBeGreaterThan(first.seq);
    expect(second).toMatchObject({ actorId: null, targetId: null, details: {} });
  });

  test('list answers a tenant\'s entries newest first, a page at a time, and no other tenant\'s', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const other = await newTenant(store);
    const entries = [];
    for (let i = 0; i < 5; i++) {
      entries.push(await store.audit.append({ tenantId: tenant.id, at: NOW + i, actorId: null, actorName: 'a', action: `act${i}`, targetType: 'user', targetId: null, details: { i } }));
      await store.audit.append({ tenantId: other.id, at: NOW + i, actorId: null, actorName: 'b', action: 'other', targetType: 'user', targetId: null, details: {} });
    }
    const newestFirst = [...entries].reverse();
    expect(await store.audit.list(tenant.id, { limit: 10 })).toEqual(newestFirst);
    const page = await store.audit.list(tenant.id, { limit: 2 });
    expect(page).toEqual(newestFirst.slice(0, 2));
    expect(await store.audit.list(tenant.id, { limit: 2, beforeSeq: page[1]!.seq })).toEqual(newestFirst.slice(2, 4));
    expect(await store.audit.list(tenant.id, { limit: 10, beforeSeq: entries[0]!.seq })).toEqual([]);
  });
});
